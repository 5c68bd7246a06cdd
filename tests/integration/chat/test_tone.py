"""Tone end to end (app.accounts.tone, app.chat.tone, /api/v1/tone, /api/v1/widget/tone): the coach's range
and modes, the client's choice within the range, consent (logged, 30 days, asked twice for the most intense
mode), and the instruction the model receives — gentle for a client at risk or in a low mood, varied by an
experiment's arm.

The app, PostgreSQL, Redis and the local embedder are real; the coach's OpenAI-compatible endpoint is mocked
with respx (OpenAI wire format), and the prompt it receives is read from the recorded request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from app.accounts.tone import DEFAULT_MODE, tone_choice
from app.accounts.unit_of_work import unit_of_work
from app.chat.tone import INSTRUCTIONS
from app.container import Container
from app.learning.experiments import assign_variant
from tests.integration.handoff.test_handoff_flow import Setup, chat, new_setup
from tests.openai_wire import mock_chat_endpoint

__all__ = ["new_setup"]  # fixture used by name below

ROAST = {
    "key": "roast",
    "label": "Tough love",
    "description": "Your excuses get called out, with a wink.",
    "instruction": "Roast the client's excuses playfully, then give one concrete step.",
    "most_intense": True,
}
PEP = {
    "key": "pep",
    "label": "Cheerleader",
    "description": "Lots of encouragement.",
    "instruction": "Cheer the client on with enthusiasm.",
}
SETTINGS = {"min": 1, "max": 4, "default": 3, "modes": [ROAST, PEP]}


@pytest.fixture
def model() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, answering every prompt with a short reply."""
    with mock_chat_endpoint(["Let's", " look at that."], (90, 4)) as router:
        yield router


def system_prompt(router: respx.MockRouter) -> str:
    """The system message of the last prompt the model received."""
    body = json.loads(router["completions"].calls.last.request.content)
    [system] = [m["content"] for m in body["messages"] if m["role"] == "system"]
    return str(system)


async def toned(
    new_setup: Callable[..., Awaitable[Setup]], http: httpx.AsyncClient, name: str, **settings: Any
) -> Setup:
    """A coach on the mocked endpoint with :data:`SETTINGS`, the response cache off and ``settings``, and one
    client."""
    setup = await new_setup(name, response_cache_ttl_seconds=0, **settings)
    response = await http.put("/api/v1/tone", headers=setup.coach.headers, json=SETTINGS)
    assert response.status_code == 200, response.text
    return setup


async def tone(http: httpx.AsyncClient, setup: Setup) -> dict[str, Any]:
    response = await http.get("/api/v1/widget/tone", headers=setup.client_auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def consent(http: httpx.AsyncClient, setup: Setup, mode: str, confirmation: int = 1) -> httpx.Response:
    [version] = [m["version"] for m in (await tone(http, setup))["modes"] if m["key"] == mode]
    body = {"mode": mode, "version": version, "confirmation": confirmation}
    return await http.post("/api/v1/widget/tone/consent", headers=setup.client_auth, json=body)


async def consent_log(http: httpx.AsyncClient, setup: Setup) -> list[dict[str, Any]]:
    response = await http.get(f"/api/v1/tone/consents/{setup.client_id}", headers=setup.coach.headers)
    assert response.status_code == 200, response.text
    return list(response.json())


async def test_the_coach_sets_range_and_modes_and_bad_settings_change_nothing(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]]
) -> None:
    setup = await toned(new_setup, http, "Tone Settings Coach")
    assert (await http.get("/api/v1/tone", headers=setup.coach.headers)).json() == SETTINGS | {
        "modes": [ROAST, PEP | {"most_intense": False}]
    }
    for bad in ({"min": 5, "max": 2}, {"max": 9}, {"modes": [ROAST, ROAST]}, {"modes": [{"key": "x"}]}, [1, 2]):
        response = await http.put("/api/v1/tone", headers=setup.coach.headers, json=bad)
        assert response.status_code == 400 and response.json()["detail"], response.text
    assert (await http.get("/api/v1/tone", headers=setup.coach.headers)).json()["max"] == 4
    # the client reads the range and the consent texts, never the model's instructions
    seen = await tone(http, setup)
    assert (seen["min"], seen["max"], seen["intensity"], seen["mode"]) == (1, 4, 3, DEFAULT_MODE)
    assert "instruction" not in json.dumps(seen) and "Tough love" in seen["modes"][0]["consent_text"]
    # the widget key is not a coach key, and the coach key is not a widget identity
    assert (await http.get("/api/v1/tone", headers=setup.client_auth)).status_code == 401
    assert (await http.get("/api/v1/widget/tone", headers=setup.coach.headers)).status_code == 401


