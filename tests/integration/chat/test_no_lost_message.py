"""No client message is lost (issue 11): over a real socket, a message sent while an answer streams is stored,
acknowledged and answered even when the network then drops without a close frame; sent again after the
reconnect with the same client message id, it is stored once. REST retries are idempotent too, and the widget
catches up on what was stored while it was away.

Only the coach's OpenAI-compatible endpoint is mocked (OpenAI wire format), slowed down so the second message
arrives mid-answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
import websockets

from app.chat.turn import ANSWER_LATER, ChatService
from tests.conftest import make_client
from tests.integration.handoff.test_handoff_flow import DELTAS, REPLY, Setup, llm_api, new_setup, transcript
from tests.openai_wire import MOCK_BASE_URL, mock_openai, openai_sse

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

DELTA_DELAY_S = 0.8
SLOW_DELTAS = [*DELTAS, " Then", " rest", " well", "."]
"""Eleven words: more than the widget's stream holds back (``HELD_WORDS``), so tokens arrive before ``done``."""
SLOW_REPLY = "".join(SLOW_DELTAS)


async def _slow_sse() -> AsyncIterator[bytes]:
    """The mocked completion's server-sent events, one every :data:`DELTA_DELAY_S` seconds."""
    for event in openai_sse(SLOW_DELTAS, (120, 12)).split(b"\n\n"):
        if event:
            await asyncio.sleep(DELTA_DELAY_S)
            yield event + b"\n\n"


@pytest.fixture
def slow_llm() -> Iterator[respx.MockRouter]:
    """The coach's endpoint streaming :data:`SLOW_REPLY` slowly."""
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        router.post(f"{MOCK_BASE_URL}/chat/completions", name="completions").mock(
            side_effect=lambda request: httpx.Response(
                200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=_slow_sse()
            )
        )
        yield router


async def next_of(ws: Any, kind: str, wait: float = 20) -> dict[str, Any]:
    """The next event of type ``kind`` (others skipped)."""
    async with asyncio.timeout(wait):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == kind:
                return event  # type: ignore[no-any-return]


async def events_until(ws: Any, done: Callable[[dict[str, Any]], bool], wait: float = 20) -> list[dict[str, Any]]:
    """The events received until one satisfies ``done`` (included) or ``wait`` seconds pass (no error: the
    caller asserts on what arrived)."""
    events: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            while not events or not done(events[-1]):
                events.append(json.loads(await ws.recv()))
    return events


async def wait_for_transcript(
    http: httpx.AsyncClient, setup: Setup, conversation_id: str, count: int, wait: float = 30
) -> list[dict[str, Any]]:
    """The transcript once it holds ``count`` messages, or as it is after ``wait`` seconds."""
    messages = await transcript(http, setup, conversation_id)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            while len(messages) < count:
                await asyncio.sleep(0.3)
                messages = await transcript(http, setup, conversation_id)
    return messages


async def test_a_message_sent_again_on_the_same_socket_before_its_answer_is_answered_once(
    http: httpx.AsyncClient, base_url: str, new_setup: Callable[..., Awaitable[Setup]], slow_llm: respx.MockRouter
) -> None:
    """The widget re-sends a message it has no ack for yet (a catch-up finishing on the same socket): the repeat
    is acknowledged with ``answering`` false and only the first answer runs (the repeat used to call the model a
    second time, then end in an empty ``done`` that cleared the widget's "waiting for your coach" line)."""
    setup = await new_setup()
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    calls = slow_llm.routes["completions"].call_count
    message = json.dumps({"text": "How can I plan my week better?", "client_message_id": "c-twice"})
    async with websockets.connect(url) as ws:
        await ws.send(message)
        await ws.send(message)
        events = await events_until(ws, lambda e: e["type"] == "done")
        events += await events_until(ws, lambda e: e["type"] == "done", wait=3)  # no second done comes
    acks = [e for e in events if e["type"] == "ack"]
    assert [a["answering"] for a in acks] == [True, False] and acks[0]["message_id"] == acks[1]["message_id"]
    assert [e["type"] for e in events].count("done") == 1
    assert slow_llm.routes["completions"].call_count == calls + 1
    messages = await transcript(http, setup, acks[0]["conversation_id"])
    assert [m["sender_type"] for m in messages] == ["client", "ai"]


