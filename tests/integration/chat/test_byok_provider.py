"""Bring-your-own-key: a coach points chat at an OpenAI-compatible endpoint with their own key.

The app runs for real (uvicorn, PostgreSQL, local embedder for retrieval); only the coach's endpoint
``https://llm.example.test/v1`` is mocked with respx, answering in the OpenAI API's wire format. Loopback
traffic (this test's HTTP client talking to the app) passes through.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.chat.spotlight import unmark
from app.chat.turn.generate import APOLOGY, MAX_CHARS_PER_TOKEN
from app.chat.turn.injection import HELD_WORDS
from app.chat.turn.state import TEMPERATURE
from app.core.config import Settings
from app.core.runtime import Services
from app.core.security import SecretBox
from app.handoff.catalogue import say
from app.handoff.crisis import crisis_reply
from tests.conftest import Coach, make_client, upload, ws_turn
from tests.integration.web.test_dashboard import csrf, log_in
from tests.openai_wire import SDK_HTTPCORE, mock_openai, openai_error, openai_sse, sse_response

LLM_BASE_URL = "https://llm.example.test/v1"
COMPLETIONS_URL = f"{LLM_BASE_URL}/chat/completions"
LLM_MODEL = "gpt-4o-mini"
LLM_KEY = f"sk-test-{secrets.token_hex(20)}"
DELTAS = ["Take", " two", " minutes", ":", " breathe", " out", " slowly", "."]
USAGE = (187, 9)
QUESTION = "How do I reset when the morning goes badly?"
MATERIAL = (
    b"# The Two-Minute Reset\n\n"
    b"When the morning goes badly, stop for two minutes. Breathe out slowly, name one thing you can "
    b"control, and take the smallest next step toward it. This is the two-minute reset.\n"
)


@dataclass
class ByokCoach:
    """A fresh coach with one ingested note and one client, switched to the mocked endpoint."""

    coach: Coach
    document_id: str
    widget_token: str
    settings_response: httpx.Response

    @property
    def client_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.widget_token}"}


@pytest.fixture(scope="module")
async def byok(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> ByokCoach:
    coach = await make_coach("BYOK Coach")
    doc = await upload(http, coach, "two-minute-reset.md", MATERIAL)
    await run_jobs()
    status = (await http.get(f"/api/v1/documents/{doc['id']}", headers=coach.headers)).json()
    assert status["status"] == "ready", status
    client = await make_client(http, coach)
    response = await http.patch(
        "/api/v1/settings",
        headers=coach.headers,
        json={
            "llm_provider": "openai",
            "llm_model": LLM_MODEL,
            "llm_base_url": LLM_BASE_URL,
            "llm_api_key": LLM_KEY,
            # every turn here tests the call to the endpoint: the same question must not come from the cache
            "response_cache_ttl_seconds": 0,
        },
    )
    return ByokCoach(coach, doc["id"], client["widget_token"], response)


@pytest.fixture
def llm_api() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, mocked; requests to the app on 127.0.0.1 go through untouched."""
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        yield router


