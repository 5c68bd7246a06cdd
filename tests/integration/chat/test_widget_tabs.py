"""Two widget tabs of one client: a message sent from one tab, and the AI's reply to it, reach the other tab's socket
live (the client's live channel, :func:`app.handoff.live.client_channel`), the client's own message with the
widget's ``client_message_id``, each with its stored time; the sending tab's ``ack`` and ``done`` carry that time
too. The sending tab used to be the only one to see either until the other was reloaded."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
import respx
import websockets

from tests.integration.chat.test_no_lost_message import events_until
from tests.integration.handoff.test_handoff_flow import REPLY, Setup, llm_api, new_setup, transcript

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below


async def test_a_message_and_its_reply_reach_every_tab_of_the_client(
    http: httpx.AsyncClient, base_url: str, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    setup = await new_setup()
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    async with websockets.connect(url) as first, websockets.connect(url) as second:
        # a first exchange from the second tab: once it is answered, that tab's socket is surely subscribed
        await second.send(json.dumps({"text": "Hello there", "client_message_id": "c-0"}))
        [hello] = [e for e in await events_until(second, lambda e: e["type"] == "ack") if e["type"] == "ack"]
        hello_reply = (await events_until(second, lambda e: e["type"] == "done"))[-1]
        conversation_id = hello["conversation_id"]

        sent = {
            "text": "How can I plan my week better?",
            "client_message_id": "c-1",
            "conversation_id": conversation_id,
        }
        await first.send(json.dumps(sent))
        own = await events_until(first, lambda e: e["type"] == "done")
        done = own[-1]
        seen = await events_until(second, lambda e: e.get("message", {}).get("id") == done["message_id"], wait=10)

    [ack] = [e for e in own if e["type"] == "ack"]
    # (the second tab's own first exchange comes back to it live too: the widget shows each message once, by id)
    earlier = {hello["message_id"], hello_reply["message_id"]}
    shown = [e["message"] for e in seen if e["type"] == "message" and e["message"]["id"] not in earlier]
    assert [(m["sender_type"], m["text"]) for m in shown] == [("client", sent["text"]), ("ai", REPLY)]
    mine, reply = shown
    assert (mine["id"], mine["client_message_id"]) == (ack["message_id"], "c-1")
    assert reply["id"] == done["message_id"] and reply["text"] == done["reply"]
    assert not any(e["type"] in ("token", "done", "ack") for e in seen), "the other tab gets the stored messages"
    assert not any(e["type"] == "message" and e["message"]["id"] == mine["id"] for e in own), "its ack tells it"
    stored = {m["id"]: m for m in await transcript(http, setup, conversation_id)}
    for message, event in ((mine, ack), (reply, done)):
        at = datetime.fromisoformat(event["created_at"])
        assert (
            datetime.fromisoformat(message["created_at"])
            == at
            == datetime.fromisoformat(stored[message["id"]]["created_at"])
        )
