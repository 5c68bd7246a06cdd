"""``HEADER_TIMEOUT_SECONDS``: ``opencoach serve``'s HTTP protocol (:mod:`app.core.connections`) closes a connection
that has not sent a request's headers in time, so slowloris connections (nothing sent, or headers a byte at a time)
cannot hold ``MAX_CONNECTIONS``; a widget socket and a dashboard event stream already open are not cut. Before,
uvicorn held such a connection until the client closed it (its ``timeout_keep_alive`` is never armed on a new
connection and is disarmed by every byte)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import websockets

from app.core.config import Settings
from app.core.runtime import Services
from app.llm.registry import ProviderRegistry
from tests.conftest import Coach, make_client
from tests.integration.platform.test_connection_limit import served_as_serve
from tests.integration.web.test_dashboard import client_chat, log_in

HEADER_TIMEOUT_S = 1
CLOSED_WITHIN_S = 30
"""How long a test waits for the server to close a connection (far past the timeout: a loaded machine)."""
REQUEST = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@asynccontextmanager
async def served(
    settings: Settings, services: Services, registry: ProviderRegistry, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The app as ``opencoach serve`` serves it, with ``HEADER_TIMEOUT_SECONDS`` :data:`HEADER_TIMEOUT_S`."""
    timed = settings.model_copy(update={"header_timeout_seconds": HEADER_TIMEOUT_S})
    async with served_as_serve(timed, services, registry, monkeypatch) as url:
        yield url


async def trickled_until_closed(url: str, head: bytes = b"") -> bytes:
    """Open a connection to ``url``, send ``head`` whole, then :data:`REQUEST` and header lines a byte every 0.1 s
    until the server closes the connection; returns what the server sent after ``head``'s response (if ``head``
    is a request, its response is read first). Fails if the connection is still open after
    :data:`CLOSED_WITHIN_S`."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        if head:
            writer.write(head)
            response_head = await reader.readuntil(b"\r\n\r\n")
            assert response_head.startswith(b"HTTP/1.1 200"), response_head
            fields = dict(line.lower().split(b": ", 1) for line in response_head.split(b"\r\n")[1:] if line)
            await reader.readexactly(int(fields[b"content-length"]))
        rest = asyncio.ensure_future(reader.read())
        trickle = REQUEST + b"X-Slow: " + b"a" * 10_000
        async with asyncio.timeout(CLOSED_WITHIN_S):
            for byte in trickle:
                if rest.done():
                    break
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                except ConnectionError:
                    break
                await asyncio.sleep(0.1)
            return await rest
    finally:
        writer.close()


async def test_a_connection_that_sends_nothing_is_closed(
    settings: Settings, services: Services, registry: ProviderRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(settings, services, registry, monkeypatch) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            async with asyncio.timeout(CLOSED_WITHIN_S):
                assert await reader.read() == b"", "closed without an answer"
        finally:
            writer.close()
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            assert (await client.get("/login")).status_code == 200, "a request that sends its headers is served"


async def test_headers_sent_a_byte_at_a_time_are_cut_off(
    settings: Settings, services: Services, registry: ProviderRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a new connection, and on a kept-alive one after its first response (where uvicorn's keep-alive timeout,
    disarmed by every byte, does not close it either)."""
    async with served(settings, services, registry, monkeypatch) as url:
        assert await trickled_until_closed(url) == b""
        assert await trickled_until_closed(url, head=REQUEST + b"\r\n") == b""


async def test_an_open_widget_socket_and_event_stream_outlive_the_header_timeout(
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coach = await make_coach("Patient Coach")
    client = await make_client(http, coach, "Sam")
    async with served(settings, services, registry, monkeypatch) as url, httpx.AsyncClient(base_url=url) as browser:
        await log_in(browser, coach)
        socket_url = url.replace("http://", "ws://") + f"/ws/chat?token={client['widget_token']}"
        async with (
            websockets.connect(socket_url) as socket,
            browser.stream("GET", "/dashboard/events", timeout=60) as stream,
        ):
            lines = stream.aiter_lines()
            async with asyncio.timeout(15):
                while await anext(lines) != "event: ready":
                    pass
            await asyncio.sleep(3 * HEADER_TIMEOUT_S)  # both quiet for longer than a request's headers may take

            await socket.send("not json")
            events = [json.loads(await socket.recv())]
            while events[-1]["type"] != "error":
                events.append(json.loads(await socket.recv()))
            assert events[-1]["message"].startswith("invalid message"), events
            await client_chat(http, client["widget_token"], "/human")
            async with asyncio.timeout(15):
                while await anext(lines) != "event: handoff":
                    pass