async def transcript(http: httpx.AsyncClient, byok: ByokCoach, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's messages as the coach's API shows them."""
    response = await http.get(f"/api/v1/conversations/{conversation_id}", headers=byok.coach.headers)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


async def stored_key(services: Services, byok: ByokCoach) -> bytes:
    """The coach's ``llm_api_key_encrypted`` as the database holds it (``b""`` when none)."""
    engine = create_async_engine(services.migration_database_url)
    try:
        async with engine.connect() as conn:
            stored = await conn.scalar(
                text("SELECT llm_api_key_encrypted FROM coaches WHERE id = :id"), {"id": uuid.UUID(byok.coach.coach_id)}
            )
    finally:
        await engine.dispose()
    return bytes(stored or b"")


async def test_settings_keep_the_key_encrypted_and_never_return_it(
    http: httpx.AsyncClient, byok: ByokCoach, services: Services, settings: Settings
) -> None:
    """PATCH and GET /settings show only that a key is set and a masked hint; the database holds a Fernet
    token that decrypts to the key and does not contain it in clear."""
    patched = byok.settings_response
    assert patched.status_code == 200, patched.text
    fetched = await http.get("/api/v1/settings", headers=byok.coach.headers)
    assert fetched.status_code == 200
    for response in (patched, fetched):
        assert LLM_KEY not in response.text
        body = response.json()
        assert "llm_api_key" not in body
        assert body["llm_provider"] == "openai"
        assert body["llm_model"] == LLM_MODEL
        assert body["llm_base_url"] == LLM_BASE_URL
        assert body["llm_api_key_set"] is True
        hint = body["llm_api_key_hint"]
        assert hint.endswith(LLM_KEY[-4:])
        assert LLM_KEY[3:-4] not in hint

    stored = await stored_key(services, byok)
    assert stored, "the key must be stored"
    assert LLM_KEY.encode() not in stored
    assert LLM_KEY[8:].encode() not in stored
    assert SecretBox(settings.secret_key).decrypt(stored) == LLM_KEY


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("sk-\U000f6b80P\u00ef", id="not-ascii"),
        pytest.param("sk-proj abc", id="a-space"),
        pytest.param("sk-\x07bell", id="control-character"),
        pytest.param("sk-" + "a" * 1022, id="too-long"),
    ],
)
async def test_a_key_no_http_header_can_carry_is_refused_and_the_stored_key_kept(
    http: httpx.AsyncClient, byok: ByokCoach, services: Services, settings: Settings, key: str
) -> None:
    """A key that could never be sent in ``Authorization: Bearer …`` (every chat turn would fail) is a 400
    naming the field; the settings sent with it and the key stored before are kept as they were."""
    response = await http.patch(
        "/api/v1/settings", headers=byok.coach.headers, json={"persona": "Changed.", "llm_api_key": key}
    )

    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("llm_api_key must be 1 to 1024 visible ASCII characters")
    assert key not in response.text
    fetched = (await http.get("/api/v1/settings", headers=byok.coach.headers)).json()
    assert fetched["persona"] != "Changed."
    assert fetched["llm_api_key_hint"].endswith(LLM_KEY[-4:])
    assert SecretBox(settings.secret_key).decrypt(await stored_key(services, byok)) == LLM_KEY


async def test_chat_turn_uses_the_coachs_endpoint_and_key(
    http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter, settings: Settings
) -> None:
    """The turn is sent to the coach's endpoint with the decrypted key and the grounded prompt; the reply
    is the streamed deltas joined, with provider, model and reported usage in its metadata."""
    route = llm_api.post(COMPLETIONS_URL).mock(return_value=sse_response(openai_sse(DELTAS, usage=USAGE)))

    response = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": QUESTION})

    assert response.status_code == 200, response.text
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {LLM_KEY}"
    sent = json.loads(request.content)
    assert sent["model"] == LLM_MODEL
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == settings.llm_max_tokens
    assert sent["temperature"] == TEMPERATURE
    assert sent["messages"][0]["role"] == "system"
    assert "BYOK Coach" in sent["messages"][0]["content"]  # the default persona names the coach
    assert "two-minute reset" in unmark(sent["messages"][0]["content"]), "the coach's material must be in the prompt"
    assert sent["messages"][-1] == {"role": "user", "content": QUESTION}

    body = response.json()
    assert body["reply"] == "".join(DELTAS)
    assert body["metadata"] == {}, "attribution is the coach's: the client sees only client_view"
    assert [c["document_id"] for c in body["citations"]] == [byok.document_id]

    messages = await transcript(http, byok, body["conversation_id"])
    assert [(m["sender_type"], m["text"]) for m in messages] == [("client", QUESTION), ("ai", "".join(DELTAS))]
    assert messages[1]["id"] == body["message_id"]
    meta = messages[1]["metadata"]
    assert meta["provider"] == "openai"
    assert meta["model"] == LLM_MODEL
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == USAGE
    assert "error" not in meta


async def test_websocket_streams_the_reply_as_it_is_generated(
    base_url: str, byok: ByokCoach, llm_api: respx.MockRouter
) -> None:
    """Over the widget socket the reply arrives in token events while the endpoint streams it, in order and
    whole, :data:`HELD_WORDS` words behind the model (the output check reads them first): a reply that short
    comes at the end in one event."""
    words = [f" step{i}" for i in range(3 * HELD_WORDS)]
    llm_api.post(COMPLETIONS_URL).mock(return_value=sse_response(openai_sse(words, usage=USAGE)))

    events = await ws_turn(base_url, byok.widget_token, QUESTION)

    tokens = [e["text"] for e in events[:-1]]
    assert "".join(tokens) == "".join(words) and len(tokens) > 2 * HELD_WORDS, tokens
    assert "step0" in tokens[1] and tokens[-1] == "".join(words[2 * HELD_WORDS :]).strip()
    assert events[-1]["type"] == "done", events[-1]
    assert events[-1]["reply"] == "".join(words).strip() and events[-1]["metadata"] == {}

    llm_api.post(COMPLETIONS_URL).mock(return_value=sse_response(openai_sse(DELTAS, usage=USAGE)))
    events = await ws_turn(base_url, byok.widget_token, QUESTION)
    assert [e["text"] for e in events[:-1]] == ["".join(DELTAS)]


