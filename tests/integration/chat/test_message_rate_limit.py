"""Each client's messages are rate limited (``CHAT_RATE_LIMIT``), on every channel: one client, or whoever holds
a client's widget token, cannot flood the coach's model, the database and the process's turn slots that every
tenant shares. A message over the limit is refused with the time to wait and stored nowhere; a message sent
again with its client message id (a retry after a lost answer) is not refused; other clients are not affected.

Served by an app with a limit of :data:`LIMIT` messages a minute; only the coach's OpenAI-compatible endpoint is
mocked (OpenAI wire format)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
import websockets

from app.asgi import create_app
from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.llm.registry import ProviderRegistry
from tests.integration.chat.test_no_lost_message import next_of
from tests.integration.handoff.test_handoff_flow import Setup, llm_api, new_setup, transcript

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

LIMIT = 3


@pytest.fixture
async def limited_url(settings: Settings, services: Services, registry: ProviderRegistry) -> AsyncIterator[str]:
    """An app that lets a client send :data:`LIMIT` messages a minute."""
    limited = settings.model_copy(update={"chat_rate_limit": f"{LIMIT}/minute"})
    async with serve_in_background(
        create_app(limited, services.database_url, services.redis_url, registry=registry)
    ) as url:
        yield url


async def send(url: str, setup: Setup, text: str, **fields: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await client.post("/api/v1/chat", headers=setup.client_auth, json={"text": text, **fields})


async def test_a_client_over_the_limit_is_refused_on_rest_and_socket_and_nothing_is_stored(
    limited_url: str, http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    setup, neighbour = await new_setup(), await new_setup("Other Coach")
    first = await send(limited_url, setup, "How can I plan my week?", client_message_id="m-1")
    assert first.status_code == 200, first.text
    conversation_id = first.json()["conversation_id"]
    for n in range(2, LIMIT + 1):
        ids = {"conversation_id": conversation_id, "client_message_id": f"m-{n}"}
        sent = await send(limited_url, setup, f"Message {n}", **ids)
        assert sent.status_code == 200, sent.text

    refused = await send(limited_url, setup, "One too many", conversation_id=conversation_id, client_message_id="m-x")
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("too many messages: try again in ")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # a retry of a stored message (its answer was lost on the way) is answered as before, not refused
    again = await send(limited_url, setup, "How can I plan my week?", client_message_id="m-1")
    assert again.status_code == 200 and again.json()["reply"] == ""

    url = limited_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    async with websockets.connect(url) as ws:
        body = {"text": "And another", "conversation_id": conversation_id, "client_message_id": "w-1"}
        await ws.send(json.dumps(body))
        error = await next_of(ws, "error")
    assert error["client_message_id"] == "w-1" and error["message"].startswith("too many messages")

    stored = [m["text"] for m in await transcript(http, setup, conversation_id) if m["sender_type"] == "client"]
    assert stored == ["How can I plan my week?", *(f"Message {n}" for n in range(2, LIMIT + 1))]
    # the limit is each client's own
    assert (await send(limited_url, neighbour, "How can I plan my week?")).status_code == 200