async def test_a_message_sent_while_an_answer_streams_survives_a_dropped_network(
    http: httpx.AsyncClient, base_url: str, new_setup: Callable[..., Awaitable[Setup]], slow_llm: respx.MockRouter
) -> None:
    setup = await new_setup()
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": "How can I plan my week better?", "client_message_id": "c-1"}))
        before = await events_until(ws, lambda e: e["type"] == "token")  # the first answer is streaming
        await ws.send(json.dumps({"text": "And how do I keep to it?", "client_message_id": "c-2"}))
        during = await events_until(ws, lambda e: e["type"] == "ack" and e["client_message_id"] == "c-2", wait=2)
        ws.transport.abort()  # the network drops: no close frame

    [conversation] = (await http.get("/api/v1/conversations", headers=setup.coach.headers)).json()
    conversation_id = conversation["id"]
    messages = await wait_for_transcript(http, setup, conversation_id, 4)
    assert [(m["sender_type"], m["text"]) for m in messages] == [
        ("client", "How can I plan my week better?"),
        ("client", "And how do I keep to it?"),
        ("ai", SLOW_REPLY),
        ("ai", SLOW_REPLY),
    ]
    acks = {e["client_message_id"]: e for e in before + during if e["type"] == "ack"}
    assert set(acks) == {"c-1", "c-2"}, "each message is acknowledged as it arrives"
    assert all(e["type"] != "done" for e in during), "acknowledged while the first answer still streamed"
    first, second = acks["c-1"], acks["c-2"]
    assert first["answering"] is True and second["conversation_id"] == conversation_id
    assert messages[1]["id"] == second["message_id"]

    async with websockets.connect(url) as ws:  # the widget reconnects and sends its unacknowledged message again
        await ws.send(
            json.dumps(
                {"text": "And how do I keep to it?", "conversation_id": conversation_id, "client_message_id": "c-2"}
            )
        )
        again = await next_of(ws, "ack")
    assert again["message_id"] == second["message_id"] and again["answering"] is False
    await asyncio.sleep(1)
    assert len(await transcript(http, setup, conversation_id)) == 4, "stored once, answered once"
    assert slow_llm.routes["completions"].call_count == 2

    caught_up = await http.get(
        f"/api/v1/widget/conversations/{conversation_id}/messages",
        params={"after": first["message_id"]},
        headers=setup.client_auth,
    )
    assert caught_up.status_code == 200, caught_up.text
    body = caught_up.json()
    assert [m["id"] for m in body] == [m["id"] for m in messages[1:]]
    assert body[0]["client_message_id"] == "c-2"


async def test_rest_retries_with_the_same_client_message_id_are_stored_once(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], slow_llm: respx.MockRouter
) -> None:
    setup = await new_setup()
    body = {"text": "How can I plan my week better?", "client_message_id": str(uuid.uuid4())}
    first = (await http.post("/api/v1/chat", headers=setup.client_auth, json=body)).json()
    retry = await http.post("/api/v1/chat", headers=setup.client_auth, json=body)
    assert retry.status_code == 200, retry.text
    assert retry.json()["conversation_id"] == first["conversation_id"] and retry.json()["reply"] == ""
    messages = await transcript(http, setup, first["conversation_id"])
    assert [m["sender_type"] for m in messages] == ["client", "ai"]
    assert slow_llm.routes["completions"].call_count == 1
    # the same id with another text is another message: refused, not a 200 with nothing stored nor answered
    reused = await http.post("/api/v1/chat", headers=setup.client_auth, json={**body, "text": "And my weekend?"})
    assert reused.status_code == 409 and "client_message_id was used for another message" in reused.text
    assert len(await transcript(http, setup, first["conversation_id"])) == 2