@pytest.mark.parametrize(
    ("answer", "attempts", "error"),
    [
        pytest.param(
            openai_error(500, "The server had an error while processing your request.", "server_error", None),
            2,
            "InternalServerError",
            id="http-500",
        ),
        pytest.param(httpx.ReadTimeout("timed out"), 2, "APITimeoutError", id="timeout"),
        pytest.param(SDK_HTTPCORE.ReadTimeout("timed out"), 2, "APITimeoutError", id="transport-timeout"),
        pytest.param(
            openai_error(
                401,
                f"Incorrect API key provided: sk-test-****{LLM_KEY[-4:]}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            ),
            1,
            "AuthenticationError",
            id="http-401",
        ),
        pytest.param(  # a base URL that reaches a web site or a proxy's login page
            httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>Sign in</html>"),
            1,
            "APIResponseValidationError",
            id="web-page",
        ),
        pytest.param(sse_response(b"data: <p>not json</p>\n\n"), 1, "APIResponseValidationError", id="event-not-json"),
    ],
)
async def test_provider_failure_gives_a_persisted_apology(
    http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter, answer: Any, attempts: int, error: str
) -> None:
    """When the endpoint fails the client still gets 200 with the apology; both messages are stored and
    the AI message records the error (never the key)."""
    route = llm_api.post(COMPLETIONS_URL)
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)

    response = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": QUESTION})

    assert response.status_code == 200, response.text
    assert route.call_count == attempts
    assert LLM_KEY not in response.text
    body = response.json()
    assert body["reply"] == APOLOGY
    assert body["citations"] == []
    assert body["metadata"] == {"failed": True}, "provider error details are for the coach only"

    messages = await transcript(http, byok, body["conversation_id"])
    assert [(m["sender_type"], m["text"]) for m in messages] == [("client", QUESTION), ("ai", APOLOGY)]
    stored = messages[1]["metadata"]
    assert stored["provider"] == "openai" and stored["model"] == LLM_MODEL
    assert stored["error"].startswith(f"{error}:")
    assert stored["partial_reply"] == "" and "completion_tokens" not in stored


