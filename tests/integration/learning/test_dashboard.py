"""The learning dashboard through the real app: approval rates and health from the clients' thumbs,
failure patterns clustered by topic, handoff reasons, the page with its SVG charts, tenancy and bad input."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import func, select, update

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.conversations.models import Message
from app.db.engine import tenant_session
from app.learning.dashboard import health
from app.learning.models import Intervention
from app.llm.base import ProviderError
from app.llm.local import MiniLMEmbedder
from tests.conftest import Coach
from tests.integration.handoff.test_handoff_flow import Setup, chat, llm_api, new_setup
from tests.integration.web.test_dashboard import HANDOFF_FORM, csrf, log_in
from tests.openai_wire import openai_error

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

LIKED = (
    "How do I keep a morning routine going?",
    "What is a good way to plan my week?",
    "How can I prepare for a difficult conversation with my manager?",
    "How do I say no to extra work politely?",
)
COMPLAINTS = (  # two topics, two complaints each
    ("I can't sleep at night, I lie awake for hours.", "Useless for my insomnia"),
    ("My insomnia is back and I wake up at 3 am every night.", "Did not help me sleep"),
    ("My credit card debt keeps growing every month.", "Nothing about my debt"),
    ("I have no savings left and the bills pile up.", "Not helpful about money"),
)


@pytest.fixture
async def browser(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        yield client


async def rate(
    http: httpx.AsyncClient,
    setup: Setup,
    message_id: str,
    helpful: bool,
    text: str | None = None,
    rating: int | None = None,
) -> None:
    body: dict[str, object] = {"helpful": helpful}
    if text:
        body["text"] = text
    if rating is not None:
        body["rating"] = rating
    response = await http.post(f"/api/v1/messages/{message_id}/feedback", headers=setup.client_auth, json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("rate_", "expected"),
    [
        (None, None),
        (1.0, "excellent"),
        (0.85, "excellent"),
        (0.849, "good"),
        (0.75, "good"),
        (0.749, "needs_improvement"),
    ],
)
def test_health_levels(rate_: float | None, expected: str | None) -> None:
    assert health(rate_) == expected


async def test_the_dashboard_reports_approval_failures_and_handoffs(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
) -> None:
    """Four liked and four disliked replies (one of them 👍 then 1 ★): approval 50 % (needs improvement), two
    failure patterns (sleep and money) of two replies each, one handoff asked for by the client; the page draws the
    charts and another coach sees none of it. Client messages forgotten since (with an insight that cited them)
    leave the patterns, and so do the replies to them."""
    setup = await new_setup("Dashboard Coach", response_cache_ttl_seconds=0)
    for question in LIKED:
        await rate(http, setup, (await chat(http, setup, question))["message_id"], True)
    for n, (question, comment) in enumerate(COMPLAINTS):
        message_id = (await chat(http, setup, question))["message_id"]
        if n:
            await rate(http, setup, message_id, False, comment)
        else:  # a thumbs up, then one star: the rating is the client's verdict (a thumbs up counted before)
            await rate(http, setup, message_id, True, comment, rating=1)
    handed = await chat(http, setup, "Can I talk to a real person please?")
    assert handed["handoff"]["reason"] == "human_request"
    # the handoff notice is the product's text, not a reply (the widget shows it without thumbs): rating it is
    # refused, and one rated before (stored here directly) stays out of the approval rate and the failures
    notice = handed["message_id"]
    refused = await http.post(
        f"/api/v1/messages/{notice}/feedback", headers=setup.client_auth, json={"helpful": False, "text": "bad"}
    )
    assert refused.status_code == 400 and "cannot be rated" in refused.json()["detail"], refused.text
    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        stored = await session.get_one(Message, uuid.UUID(notice))
        assert "notice" in stored.meta and "feedback" not in stored.meta
        rated_before = {"helpful": False, "rating": None, "text": "Useless notice about sleep", "at": "2026-12-01"}
        stored.meta = dict(stored.meta) | {"feedback": rated_before}

    # the apology after the provider failed is the product's text too: its thumbs down judges the provider, which
    # the dashboard's model-failure line shows, not the clone (it was counted, found by a misbehaving-provider run)
    streaming = llm_api["completions"].side_effect
    llm_api["completions"].mock(side_effect=None, return_value=openai_error(500, "boom", "server_error", None))
    apology = await chat(http, setup, "Why can I not sleep before exams?")
    llm_api["completions"].mock(side_effect=streaming)
    await rate(http, setup, apology["message_id"], False, "No answer about my sleep at all")

    response = await http.get("/api/v1/learning/dashboard", headers=setup.coach.headers, params={"days": 7})
    assert response.status_code == 200, response.text
    figures = response.json()
    assert figures["approval"]["overall"] == {"rated": 8, "thumbs_up": 4, "rate": 0.5}
    assert figures["health"] == "needs_improvement"
    assert len(figures["approval"]["per_day"]) == 7 and figures["approval"]["per_day"][-1]["rated"] == 8
    assert figures["approval"]["per_mode"] == {"auto": {"rated": 8, "thumbs_up": 4, "rate": 0.5}}
    assert figures["approval"]["per_topic"] == {"no material": {"rated": 8, "thumbs_up": 4, "rate": 0.5}}

    patterns = figures["failure_patterns"]
    assert [p["size"] for p in patterns] == [2, 2], patterns
    assert all(p["example"]["comment"] for p in patterns)
    words = [" ".join(p["key_phrases"]) + p["example"]["client"] for p in patterns]
    assert sorted(("sleep" in w or "insomnia" in w, "debt" in w or "savings" in w) for w in words) == [
        (False, True),
        (True, False),
    ]

    assert figures["handoffs"]["total"] == 1 and figures["handoffs"]["client_messages"] == 10
    assert figures["handoffs"]["reasons"] == [
        {"reason": "human_request", "label": "Client asked for a human", "count": 1}
    ]
    assert figures["cache"]["hits"] == 0 and figures["readiness"]["ready"] is False

    await log_in(browser, setup.coach)
    page = await browser.get("/dashboard/learning")
    assert page.status_code == 200
    assert page.text.count("<svg") >= 3 and "Needs improvement" in page.text
    assert "insomnia" in page.text or "sleep" in page.text

    # the clusters are kept until the thumbs-down replies change
    url, params = "/api/v1/learning/dashboard", {"days": 7}
    assert (await http.get(url, headers=setup.coach.headers, params=params)).json()["failure_patterns"] == patterns
    extra = await chat(http, setup, "Another sleepless night, I keep waking up at 4 am.")
    await rate(http, setup, extra["message_id"], False, "Still no help with my sleep")
    grown = (await http.get(url, headers=setup.coach.headers, params=params)).json()["failure_patterns"]
    assert sorted(p["size"] for p in grown) == [2, 3]

    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        money = Message.text.in_([question for question, _ in COMPLAINTS[2:]])
        await session.execute(update(Message).where(money).values(forgotten_at=func.now()))
    kept = (await http.get(url, headers=setup.coach.headers, params=params)).json()["failure_patterns"]
    assert [p["size"] for p in kept] == [3], kept
    assert not any(word in json.dumps(kept) for word in ("debt", "savings", "bills", "money")), kept

    other = await new_setup("Empty Coach")
    empty = (await http.get("/api/v1/learning/dashboard", headers=other.coach.headers)).json()
    assert empty["approval"]["overall"]["rated"] == 0 and empty["health"] is None
    assert empty["failure_patterns"] == [] and empty["handoffs"]["total"] == 0
    async with httpx.AsyncClient(base_url=str(browser.base_url), timeout=60) as fresh:
        await log_in(fresh, other.coach)
        empty_page = await fresh.get("/dashboard/learning")
    assert empty_page.status_code == 200 and "No rated replies yet" in empty_page.text
    assert "<svg" not in empty_page.text and "insomnia" not in empty_page.text


async def test_the_coachs_preview_chat_is_no_learning_data(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The coach tries the clone as "Preview (you)": likes two replies, dislikes one, asks for a human, under a
    running experiment. None of it counts: not in the approval figures, the failure patterns, the handoff rate,
    the experiment's arms, nor as training examples (a preview thumbs-up counted as a client's, and became an
    SFT example uploaded in the next fine-tune); the coach's own answer there after taking over is no
    intervention. The real client's liked reply does count."""
    setup = await new_setup("Preview Coach", response_cache_ttl_seconds=0)
    experiment = {"name": "warmer", "metric": "thumbs_up_rate", "variants": [{"name": "a"}, {"name": "b"}]}
    created = await http.post("/api/v1/learning/experiments", headers=setup.coach.headers, json=experiment)
    assert created.status_code == 201, created.text
    async with unit_of_work(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as uow:
        preview, token = await container.accounts.preview_client(uow)
    tried = Setup(setup.coach, str(preview.id), token)
    await rate(http, setup, (await chat(http, setup, LIKED[0]))["message_id"], True)
    for question in LIKED[1:3]:
        await rate(http, tried, (await chat(http, tried, question))["message_id"], True)
    question, comment = COMPLAINTS[0]
    await rate(http, tried, (await chat(http, tried, question))["message_id"], False, comment)
    handed = await chat(http, tried, "Can I talk to a real person please?")
    assert handed["handoff"]["reason"] == "human_request"
    url = f"/api/v1/conversations/{handed['conversation_id']}"
    assert (await http.post(f"{url}/takeover", headers=setup.coach.headers)).status_code == 200
    answer = {"text": "Breathe in for four counts, then out for six."}
    assert (await http.post(f"{url}/messages", headers=setup.coach.headers, json=answer)).status_code == 201
    await run_jobs()
    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        assert await session.scalar(select(func.count()).select_from(Intervention)) == 0

    response = await http.get("/api/v1/learning/dashboard", headers=setup.coach.headers)
    assert response.status_code == 200, response.text
    figures = response.json()
    assert figures["approval"]["overall"] == {"rated": 1, "thumbs_up": 1, "rate": 1.0}
    assert figures["failure_patterns"] == []
    assert (figures["handoffs"]["total"], figures["handoffs"]["client_messages"]) == (0, 1)
    assert sum(arm["trials"] for arm in figures["experiments"][0]["results"]) == 1
    assert figures["training"]["total"] == 1
    export = await http.get("/api/v1/learning/export", headers=setup.coach.headers, params={"format": "sft"})
    assert export.status_code == 200 and LIKED[0] in export.text
    assert not any(text in export.text for text in (*LIKED[1:3], answer["text"])), "the preview's are no examples"


async def test_the_dashboard_shows_without_the_embedder_and_redis(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coach's embedder fails (an expired key, a provider outage), then Redis is out of reach too: the
    learning dashboard still shows, saying the failure patterns (and the cache figures) are not available now.
    Before, the API and the page were a bare 500."""
    setup = await new_setup("Degraded Dashboard Coach", response_cache_ttl_seconds=0)
    for question, comment in COMPLAINTS[:2]:
        await rate(http, setup, (await chat(http, setup, question))["message_id"], False, comment)
    await log_in(browser, setup.coach)

    async def embed_fails(self: Any, texts: list[str]) -> list[list[float]]:
        raise ProviderError("embeddings failed: AuthenticationError: HTTP 401")

    monkeypatch.setattr(MiniLMEmbedder, "embed", embed_fails)
    response = await http.get("/api/v1/learning/dashboard", headers=setup.coach.headers, params={"days": 7})
    assert response.status_code == 200, response.text
    assert response.json()["failure_patterns"] is None
    assert response.json()["approval"]["overall"]["rated"] == 2, "the rest is there"
    page = await browser.get("/dashboard/learning")
    assert page.status_code == 200 and "your embedding model could not be" in page.text, page.text

    def redis_out(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("Connection refused")

    # this process's own services (the served app's sessions live in the same Redis)
    monkeypatch.setattr(container.redis, "pipeline", redis_out)
    monkeypatch.setattr(container.redis, "get", redis_out)
    async with unit_of_work(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as uow:
        figures = await container.learning_dashboard.figures(uow, days=7)
    assert figures["cache"]["available"] is False and figures["failure_patterns"] is None


async def test_bad_dashboard_requests_get_clear_errors(
    http: httpx.AsyncClient, browser: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]]
) -> None:
    setup = await new_setup("Picky Coach")
    for days in ("0", "366", "soon"):
        response = await http.get("/api/v1/learning/dashboard", headers=setup.coach.headers, params={"days": days})
        assert response.status_code == 400, days
    assert (
        "days must be"
        in (await http.get("/api/v1/learning/dashboard", headers=setup.coach.headers, params={"days": 0})).json()[
            "detail"
        ]
    )
    assert (await http.get("/api/v1/learning/dashboard")).status_code == 401
    page = await browser.get("/dashboard/learning")
    assert page.status_code in (302, 303) and page.headers["location"] == "/login"

    # the pages themselves: a page saying why, with a way back, not the API's JSON
    await log_in(browser, setup.coach)
    html = {"Accept": "text/html"}
    for url in ("/dashboard/learning?days=0", "/dashboard/learning?days=366", "/dashboard/learning/export?format=zzz"):
        refused = await browser.get(url, headers=html)
        assert refused.status_code == 400 and refused.headers["content-type"].startswith("text/html"), url
        assert "This page cannot be shown" in refused.text and "must be" in refused.text, url


async def test_the_settings_page_saves_the_learning_settings_and_rejects_bad_ones(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Learning Settings Coach")
    await log_in(browser, coach)
    token = await csrf(browser, "/dashboard/settings")
    form = HANDOFF_FORM | {
        "alert_email": "",  # no confirmation to the address the settings test counts (ALERT_EMAIL_ADDRESS_LIMIT)
        "llm_provider": "openai",  # the local model cannot be fine-tuned
        "llm_model": "gpt-4o-mini",
        "learning_form": "1",
        "fine_tune_enabled": "1",
        "fine_tune_min_examples": "120",
        "fine_tune_min_days": "14",
        "fine_tune_base_model": "gpt-4.1-mini-2025-04-14",
        "judge_model": "gpt-4o",
        "response_cache_ttl_seconds": "3600",
        "_csrf_token": token,
    }
    saved = await browser.post("/dashboard/settings", data=form)
    assert saved.status_code == 200 and "Saved." in saved.text, saved.text
    # OpenAI's own endpoint without a key: said at once, no test message sent (no request leaves this machine)
    assert "Your model did not answer a test message: no API key" in saved.text
    api = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert (api["fine_tune_enabled"], api["fine_tune_min_examples"], api["fine_tune_min_days"]) == (True, 120, 14)
    assert (api["fine_tune_base_model"], api["judge_model"], api["response_cache_ttl_seconds"]) == (
        "gpt-4.1-mini-2025-04-14",
        "gpt-4o",
        3600,
    )
    for changes, message in [
        ({"fine_tune_min_examples": "0"}, "fine_tune_min_examples must be a whole number from 1 to 100000"),
        ({"fine_tune_min_days": "soon"}, "fine_tune_min_days must be a whole number from 0 to 365"),
        ({"response_cache_ttl_seconds": "-1"}, "response_cache_ttl_seconds must be a whole number"),
        ({"judge_model": "gpt 4o"}, "judge_model must be a model name"),
    ]:
        bad = await browser.post("/dashboard/settings", data=form | {"name": "Renamed"} | changes)
        assert bad.status_code == 400 and message in bad.text, (changes, bad.status_code)
        assert (await http.get("/api/v1/settings", headers=coach.headers)).json() == api, "nothing changed"

    off = {k: v for k, v in form.items() if k != "fine_tune_enabled"} | {"judge_model": ""}
    assert (await browser.post("/dashboard/settings", data=off)).status_code == 200
    api = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert api["fine_tune_enabled"] is False and api["judge_model"] is None
