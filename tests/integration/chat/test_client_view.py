"""What a client receives of a reply's metadata is the ``client_view`` allowlist, for turns of every kind and
on every path to the client: the REST turn, the WebSocket ``done`` event, live events on the client's
channel (coach's messages, approved drafts, holding messages) and the widget page.

Turns: normal (with citations), cache hit, provider failure, crisis, handoff (an ask for a human,
``human_only``, low confidence), draft mode (approved as written and edited), takeover and handback, the
SLA holding message. The app, PostgreSQL, Redis, the worker and the local embedder are real; only the
coach's OpenAI-compatible endpoint is mocked with respx (OpenAI wire format).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import respx
import websockets
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.container import Container
from app.conversations.metadata import CLIENT_FEEDBACK_KEYS, CLIENT_METADATA_KEYS
from app.core.runtime import Services
from tests.conftest import upload, widget_page
from tests.integration.handoff.test_handoff_flow import REPLY, Setup, llm_api, new_setup, transcript
from tests.openai_wire import openai_error

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

INTERNAL_KEYS = frozenset(
    {
        # confidence, signals, risk: an oracle for the crisis detector and the handoff rules
        "confidence",
        "factors",
        "confidence_threshold",
        "ai_confidence_before",
        "signals",
        "risk_score",
        "risk_level",
        "retrieval_support",
        "token_confidence",
        "risk",
        "cues",
        # failures name the coach's configuration
        "error",
        "partial_reply",
        # attribution, learning, timings
        "provider",
        "model",
        "model_version_id",
        "model_fallback",
        "mode",
        "cache",
        "experiment",
        "memory",
        "few_shot",
        "history_messages",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "retrieval_ms",
        "prompt_ms",
        "first_token_ms",
        "generation_ms",
        "persist_ms",
        "ai_draft",
        "handoff_id",
        "draft_id",
        # honesty: the model's replaced claim to be human
        "honesty",
        "honesty_model_reply",
    }
)
"""Keys that must appear nowhere (at any depth) in anything a client receives."""

PLAN_NOTES = (
    b"Planning your week: on Sunday evening, pick the three priorities that matter most, block time for each "
    b"in your calendar, and plan one small first step for Monday morning. Review the plan every evening. "
    b"Let each step take its time."  # (the stub's reply draws on it: "Let's take it one step at a time.")
)
PROVIDER_ERROR = "upstream exploded for key sk-test at the coach's endpoint"


@dataclass
class Client:
    """A client's side of the app: turns over REST or the widget WebSocket, and the widget socket held open
    for live events. Every JSON payload the client receives is appended to ``received``."""

    http: httpx.AsyncClient
    setup: Setup
    transport: str
    received: list[dict[str, Any]]
    ws: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    answered: set[str] = field(default_factory=set)
    """The replies :meth:`say` returned."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                event = json.loads(raw)
                self.events.append(event)
                self.received.append(event)
                self.arrived.set()

    async def next(self, kind: str, wait: float = 15) -> dict[str, Any]:
        """The next event of type ``kind`` on the widget socket (others are skipped, and so are the ``message``
        events of the client's own turns: their messages and the replies :meth:`say` returned come back live)."""
        async with asyncio.timeout(wait):
            while True:
                while self.cursor < len(self.events):
                    event = self.events[self.cursor]
                    self.cursor += 1
                    if event.get("type") == kind and not self._own(event):
                        return event
                self.arrived.clear()
                await self.arrived.wait()

    def _own(self, event: dict[str, Any]) -> bool:
        message = event.get("message") if event.get("type") == "message" else None
        return message is not None and (message["sender_type"] == "client" or message["id"] in self.answered)

    async def say(self, message: str, conversation_id: str | None = None) -> dict[str, Any]:
        """One turn; the REST body or the WebSocket ``done`` event (both carry ``metadata`` and ``handoff``)."""
        body: dict[str, Any] = {"text": message}
        if conversation_id:
            body["conversation_id"] = conversation_id
        if self.transport == "ws":
            await self.ws.send(json.dumps(body))
            result = await self.next("done", wait=60)
        else:
            response = await self.http.post("/api/v1/chat", headers=self.setup.client_auth, json=body)
            assert response.status_code == 200, response.text
            result = response.json()
            self.received.append(result)
        self.answered.add(result["message_id"])
        return result

    async def page(self) -> str:
        """The widget page (server-rendered messages)."""
        response = await widget_page(self.http.base_url, self.setup.widget_token)
        assert response.status_code == 200
        return response.text


