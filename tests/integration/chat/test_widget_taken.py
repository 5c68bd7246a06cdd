"""The widget's socket while the conversation is taken from the AI: an answer streaming when the coach takes the
conversation over (by writing to the client) or a later message gets the crisis reply stops there (a ``stopped``
event, the turn closed and its model stream with it); it used to stream on to an empty ``done`` for seconds under
the coach's message or the crisis reply. And the handoff status a reconnected widget redraws its presence line from
(``GET /api/v1/widget/conversations/{id}/handoff``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import make_client, widget_page
from tests.integration.handoff.test_handoff_flow import Setup, chat, llm_api, new_setup, transcript, widget_socket
from tests.openai_wire import openai_sse, sse_response

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

WORDS = ["Let", " me", " think", " about", " this", " slowly"] * 5


def slow_model(
    llm_api: respx.MockRouter, every_s: float, fast: Callable[[httpx.Request], bool] = lambda request: False
) -> list[int]:
    """The model streaming :data:`WORDS`, a chunk every ``every_s`` seconds, but "Sure." at once to the requests
    ``fast`` picks. Returns a list whose length counts the slow streams' chunks read so far."""
    read: list[int] = []

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in openai_sse(WORDS, (5, len(WORDS))).split(b"\n\n"):
                if chunk:
                    read.append(1)
                    yield chunk + b"\n\n"
                    await asyncio.sleep(every_s)

    def completion(request: httpx.Request) -> httpx.Response:
        if fast(request):
            return sse_response(openai_sse(["Sure."], (5, 1)))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Slow())

    llm_api["completions"].mock(side_effect=completion)
    return read


async def events_until(ws: Any, last: Callable[[dict[str, Any]], bool], wait: float = 20) -> list[tuple[float, Any]]:
    """The socket's events, each with when it came (``time.monotonic()``), up to the first that ``last`` picks."""
    events: list[tuple[float, Any]] = []
    async with asyncio.timeout(wait):
        while not events or not last(events[-1][1]):
            event = json.loads(await ws.recv())
            events.append((time.monotonic(), event))
    return events


@pytest.mark.parametrize("taker", ["coach", "crisis", "crisis, live events down"])
async def test_an_answer_streaming_when_the_conversation_is_taken_stops_there(
    http: httpx.AsyncClient,
    base_url: str,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
    taker: str,
) -> None:
    """A slow model streams the answer to the client's question when the coach writes to the client (taking the
    conversation over), or the client's next message gets the crisis reply: the widget got 28 more tokens over
    4.6 s after the coach's message, or the answer streamed on for 11 s under the crisis reply, then an empty
    ``done``. Now the next token after the coach's or the crisis reply's event stops it: ``stopped`` instead of
    the rest and ``done``, the model's stream not read on, nothing of the answer stored. With the client's live
    channel down the crisis reply, which comes on the socket itself, stops it all the same."""
    if taker == "crisis, live events down":

        async def dropped(self: RedisChannelsPubSubBackend, data: bytes, channels: Any) -> None:
            raise RedisConnectionError("Redis is restarting")

        monkeypatch.setattr(RedisChannelsPubSubBackend, "publish", dropped)
    setup = await new_setup(crisis_resources=["Call Lifeline Aotearoa on 0800 543 354."])
    read = slow_model(llm_api, 0.2)
    async with widget_socket(base_url, setup) as ws:
        await ws.send(json.dumps({"text": "How can I plan my week better?", "client_message_id": "w-1"}))
        started = await events_until(ws, lambda e: e["type"] == "token")
        [ack] = [e for _, e in started if e["type"] == "ack"]
        if taker == "coach":
            sent = await http.post(
                f"/api/v1/conversations/{ack['conversation_id']}/messages",
                headers=setup.coach.headers,
                json={"text": "Hi, it's your coach: let's talk about it together."},
            )
            assert sent.status_code == 201, sent.text

            def taken(event: dict[str, Any]) -> bool:
                return event["type"] == "coach_joined"
        else:
            await ws.send(json.dumps({"text": "forget it. i want to kill myself tonight", "client_message_id": "w-2"}))

            def taken(event: dict[str, Any]) -> bool:
                return event["type"] == "message" and bool(event["message"]["metadata"].get("crisis"))

        events = await events_until(
            ws, lambda e: e["type"] in ("stopped", "done") and e.get("in_reply_to") == ack["message_id"]
        )
        chunks = len(read)
        await asyncio.sleep(1.0)  # (the model's stream would go on being read meanwhile)

    taken_at = min(at for at, e in events if taken(e))  # (a crisis reply comes on the socket, then live again)
    stopped_at, stopped = events[-1]
    after = [e["type"] for at, e in events if at >= taken_at]
    assert stopped == {"type": "stopped", "in_reply_to": ack["message_id"], "reason": "taken"}
    assert stopped_at - taken_at < 1.0, "stopped at the next token, not when the model is done"
    assert after.count("token") <= 1, after  # (at most one already on its way)
    assert len(read) == chunks < len(WORDS), "the turn is closed: its model stream is not read on"
    texts = [m["text"] for m in await transcript(http, setup, ack["conversation_id"]) if m["sender_type"] == "ai"]
    assert not any("Let me" in t for t in texts)