async def test_the_question_asked_again_after_a_failed_reply_is_sent_without_the_apology(
    http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter
) -> None:
    """The apology says "try again": the question asked again goes to the model with the earlier question but not
    the apology (shown it, a model answers with it), and the answer that follows stays in later prompts."""
    route = llm_api.post(COMPLETIONS_URL)
    route.side_effect = [httpx.Response(500), httpx.Response(500), sse_response(openai_sse(DELTAS))]
    failed = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": QUESTION})
    assert failed.status_code == 200 and failed.json()["reply"] == APOLOGY, failed.text
    conversation = {"conversation_id": failed.json()["conversation_id"]}

    again = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": QUESTION} | conversation)
    assert again.status_code == 200 and again.json()["reply"] == "".join(DELTAS), again.text
    sent = json.loads(route.calls.last.request.content)["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [("user", QUESTION), ("user", QUESTION)]

    route.side_effect = [sse_response(openai_sse(DELTAS))]
    await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": "And then?"} | conversation)
    sent = json.loads(route.calls.last.request.content)["messages"]
    assert [m["role"] for m in sent[1:]] == ["user", "user", "assistant", "user"]
    assert APOLOGY not in json.dumps(sent)


async def test_a_reply_the_content_filter_stopped_is_never_cached_for_the_next_client(
    base_url: str, http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter
) -> None:
    """The provider's content filter stops a reply after a few words: the client gets the apology, and the
    fragment is neither stored as the reply nor cached. Before, "I will tell you how to" was stored whole, cached,
    and served from the cache to the next client who asked the same (found by a run against a misbehaving
    provider)."""
    cache_on = await http.patch(
        "/api/v1/settings", headers=byok.coach.headers, json={"response_cache_ttl_seconds": 3600}
    )
    assert cache_on.status_code == 200, cache_on.text
    route = llm_api.post(COMPLETIONS_URL).mock(
        side_effect=[
            sse_response(openai_sse(DELTAS[:3], (40, 3), finish_reason="content_filter")),
            sse_response(openai_sse(DELTAS, (40, len(DELTAS)))),
        ]
    )

    first = await ws_turn(base_url, byok.widget_token, QUESTION)
    assert first[-1]["reply"] == APOLOGY and first[-1]["metadata"]["failed"] is True
    other = await make_client(http, byok.coach, "Next Client")
    second = await ws_turn(base_url, other["widget_token"], QUESTION)
    assert second[-1]["reply"] == "".join(DELTAS).strip(), "the model answers again: no fragment was cached"
    assert route.call_count == 2
    cache_off = await http.patch("/api/v1/settings", headers=byok.coach.headers, json={"response_cache_ttl_seconds": 0})
    assert cache_off.status_code == 200, "as the module's other tests expect"


@pytest.mark.parametrize(
    ("language", "question"),
    [
        ("es", "¿Cómo puedo organizar mejor mi semana de trabajo?"),
        ("de", "Wie kann ich meine Arbeitswoche besser planen?"),
    ],
)
async def test_the_apology_for_a_failed_answer_is_in_the_clients_language(
    http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter, language: str, question: str
) -> None:
    """The provider refuses the coach's key: a client writing Spanish or German read the apology in English,
    though every other product text they meet is in their language (found by a run against a misbehaving
    provider)."""
    llm_api.post(COMPLETIONS_URL).mock(
        return_value=openai_error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    )

    response = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": question})

    assert response.status_code == 200, response.text
    assert response.json()["reply"] == say("turn_apology", language) != APOLOGY


async def test_the_dashboard_tells_the_coach_their_model_is_failing_until_it_answers_again(
    base_url: str, http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter
) -> None:
    """The coach's key was refused: every client got the apology, and the coach learnt nothing unless they opened a
    transcript's details (found by a run against a misbehaving provider). Every dashboard page now says how many
    replies failed since when, and why; the model's next reply takes it away."""
    route = llm_api.post(COMPLETIONS_URL).mock(
        return_value=openai_error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    )
    for question in (QUESTION, "And in the evening?"):
        failed = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": question})
        assert failed.json()["reply"] == APOLOGY
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as browser:
        await log_in(browser, byok.coach)
        page = " ".join((await browser.get("/dashboard/inbox")).text.split())
        # (the fixture's coach is the module's: earlier tests' failures count too)
        assert re.search(r"Your AI could not answer \d+ messages since \d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
        assert "invalid_api_key: the endpoint refused the API key" in page

        route.mock(return_value=sse_response(openai_sse(DELTAS, (40, len(DELTAS)))))
        answered = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": "Thanks, and now?"})
        assert answered.json()["reply"] == "".join(DELTAS)
        assert "Your AI could not answer" not in (await browser.get("/dashboard/inbox")).text


async def test_saving_a_model_in_the_dashboard_tests_it_and_says_when_it_does_not_answer(
    base_url: str, http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter
) -> None:
    """A wrong key was saved without a word: the coach learnt it only once clients had got apologies (found by a run
    against a misbehaving provider). Saving the model now sends it a one-token test message and says whether it
    answered; a save that does not change the model sends nothing."""
    route = llm_api.post(COMPLETIONS_URL).mock(
        return_value=openai_error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    )
    model = {"llm_provider": "openai", "llm_model": LLM_MODEL, "llm_base_url": LLM_BASE_URL, "llm_api_key": LLM_KEY}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as browser:
        await log_in(browser, byok.coach)
        token = await csrf(browser, "/dashboard/settings")

        async def save(fields: dict[str, str]) -> str:
            form = {"section": "advanced", "_csrf_token": token, **fields}
            response = await browser.post("/dashboard/settings", data=form)
            assert response.status_code == 200, response.text
            return " ".join(response.text.split())

        refused = await save(model)
        assert "Saved." in refused and "Your model did not answer a test message: AuthenticationError" in refused
        assert "invalid_api_key: the endpoint refused the API key" in refused
        body = json.loads(route.calls.last.request.content)
        assert (body["max_tokens"], body["messages"]) == (1, [{"role": "user", "content": "Hello"}])

        route.mock(return_value=sse_response(openai_sse(["Hi"], (8, 1), finish_reason="length")))
        answered = await save(model)
        assert "Saved. Your model answered a test message." in answered and "did not answer" not in answered
        asked = route.call_count

        unchanged = await save({k: v for k, v in model.items() if k != "llm_api_key"})  # the key field left empty
        assert "Saved." in unchanged and "test message" not in unchanged and route.call_count == asked


async def test_a_model_that_ignores_max_tokens_is_stopped_at_the_replys_length_limit(
    http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter, settings: Settings
) -> None:
    """A server ignoring ``max_tokens`` streamed 50,000 characters, all stored, streamed and cached (found by a run
    against a misbehaving provider). The reply stops at ``MAX_CHARS_PER_TOKEN`` characters a token of the limit,
    cut back to its last sentence and marked truncated, as at the token limit."""
    llm_api.post(COMPLETIONS_URL).mock(return_value=sse_response(openai_sse(["I hear you. "] * 5000, (40, 20))))

    response = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": QUESTION})

    reply = response.json()["reply"]
    limit = settings.llm_max_tokens * MAX_CHARS_PER_TOKEN
    assert reply.endswith("I hear you.") and limit - len("I hear you. ") <= len(reply) <= limit
    [*_, stored] = await transcript(http, byok, response.json()["conversation_id"])
    assert stored["metadata"]["truncated"] is True


async def test_stream_broken_mid_reply_keeps_the_partial_text_in_metadata(
    base_url: str, http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter
) -> None:
    """A connection that drops after a few deltas (held back: fewer than :data:`HELD_WORDS` words): the widget
    sees the apology alone; the stored reply is the apology and the partial text is kept in the metadata."""

    class Dropped(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield openai_sse(DELTAS[:3], complete=False)
            raise SDK_HTTPCORE.ReadError("Connection reset by peer")

    llm_api.post(COMPLETIONS_URL).mock(
        return_value=httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Dropped())
    )

    events = await ws_turn(base_url, byok.widget_token, QUESTION)

    assert [e["text"] for e in events[:-1]] == [APOLOGY]
    done = events[-1]
    assert done["type"] == "done", done
    assert done["reply"] == APOLOGY
    assert done["metadata"]["failed"] is True and "error" not in done["metadata"]
    messages = await transcript(http, byok, done["conversation_id"])
    assert [(m["sender_type"], m["text"]) for m in messages] == [("client", QUESTION), ("ai", APOLOGY)]
    assert messages[1]["metadata"]["partial_reply"] == "".join(DELTAS[:3])
    assert messages[1]["metadata"]["error"].startswith("APIConnectionError:")


@pytest.mark.parametrize(
    "message",
    ["I want to kill myself tonight", "I have pills saved up and I am going to take them all"],
)
async def test_crisis_message_gets_the_safe_reply_even_with_the_provider_down(
    http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter, services: Services, message: str
) -> None:
    """A crisis message never reaches the model: the client at once gets the caring reply with crisis
    resources (the endpoint is down and must not be called), the conversation is flagged urgent, and the
    risk details are stored for the coach but not shown to the client."""
    route = llm_api.post(COMPLETIONS_URL).mock(return_value=openai_error(503, "overloaded", "server_error", None))

    response = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": message})

    assert response.status_code == 200, response.text
    assert route.call_count == 0, "the crisis reply does not wait for the model"
    body = response.json()
    assert body["reply"] == crisis_reply("BYOK Coach")
    assert "988" in body["reply"] and "116 123" in body["reply"] and "emergency" in body["reply"]
    assert body["metadata"]["crisis"] is True and "risk" not in body["metadata"]

    messages = await transcript(http, byok, body["conversation_id"])
    assert [(m["sender_type"], m["text"]) for m in messages] == [("client", message), ("ai", body["reply"])]
    stored = messages[1]["metadata"]
    assert stored["handoff_reason"] == "crisis" and stored["risk"]["cues"], stored
    engine = create_async_engine(services.migration_database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT urgent_at, urgent_reason FROM conversations WHERE id = :id"),
                    {"id": body["conversation_id"]},
                )
            ).one()
    finally:
        await engine.dispose()
    assert row.urgent_at is not None and row.urgent_reason.startswith("crisis:")
    # the coach hands back: while the crisis handoff is active every message of the client goes to its conversation
    url = f"/api/v1/conversations/{body['conversation_id']}/handback"
    assert (await http.post(url, headers=byok.coach.headers)).status_code == 200


async def test_an_ordinary_message_is_not_treated_as_a_crisis(
    http: httpx.AsyncClient, byok: ByokCoach, llm_api: respx.MockRouter
) -> None:
    """Idioms with death words never start the crisis protocol: a glad one gets the model's reply; a
    stressed one ("this deadline is killing me", VADER −0.66, little support from the material) may go to the
    coach as a low-confidence turn, but never as a crisis."""
    llm_api.post(COMPLETIONS_URL).mock(return_value=sse_response(openai_sse(DELTAS, USAGE)))
    glad = {"text": "I'm dying to try the two-minute reset tomorrow"}
    response = await http.post("/api/v1/chat", headers=byok.client_auth, json=glad)
    assert response.status_code == 200, response.text
    assert response.json()["reply"] == "".join(DELTAS)
    assert "crisis" not in response.json()["metadata"]
    response = await http.post("/api/v1/chat", headers=byok.client_auth, json={"text": "This deadline is killing me"})
    assert response.status_code == 200, response.text
    assert "crisis" not in response.json()["metadata"]
    assert (response.json().get("handoff") or {}).get("reason") != "crisis"