@contextlib.asynccontextmanager
async def connected(
    http: httpx.AsyncClient, base_url: str, setup: Setup, transport: str, received: list[dict[str, Any]]
) -> AsyncIterator[Client]:
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    async with websockets.connect(url) as ws:
        client = Client(http, setup, transport, received, ws)
        reader = asyncio.create_task(client.read())
        await asyncio.sleep(0.3)  # let the server subscribe to the client's channel
        try:
            yield client
        finally:
            await ws.close()
            await reader


def internal_keys(payload: Any, path: str = "") -> list[str]:
    """Paths of :data:`INTERNAL_KEYS` anywhere in ``payload``."""
    found: list[str] = []
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key in INTERNAL_KEYS:
                found.append(f"{path}.{key}")
            found += internal_keys(value, f"{path}.{key}")
    elif isinstance(payload, list):
        for i, value in enumerate(payload):
            found += internal_keys(value, f"{path}[{i}]")
    return found


def metadata_in(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The reply metadata a payload carries: a turn's (REST body, ``done``) or a live message's."""
    found = [payload["metadata"]] if "metadata" in payload else []
    message = payload.get("message")
    if isinstance(message, dict) and "metadata" in message:
        found.append(message["metadata"])
    return found


def assert_only_client_view(received: list[dict[str, Any]]) -> set[str]:
    """Every metadata key received is on the allowlist (the feedback's keys too, nothing else nested), and no
    internal key appears anywhere. Returns the metadata keys seen."""
    seen: set[str] = set()
    for payload in received:
        assert not internal_keys(payload), (internal_keys(payload), payload)
        for meta in metadata_in(payload):
            seen |= set(meta)
            assert set(meta) <= CLIENT_METADATA_KEYS, (set(meta) - CLIENT_METADATA_KEYS, payload)
            for key, value in meta.items():
                if key == "feedback":
                    assert set(value) <= CLIENT_FEEDBACK_KEYS, payload
                else:
                    assert not isinstance(value, (dict, list)), (key, payload)
        if payload.get("handoff") is not None:
            assert set(payload["handoff"]) <= {"status", "reason"}, payload
    return seen


@pytest.mark.parametrize("transport", ["rest", "ws"])
async def test_a_client_receives_only_the_client_view_of_metadata(
    http: httpx.AsyncClient,
    base_url: str,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
    services: Services,
    transport: str,
) -> None:
    received: list[dict[str, Any]] = []

    # --- normal turn with citations, then a cache hit for a second client asking the same first question
    auto = await new_setup("Planning Coach")
    await upload(http, auto.coach, "planning.txt", PLAN_NOTES)
    await run_jobs()  # ingests the notes (and any job left by another test, which may call the endpoint)
    calls = llm_api["completions"].call_count
    question = "How should I plan my week?"
    async with connected(http, base_url, auto, transport, received) as client:
        normal = await client.say(question)
        assert normal["reply"] == REPLY and normal["handoff"] is None and normal["citations"], normal
        assert_only_client_view(received)  # fail early, on the first kind of turn that leaks
        conversation_id = normal["conversation_id"]
        rated = await http.post(
            f"/api/v1/messages/{normal['message_id']}/feedback",
            headers=auto.client_auth,
            json={"helpful": True, "rating": 4, "text": "Clear enough"},
        )
        assert rated.status_code == 200, rated.text
        received.append(rated.json())

        other_client = (await http.post("/api/v1/clients", headers=auto.coach.headers, json={"name": "Sam"})).json()
        other = Setup(auto.coach, other_client["id"], other_client["widget_token"])
        async with connected(http, base_url, other, transport, received) as second:
            hit = await second.say(question)
        assert hit["reply"] == REPLY
        [_, stored_hit] = await transcript(http, auto, hit["conversation_id"])
        assert stored_hit["metadata"]["cache"] == "hit" and stored_hit["metadata"]["confidence"]["factors"]
        assert llm_api["completions"].call_count == calls + 1, "the second reply came from the cache"

        # --- provider failure: the apology, flagged failed, never the error
        streaming = llm_api["completions"].side_effect
        llm_api["completions"].mock(
            side_effect=None, return_value=openai_error(500, PROVIDER_ERROR, "server_error", None)
        )
        failed = await client.say("What if my week is already overbooked?", conversation_id)
        assert failed["metadata"].get("failed") is True, failed
        stored = await transcript(http, auto, conversation_id)
        # the coach sees the status, never what the endpoint answered (app/llm/openai_compat.describe_error)
        assert stored[-1]["metadata"]["error"] == "InternalServerError: HTTP 500 Internal Server Error"
        llm_api["completions"].mock(side_effect=streaming)

        # --- takeover: the coach's message arrives live; the client's next message is paused; handback
        sent = await http.post(
            f"/api/v1/conversations/{conversation_id}/messages",
            headers=auto.coach.headers,
            json={"text": "Hi, it's your coach. Let's look at it together."},
        )
        assert sent.status_code == 201, sent.text
        await client.next("coach_joined")
        live = await client.next("message")
        assert live["message"]["sender_type"] == "human_coach" and live["message"]["metadata"]["is_handoff"] is True
        paused = await client.say("Thanks, that helps.", conversation_id)
        assert paused["message_id"] is None and paused["handoff"] == {"status": "claimed", "reason": "coach_takeover"}
        back = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=auto.coach.headers)
        assert back.status_code == 200, back.text
        await client.next("coach_left")
        resumed = await client.say("One more question about Mondays?", conversation_id)
        assert resumed["reply"] == REPLY and resumed["handoff"] is None
        assert (await transcript(http, auto, conversation_id))[-1]["metadata"]["is_handback"] is True

        # --- an ask for a human: a handoff notice; past the SLA, a holding message arrives live
        asked = await client.say("/human", conversation_id)
        assert asked["metadata"] == {"notice": "handoff"}, asked
        assert asked["handoff"] == {"status": "open", "reason": "human_request"}
        engine = create_async_engine(services.migration_database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text("UPDATE handoffs SET created_at = now() - interval '1 day' WHERE conversation_id = :c"),
                    {"c": uuid.UUID(conversation_id)},
                )
        finally:
            await engine.dispose()
        assert await container.sla_notices.send_sla_notices() >= 1
        holding = await client.next("message")
        assert holding["message"]["metadata"] == {"notice": "sla"}, holding

        # --- crisis: the crisis reply, flagged, and the handoff as the widget needs it
        crisis = await client.say("I want to end my life tonight", conversation_id)
        assert crisis["metadata"] == {"crisis": True}, crisis
        assert crisis["handoff"] == {"status": "open", "reason": "crisis"}
        [*_, stored_crisis] = await transcript(http, auto, conversation_id)
        assert stored_crisis["metadata"]["signals"]["risk_score"] > 0 and stored_crisis["metadata"]["risk"]

        page = await client.page()
    assert 'data-feedback="up"' in page and "Clear enough" not in page
    for internal in ("gpt-4o-mini", PROVIDER_ERROR, "(score", "risk_score"):
        assert internal not in page, internal

    # --- human_only mode and a low-confidence handoff: notices, the confidence stays with the coach
    human_only = await new_setup("Human Coach", handoff_mode="human_only")
    async with connected(http, base_url, human_only, transport, received) as client:
        body = await client.say("How do I plan my week?")
        assert body["metadata"] == {"notice": "handoff"} and body["handoff"]["reason"] == "human_only"
    low = await new_setup("Careful Coach", high_stakes_topics=["quitting my job"], confidence_threshold=0.95)
    async with connected(http, base_url, low, transport, received) as client:
        body = await client.say("I'm thinking about quitting my job next week")
        assert body["metadata"] == {"notice": "handoff"} and body["handoff"]["reason"] == "low_confidence", body
        [_, notice] = await transcript(http, low, body["conversation_id"])
        assert notice["metadata"]["confidence"]["factors"]["high_stakes_topic"] < 1

    # --- draft mode: nothing until the coach approves; approved drafts arrive live
    drafting = await new_setup("Draft Coach", handoff_mode="draft")
    async with connected(http, base_url, drafting, transport, received) as client:
        body = await client.say("How do I plan my week?")
        assert body["message_id"] is None and body["handoff"] == {"status": "draft_pending", "reason": "draft_mode"}
        [draft] = (await http.get("/api/v1/drafts?status=pending", headers=drafting.coach.headers)).json()
        approved = await http.post(f"/api/v1/drafts/{draft['id']}/approve", headers=drafting.coach.headers)
        assert approved.status_code == 201, approved.text
        live = await client.next("message")
        assert live["message"]["text"] == REPLY and live["message"]["metadata"] == {"approved_by_coach": True}

        await client.say("And how do I keep to it?", body["conversation_id"])
        [draft] = (await http.get("/api/v1/drafts?status=pending", headers=drafting.coach.headers)).json()
        edited = await http.post(
            f"/api/v1/drafts/{draft['id']}/approve", headers=drafting.coach.headers, json={"text": "One step a day."}
        )
        assert edited.status_code == 201, edited.text
        live = await client.next("message")
        assert live["message"]["sender_type"] == "human_coach" and REPLY not in json.dumps(live)
        stored = await transcript(http, drafting, body["conversation_id"])
        assert stored[-1]["metadata"]["ai_draft"] == REPLY and stored[-1]["metadata"]["confidence"]

    seen = assert_only_client_view(received)
    assert {"crisis", "notice", "failed", "is_handoff", "approved_by_coach"} <= seen, seen