async def test_client_message_ids_are_each_clients_own(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """Two clients of one coach whose apps number their messages alike (or one who sends the id another's
    Telegram chat will use) do not block each other: each message is stored and answered."""
    setup = await new_setup()
    other = await make_client(http, setup.coach, "Sam")
    others = {"Authorization": f"Bearer {other['widget_token']}"}
    for auth in (setup.client_auth, others, others):
        body = {"text": "How can I plan my week better?", "client_message_id": "tg:7000001:15"}
        response = await http.post("/api/v1/chat", headers=auth, json=body)
        assert response.status_code == 200, response.text
    conversations = (await http.get("/api/v1/conversations", headers=setup.coach.headers)).json()
    assert sorted(c["message_count"] for c in conversations) == [2, 2], "each client's message once, answered"


async def test_bad_messages_and_catch_up_reads_get_clear_errors(
    http: httpx.AsyncClient, base_url: str, new_setup: Callable[..., Awaitable[Setup]], slow_llm: respx.MockRouter
) -> None:
    setup, other = await new_setup(), await new_setup("Other Coach")
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": "hi", "client_message_id": "   "}))
        refused = await next_of(ws, "error")
        assert refused["client_message_id"] == "   " and "must be 1 to 64 characters" in refused["message"]
        for long_id in ("x" * 65, "x" * 5000):  # its length is said, the id not echoed (it came back whole)
            await ws.send(json.dumps({"text": "hi", "client_message_id": long_id}))
            message = f"client_message_id must be 1 to 64 characters (it has {len(long_id)})"
            assert await next_of(ws, "error") == {"type": "error", "message": message}
        await ws.send(json.dumps({"text": 5, "client_message_id": "x" * 5000}))  # refused by the decoder
        assert "client_message_id" not in await next_of(ws, "error")
        await ws.send(json.dumps({"text": "hi", "conversation_id": str(uuid.uuid4()), "client_message_id": "c-9"}))
        missing = await next_of(ws, "error")
        assert missing == {"type": "error", "message": "conversation not found", "client_message_id": "c-9"}
        await ws.send(json.dumps({"text": "How can I plan my week better?", "client_message_id": "c-10"}))
        stored = await next_of(ws, "ack")
        await next_of(ws, "done")
    conversation_id = stored["conversation_id"]
    assert [m["sender_type"] for m in await transcript(http, setup, conversation_id)] == ["client", "ai"]

    path = f"/api/v1/widget/conversations/{conversation_id}/messages"
    assert (await http.get(path, headers=other.client_auth)).status_code == 404
    assert (await http.get(path, headers=setup.client_auth, params={"after": str(uuid.uuid4())})).status_code == 404
    assert (await http.get(path, headers=setup.client_auth, params={"after": "nope"})).status_code == 400
    assert (await http.get(path)).status_code == 401
    everything = (await http.get(path, headers=setup.client_auth)).json()
    assert [m["sender_type"] for m in everything] == ["client", "ai"]


async def test_a_message_whose_live_answer_fails_is_answered_by_a_job(
    http: httpx.AsyncClient,
    base_url: str,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
    answer_fails_once: list[tuple[Any, ...]],
) -> None:
    """Under overload the live answer can fail (a database pool wait timing out): the message is stored, the
    client is told it will be answered (naming the message), and the worker's job answers it, once."""
    setup = await new_setup()
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": "How can I plan my week better?", "client_message_id": "c-late"}))
        ack = await next_of(ws, "ack")
        error = await next_of(ws, "error")
        coded = {"code": "answer_later", "fields": {}}  # (static/chat.js shows refused_answer_later)
        assert error == {"type": "error", "message": ANSWER_LATER, "in_reply_to": ack["message_id"]} | coded
        conversation_id = ack["conversation_id"]
        assert [m["sender_type"] for m in await transcript(http, setup, conversation_id)] == ["client"]

        await run_jobs()
        live = await events_until(ws, lambda e: e["type"] == "message" and e["message"]["sender_type"] == "ai")

    assert live[-1]["message"]["text"] == REPLY, "the job's reply arrives live on the client's channel"
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "ai"] and messages[1]["text"] == REPLY
    assert [str(args[2]) for args in answer_fails_once] == [ack["message_id"], ack["message_id"]]
    await run_jobs()  # the job is not queued twice: nothing more is answered
    assert len(await transcript(http, setup, conversation_id)) == 2


async def test_a_rest_message_whose_answer_fails_is_a_503_and_answered_by_a_job(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``POST /api/v1/chat`` whose answer fails once the message is stored (a database pool wait timing out
    under overload) was a bare 500, and the message waited for the stranded-message sweep (minutes). It is now a
    503 saying the message is saved and will be answered, and the worker's job answers it at once."""
    setup = await new_setup()
    answer, calls = ChatService._answer, []

    def fails_once(self: ChatService, *args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise TimeoutError("QueuePool limit of size 10 overflow 10 reached")
        return answer(self, *args)

    monkeypatch.setattr(ChatService, "_answer", fails_once)
    response = await http.post(
        "/api/v1/chat", headers=setup.client_auth, json={"text": "How can I plan my week better?"}
    )
    assert response.status_code == 503 and ANSWER_LATER in response.text, response.text
    conversations = (await http.get("/api/v1/conversations", headers=setup.coach.headers)).json()
    [conversation] = [c for c in conversations if c["client_id"] == setup.client_id]
    await run_jobs()
    messages = await transcript(http, setup, conversation["id"])
    assert [m["sender_type"] for m in messages] == ["client", "ai"] and messages[1]["text"] == REPLY


async def test_a_crisis_message_sent_again_says_the_coach_has_the_conversation(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], slow_llm: respx.MockRouter
) -> None:
    """A REST client retrying its message (same ``client_message_id``) after the crisis reply got ``"handoff": null``,
    as if the AI still had the conversation; it now gets the crisis handoff, as the first answer said."""
    setup = await new_setup()
    body = {"text": "I want to kill myself tonight", "client_message_id": str(uuid.uuid4())}
    first = (await http.post("/api/v1/chat", headers=setup.client_auth, json=body)).json()
    assert first["handoff"]["status"] == "open" and first["handoff"]["reason"] == "crisis", first
    retry = await http.post("/api/v1/chat", headers=setup.client_auth, json=body)
    assert retry.status_code == 200, retry.text
    assert retry.json()["reply"] == "" and retry.json()["handoff"] == first["handoff"]
