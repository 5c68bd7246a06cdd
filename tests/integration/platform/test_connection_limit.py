"""``MAX_CONNECTIONS``: ``opencoach serve`` runs uvicorn with ``limit_concurrency``, so a request or a WebSocket
handshake past the limit gets a 503 at once while the connections already open go on. Before, the process took
every connection offered until its memory ran out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from app import cli
from app.asgi import create_app
from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.llm.registry import ProviderRegistry
from tests.conftest import Coach, make_client
from tests.integration.platform.test_starvation import wait_for


def serve_options(settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options ``opencoach serve`` (:func:`app.cli._serve`, no worker) runs uvicorn with under ``settings``."""
    options: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: options.update(kwargs))
    cli._serve(settings, services, "127.0.0.1", 8000, worker=False)
    return options


@asynccontextmanager
async def served_as_serve(
    settings: Settings, services: Services, registry: ProviderRegistry, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The app under ``settings`` on a real uvicorn server on loopback with the connection limit and the HTTP
    protocol (its header and body timeouts) that ``opencoach serve`` takes from them; yields its base URL."""
    options = serve_options(settings, services, monkeypatch)
    app = create_app(settings, services.database_url, services.redis_url, registry=registry)
    http = options["http"]
    async with serve_in_background(
        app,
        limit_concurrency=options["limit_concurrency"],
        header_timeout=http.header_timeout,
        body_timeout=http.body_timeout,
        body_min_rate=http.body_min_rate,
    ) as url:
        yield url


async def status(url: str) -> int:
    """The status of ``GET /login`` on a connection of its own."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return (await client.get("/login")).status_code


async def test_past_max_connections_a_request_gets_503_and_the_open_sockets_go_on(
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limited = settings.model_copy(update={"max_connections": 3})
    token = (await make_client(http, await make_coach()))["widget_token"]
    async with served_as_serve(limited, services, registry, monkeypatch) as url:
        assert await status(url) == 200
        socket_url = url.replace("http://", "ws://") + f"/ws/chat?token={token}"
        async with websockets.connect(socket_url) as one, websockets.connect(socket_url) as two:
            assert await status(url) == 503, "two widget sockets and the asking connection make three"
            for socket in (one, two):  # the sockets held still answer
                await socket.send("not json")
                events = [json.loads(await socket.recv())]
                while events[-1]["type"] != "error":
                    events.append(json.loads(await socket.recv()))
                assert events[-1]["message"].startswith("invalid message"), events

        async def served() -> bool:
            return await status(url) == 200

        assert await wait_for(served, 30), "the sockets closed: requests are served again"


async def test_past_max_connections_a_websocket_handshake_gets_503(
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn checks ``limit_concurrency`` for HTTP requests only: past it, widget sockets went on being accepted
    (:mod:`app.core.connections` refuses their handshake with the same 503)."""
    limited = settings.model_copy(update={"max_connections": 2})
    token = (await make_client(http, await make_coach()))["widget_token"]
    async with served_as_serve(limited, services, registry, monkeypatch) as url:
        socket_url = url.replace("http://", "ws://") + f"/ws/chat?token={token}"
        async with websockets.connect(socket_url):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(socket_url):
                    pass
            assert refused.value.response.status_code == 503
            assert refused.value.response.body == b"Service Unavailable"

        async def accepted() -> bool:
            try:
                async with websockets.connect(socket_url):
                    return True
            except websockets.InvalidStatus:
                return False

        assert await wait_for(accepted, 30), "the socket closed: a handshake is accepted again"