async def test_an_answer_streams_on_when_a_hint_finds_the_conversation_still_the_ais(
    http: httpx.AsyncClient,
    base_url: str,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
) -> None:
    """The check runs only on a hint (a live event of the coach or of a reply, a crisis reply): a reply to the
    client's other tab while the answer streams, such a hint, asks once, finds the conversation still the AI's, and
    the answer streams on to its ``done``."""
    setup = await new_setup()
    read = slow_model(llm_api, 0.1, fast=lambda request: b"And a new topic" in request.content)
    async with widget_socket(base_url, setup) as ws:
        await ws.send(json.dumps({"text": "How can I plan my week?", "client_message_id": "w-1"}))
        await events_until(ws, lambda e: e["type"] == "token")
        other = await http.post("/api/v1/chat", headers=setup.client_auth, json={"text": "And a new topic"})
        assert other.status_code == 200, other.text
        events = await events_until(ws, lambda e: e["type"] in ("stopped", "done") and "in_reply_to" in e)

    [hint] = [at for at, e in events if e["type"] == "message" and e["message"]["id"] == other.json()["message_id"]]
    assert [e["type"] for at, e in events if at > hint].count("token") > 1, "the answer streamed on past the hint"
    done = events[-1][1]
    assert done["type"] == "done" and done["reply"] == "".join(WORDS).strip() and done["message_id"]
    assert len(read) > len(WORDS)


async def test_the_widget_reads_its_conversations_handoff_status(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """What a reconnected widget redraws its presence line from: ``open`` once the client asked for a person,
    ``claimed`` once the coach wrote, ``null`` after the coach handed back (it said "Waiting for the coach…" until
    the next AI reply: the live events of the coach's coming and going were lost while its socket was down). 404
    for another client's conversation, 400 for a malformed id."""
    setup = await new_setup()
    asked = await chat(http, setup, "/human")
    conversation_id = asked["conversation_id"]
    url = f"/api/v1/widget/conversations/{conversation_id}/handoff"

    async def status() -> Any:
        response = await http.get(url, headers=setup.client_auth)
        assert response.status_code == 200, response.text
        return response.json()["handoff"]

    assert await status() == {"status": "open", "reason": "human_request"}
    wrote = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=setup.coach.headers, json={"text": "Hi, I'm here."}
    )
    assert wrote.status_code == 201, wrote.text
    assert await status() == {"status": "claimed", "reason": "human_request"}
    back = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
    assert back.status_code == 200, back.text
    assert await status() is None

    other = await make_client(http, setup.coach, "Sam")
    elsewhere = await http.get(url, headers={"Authorization": f"Bearer {other['widget_token']}"})
    assert elsewhere.status_code == 404, elsewhere.text
    malformed = await http.get("/api/v1/widget/conversations/nope/handoff", headers=setup.client_auth)
    assert malformed.status_code == 400, malformed.text


async def test_a_reply_waiting_for_the_coachs_review_shows_on_the_page_as_after_a_reconnect(
    base_url: str, http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """In draft mode a reconnect drew "… is reviewing the reply" from the handoff status, but a reload drew nothing:
    the page took its status from the active handoff only (found by a run trying to break this stop's fixes). The
    page, the endpoint and the turn now say the same."""
    setup = await new_setup(handoff_mode="draft")
    drafted = await chat(http, setup, "How do I plan my week?")
    assert drafted["handoff"] == {"status": "draft_pending", "reason": "draft_mode"}, drafted

    page = await widget_page(base_url, setup.widget_token)

    assert 'data-handoff="draft_pending"' in page.text
    assert "Handoff Coach is reviewing the reply…" in page.text


async def events_for(ws: Any, seconds: float) -> list[Any]:
    """The socket's events that come within ``seconds``."""
    events: list[Any] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                events.append(json.loads(await ws.recv()))
    return events


@pytest.mark.parametrize("live", ["up", "down"])
async def test_a_crisis_reply_overtaking_an_answer_comes_once_and_its_done_carries_the_handoff(
    new_setup: Callable[..., Awaitable[Setup]],
    base_url: str,
    llm_api: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
    live: str,
) -> None:
    """A crisis message sent while an answer streams gets its reply at once (the early crisis screen): the socket
    sent it as a ``message`` event and relayed the same message again from the client's live channel (the widget's
    page drops a repeated id, another client of the socket showed the crisis reply twice), and the crisis message's
    own ``done`` said ``"handoff": null``. Now the reply comes once, with the live channel up or down, and that
    ``done`` carries the handoff the crisis opened, as a crisis turn's own ``done`` does."""
    if live == "down":

        async def dropped(self: RedisChannelsPubSubBackend, data: bytes, channels: Any) -> None:
            raise RedisConnectionError("Redis is restarting")

        monkeypatch.setattr(RedisChannelsPubSubBackend, "publish", dropped)
    setup = await new_setup(crisis_resources=["Call Lifeline Aotearoa on 0800 543 354."])
    slow_model(llm_api, 0.2)
    async with widget_socket(base_url, setup) as ws:
        await ws.send(json.dumps({"text": "How can I plan my week better?", "client_message_id": "w-1"}))
        await events_until(ws, lambda e: e["type"] == "token")
        await ws.send(json.dumps({"text": "forget it. i want to kill myself tonight", "client_message_id": "w-2"}))
        acked = await events_until(ws, lambda e: e["type"] == "ack" and e["client_message_id"] == "w-2")
        crisis_id = acked[-1][1]["message_id"]
        events = [e for _, e in acked] + [
            e for _, e in await events_until(ws, lambda e: e["type"] == "done" and e["in_reply_to"] == crisis_id)
        ]
        events += await events_for(ws, 1.0)  # (a live event relayed late)

    replies = [e for e in events if e["type"] == "message" and e["message"]["metadata"].get("crisis")]
    assert len(replies) == 1, replies
    assert "0800 543 354" in replies[0]["message"]["text"]
    [done] = [e for e in events if e["type"] == "done" and e["in_reply_to"] == crisis_id]
    assert done["message_id"] is None and done["reply"] == ""
    assert done["handoff"] == {"status": "open", "reason": "crisis"}
