"""The learning loop inside the chat turn, through the real app: the response cache (hit, persona and document
invalidation), the production model version with its fallback to the base model, an experiment's variant,
the coach's own interventions as few-shot examples, and feedback on the coach's messages.

Only the coach's OpenAI-compatible endpoint is mocked (OpenAI wire format); requests are inspected for the
model, temperature and prompt the turn sent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import respx

from app.chat.spotlight import unmark
from app.container import Container
from app.db.engine import tenant_session
from app.learning.models import Experiment, ModelVersion, ModelVersionStatus
from tests.conftest import upload
from tests.integration.handoff.test_handoff_flow import Setup, chat, llm_api, new_setup, transcript
from tests.openai_wire import MOCK_BASE_URL, openai_error, openai_sse, sse_response

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below


async def stored(http: httpx.AsyncClient, setup: Setup, body: dict[str, Any]) -> dict[str, Any]:
    """The stored metadata of a turn's reply, as the coach reads it (the client sees only ``client_view``)."""
    messages = await transcript(http, setup, body["conversation_id"])
    [meta] = [msg["metadata"] for msg in messages if msg["id"] == body["message_id"]]
    return meta  # type: ignore[no-any-return]


def requests(router: respx.MockRouter) -> list[dict[str, Any]]:
    """The JSON bodies the coach's endpoint received, oldest first."""
    return [json.loads(call.request.content) for call in router.routes["completions"].calls]