async def test_an_intensity_outside_the_coach_range_is_refused_and_a_narrowed_range_clamps(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], container: Container
) -> None:
    setup = await toned(new_setup, http, "Tone Range Coach")
    refused = await http.put("/api/v1/widget/tone", headers=setup.client_auth, json={"intensity": 6})
    assert refused.status_code == 400 and "from 1 to 4" in refused.json()["detail"]
    for bad in ({"intensity": "loud"}, {"intensity": 0}, {"volume": 3}, {"mode": "nope"}):
        response = await http.put("/api/v1/widget/tone", headers=setup.client_auth, json=bad)
        assert response.status_code == 400 and response.json()["detail"], (bad, response.text)
    assert (await tone(http, setup))["intensity"] == 3  # nothing stored
    chosen = await http.put("/api/v1/widget/tone", headers=setup.client_auth, json={"intensity": 4})
    assert chosen.status_code == 200 and chosen.json()["intensity"] == 4

    narrowed = await http.put("/api/v1/tone", headers=setup.coach.headers, json=SETTINGS | {"max": 2, "default": 2})
    assert narrowed.status_code == 200, narrowed.text
    assert (await tone(http, setup))["intensity"] == 2  # the stored 4 is used as 2


async def test_a_mode_needs_consent_which_is_logged(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]]
) -> None:
    setup = await toned(new_setup, http, "Tone Consent Coach")
    refused = await http.put("/api/v1/widget/tone", headers=setup.client_auth, json={"mode": "pep"})
    assert refused.status_code == 400 and "consent" in refused.json()["detail"]
    stale = {"mode": "pep", "version": "0" * 16, "confirmation": 1}
    response = await http.post("/api/v1/widget/tone/consent", headers=setup.client_auth, json=stale)
    assert response.status_code == 400 and "changed" in response.json()["detail"]
    assert await consent_log(http, setup) == []

    given = await consent(http, setup, "pep")
    assert given.status_code == 200 and given.json()["mode"] == "pep", given.text
    [entry] = await consent_log(http, setup)
    [pep] = [m for m in given.json()["modes"] if m["key"] == "pep"]
    assert (entry["mode"], entry["event"], entry["text_version"], entry["text"]) == (
        "pep",
        "given",
        pep["version"],
        pep["consent_text"],
    )
    at, expires = datetime.fromisoformat(entry["at"]), datetime.fromisoformat(entry["expires_at"])
    assert expires - at == timedelta(days=30) and pep["consented_until"] == entry["expires_at"]

    # the coach rewording the mode voids the consent: the client is back on default until asked again
    reworded = SETTINGS | {"modes": [ROAST, PEP | {"instruction": "Cheer louder."}]}
    assert (await http.put("/api/v1/tone", headers=setup.coach.headers, json=reworded)).status_code == 200
    assert (await tone(http, setup))["mode"] == DEFAULT_MODE

    assert (await consent(http, setup, "pep")).json()["mode"] == "pep"
    withdrawn = await http.delete("/api/v1/widget/tone/consent", headers=setup.client_auth)
    assert withdrawn.status_code == 200 and withdrawn.json()["mode"] == DEFAULT_MODE
    log = await consent_log(http, setup)
    assert [e["event"] for e in log] == ["given", "given", "withdrawn"]
    export = await http.get("/api/v1/widget/export", headers=setup.client_auth)
    assert export.status_code == 200 and export.json()["consent"]["tone"] == log  # in "download my data" too


async def test_the_most_intense_mode_asks_twice(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]]
) -> None:
    setup = await toned(new_setup, http, "Tone Twice Coach")
    early = await consent(http, setup, "roast", confirmation=2)
    assert early.status_code == 400 and "confirm once first" in early.json()["detail"]
    first = await consent(http, setup, "roast", confirmation=1)
    assert first.status_code == 200 and first.json()["mode"] == DEFAULT_MODE  # not yet
    assert [m["awaiting_second"] for m in first.json()["modes"] if m["key"] == "roast"] == [True]
    second = await consent(http, setup, "roast", confirmation=2)
    assert second.status_code == 200 and second.json()["mode"] == "roast", second.text
    assert [e["event"] for e in await consent_log(http, setup)] == ["confirm_1", "given"]
    assert (await consent(http, setup, "pep", confirmation=2)).status_code == 400  # not the most intense


async def test_consent_expires_after_30_days(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], container: Container
) -> None:
    setup = await toned(new_setup, http, "Tone Expiry Coach")
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        [pep] = [m for m in (await container.tone.client_state(uow, client_id, start)).consents if m.mode.key == "pep"]
        await container.tone.consent(uow, client_id, start, mode="pep", version=pep.version, confirmation=1)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        coach = await uow.coach()
        later = [await tone_choice(uow.session, coach, client_id, start + timedelta(days=d)) for d in (29, 30, 31)]
    assert [c.mode.key if c.mode else None for c in later] == ["pep", None, None]
    assert all(c.chosen_mode == "pep" for c in later)  # the choice stays; consent is asked again


