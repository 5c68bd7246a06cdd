"""Handoff end to end through the real app: escalation rules, draft mode, takeover / handback with live
delivery to the widget, state across a restart, tenancy, the SLA holding message and bad input.

The app, PostgreSQL, Redis and the local embedder are real; only the coach's OpenAI-compatible endpoint is
mocked with respx in the OpenAI wire format, so replies are deterministic and calls can be counted.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
import websockets
from cryptography.fernet import Fernet
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from app.accounts.models import Coach as CoachRow
from app.accounts.unit_of_work import unit_of_work
from app.asgi import create_app
from app.chat.turn.generate import APOLOGY
from app.chat.turn.intake import Intake
from app.chat.turn.pipeline import ChatService
from app.chat.turn.state import TurnResult
from app.container import Container
from app.conversations.handoffs import Handoff, HandoffReason
from app.conversations.models import Message, SenderType
from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.core.security import SecretBox
from app.db.engine import tenant_session
from app.handoff.crisis import DEFAULT_CRISIS_RESOURCES, crisis_reasons_text, crisis_reply
from app.handoff.queue import coach_conversation
from app.handoff.service import HandoffService
from app.llm.registry import ProviderRegistry
from app.memory.messages import store_message
from app.rag.models import Chunk, Document
from app.rag.passages import match_successors, store_successors
from app.rag.pipeline import IngestRun
from tests.conftest import Coach, make_client, seed_insight, upload
from tests.openai_wire import (
    MOCK_ENDPOINT_SETTINGS,
    mock_chat_endpoint,
    openai_error,
    openai_sse,
    sse_response,
    stream_reply,
)

DELTAS = ["Let's", " take", " it", " one", " step", " at", " a", " time", "."]
REPLY = "".join(DELTAS)


@dataclass
class Setup:
    """A fresh coach on the mocked endpoint with one client."""

    coach: Coach
    client_id: str
    widget_token: str

    @property
    def client_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.widget_token}"}


@pytest.fixture
def llm_api() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, mocked (see :func:`tests.openai_wire.mock_chat_endpoint`)."""
    with mock_chat_endpoint(DELTAS, (120, 9)) as router:
        yield router


@pytest.fixture
def new_setup(http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]) -> Callable[..., Awaitable[Setup]]:
    async def make(name: str = "Handoff Coach", **settings: Any) -> Setup:
        coach = await make_coach(name)
        response = await http.patch(
            "/api/v1/settings",
            headers=coach.headers,
            json=MOCK_ENDPOINT_SETTINGS | settings,
        )
        assert response.status_code == 200, response.text
        client = await make_client(http, coach, "Robin")
        return Setup(coach, client["id"], client["widget_token"])

    return make


