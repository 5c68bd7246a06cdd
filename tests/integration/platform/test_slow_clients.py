"""``HEADER_TIMEOUT_SECONDS``, ``BODY_TIMEOUT_SECONDS`` and ``BODY_MIN_BYTES_PER_SECOND``: ``opencoach serve``'s HTTP
protocol (:mod:`app.core.connections`) closes a connection that has not sent a request's headers in time, and
answers 408 and closes one whose request body comes too slowly, so slowloris connections (nothing sent, or headers
a byte at a time) and slow POSTs (a body a byte at a time) cannot hold ``MAX_CONNECTIONS``; a widget socket and a
dashboard event stream already open are not cut, and an upload sent at a real link's pace, pauses and all, passes.
Before, uvicorn held such a connection until the client closed it (its ``timeout_keep_alive`` is never armed on a
new connection and is disarmed by every byte; it has no timeout for a body at all)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import websockets
from litestar import Litestar, asgi
from litestar.types import Receive, Scope, Send

from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.llm.registry import ProviderRegistry
from tests.conftest import BOOKS, Coach, make_client
from tests.integration.platform.test_connection_limit import served_as_serve
from tests.integration.platform.test_starvation import wait_for
from tests.integration.web.test_dashboard import client_chat, log_in

HEADER_TIMEOUT_S = 1
BODY_TIMEOUT_S = 1
BODY_MIN_RATE = 500
"""``BODY_MIN_BYTES_PER_SECOND`` of the tests' server: a trickle of a byte every 0.1 s is far below it."""
CLOSED_WITHIN_S = 30
"""How long a test waits for the server to close a connection (far past the timeout: a loaded machine)."""
REQUEST = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
SLOW_HEADERS = REQUEST + b"X-Slow: " + b"a" * 10_000
SLOW_LOGIN = b"email=" + b"a" * 3000
"""A log-in form (within the route's 4 KiB limit: the app waits for all of it) that takes 300 s a byte at a time."""