async def test_the_model_gets_the_tone_and_a_client_at_risk_or_low_gets_the_gentle_one(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], model: respx.MockRouter
) -> None:
    # threshold 0: the AI answers a client at risk of concern level instead of handing off (a coach's choice)
    setup = await toned(new_setup, http, "Tone Prompt Coach", confidence_threshold=0.0)
    assert (await http.put("/api/v1/widget/tone", headers=setup.client_auth, json={"intensity": 4})).status_code == 200
    assert (await consent(http, setup, "roast", 1)).status_code == 200
    assert (await consent(http, setup, "roast", 2)).json()["mode"] == "roast"

    body = await chat(http, setup, "How can I plan my week better?")
    system = system_prompt(model)
    assert INSTRUCTIONS[4] in system and ROAST["instruction"] in system
    assert system.index(INSTRUCTIONS[4]) < system.index("Rules that always apply")  # system text, before data
    assert body["metadata"] == {}  # the tone is coach-only

    sent = {"": body}
    for reason, text in (
        ("low_mood", "This week was awful and terrible, I am so angry and sad."),  # VADER -0.93, no risk cue
        ("risk", "I feel so alone lately. How can I plan my week?"),  # risk level concern, VADER -0.39
    ):
        calls = model["completions"].call_count
        sent[reason] = await chat(http, setup, text, body["conversation_id"])
        assert model["completions"].call_count == calls + 1, sent[reason]
        system = system_prompt(model)
        assert INSTRUCTIONS[1] in system and INSTRUCTIONS[4] not in system and ROAST["instruction"] not in system
    transcript = await http.get(f"/api/v1/conversations/{body['conversation_id']}", headers=setup.coach.headers)
    tones = {m["id"]: m["metadata"].get("tone") for m in transcript.json()["messages"]}
    assert tones[body["message_id"]] == {"intensity": 4, "mode": "roast", "gentle": None}
    assert tones[sent["low_mood"]["message_id"]] == {"intensity": 1, "mode": None, "gentle": "low_mood"}
    assert tones[sent["risk"]["message_id"]] == {"intensity": 1, "mode": None, "gentle": "risk"}


async def test_an_experiment_arm_sets_the_intensity_of_clients_without_their_own(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], model: respx.MockRouter
) -> None:
    setup = await toned(new_setup, http, "Tone Experiment Coach")
    variants = [{"name": "soft", "intensity": 1}, {"name": "firm", "intensity": 4}]
    bad = {"name": "bad", "metric": "thumbs_up_rate", "variants": [{"name": "a", "intensity": 7}, {"name": "b"}]}
    refused = await http.post("/api/v1/learning/experiments", headers=setup.coach.headers, json=bad)
    assert refused.status_code == 400 and "intensity" in refused.json()["detail"]
    body = {"name": "tone", "metric": "thumbs_up_rate", "variants": variants}
    created = await http.post("/api/v1/learning/experiments", headers=setup.coach.headers, json=body)
    assert created.status_code == 201, created.text
    arm = variants[assign_variant(uuid.UUID(created.json()["id"]), uuid.UUID(setup.client_id), 2)]

    await chat(http, setup, "How can I plan my week better?")
    assert INSTRUCTIONS[int(arm["intensity"])] in system_prompt(model)  # not the coach's default 3
    assert INSTRUCTIONS[3] not in system_prompt(model)

    own = 2  # a client's own choice is never overridden by the arm
    assert (
        await http.put("/api/v1/widget/tone", headers=setup.client_auth, json={"intensity": own})
    ).status_code == 200
    await chat(http, setup, "And how do I keep to the plan?")
    assert INSTRUCTIONS[own] in system_prompt(model)


async def test_the_widget_tone_page_shows_the_range_and_consent_and_saves_with_the_session_cookie(
    base_url: str, http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]]
) -> None:
    setup = await toned(new_setup, http, "Tone Widget Coach")
    async with httpx.AsyncClient(base_url=base_url, follow_redirects=True, timeout=60) as browser:
        chat_page = await browser.get(f"/w/{setup.widget_token}")
        assert chat_page.status_code == 200 and 'href="/w/tone?lang=en"' in chat_page.text
        page = await browser.get("/w/tone")
        assert page.status_code == 200, page.text
        assert [f'value="{n}"' in page.text for n in range(1, 7)] == [True] * 4 + [False] * 2  # the coach's 1–4
        assert 'value="3" checked' in page.text and "<legend>Intensity" in page.text
        assert 'data-twice="yes"' in page.text and "Your excuses get called out" in page.text
        assert ROAST["instruction"] not in page.text  # the model's instruction stays with the coach
        assert "<script>" not in page.text and 'src="/static/tone.js"' in page.text  # CSP: no inline script
        forged = await browser.put("/api/v1/widget/tone", json={"intensity": 1}, headers={"Origin": "https://x.test"})
        assert forged.status_code in (401, 403)  # the cookie counts only from the widget page itself
        saved = await browser.put("/api/v1/widget/tone", json={"intensity": 2}, headers={"Origin": base_url})
        assert saved.status_code == 200 and saved.json()["intensity"] == 2, saved.text
        assert 'value="2" checked' in (await browser.get("/w/tone")).text
    assert (await http.get("/static/tone.js")).status_code == 200
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as stranger:
        assert (await stranger.get("/w/tone")).status_code == 401