async def test_the_same_prompt_is_answered_from_the_cache_until_the_persona_or_documents_change(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Two clients with no memory asking the same first question build the same prompt: the second reply
    comes from the cache without a model call. A new persona or a new document makes the next turn a miss."""
    setup = await new_setup("Cache Coach")
    other_client = (await http.post("/api/v1/clients", headers=setup.coach.headers, json={"name": "Sam"})).json()
    other = Setup(setup.coach, other_client["id"], other_client["widget_token"])
    question = "What is a good first step when I feel stuck?"

    first = await chat(http, setup, question)
    second = await chat(http, other, question)
    assert llm_api.routes["completions"].call_count == 1
    assert (await stored(http, setup, first))["cache"] == "miss"
    assert (await stored(http, other, second))["cache"] == "hit"
    assert second["reply"] == first["reply"]

    patched = await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"persona": "You are Kim."})
    assert patched.status_code == 200
    third = await chat(http, setup, question)
    assert (await stored(http, setup, third))["cache"] == "miss" and llm_api.routes["completions"].call_count == 2

    await upload(http, setup.coach, "notes.txt", b"Start with the smallest possible step.")
    await run_jobs()  # ingested: the coach's material changed
    fourth = await chat(http, other, question)
    assert (await stored(http, other, fourth))["cache"] == "miss" and llm_api.routes["completions"].call_count == 3

    # a personal history makes a different prompt: never a hit for another client's conversation. Asking the
    # same question again is also a frustration signal that could hand the turn to the coach: kept off here
    patched = await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"confidence_threshold": 0})
    assert patched.status_code == 200
    follow_up = await chat(http, setup, question, first["conversation_id"])
    assert (await stored(http, setup, follow_up))["cache"] == "miss"


async def test_a_thumbs_down_takes_the_reply_out_of_the_cache_for_good(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """A thumbs-up leaves a cached reply in the cache; a thumbs-down on it (here on a reply served from the
    cache) takes it out: the next client asking the same first question gets a new answer from the model, and
    that answer is not cached in its place either (the disliked one kept being served to every later client)."""
    setup = await new_setup("Disliked Cache Coach")

    async def ask(name: str) -> tuple[Setup, dict[str, Any]]:
        made = (await http.post("/api/v1/clients", headers=setup.coach.headers, json={"name": name})).json()
        client = Setup(setup.coach, made["id"], made["widget_token"])
        return client, await chat(http, client, "What is a good first step when I feel stuck?")

    async def rate(client: Setup, body: dict[str, Any], *, helpful: bool) -> None:
        url = f"/api/v1/messages/{body['message_id']}/feedback"
        rated = await http.post(url, headers=client.client_auth, json={"helpful": helpful})
        assert rated.status_code == 200, rated.text

    first_client, first = await ask("Ann")
    await rate(first_client, first, helpful=True)
    second_client, second = await ask("Ben")
    assert (await stored(http, second_client, second))["cache"] == "hit"
    assert llm_api.routes["completions"].call_count == 1

    await rate(second_client, second, helpful=False)
    for count, name in enumerate(("Cal", "Dee"), start=2):
        client, answer = await ask(name)
        assert (await stored(http, client, answer))["cache"] == "miss"
        assert llm_api.routes["completions"].call_count == count


async def test_the_production_model_serves_and_falls_back_to_the_base_model_on_error(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
) -> None:
    """With a production model version the turn asks the endpoint for that model; when the endpoint rejects
    it, the same turn is answered by the coach's base model and the fallback is recorded."""
    setup = await new_setup("Versioned Coach", response_cache_ttl_seconds=0)
    coach_id = uuid.UUID(setup.coach.coach_id)
    fine_tuned = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        version = ModelVersion(
            coach_id=coach_id,
            model=fine_tuned,
            base_model="gpt-4o-mini-2024-07-18",
            status=ModelVersionStatus.PRODUCTION,
        )
        session.add(version)
        await session.flush()
        version_id = str(version.id)

    served = await chat(http, setup, "How can I plan my week better?")
    assert requests(llm_api)[-1]["model"] == fine_tuned
    served_meta = await stored(http, setup, served)
    assert served_meta["model"] == fine_tuned and served_meta["model_version_id"] == version_id

    def by_model(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["model"] == fine_tuned:
            message = f"The model `{fine_tuned}` does not exist or you do not have access to it."
            return openai_error(404, message, "invalid_request_error", "model_not_found")
        return sse_response(openai_sse(["Plan", " one", " day."], (50, 3)))

    llm_api.post(f"{MOCK_BASE_URL}/chat/completions", name="completions").mock(side_effect=by_model)
    fallback = await chat(http, setup, "And how do I keep to the plan?", served["conversation_id"])
    assert fallback["reply"] == "Plan one day."
    fallback_meta = await stored(http, setup, fallback)
    assert fallback_meta["model"] == "gpt-4o-mini"
    assert fallback_meta["model_fallback"]["from"] == fine_tuned
    assert "model_version_id" not in fallback_meta, "the base model answered, not the version"
    assert [body["model"] for body in requests(llm_api)[-2:]] == [fine_tuned, "gpt-4o-mini"]


async def test_a_fallback_models_reply_is_not_cached_under_the_production_models_key(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
) -> None:
    """The production model fails and the base model answers a cacheable prompt: that reply is not cached (its
    key names the production model), so the next client asking the same first question gets the production
    model's own answer, not the base model's text under the production model's name."""
    setup = await new_setup("Fallback Cache Coach")
    other_client = (await http.post("/api/v1/clients", headers=setup.coach.headers, json={"name": "Sam"})).json()
    other = Setup(setup.coach, other_client["id"], other_client["widget_token"])
    coach_id, fine_tuned = uuid.UUID(setup.coach.coach_id), "ft:gpt-4o-mini-2024-07-18:acme::cache1"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        session.add(ModelVersion(coach_id=coach_id, model=fine_tuned, base_model="gpt-4o-mini-2024-07-18",
                                 status=ModelVersionStatus.PRODUCTION))  # fmt: skip
    fails = [True]

    def by_model(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["model"] == fine_tuned:
            if fails and fails.pop():  # once: the model was briefly not served
                message = f"The model `{fine_tuned}` does not exist or you do not have access to it."
                return openai_error(404, message, "invalid_request_error", "model_not_found")
            return sse_response(openai_sse(["Fine-tuned", " answer."], (50, 3)))
        return sse_response(openai_sse(["Base", " answer."], (50, 3)))

    llm_api.post(f"{MOCK_BASE_URL}/chat/completions", name="completions").mock(side_effect=by_model)
    question = "What is a good first step when I feel stuck?"
    first = await chat(http, setup, question)
    assert first["reply"] == "Base answer." and "model_fallback" in await stored(http, setup, first)
    second = await chat(http, other, question)
    assert (await stored(http, other, second))["cache"] == "miss"
    assert second["reply"] == "Fine-tuned answer."


async def test_an_experiment_variant_sets_the_model_call_and_is_recorded_on_the_reply(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """Each client gets one variant for the whole experiment; the request carries that variant's persona and
    temperature, and the reply's metadata names the experiment and variant."""
    setup = await new_setup("Experiment Coach", persona="You are Jo, a calm coach.")
    created = await http.post(
        "/api/v1/learning/experiments",
        headers=setup.coach.headers,
        json={
            "name": "warmth",
            "metric": "thumbs_up_rate",
            "variants": [
                {"name": "control"},
                {"name": "warm", "persona": "You are Jo, a very warm coach.", "temperature": 0.9},
            ],
        },
    )
    assert created.status_code == 201, created.text
    experiment_id = created.json()["id"]

    first = await chat(http, setup, "I keep putting off my tax return.")
    again = await chat(http, setup, "Any tip for today?", first["conversation_id"])
    assert "experiment" not in first["metadata"], "the client is not told about the experiment"
    variant = (await stored(http, setup, first))["experiment"]["variant"]
    assert (await stored(http, setup, first))["experiment"] == {"id": experiment_id, "variant": variant}
    assert (await stored(http, setup, again))["experiment"]["variant"] == variant
    body = requests(llm_api)[-1]
    system = body["messages"][0]["content"]
    if variant == "warm":
        assert body["temperature"] == 0.9 and system.startswith("You are Jo, a very warm coach.")
    else:
        assert body["temperature"] == 0.3 and system.startswith("You are Jo, a calm coach.")


async def test_a_variant_stored_with_a_blank_persona_serves_the_coachs_persona(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
) -> None:
    """An experiment stored before blank variant personas were refused: its arms with an empty or blank persona
    send the coach's own persona (the model is never left with no instructions), their other overrides apply and
    the reply still counts for its arm."""
    setup = await new_setup("Old Experiment Coach", persona="You are Jo, a calm coach.")
    coach_id = uuid.UUID(setup.coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        experiment = Experiment(
            coach_id=coach_id,
            name="blank arms",
            metric="thumbs_up_rate",
            variants=[{"name": "empty", "persona": "", "temperature": 0.9}, {"name": "blank", "persona": " \n "}],
        )
        session.add(experiment)
        await session.flush()
        experiment_id = str(experiment.id)

    reply = await chat(http, setup, "I keep putting off my tax return.")
    body = requests(llm_api)[-1]
    assert body["messages"][0]["content"].startswith("You are Jo, a calm coach.")
    variant = (await stored(http, setup, reply))["experiment"]
    assert variant["id"] == experiment_id
    assert body["temperature"] == (0.9 if variant["variant"] == "empty" else 0.3)


async def test_a_takeover_teaches_the_next_similar_turn_and_the_client_can_rate_the_coach(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The coach's reply during a takeover, once analysed by the worker, is offered to the model as an
    example when another client writes about the same situation (the situation described, none of the first
    client's words); clients can rate the coach's messages."""
    setup = await new_setup("Teaching Coach", response_cache_ttl_seconds=0)
    first = await chat(
        http, setup, "My manager criticised my report in front of everyone and I feel ashamed. I'm robin@example.com"
    )
    conversation_id = first["conversation_id"]
    coach_reply = "That sounds painful. What part of the criticism stung the most for you?"
    sent = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=setup.coach.headers, json={"text": coach_reply}
    )
    assert sent.status_code == 201, sent.text
    rated = await http.post(
        f"/api/v1/messages/{sent.json()['id']}/feedback", headers=setup.client_auth, json={"helpful": True, "rating": 5}
    )
    assert rated.status_code == 200 and rated.json()["rating"] == 5
    handback = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
    assert handback.status_code == 200
    await run_jobs()

    other_client = (await http.post("/api/v1/clients", headers=setup.coach.headers, json={"name": "Ada"})).json()
    other = Setup(setup.coach, other_client["id"], other_client["widget_token"])
    reply = await chat(http, other, "My boss criticised my work in a meeting and I felt so ashamed.")
    assert len((await stored(http, other, reply))["few_shot"]) == 1
    prompt = unmark(json.dumps(requests(llm_api)[-1]["messages"]))  # the example sits datamarked in a data block
    assert coach_reply in prompt
    # another client's words (and address) stay out: the example describes the situation instead
    assert "robin@example.com" not in prompt and "criticised my report" not in prompt
    assert "the client's message read negative" in prompt

    messages = await transcript(http, setup, conversation_id)
    assert [
        msg["metadata"].get("feedback", {}).get("rating") for msg in messages if msg["sender_type"] == "human_coach"
    ] == [5]