async def chat(http: httpx.AsyncClient, setup: Setup, message: str, conversation_id: str | None = None) -> dict:
    body: dict[str, Any] = {"text": message}
    if conversation_id:
        body["conversation_id"] = conversation_id
    response = await http.post("/api/v1/chat", headers=setup.client_auth, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def transcript(http: httpx.AsyncClient, setup: Setup, conversation_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/v1/conversations/{conversation_id}", headers=setup.coach.headers)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


async def handoffs(http: httpx.AsyncClient, coach: Coach, status: str | None = None) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/handoffs", headers=coach.headers, params={"status": status} if status else {})
    assert response.status_code == 200, response.text
    return response.json()


@asynccontextmanager
async def widget_socket(base_url: str, setup: Setup) -> AsyncIterator[Any]:
    """The client's widget WebSocket (live events arrive on it)."""
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    async with websockets.connect(url) as ws:
        await asyncio.sleep(0.3)  # let the server subscribe to the client's channel
        yield ws


async def next_event(ws: Any, kind: str, wait: float = 10, *, reply: bool = False) -> dict[str, Any]:
    """The next event of type ``kind`` on a socket (others are skipped); ``reply``: the next ``message`` event of
    the AI or the coach (the client's own messages come back live too, for their other tabs)."""
    async with asyncio.timeout(wait):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == kind and not (reply and event["message"]["sender_type"] == "client"):
                return event  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------- escalation rules


@pytest.mark.parametrize(
    ("message", "changes", "reason"),
    [
        ("/human", {}, "human_request"),
        ("Can I talk to a real person please?", {}, "human_request"),
        ("Should I stop taking my medication?", {"always_escalate_topics": ["medication"]}, "escalate_topic"),
        ("How do I plan my week?", {"handoff_mode": "human_only"}, "human_only"),
        (
            "I'm thinking about quitting my job next week",
            {"high_stakes_topics": ["quitting my job"], "confidence_threshold": 0.95},
            "low_confidence",
        ),
    ],
)
async def test_escalation_rules_hand_the_conversation_to_the_coach(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    message: str,
    changes: dict[str, Any],
    reason: str,
) -> None:
    """Each rule opens a handoff with its reason, the client is told the coach was asked to join, the model is
    not asked to answer, and the next message waits for the coach (the AI is paused)."""
    setup = await new_setup(**changes)
    body = await chat(http, setup, message)

    assert body["handoff"]["status"] == "open" and body["handoff"]["reason"] == reason, body
    assert "Handoff Coach" in body["reply"] and "join" in body["reply"]
    assert llm_api["completions"].call_count == 0, "the model does not answer a handed-off turn"
    [queued] = await handoffs(http, setup.coach, "open")
    assert queued["reason"] == reason and queued["conversation_id"] == body["conversation_id"]
    assert queued["client_name"] == "Robin" and message[:20] in queued["brief"]
    if reason == "low_confidence":
        assert queued["confidence"] < 0.95 and "high stakes topic" in queued["detail"]

    paused = await chat(http, setup, "Hello? Anyone there?", body["conversation_id"])
    assert paused["message_id"] is None and paused["reply"] == "" and paused["handoff"]["status"] == "open"
    assert llm_api["completions"].call_count == 0


async def test_a_confident_turn_stores_its_confidence_and_signals(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """In auto mode an ordinary question is answered; the reply carries ai_confidence_before, the final
    confidence with its factors and the signal values."""
    setup = await new_setup()
    body = await chat(http, setup, "How can I plan my week better?")
    assert body["reply"] == REPLY and body["handoff"] is None
    [_, ai] = await transcript(http, setup, body["conversation_id"])
    meta = ai["metadata"]
    assert 0.5 <= meta["ai_confidence_before"] <= 1
    assert meta["confidence"]["value"] == pytest.approx(meta["ai_confidence_before"])
    assert set(meta["signals"]) >= {"sentiment", "human_request", "risk_score", "repeated_question"}
    assert meta["confidence_threshold"] == 0.5


# ---------------------------------------------------------------------------------------- crisis


async def test_crisis_opens_an_urgent_handoff_and_alerts_the_coach_live(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
) -> None:
    """The crisis reply uses the coach's own resources, the handoff is opened with reason crisis, and the
    coach's live channel gets the alert while the provider is down."""
    llm_api["completions"].mock(side_effect=None, return_value=openai_error(503, "overloaded", "server_error", None))
    setup = await new_setup(crisis_resources=["Call Lifeline Aotearoa on 0800 543 354."])
    pubsub = container.redis.pubsub()
    await pubsub.subscribe(f"coach:{setup.coach.coach_id}")
    try:
        body = await chat(http, setup, "I want to end my life tonight")
        events = []
        async with asyncio.timeout(5):
            while not any(e["type"] == "alert" for e in events):
                raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if raw:
                    events.append(json.loads(raw["data"]))
    finally:
        await pubsub.aclose()
    assert body["reply"] == crisis_reply("Handoff Coach", ("Call Lifeline Aotearoa on 0800 543 354.",))
    assert body["handoff"] == {"status": "open", "reason": "crisis"}  # not the AI's confidence: coach-only
    assert llm_api["completions"].call_count == 0
    alert = next(e for e in events if e["type"] == "alert")
    assert alert["conversation_id"] == body["conversation_id"] and alert["client_name"] == "Robin"
    # the desktop notification names the reasons in words, not the detector's cue names
    assert alert["detail_text"] == crisis_reasons_text(alert["detail"])
    assert alert["detail_text"].startswith("Crisis signals: ") and "crisis:" not in alert["detail_text"]
    [queued] = await handoffs(http, setup.coach, "open")
    assert queued["reason"] == "crisis"


async def test_a_handoff_given_back_without_a_takeover_tells_the_client_the_ai_carries_on(
    base_url: str, http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """The coach gave back a handoff they never took (dismissed): the client's widget said the coach "handed the
    conversation back", though the coach had never joined, while the coach's history said "Dismissed without taking
    over" (found by a run of the demo). The client now reads that the coach asked the AI to carry on; a handback
    after a takeover still says the coach left."""
    setup = await new_setup()
    conversation_id = (await chat(http, setup, "/human"))["conversation_id"]
    async with widget_socket(base_url, setup) as ws:
        back = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
        assert back.status_code == 200, back.text
        assert (await next_event(ws, "coach_dismissed"))["conversation_id"] == conversation_id
        taken = await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
        assert taken.status_code == 200, taken.text
        back = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
        assert (await next_event(ws, "coach_left"))["conversation_id"] == conversation_id
    closed = await handoffs(http, setup.coach, "closed")
    assert sorted(h["reason"] for h in closed) == ["coach_takeover", "human_request"]


async def test_a_forgotten_insight_leaves_the_brief_of_an_active_handoff(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A brief is written when its handoff opens; an insight the client forgets while the handoff is active
    left it in the brief the dashboard and every later alert show. The forget rebuilds the brief without it."""
    setup = await new_setup()
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    insight = await seed_insight(container, coach_id, client_id, "Robin plans to leave Acme", importance=9)
    await chat(http, setup, "/human")
    [before] = await handoffs(http, setup.coach, "open")
    assert "Goal: Robin plans to leave Acme" in before["brief"].splitlines()
    url = f"/api/v1/clients/{client_id}/memory/insights/{insight.id}"
    assert (await http.delete(url, headers=setup.coach.headers)).status_code == 204
    await run_jobs()
    [after] = await handoffs(http, setup.coach, "open")
    kept = [line for line in before["brief"].splitlines() if "leave Acme" not in line]
    assert after["brief"].splitlines() == kept


async def test_a_forgotten_insight_leaves_the_briefs_of_closed_handoffs_which_keep_the_rest(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A closed handoff's brief still quoted, word for word, an insight the client had forgotten and the message
    it came from (found by a privacy run). The forget now takes those lines out of every closed brief, which
    otherwise stays as it was written: it is not rewritten from what memory learnt since."""
    setup = await new_setup()
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    secret = "I plan to leave Acme next spring, nobody knows yet"
    conversation_id = (await chat(http, setup, secret))["conversation_id"]
    [source] = [uuid.UUID(m["id"]) for m in await transcript(http, setup, conversation_id) if m["text"] == secret]
    insight = await seed_insight(container, coach_id, client_id, "Robin plans to leave Acme", sources=[source])
    kept = await seed_insight(container, coach_id, client_id, "Robin wants to run a marathon", importance=8)
    await chat(http, setup, "/human", conversation_id)
    back = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
    assert back.status_code == 200, back.text
    [before] = await handoffs(http, setup.coach, "closed")
    lines = before["brief"].splitlines()
    assert "Goal: Robin plans to leave Acme" in lines and f"Goal: {kept.text}" in lines
    assert f"Client said: “{secret}”" in lines
    await seed_insight(container, coach_id, client_id, "Robin learnt to juggle")  # after the handoff closed

    url = f"/api/v1/clients/{client_id}/memory/insights/{insight.id}"
    assert (await http.delete(url, headers=setup.coach.headers)).status_code == 204
    await run_jobs()
    [after] = await handoffs(http, setup.coach, "closed")
    assert after["brief"].splitlines() == [line for line in lines if "Acme" not in line]


async def coach_events(pubsub: Any, until: Callable[[list[dict[str, Any]]], bool], wait: float) -> list[dict[str, Any]]:
    """The coach's live events read from ``pubsub`` until ``until(events)`` holds or ``wait`` seconds passed."""
    events: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(wait):
            while not until(events):
                raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if raw:
                    events.append(json.loads(raw["data"]))
    except TimeoutError:
        pass
    return events


async def test_a_reply_the_model_was_unsure_of_is_sent_and_handed_to_the_coach(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """The reply's token probability is known only once it was streamed: under the coach's threshold with it,
    the reply stands and a ``low_confidence`` handoff asks the coach to look. It was stored in the reply's
    confidence and acted on by nothing."""
    unsure = openai_sse(DELTAS, (120, 9), logprobs=[-3.0] * len(DELTAS))
    llm_api["completions"].mock(side_effect=lambda request: sse_response(unsure))
    setup = await new_setup(confidence_threshold=0.6)  # (the token factor alone goes down to 0.5)
    body = await chat(http, setup, "How can I plan my week better?")
    assert body["reply"] == REPLY
    assert body["handoff"] == {"status": "open", "reason": "low_confidence"}
    [handoff] = await handoffs(http, setup.coach)
    assert handoff["conversation_id"] == body["conversation_id"] and handoff["reason"] == "low_confidence"
    [reply] = [m for m in await transcript(http, setup, body["conversation_id"]) if m["sender_type"] == "ai"]
    assert reply["text"] == REPLY and reply["metadata"]["confidence"]["reason"] == "low_token_confidence"
    assert reply["metadata"]["confidence"]["value"] < 0.6 <= reply["metadata"]["ai_confidence_before"]
    # such a reply is not cached: a hit carries no token probability, so it went out with no handoff
    other = await make_client(http, setup.coach, "Sam")
    again = await chat(http, replace(setup, widget_token=other["widget_token"]), "How can I plan my week better?")
    assert again["handoff"] == {"status": "open", "reason": "low_confidence"}
    assert llm_api["completions"].call_count == 2


async def test_a_draft_is_not_served_from_the_cache_once_the_coach_leaves_draft_mode(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """A draft the coach never approved (discarded, or edited) went into the response cache: once the coach
    switched to ``auto``, the next new client asking the same got it sent as is."""
    setup = await new_setup(handoff_mode="draft")
    drafted = await chat(http, setup, "How can I plan my week better?")
    assert drafted["handoff"]["status"] == "draft_pending" and drafted["reply"] == ""
    switched = await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"handoff_mode": "auto"})
    assert switched.status_code == 200, switched.text
    other = await make_client(http, setup.coach, "Sam")
    body = await chat(http, replace(setup, widget_token=other["widget_token"]), "How can I plan my week better?")
    assert body["reply"] == REPLY and llm_api["completions"].call_count == 2


async def test_a_provider_key_no_configured_key_opens_gets_the_apology_not_a_500(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter, container: Container
) -> None:
    """``SECRET_KEY`` changed without the old key kept (after a rotation, the generated ``secret.key`` dropped):
    the coach's stored API key opens with no configured key. The turn was a bare 500 after the client's message
    was stored; it now answers with the apology, and the reason is recorded on it."""
    setup = await new_setup()
    coach_id = uuid.UUID(setup.coach.coach_id)

    async def store_key(encrypted: bytes | None) -> None:
        async with tenant_session(container.sessionmaker, coach_id) as session:
            (await session.get_one(CoachRow, coach_id)).llm_api_key_encrypted = encrypted

    await store_key(SecretBox(Fernet.generate_key()).encrypt("sk-lost-key-1234"))
    try:
        body = await chat(http, setup, "How can I plan my week better?")
    finally:  # (a secret no key opens would fail the session's later rotate-secret test)
        await store_key(None)
    assert body["reply"] == APOLOGY
    [reply] = [m for m in await transcript(http, setup, body["conversation_id"]) if m["sender_type"] == "ai"]
    assert "API key cannot be used" in reply["metadata"]["error"]
    assert llm_api["completions"].call_count == 0


async def test_asking_again_after_the_apology_is_no_repeated_question(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter, container: Container
) -> None:
    """The apology asks the client to try again: the same question asked again is answered with no repeated-question
    signal, which counts only repeats of a message a reply answered. Before, it read as a question whose answer
    missed, lowering the confidence (with a real model's slow first reply timed out, the demo handed the retry to
    the coach as frustration)."""
    setup = await new_setup()
    coach_id, question = uuid.UUID(setup.coach.coach_id), "How do I stop procrastinating on my thesis every morning?"

    async def store_key(encrypted: bytes | None) -> None:
        async with tenant_session(container.sessionmaker, coach_id) as session:
            (await session.get_one(CoachRow, coach_id)).llm_api_key_encrypted = encrypted

    await store_key(SecretBox(Fernet.generate_key()).encrypt("sk-lost-key-1234"))
    try:
        failed = await chat(http, setup, question)
    finally:
        await store_key(None)
    assert failed["reply"] == APOLOGY
    again = await chat(http, setup, question, failed["conversation_id"])
    assert again["reply"] == REPLY and again["handoff"] is None
    meta = (await transcript(http, setup, failed["conversation_id"]))[-1]["metadata"]
    assert meta["signals"]["repeated_question"] == 0.0

    answered = await chat(http, setup, question, failed["conversation_id"])  # a repeat of an answered question
    meta = (await transcript(http, setup, answered["conversation_id"]))[-1]["metadata"]
    assert meta["signals"]["repeated_question"] > 0.9


async def test_a_channel_slow_between_deltas_does_not_cancel_the_turn(
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A channel takes its time with each delta (a Telegram edit, a socket send under back-pressure) until the
    turn's ``LLM_TIMEOUT_SECONDS`` has passed. The deadline's timeout was around the turn's ``yield``: it fired
    while the channel awaited, cancelling the channel's own task, so the turn died with no reply and no apology
    stored. The channel's time is not the turn's: the reply completes and is stored."""
    setup = await new_setup()
    monkeypatch.setattr(container.chat._settings, "llm_timeout_seconds", 0.5)
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    received = await container.chat.receive(
        coach_id, client_id, "How can I plan my week better?", conversation_id=None, channel="widget"
    )
    deltas: list[str] = []
    async for item in container.chat.answer(coach_id, client_id, received.message_id):
        if isinstance(item, str):
            deltas.append(item)
            await asyncio.sleep(0.1)  # (nine deltas: 0.9 s in the channel)
        else:
            result = item
    assert "".join(deltas) == REPLY and result.reply == REPLY and result.message_id is not None
    # a model that does not answer within the deadline still gets the apology
    held_model(llm_api)
    stalled = await container.chat.receive(
        coach_id, client_id, "And my weekend?", conversation_id=result.conversation_id, channel="widget"
    )
    items = [item async for item in container.chat.answer(coach_id, client_id, stalled.message_id)]
    assert items[0] == APOLOGY and isinstance(items[-1], TurnResult) and items[-1].reply == APOLOGY


async def test_a_reply_still_being_written_at_the_deadline_keeps_its_complete_sentences(
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model writes two sentences and part of a third, then writes no more before the turn's deadline (the
    offline model on a busy machine): the reply is those two sentences, marked truncated, instead of the apology
    that discarded what the client had watched stream in. Nothing is cached."""
    setup = await new_setup(response_cache_ttl_seconds=3600)
    monkeypatch.setattr(container.chat._settings, "llm_timeout_seconds", 1.0)
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    written = ["Plan Monday first.", " Then pick one task a day.", " After that, you"]

    class Stalls(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield openai_sse(written, complete=False)
            await asyncio.sleep(30)

    llm_api["completions"].mock(
        side_effect=lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Stalls())
    )
    received = await container.chat.receive(
        coach_id, client_id, "How can I plan my week better?", conversation_id=None, channel="widget"
    )
    items = [item async for item in container.chat.answer(coach_id, client_id, received.message_id)]
    result = items[-1]
    assert isinstance(result, TurnResult) and result.reply == "Plan Monday first. Then pick one task a day."
    async with tenant_session(container.sessionmaker, coach_id) as session:
        stored = await session.get_one(Message, result.message_id)
    assert stored.text == result.reply and stored.meta["truncated"] is True and stored.meta["deadline_cut"] is True
    assert "error" not in stored.meta and stored.meta["cache"] == "miss"
    assert await container.cache.get(coach_id, stored.meta["cache_key"]) is None


async def test_a_crisis_is_answered_while_every_turn_slot_is_taken(
    new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter, container: Container
) -> None:
    """Every turn slot of the process is busy (other tenants' turns, each up to ``LLM_TIMEOUT_SECONDS``): a
    client's crisis message is screened before its turn waits for a slot, so the crisis reply and the urgent
    handoff come at once, on the REST turn and on a channel's answer alike. Before, only a message queued behind
    the client's own answer was screened early; these waited in the admission queue with no reply and no
    alert. A message that needs no protocol still waits for its slot."""
    setup = await new_setup()
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    chat_service, taken = container.chat, []

    async def answered(items: AsyncIterator[str | TurnResult]) -> TurnResult:
        return [item async for item in items if isinstance(item, TurnResult)][-1]

    while not chat_service._slots.locked(key := uuid.uuid4()):  # every slot taken, by other coaches
        await chat_service._slots.acquire(key)
        taken.append(key)
    try:
        crisis = await asyncio.wait_for(answered(chat_service.turn(coach_id, client_id, "I want to end my life")), 20)
        other = await new_setup()
        other_ids = uuid.UUID(other.coach.coach_id), uuid.UUID(other.client_id)
        received = await chat_service.receive(
            *other_ids, "I'm going to kill myself tonight", conversation_id=None, channel="widget"
        )
        answer = chat_service.answer(*other_ids, received.message_id)
        live = await asyncio.wait_for(answered(answer), 20)
        third = await new_setup()
        third_ids = uuid.UUID(third.coach.coach_id), uuid.UUID(third.client_id)
        calm = asyncio.create_task(answered(chat_service.turn(*third_ids, "How can I plan my week better?")))
        await asyncio.sleep(1)
        waiting = not calm.done()
    finally:
        for key in taken:
            chat_service._slots.release(key)
    assert crisis.reply == live.reply == crisis_reply("Handoff Coach", DEFAULT_CRISIS_RESOURCES)
    assert crisis.handoff is not None and live.handoff is not None
    assert waiting, "a message that needs no crisis protocol still waits for its slot"
    assert (await asyncio.wait_for(calm, 20)).message_id is not None
    assert llm_api["completions"].call_count == 1


async def test_a_crisis_in_a_conversation_the_coach_holds_alerts_live_once_and_marks_the_inbox(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
) -> None:
    """The coach has taken the conversation over; the client's crisis message raises the same live ``alert``
    a new crisis handoff does, keyed by that message (the dashboard's tone and notification), and the inbox
    shows the conversation as crisis until the coach reads it; the client's next ordinary message raises
    no alert."""
    setup = await new_setup()
    first = await chat(http, setup, "How can I plan my week better?")
    conversation_id = first["conversation_id"]
    taken = await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
    assert taken.status_code == 200, taken.text
    pubsub = container.redis.pubsub()
    await pubsub.subscribe(f"coach:{setup.coach.coach_id}")
    try:
        body = await chat(http, setup, "I want to end my life tonight", conversation_id)
        events = await coach_events(pubsub, lambda got: any(e["type"] == "alert" for e in got), 5)
        [crisis_message] = [m for m in await transcript(http, setup, conversation_id) if "end my life" in m["text"]]
        await chat(http, setup, "Okay, I will wait here for you.", conversation_id)
        after = await coach_events(pubsub, lambda got: False, 1.5)
    finally:
        await pubsub.aclose()
    assert body["handoff"]["status"] == "claimed" and body["handoff"]["reason"] == "crisis"
    alerts = [e for e in events if e["type"] == "alert"]
    assert len(alerts) == 1, events
    assert alerts[0]["conversation_id"] == conversation_id and alerts[0]["client_name"] == "Robin"
    assert alerts[0]["message_id"] == crisis_message["id"] and alerts[0]["handoff_status"] == "claimed"
    assert alerts[0]["handoff_id"] == taken.json()["id"]
    assert [e for e in after if e["type"] == "alert"] == [], "an ordinary message raises no alert"
    said = [e["message"]["text"] for e in after if e["type"] == "message"]
    assert "Okay, I will wait here for you." in said, "while the ordinary message does reach the coach"

    inbox = await http.get("/api/v1/inbox", headers=setup.coach.headers)
    assert [(r["conversation_id"], r["state"]) for r in inbox.json()["rows"]] == [(conversation_id, "crisis")]
    read = await http.post(f"/api/v1/conversations/{conversation_id}/read", headers=setup.coach.headers)
    assert read.status_code == 204, read.text
    inbox = await http.get("/api/v1/inbox", headers=setup.coach.headers)
    assert [r["state"] for r in inbox.json()["rows"]] == ["you"], "read: the coach has seen the crisis"


# ---------------------------------------------------------------------------------------- takeover / handback


async def test_takeover_live_messages_and_handback(
    http: httpx.AsyncClient,
    base_url: str,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
) -> None:
    """The coach takes over unprompted; the widget hears "coach joined" and the coach's message live; the
    client's messages meanwhile get no AI reply; after handback the AI answers with the coach's turn in its
    prompt and records is_handback."""
    setup = await new_setup()
    first = await chat(http, setup, "How can I plan my week better?")
    conversation_id = first["conversation_id"]
    completions = llm_api["completions"]
    assert completions.call_count == 1

    async with widget_socket(base_url, setup) as ws:
        taken = await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
        assert taken.status_code == 200, taken.text
        assert taken.json()["status"] == "claimed" and taken.json()["reason"] == "coach_takeover"
        joined = await next_event(ws, "coach_joined")
        assert joined["conversation_id"] == conversation_id and joined["coach_name"] == "Handoff Coach"

        sent = await http.post(
            f"/api/v1/conversations/{conversation_id}/messages",
            headers=setup.coach.headers,
            json={"text": "Hi Robin, it's me. What's on your mind?"},
        )
        assert sent.status_code == 201, sent.text
        live = await next_event(ws, "message")
        assert live["message"]["sender_type"] == "human_coach"
        assert live["message"]["text"] == "Hi Robin, it's me. What's on your mind?"
        assert live["message"]["metadata"]["is_handoff"] is True

    paused = await chat(http, setup, "Mostly my sleep, honestly.", conversation_id)
    assert paused["reply"] == "" and paused["handoff"]["status"] == "claimed"
    assert completions.call_count == 1, "no AI reply while the coach has the conversation"

    back = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "closed"

    resumed = await chat(http, setup, "Thanks! Any tips for tonight?", conversation_id)
    assert resumed["reply"] == REPLY and resumed["handoff"] is None
    prompt = json.loads(completions.calls.last.request.content)["messages"]
    assert any(m["role"] == "assistant" and "What's on your mind" in m["content"] for m in prompt)
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "ai", "human_coach", "client", "client", "ai"]
    coach_meta = messages[2]["metadata"]
    assert coach_meta["handoff_reason"] == "coach_takeover" and coach_meta["ai_confidence_before"] is None
    assert messages[-1]["metadata"]["is_handback"] is True
    assert messages[-1]["metadata"]["human_duration_minutes"] >= 0


async def test_after_two_handbacks_without_a_reply_the_first_reply_resumes_the_latest(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
) -> None:
    """Two takeovers handed back with no AI reply between them: the next AI reply is the first after the latest
    handback (``resumed_message_id`` set on it alone); the earlier one stays unresumed."""
    setup = await new_setup()
    conversation_id = (await chat(http, setup, "How can I plan my week better?"))["conversation_id"]
    for _ in range(2):
        taken = await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
        assert taken.status_code == 200, taken.text
        back = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
        assert back.status_code == 200, back.text
    resumed = await chat(http, setup, "Thanks! Any tips for tonight?", conversation_id)
    assert resumed["reply"] == REPLY
    reply = [m for m in await transcript(http, setup, conversation_id) if m["sender_type"] == "ai"][-1]
    assert reply["metadata"]["is_handback"] is True
    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        handoffs = (
            await session.execute(
                select(Handoff.resumed_message_id)
                .where(Handoff.conversation_id == uuid.UUID(conversation_id))
                .order_by(Handoff.closed_at)
            )
        ).all()
    assert [str(row.resumed_message_id) if row.resumed_message_id else None for row in handoffs] == [
        None,
        reply["id"],
    ]


def held_model(
    llm_api: respx.MockRouter, deltas: list[str] = DELTAS, *, holds: Callable[[httpx.Request], bool] | None = None
) -> tuple[asyncio.Event, asyncio.Event]:
    """The model's stream held back: ``(asked, go_on)``: ``asked`` is set once the model is asked, and the reply
    (``deltas``) streams once the test sets ``go_on``. ``holds``: which requests are held (default: all); the
    others are answered at once."""
    asked, go_on = asyncio.Event(), asyncio.Event()

    class HeldBack(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            asked.set()
            await go_on.wait()
            yield openai_sse(deltas, (120, 9))

    def completion(request: httpx.Request) -> httpx.Response:
        held = holds is None or holds(request)
        stream = HeldBack() if held else httpx.ByteStream(openai_sse(deltas, (120, 9)))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    llm_api["completions"].mock(side_effect=completion)
    return asked, go_on


async def test_a_takeover_while_the_ai_is_answering_keeps_the_ai_reply_out(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """The coach takes the conversation while the model is still answering the client's message: the AI's
    reply is not stored (the client would get two answers), the turn reports the coach's handoff and the
    message waits for the coach."""
    setup = await new_setup()
    first = await chat(http, setup, "How can I plan my week better?")
    conversation_id = first["conversation_id"]
    asked, go_on = held_model(llm_api)
    turn = asyncio.create_task(chat(http, setup, "Mostly my sleep, honestly.", conversation_id))
    await asyncio.wait_for(asked.wait(), 30)
    taken = await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
    assert taken.status_code == 200, taken.text
    go_on.set()
    answered = await turn

    assert answered["reply"] == "" and answered["message_id"] is None
    assert answered["handoff"]["status"] == "claimed"
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "ai", "client"]
    queue = await handoffs(http, setup.coach, "claimed")
    assert [h["conversation_id"] for h in queue] == [conversation_id]


@pytest.mark.parametrize("live", ["up", "down"])
async def test_a_crisis_sent_while_the_ai_answers_an_earlier_message_is_answered_at_once(
    http: httpx.AsyncClient,
    base_url: str,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
    live: str,
) -> None:
    """The widget answers a client's messages one at a time, and one answer can wait on the model for up to
    ``LLM_TIMEOUT_SECONDS``. A crisis message sent meanwhile is screened at once: its crisis reply and the
    coach's urgent handoff come while the earlier answer still waits on the model. That answer then stops at its
    first token (``stopped``: the coach has the conversation), and the crisis message is answered once. The reply
    comes on the socket itself, also when the client's live channel, which is best-effort, drops it
    (``live="down"``)."""
    if live == "down":

        async def dropped(self: RedisChannelsPubSubBackend, data: bytes, channels: Any) -> None:
            raise RedisConnectionError("Redis is restarting")

        monkeypatch.setattr(RedisChannelsPubSubBackend, "publish", dropped)
    setup = await new_setup(crisis_resources=["Call Lifeline Aotearoa on 0800 543 354."])
    asked, go_on = held_model(llm_api)
    async with widget_socket(base_url, setup) as ws:
        await ws.send(json.dumps({"text": "How can I plan my week better?", "client_message_id": "w-1"}))
        await asyncio.wait_for(asked.wait(), 30)
        await ws.send(json.dumps({"text": "I want to end my life tonight", "client_message_id": "w-2"}))
        live = await next_event(ws, "message", wait=20, reply=True)
        queued = await handoffs(http, setup.coach, "open")
        go_on.set()
        stopped = await next_event(ws, "stopped", wait=30)
        done = await next_event(ws, "done", wait=30)

    assert live["message"]["sender_type"] == "ai" and live["message"]["text"] == crisis_reply(
        "Handoff Coach", ("Call Lifeline Aotearoa on 0800 543 354.",)
    )
    assert [h["reason"] for h in queued] == ["crisis"], "the coach is alerted before the earlier answer ends"
    assert done["message_id"] is None  # the earlier answer stopped; the crisis answered
    assert done["in_reply_to"] != stopped["in_reply_to"]
    messages = await transcript(http, setup, live["conversation_id"])
    assert [(m["sender_type"], m["text"]) for m in messages] == [
        ("client", "How can I plan my week better?"),
        ("client", "I want to end my life tonight"),
        ("ai", live["message"]["text"]),
    ]
    assert llm_api["completions"].call_count == 1


async def test_a_message_screened_while_an_earlier_answer_runs_waits_for_its_turn_and_is_embedded_once(
    http: httpx.AsyncClient,
    base_url: str,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message that needs no crisis protocol, screened while the model answers an earlier one, stores nothing
    and waits for its turn, which answers it with the embedding the screen took (the message is embedded once,
    not again by its turn)."""
    setup = await new_setup()
    asked, go_on = held_model(llm_api)
    embedded: list[str] = []
    shared_embedding, answer_crisis, screened = Intake._shared_embedding, ChatService.answer_crisis, asyncio.Event()

    async def counted(self: Intake, coach: Any, text: str) -> Any:
        embedded.append(text)
        return await shared_embedding(self, coach, text)

    async def observed(self: ChatService, *args: Any) -> Any:
        try:
            return await answer_crisis(self, *args)
        finally:
            screened.set()

    monkeypatch.setattr(Intake, "_shared_embedding", counted)
    monkeypatch.setattr(ChatService, "answer_crisis", observed)
    later = "And what about my mornings, they feel rushed?"
    async with widget_socket(base_url, setup) as ws:
        await ws.send(json.dumps({"text": "How can I plan my week better?", "client_message_id": "w-1"}))
        await asyncio.wait_for(asked.wait(), 30)
        await ws.send(json.dumps({"text": later, "client_message_id": "w-2"}))
        await asyncio.wait_for(screened.wait(), 30)
        during = await handoffs(http, setup.coach)
        go_on.set()
        done = [await next_event(ws, "done", wait=30) for _ in range(2)]

    assert during == [], "no crisis: nothing handed over"
    assert all(d["message_id"] for d in done), "both messages answered by the AI, in order"
    messages = await transcript(http, setup, done[0]["conversation_id"])
    assert [(m["sender_type"], m["text"]) for m in messages][:2] == [
        ("client", "How can I plan my week better?"),
        ("client", later),
    ]
    assert [m["sender_type"] for m in messages[2:]] == ["ai", "ai"]
    assert embedded.count(later) == 1


async def test_a_takeover_still_committing_when_the_ai_stores_its_reply_keeps_the_reply_out(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coach's takeover has opened its handoff but not yet committed when the model finishes: the turn's
    reply waits for it and then leaves the message to the coach. Its claim used to look for a handoff committed
    before it began, so the AI's reply was stored just after the takeover and the client got both."""
    setup = await new_setup()
    first = await chat(http, setup, "How can I plan my week better?")
    conversation_id = first["conversation_id"]
    (asked, go_on), opened, commit = held_model(llm_api), asyncio.Event(), asyncio.Event()
    open_handoff = HandoffService.open

    async def held_open(self: HandoffService, *args: Any, **kwargs: Any) -> Any:
        """The takeover's transaction, held open once its handoff is in."""
        handoff = await open_handoff(self, *args, **kwargs)
        if kwargs.get("reason") == HandoffReason.COACH_TAKEOVER:
            opened.set()
            await commit.wait()
        return handoff

    monkeypatch.setattr(HandoffService, "open", held_open)
    turn = asyncio.create_task(chat(http, setup, "Mostly my sleep, honestly.", conversation_id))
    await asyncio.wait_for(asked.wait(), 30)
    takeover = asyncio.create_task(
        http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
    )
    await asyncio.wait_for(opened.wait(), 30)
    go_on.set()  # the model ends; the reply is stored while the takeover is uncommitted
    await asyncio.sleep(1)
    commit.set()
    taken, answered = await takeover, await turn

    assert taken.status_code == 200, taken.text
    assert answered["reply"] == "" and answered["message_id"] is None
    assert answered["handoff"]["status"] == "claimed"
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "ai", "client"]


async def test_a_client_message_stored_while_the_coach_writes_is_no_deadlock(
    http: httpx.AsyncClient, container: Container, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """The coach's transaction holds the conversation (as a takeover, a message or a crisis turn does) when the
    client's next message is stored, then stores its own message: both are stored. The client's message took
    the chat session before the conversation, the coach's the conversation before the chat session: PostgreSQL
    found the deadlock and failed one of them."""
    setup = await new_setup()
    first = await chat(http, setup, "How can I plan my week better?")
    coach_id, conversation_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(first["conversation_id"])
    client_stored: asyncio.Task[Any] | None = None
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await coach_conversation(uow.session, coach_id, conversation_id, lock=True)
        client_stored = asyncio.create_task(
            container.chat.receive(
                coach_id, uuid.UUID(setup.client_id), "Are you there?", conversation_id=conversation_id, channel="api"
            )
        )
        await asyncio.sleep(0.5)  # the client's transaction waits on what this one holds
        await store_message(
            uow.session, await uow.coach(), conversation_id, SenderType.HUMAN_COACH, "I'm here.", at=datetime.now(UTC)
        )
    await asyncio.wait_for(client_stored, 30)
    messages = await transcript(http, setup, str(conversation_id))
    assert [m["text"] for m in messages][-2:] == ["I'm here.", "Are you there?"]


async def test_two_tabs_taking_over_at_once_claim_one_handoff(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """The coach clicks "Take over" in two tabs at the same moment (or sends a first message from each): both
    get the one claimed handoff, none a 500 (both used to find no handoff and open one each)."""
    setup = await new_setup()
    h = setup.coach.headers
    for action in ("takeover", "messages") * 3:
        conversation_id = (await chat(http, setup, "How can I plan my week better?"))["conversation_id"]
        path = f"/api/v1/conversations/{conversation_id}/{action}"
        body = {"json": {"text": "Hi, it's me."}} if action == "messages" else {}
        both = await asyncio.gather(*(http.post(path, headers=h, **body) for _ in range(2)))
        assert [r.status_code for r in both] == [201, 201] if action == "messages" else [200, 200], [
            r.text for r in both
        ]
        claimed = [x for x in await handoffs(http, setup.coach, "claimed") if x["conversation_id"] == conversation_id]
        assert len(claimed) == 1


async def test_takeover_and_handback_survive_a_restart(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
) -> None:
    """A takeover made on one server instance holds on a new one (state is in PostgreSQL), and a handback
    made there resumes the AI."""
    setup = await new_setup()
    first = await chat(http, setup, "How can I plan my week better?")
    conversation_id = first["conversation_id"]
    async with (
        serve_in_background(create_app(settings, services.database_url, services.redis_url, registry=registry)) as url,
        httpx.AsyncClient(base_url=url) as before,
    ):
        taken = await before.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
        assert taken.status_code == 200, taken.text

    async with (
        serve_in_background(create_app(settings, services.database_url, services.redis_url, registry=registry)) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as after,
    ):
        paused = (
            await after.post(
                "/api/v1/chat",
                headers=setup.client_auth,
                json={"text": "Still there?", "conversation_id": conversation_id},
            )
        ).json()
        assert paused["reply"] == "" and paused["handoff"]["status"] == "claimed"
        [claimed] = (await after.get("/api/v1/handoffs?status=claimed", headers=setup.coach.headers)).json()
        assert claimed["conversation_id"] == conversation_id
        back = await after.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
        assert back.status_code == 200, back.text
        resumed = (
            await after.post(
                "/api/v1/chat",
                headers=setup.client_auth,
                json={"text": "Hello again", "conversation_id": conversation_id},
            )
        ).json()
    assert resumed["reply"] == REPLY and resumed["handoff"] is None


# ---------------------------------------------------------------------------------------- drafts


async def test_draft_mode_sends_nothing_before_approval(
    http: httpx.AsyncClient, base_url: str, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """In draft mode the client gets an empty reply with draft_pending, the transcript holds only the
    client's message, and the widget receives nothing until the coach approves; an edited approval is sent
    as the coach's message with the AI draft kept; a decided draft cannot be approved again."""
    setup = await new_setup(handoff_mode="draft")
    async with widget_socket(base_url, setup) as ws:
        body = await chat(http, setup, "How can I plan my week better?")
        assert body["reply"] == "" and body["message_id"] is None
        assert body["handoff"]["status"] == "draft_pending" and body["handoff"]["reason"] == "draft_mode"
        assert [m["sender_type"] for m in await transcript(http, setup, body["conversation_id"])] == ["client"]
        with pytest.raises(TimeoutError):
            await next_event(ws, "message", wait=1.5, reply=True)

        pending = (await http.get("/api/v1/drafts?status=pending", headers=setup.coach.headers)).json()
        assert [(d["conversation_id"], d["text"]) for d in pending] == [(body["conversation_id"], REPLY)]
        approved = await http.post(f"/api/v1/drafts/{pending[0]['id']}/approve", headers=setup.coach.headers)
        assert approved.status_code == 201, approved.text
        live = await next_event(ws, "message", reply=True)
        assert live["message"]["text"] == REPLY and live["message"]["sender_type"] == "ai"

        again = await http.post(f"/api/v1/drafts/{pending[0]['id']}/approve", headers=setup.coach.headers)
        assert again.status_code == 409

        second = await chat(http, setup, "And how do I keep to the plan?", body["conversation_id"])
        [draft] = (await http.get("/api/v1/drafts?status=pending", headers=setup.coach.headers)).json()
        edited = await http.post(
            f"/api/v1/drafts/{draft['id']}/approve", headers=setup.coach.headers, json={"text": "Pick one thing a day."}
        )
        assert edited.status_code == 201, edited.text
        live = await next_event(ws, "message", reply=True)
        assert live["message"]["sender_type"] == "human_coach" and live["message"]["text"] == "Pick one thing a day."
    messages = await transcript(http, setup, second["conversation_id"])
    assert [m["sender_type"] for m in messages] == ["client", "ai", "client", "human_coach"]
    assert messages[-1]["metadata"]["ai_draft"] == REPLY and messages[-1]["metadata"]["edited"] is True


async def test_a_draft_citing_a_document_deleted_since_is_sent_only_edited(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The coach deletes a document (for what it says, perhaps) while a draft that draws on it waits: sent as
    written, the draft would still cite it, and its text came from it. Approving it unchanged is a 409 naming
    the document; the coach's edit goes (as the coach's own message, without citations)."""
    setup = await new_setup(handoff_mode="draft")
    h = setup.coach.headers
    doc = await upload(
        http, setup.coach, "weekly-planning.md", b"# Weekly planning\n\nPlan your week on Sunday: three priorities.\n"
    )
    await run_jobs()
    stream_reply(llm_api, [*DELTAS, " [1]"], (120, 9))  # the drafts cite the document's passage
    conversation_id = (await chat(http, setup, "How can I plan my week better?"))["conversation_id"]
    [draft] = (await http.get("/api/v1/drafts?status=pending", headers=h)).json()
    # processed again (twice), the document lives on in its copy: a draft citing it is sent as written, and the
    # client opens its passages
    copy = doc
    for _ in range(2):
        copy = (await http.post(f"/api/v1/documents/{copy['id']}/reprocess", headers=h)).json()
        await run_jobs()
    approved = await http.post(f"/api/v1/drafts/{draft['id']}/approve", headers=h)
    assert approved.status_code == 201, approved.text
    assert {c["document_id"] for c in approved.json()["citations"]} == {copy["id"]}, "sent citing where it is now"
    [cited, *_] = (await transcript(http, setup, conversation_id))[1]["citations"]
    passage = await http.get(f"/api/v1/widget/passages/{cited['chunk_id']}", headers=setup.client_auth)
    assert passage.status_code == 200 and "three priorities" in passage.json()["text"], passage.text

    await chat(http, setup, "And how do I keep to the plan?", conversation_id)
    [draft] = (await http.get("/api/v1/drafts?status=pending", headers=h)).json()
    assert (await http.delete(f"/api/v1/documents/{copy['id']}", headers=h)).status_code == 204

    refused = await http.post(f"/api/v1/drafts/{draft['id']}/approve", headers=h)
    assert refused.status_code == 409
    assert "draws on passages of “Weekly planning” that are gone since it" in refused.json()["detail"]
    edited = await http.post(f"/api/v1/drafts/{draft['id']}/approve", headers=h, json={"text": "Pick three things."})
    assert edited.status_code == 201, edited.text
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "ai", "client", "human_coach"]
    assert messages[1]["citations"] and not messages[3]["citations"]


async def test_approving_a_draft_and_deleting_its_document_at_once_take_turns(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The approval holds the documents its draft cites until the reply is stored: a deletion that comes meanwhile
    waits, and an approval that comes during a deletion waits for it, then refuses the draft as written; one that
    comes while a copy replaces the document waits, then finds the passages in the copy."""
    setup = await new_setup(handoff_mode="draft")
    h, coach_id = setup.coach.headers, uuid.UUID(setup.coach.coach_id)
    notes = b"# Weekly planning\n\nPlan your week on Sunday: three priorities.\n"
    stream_reply(llm_api, [*DELTAS, " [1]"], (120, 9))  # the drafts cite the document's passage

    async def drafted(text: str, conversation_id: str | None = None) -> tuple[str, uuid.UUID]:
        await upload(http, setup.coach, "weekly-planning.md", notes)
        await run_jobs()
        conversation_id = (await chat(http, setup, text, conversation_id))["conversation_id"]
        [draft] = (await http.get("/api/v1/drafts?status=pending", headers=h)).json()
        return conversation_id, uuid.UUID(draft["id"])

    conversation_id, draft_id = await drafted("How can I plan my week better?")
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await container.drafts.approve_draft(uow, draft_id)
        document_id = (await http.get("/api/v1/documents", headers=h)).json()[0]["id"]
        deleting = asyncio.create_task(http.delete(f"/api/v1/documents/{document_id}", headers=h))
        await asyncio.sleep(0.5)
        assert not deleting.done(), "the deletion waits until the approved reply is stored"
    assert (await deleting).status_code == 204

    _, draft_id = await drafted("And how do I keep to the plan?", conversation_id)
    document_id = (await http.get("/api/v1/documents", headers=h)).json()[0]["id"]
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await container.documents.delete(uow, uuid.UUID(document_id))
        approving = asyncio.create_task(http.post(f"/api/v1/drafts/{draft_id}/approve", headers=h))
        await asyncio.sleep(0.5)
        assert not approving.done(), "the approval waits for the deletion under way"
    refused = await approving
    assert refused.status_code == 409 and "are gone since it was written" in refused.json()["detail"]
    assert (await http.post(f"/api/v1/drafts/{draft_id}/discard", headers=h)).status_code == 200

    # the cited document replaced by its copy (its file processed again) while the approval waits: the draft goes,
    # its passages found in the copy once the replacement committed
    _, draft_id = await drafted("What should my Sunday look like?", conversation_id)
    document_id = uuid.UUID((await http.get("/api/v1/documents", headers=h)).json()[0]["id"])
    copy_id = uuid.UUID((await http.post(f"/api/v1/documents/{document_id}/reprocess", headers=h)).json()["id"])

    async def unfinished(self: IngestRun, total: int, extracted: Any) -> bool:
        return True  # the copy's chunks stored; its end is played below, held open

    with monkeypatch.context() as patched:
        patched.setattr(IngestRun, "_finish", unfinished)
        await run_jobs()
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        total = len((await uow.session.scalars(select(Chunk.id).where(Chunk.document_id == copy_id))).all())
    pairs = await match_successors(container.sessionmaker, coach_id, copy_id, total)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await store_successors(uow.session, coach_id, original=document_id, pairs=pairs)
        await uow.session.execute(delete(Document).where(Document.id == document_id))
        await uow.session.execute(update(Document).where(Document.id == copy_id).values(status="ready"))
        approving = asyncio.create_task(http.post(f"/api/v1/drafts/{draft_id}/approve", headers=h))
        await asyncio.sleep(0.5)
        assert not approving.done(), "the approval waits for the replacement under way"
    approved = await approving
    assert approved.status_code == 201, approved.text


async def test_a_pending_draft_goes_once_the_coach_or_the_crisis_protocol_answered_instead(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """A draft still pending when the coach answers the client by hand, or when a later message gets the
    crisis reply, is discarded: approving it afterwards is a 409, so the client never gets a second, out-of-date
    AI answer after the coach's or after the crisis reply."""
    setup = await new_setup(handoff_mode="draft")
    h = setup.coach.headers

    async def pending() -> list[dict[str, Any]]:
        return (await http.get("/api/v1/drafts?status=pending", headers=h)).json()

    conversation_id = (await chat(http, setup, "How can I plan my week better?"))["conversation_id"]
    [draft] = await pending()
    sent = await http.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "Hi, me."})
    assert sent.status_code == 201, sent.text
    assert await pending() == []
    assert (await http.post(f"/api/v1/drafts/{draft['id']}/approve", headers=h)).status_code == 409
    assert (await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=h)).status_code == 200

    await chat(http, setup, "And how do I keep to the plan?", conversation_id)
    [draft] = await pending()
    crisis = await chat(http, setup, "I want to end my life tonight", conversation_id)
    assert crisis["handoff"]["reason"] == "crisis"
    assert await pending() == []
    assert (await http.post(f"/api/v1/drafts/{draft['id']}/approve", headers=h)).status_code == 409
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "human_coach", "client", "client", "ai"]
    assert messages[-1]["metadata"]["crisis"] is True


# ---------------------------------------------------------------------------------------- tenancy


async def test_coaches_cannot_see_or_claim_each_others_handoffs(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """Coach B sees none of coach A's handoffs or drafts and gets 404 for every action on them."""
    a = await new_setup("Coach A", handoff_mode="draft")
    b = await new_setup("Coach B")
    drafted = await chat(http, a, "How can I plan my week better?")
    handed = await chat(http, a, "/human", drafted["conversation_id"])
    assert handed["handoff"]["status"] == "open"
    conversation_id = drafted["conversation_id"]
    [draft] = (await http.get("/api/v1/drafts?status=pending", headers=a.coach.headers)).json()

    assert await handoffs(http, b.coach) == []
    assert (await http.get("/api/v1/drafts", headers=b.coach.headers)).json() == []
    for path, payload in [
        (f"/api/v1/conversations/{conversation_id}/takeover", None),
        (f"/api/v1/conversations/{conversation_id}/messages", {"text": "hi"}),
        (f"/api/v1/conversations/{conversation_id}/handback", None),
        (f"/api/v1/drafts/{draft['id']}/approve", None),
        (f"/api/v1/drafts/{draft['id']}/discard", None),
    ]:
        response = await http.post(path, headers=b.coach.headers, json=payload)
        assert response.status_code == 404, (path, response.text)
    [still_open] = await handoffs(http, a.coach, "open")
    assert still_open["conversation_id"] == conversation_id
    assert (await http.get("/api/v1/drafts?status=pending", headers=a.coach.headers)).json() == [draft]


# ---------------------------------------------------------------------------------------- SLA


async def backdate(services: Services, conversation_ids: list[str], *, minutes: int, messages: bool = False) -> None:
    """Move the handoffs of ``conversation_ids`` (opened and claimed) and, with ``messages``, their messages
    ``minutes`` into the past (as the schema owner: across tenants)."""
    engine = create_async_engine(services.migration_database_url)
    updates = ["UPDATE handoffs SET created_at = created_at - make_interval(mins => :m),"
               " claimed_at = claimed_at - make_interval(mins => :m),"
               " sla_notified_at = sla_notified_at - make_interval(mins => :m) WHERE conversation_id = :c"]  # fmt: skip
    if messages:
        updates.append(
            "UPDATE messages SET created_at = created_at - make_interval(mins => :m) WHERE conversation_id = :c"
        )
    try:
        async with engine.begin() as conn:
            for conversation_id in conversation_ids:
                for update in updates:
                    await conn.execute(text(update), {"c": uuid.UUID(conversation_id), "m": minutes})
    finally:
        await engine.dispose()


async def test_the_client_gets_one_holding_message_past_the_sla(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    services: Services,
) -> None:
    """A handoff still open past the coach's SLA gets one holding message (the sweep is idempotent)."""
    setup = await new_setup(handoff_sla_minutes=5)
    body = await chat(http, setup, "/human")
    await backdate(services, [body["conversation_id"]], minutes=6)
    assert await container.sla_notices.send_sla_notices() >= 1
    assert await container.sla_notices.send_sla_notices() == 0
    messages = await transcript(http, setup, body["conversation_id"])
    holding = [m for m in messages if m["metadata"].get("notice") == "sla"]
    assert len(holding) == 1 and "Thank you for waiting" in holding[0]["text"]


async def test_a_client_waiting_past_the_sla_after_the_coach_took_over_gets_one_holding_message(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    services: Services,
) -> None:
    """The coach took the conversation over and left it: the client's message written since waits past the
    SLA and gets one holding message (the AI stays paused); a client answered by the coach gets none. A claimed
    handoff got nothing, and the client waited for good."""
    setup = await new_setup(handoff_sla_minutes=5)
    h = setup.coach.headers
    left, answered = [(await chat(http, setup, "Hello there."))["conversation_id"] for _ in range(2)]
    for conversation_id in (left, answered):
        assert (await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=h)).status_code == 200
        await chat(http, setup, "Are you still there?", conversation_id)
    sent = await http.post(f"/api/v1/conversations/{answered}/messages", headers=h, json={"text": "Yes, here."})
    assert sent.status_code == 201, sent.text
    await backdate(services, [left, answered], minutes=6, messages=True)
    assert await container.sla_notices.send_sla_notices() >= 1
    left_messages = await transcript(http, setup, left)
    assert [m["sender_type"] for m in left_messages][-2:] == ["client", "ai"]
    assert left_messages[-1]["metadata"]["notice"] == "sla" and "pulled away" in left_messages[-1]["text"]
    assert not [m for m in await transcript(http, setup, answered) if m["metadata"].get("notice") == "sla"]
    assert (await chat(http, setup, "Hello?", left))["reply"] == "", "the AI stays paused: the coach has it"
    # the client waits again: a holding message for this wait too (one ever left them waiting for good)
    await backdate(services, [left], minutes=6, messages=True)
    await container.sla_notices.send_sla_notices()
    await container.sla_notices.send_sla_notices()
    notices = [m for m in await transcript(http, setup, left) if m["metadata"].get("notice") == "sla"]
    assert len(notices) == 2


# ---------------------------------------------------------------------------------------- bad input


async def test_bad_handoff_requests_get_clear_errors_and_change_nothing(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    setup = await new_setup()
    body = await chat(http, setup, "How can I plan my week better?")
    conversation_id = body["conversation_id"]
    h = setup.coach.headers

    response = await http.get("/api/v1/handoffs?status=waiting", headers=h)
    assert response.status_code == 400 and "status must be one of" in response.json()["detail"]
    response = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=h)
    assert response.status_code == 409 and "not handed off" in response.json()["detail"]
    response = await http.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": ""})
    assert response.status_code == 400
    response = await http.post(f"/api/v1/conversations/{uuid.uuid4()}/takeover", headers=h)
    assert response.status_code == 404
    response = await http.post(f"/api/v1/drafts/{uuid.uuid4()}/approve", headers=h)
    assert response.status_code == 404
    for patch, message in [
        ({"handoff_mode": "sometimes"}, "handoff_mode must be one of"),
        ({"confidence_threshold": 1.5}, "confidence_threshold must be a number from 0 to 1"),
        ({"handoff_sla_minutes": 0}, "handoff_sla_minutes must be a whole number"),
        ({"availability": {"timezone": "Mars/Olympus", "days": [0], "start": "09:00", "end": "17:00"}}, "time zone"),
        ({"availability": {"days": [0], "start": "18:00", "end": "09:00"}}, "later than"),
        ({"alert_webhook_url": "ftp://example.com"}, "alert_webhook_url must start with"),
        ({"alert_email": "not-an-address"}, "alert_email is not an e-mail address"),
        ({"alert_email": "a" * 310 + "@example.com"}, "alert_email must be at most 320 characters"),
        ({"alert_webhook_url": "https://127.0.0.1/" + "a" * 500}, "alert_webhook_url must be at most 500"),
        ({"llm_model": "m" * 201}, "llm_model must be at most 200 characters"),
        ({"llm_base_url": "https://127.0.0.1/" + "a" * 500}, "llm_base_url must be at most 500"),
        ({"availability": {"days": [0], "start": "09:00+02:00", "end": "17:00"}}, "a local time like 09:00"),
        ({"availability": {"days": [0], "start": "09:00Z", "end": "17:00Z"}}, "a local time like 09:00"),
        ({"availability": {"days": [0], "start": "09:00:10", "end": "09:00:50"}}, "in whole minutes"),
        ({"availability": {"days": [True, False]}}, "non-empty list of weekdays"),
        ({"handoff_sla_minute": 5}, "unknown field `handoff_sla_minute`"),
        ({"handoff_mode": "draft", "crisis_resources": "call 988"}, "Expected `array"),
    ]:
        response = await http.patch("/api/v1/settings", headers=h, json=patch)
        assert response.status_code == 400, (patch, response.text)
        assert message in response.text, (patch, response.text)
    settings = (await http.get("/api/v1/settings", headers=h)).json()
    assert settings["handoff_mode"] == "auto" and settings["confidence_threshold"] == 0.5
    assert settings["handoff_sla_minutes"] == 15 and settings["availability"] is None
    assert [m["sender_type"] for m in await transcript(http, setup, conversation_id)] == ["client", "ai"]


# ---------------------------------------------------------------------------------------- feedback / frustration


async def test_thumbs_down_streak_and_a_repeated_question_hand_off_as_frustration(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """The client's feedback is stored on the reply (changeable, only by the conversation's own client); two
    thumbs-down in a row plus asking the same question again drop confidence below the threshold."""
    setup = await new_setup()
    other = await new_setup("Other Coach")
    question = "How do I stop procrastinating on my thesis every single morning?"
    first = await chat(http, setup, question)
    conversation_id = first["conversation_id"]

    url = f"/api/v1/messages/{first['message_id']}/feedback"
    assert (await http.post(url, headers=other.client_auth, json={"helpful": False})).status_code == 404
    bad = await http.post(url, headers=setup.client_auth, json={"helpful": False, "rating": 7})
    assert bad.status_code == 400 and "rating must be" in bad.json()["detail"]
    assert (await http.post(url, headers=setup.client_auth, json={"helpful": True})).status_code == 200
    changed = await http.post(
        url, headers=setup.client_auth, json={"helpful": False, "rating": 1, "text": "Not useful"}
    )
    assert changed.status_code == 200 and changed.json()["helpful"] is False

    second = await chat(http, setup, "Is there anything simpler I could try tomorrow?", conversation_id)
    assert second["handoff"] is None
    done = await http.post(
        f"/api/v1/messages/{second['message_id']}/feedback", headers=setup.client_auth, json={"helpful": False}
    )
    assert done.status_code == 200

    third = await chat(http, setup, question, conversation_id)
    assert third["handoff"]["status"] == "open" and third["handoff"]["reason"] == "low_confidence", third
    [queued] = await handoffs(http, setup.coach, "open")
    assert "frustration" in queued["detail"]
    messages = await transcript(http, setup, conversation_id)
    assert messages[1]["metadata"]["feedback"] | {"at": None} == {
        "helpful": False,
        "rating": 1,
        "text": "Not useful",
        "at": None,
    }
    assert messages[-1]["metadata"]["signals"]["thumbs_down_streak"] == 2


async def test_the_brief_is_built_from_the_clients_memory(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """The coach's brief names the reason, what works for the client, what to handle with care, and what the
    client just wrote."""
    setup = await new_setup()
    profile = await http.patch(
        f"/api/v1/clients/{setup.client_id}/memory/profile",
        headers=setup.coach.headers,
        json={"what_works": ["short voice-note style check-ins"], "sensitive_topics": ["her father's illness"]},
    )
    assert profile.status_code == 200, profile.text
    body = await chat(http, setup, "I'd rather talk to a person about this, please")
    assert body["handoff"]["reason"] == "human_request"
    [queued] = await handoffs(http, setup.coach, "open")
    brief = queued["brief"].splitlines()
    assert brief[0].startswith("Why: Client asked for a human")
    assert "What works: short voice-note style check-ins" in brief
    assert "Handle with care: her father's illness" in brief
    assert brief[-1] == "Client said: “I'd rather talk to a person about this, please”"
