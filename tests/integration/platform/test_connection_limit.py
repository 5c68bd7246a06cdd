"""``MAX_CONNECTIONS``: ``opencoach serve`` runs uvicorn with ``limit_concurrency``, so a request past the limit
gets a 503 at once while the connections already open go on. Before, the process took every connection offered
until its memory ran out."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
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
    limited = settings.model_copy(update={"max_connections": 2})
    options = serve_options(limited, services, monkeypatch)
    token = (await make_client(http, await make_coach()))["widget_token"]
    app = create_app(limited, services.database_url, services.redis_url, registry=registry)
    async with serve_in_background(app, limit_concurrency=options.get("limit_concurrency")) as url:
        assert await status(url) == 200
        socket_url = url.replace("http://", "ws://") + f"/ws/chat?token={token}"
        async with websockets.connect(socket_url) as one, websockets.connect(socket_url) as two:
            assert await status(url) == 503, "two widget sockets hold the process's two connections"
            for socket in (one, two):  # the sockets held still answer
                await socket.send("not json")
                events = [json.loads(await socket.recv())]
                while events[-1]["type"] != "error":
                    events.append(json.loads(await socket.recv()))
                assert events[-1]["message"].startswith("invalid message"), events

        async def served() -> bool:
            return await status(url) == 200

        assert await wait_for(served, 30), "the sockets closed: requests are served again"