@asynccontextmanager
async def served(
    settings: Settings, services: Services, registry: ProviderRegistry, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The app as ``opencoach serve`` serves it, with ``HEADER_TIMEOUT_SECONDS`` :data:`HEADER_TIMEOUT_S`,
    ``BODY_TIMEOUT_SECONDS`` :data:`BODY_TIMEOUT_S` and ``BODY_MIN_BYTES_PER_SECOND`` :data:`BODY_MIN_RATE`."""
    timed = settings.model_copy(
        update={
            "header_timeout_seconds": HEADER_TIMEOUT_S,
            "body_timeout_seconds": BODY_TIMEOUT_S,
            "body_min_bytes_per_second": BODY_MIN_RATE,
        }
    )
    async with served_as_serve(timed, services, registry, monkeypatch) as url:
        yield url


async def trickled_until_closed(
    url: str, head: bytes = b"", whole: bytes = b"", trickle: bytes = SLOW_HEADERS
) -> bytes:
    """Open a connection to ``url``, send ``head`` (a request without a body, or nothing) and read its response,
    send ``whole`` at once, then ``trickle`` a byte every 0.1 s until the server closes the connection; returns what
    the server sent after ``head``'s response. Fails if the connection is still open after
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
        writer.write(whole)
        rest = asyncio.ensure_future(reader.read())
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


def slow_post(path: str, length: int) -> bytes:
    """The headers of a form ``POST`` to ``path`` whose body has ``length`` bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_body_sent_a_byte_at_a_time_is_answered_408_and_closed(
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Slow POST ("R-U-Dead-Yet"): the headers at once, then a log-in form a byte every 0.1 s (10 bytes a second,
    under :data:`BODY_MIN_RATE`), on a new connection and on a kept-alive one after its first response. Before, the
    connection stayed open as long as bytes came (300 s for this form, far past :data:`CLOSED_WITHIN_S`). The app,
    whose reading of the form ends with the client gone, logs a line for each, not an error with a traceback."""
    app_log = logging.getLogger("app.asgi")
    app_log.addHandler(caplog.handler)  # the app's logging configuration, at its start, drops the root's handlers
    try:
        with caplog.at_level(logging.INFO, logger="app.asgi"):
            async with served(settings, services, registry, monkeypatch) as url:
                for head in (b"", REQUEST + b"\r\n"):
                    answer = await trickled_until_closed(url, head, slow_post("/login", len(SLOW_LOGIN)), SLOW_LOGIN)
                    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
                    assert answer.endswith(b"\r\nconnection: close\r\n\r\nRequest Timeout"), answer
                async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                    assert (await client.get("/login")).status_code == 200, "the server goes on serving"

                def logged() -> list[logging.LogRecord]:
                    return [r for r in caplog.records if r.name == "app.asgi"]

                assert await wait_for(lambda: len(logged()) >= 2, CLOSED_WITHIN_S), logged()
    finally:
        app_log.removeHandler(caplog.handler)
    gone = (logging.INFO, "client gone before its body was complete: POST /login")
    assert [(r.levelno, r.getMessage()) for r in logged()] == [gone, gone]


def body_reader(received: list[tuple[str, bool]], pause: float = 0) -> Litestar:
    """An app whose ``POST /body`` reads the request's body with ``receive()``, waiting ``pause`` seconds before each
    call, keeps the type and ``more_body`` of each message it got in ``received``, and answers 200 with the number
    of bytes of the body, unless the client is gone."""

    @asgi("/body", is_mount=False, copy_scope=True)
    async def read_body(scope: Scope, receive: Receive, send: Send) -> None:
        size, more = 0, True
        while more:
            await asyncio.sleep(pause)
            message = await receive()
            more = message["type"] == "http.request" and bool(message.get("more_body"))
            received.append((message["type"], more))
            size += len(message.get("body", b""))
        if message["type"] == "http.request":
            text = str(size).encode()
            length = str(len(text)).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
            await send({"type": "http.response.body", "body": text})

    return Litestar([read_body])


async def test_the_app_waiting_for_a_late_body_sees_the_client_gone() -> None:
    """After the 408 the app's ``receive()`` returns ``http.disconnect`` (it does not wait for bytes that will not
    come), having had only parts of the body before."""
    received: list[tuple[str, bool]] = []
    app = body_reader(received)
    async with serve_in_background(app, body_timeout=BODY_TIMEOUT_S, body_min_rate=BODY_MIN_RATE) as url:
        answer = await trickled_until_closed(url, whole=slow_post("/body", len(SLOW_LOGIN)), trickle=SLOW_LOGIN)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert await wait_for(lambda: received[-1][0] == "http.disconnect", CLOSED_WITHIN_S), received
    assert set(received[:-1]) == {("http.request", True)}, received


async def test_time_the_server_does_not_read_the_body_does_not_count() -> None:
    """An app that waits 1.5 s (longer than :data:`BODY_TIMEOUT_S`) before each ``receive()``: a client that sent
    ``Expect: 100-continue`` waits that long for the app to ask for its body, and a 1 MB body sent at once, under a
    minimum rate of 1 MB a second (its first 64 KiB earn 0.07 s), waits in uvicorn's flow control, which stops
    reading until the app takes what it holds. Neither wait counts, and neither body is cut."""
    received: list[tuple[str, bool]] = []
    app = body_reader(received, pause=1.5 * BODY_TIMEOUT_S)
    async with serve_in_background(app, body_timeout=BODY_TIMEOUT_S, body_min_rate=1_000_000) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"POST /body HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            response_head = await reader.readuntil(b"\r\n\r\n")
            assert response_head.startswith(b"HTTP/1.1 200 OK\r\n"), response_head
            assert await reader.readexactly(1) == b"5"
        finally:
            writer.close()
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            response = await client.post("/body", content=b"x" * 1_000_000)
        assert (response.status_code, response.text) == (200, "1000000")


@pytest.mark.parametrize(
    ("name", "piece", "pause", "sized"),
    [
        ("meditations-marcus-aurelius.pdf", 16 * 1024, 0.1, True),
        ("notes.txt", 1500, 1.5 * BODY_TIMEOUT_S, False),
    ],
    ids=["steady-pdf", "pauses-chunked"],
)
async def test_an_upload_sent_at_a_real_pace_passes(
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    make_coach: Callable[..., Awaitable[Coach]],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    piece: int,
    pause: float,
    sized: bool,
) -> None:
    """A body's deadline is a minimum rate, not a total: a 339 KB PDF at 160 KB a second (with a
    ``Content-Length``, as a browser sends it) takes twice :data:`BODY_TIMEOUT_S`, and a text sent chunked in pieces
    of 1,500 bytes (3 s at :data:`BODY_MIN_RATE`) pauses longer than :data:`BODY_TIMEOUT_S` between them."""
    coach = await make_coach("Upload Coach")
    data = (BOOKS / name).read_bytes() if name.endswith(".pdf") else b"Rest is part of the work. " * 160
    form = httpx.Request("POST", "/", files={"file": (name, data)})
    body = form.read()

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), piece):
            if start:
                await asyncio.sleep(pause)
            yield body[start : start + piece]

    headers = coach.headers | {"content-type": form.headers["content-type"]}
    if sized:
        headers["content-length"] = str(len(body))
    async with served(settings, services, registry, monkeypatch) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/api/v1/documents", headers=headers, content=pieces(), timeout=60)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
