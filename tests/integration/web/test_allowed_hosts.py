"""The ``Host`` allowlist (:mod:`app.core.hosts`) on the served app: a request naming a host the deployment does
not serve (DNS rebinding: a foreign page whose name resolves to this server) gets a 400 on the API, the dashboard,
the Telegram webhook and the widget's WebSocket handshake; ``PUBLIC_URL``'s host, the loopback names and
``ALLOWED_HOSTS`` get through on any port. Before, the app answered any ``Host``."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import pytest

from app.asgi import create_app
from app.channels.telegram.service import WEBHOOK_PATH
from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.llm.registry import ProviderRegistry
from tests.conftest import Coach, make_client

FOREIGN = ["evil.invalid", "evil.invalid:8000", "EVIL.invalid", "127.0.0.1.evil.invalid", "localhost.evil.invalid"]
"""Hosts no test app serves (``.invalid`` names never resolve, RFC 6761)."""
REFUSED = {"message": "invalid host header"}
"""Litestar's 400 body."""


async def handshake_status(base_url: str, path: str, host: str) -> int:
    """The HTTP status answering a WebSocket handshake for ``path`` sent to ``base_url`` with ``Host: host``
    (101: the socket opened)."""
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 60)
        return int(status_line.split()[1])
    finally:
        writer.close()


async def statuses(base_url: str, coach: Coach, token: str, host: str) -> dict[str, int]:
    """The status of an API call, a dashboard page, the Telegram webhook and the widget's WebSocket handshake,
    each sent with ``Host: host``; asserts Litestar's body on every 400."""
    found: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers={"host": host}) as client:
        for name, response in [
            ("api", await client.get("/api/v1/settings", headers=coach.headers)),
            ("log-in page", await client.get("/login")),
            ("dashboard", await client.get("/dashboard/conversations")),
            ("telegram webhook", await client.post(f"{WEBHOOK_PATH}/{coach.coach_id}", json={"update_id": 1})),
        ]:
            found[name] = response.status_code
            if response.status_code == 400:
                assert response.json() == REFUSED, (name, host, response.text)
    found["websocket"] = await handshake_status(base_url, f"/ws/chat?token={token}", host)
    return found


async def test_a_foreign_host_is_refused_everywhere(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    client = await make_client(http, coach)
    for host in FOREIGN:
        assert set((await statuses(base_url, coach, client["widget_token"], host)).values()) == {400}, host


async def test_the_loopback_names_get_through_on_any_port(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """``opencoach serve`` opened as localhost, 127.0.0.1 or [::1], on its own port or behind a local proxy."""
    coach = await make_coach()
    client = await make_client(http, coach)
    port = urlsplit(base_url).port
    for host in ["localhost", f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}", "LocalHost"]:
        found = await statuses(base_url, coach, client["widget_token"], host)
        assert found["api"] == found["log-in page"] == 200, (host, found)
        assert found["dashboard"] == 302 and found["websocket"] == 101, (host, found)  # the log-in redirect
        assert found["telegram webhook"] not in (400, 500), (host, found)  # no bot here: refused by the route


@pytest.fixture(scope="module")
async def public_url(settings: Settings, services: Services, registry: ProviderRegistry) -> AsyncIterator[str]:
    """An app behind a proxy at ``https://coach.example.test`` that also answers every subdomain of
    ``coach-alias.test``; yields its loopback URL."""
    public = settings.model_copy(
        update={"public_url": "https://coach.example.test", "allowed_hosts": "*.coach-alias.test"}
    )
    async with serve_in_background(
        create_app(public, services.database_url, services.redis_url, registry=registry)
    ) as url:
        yield url


async def test_the_public_host_and_allowed_hosts_get_through(
    public_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """The widget embedded on a coach's site calls PUBLIC_URL's host, and so does Telegram's webhook."""
    coach = await make_coach()
    client = await make_client(http, coach)
    for host in ["coach.example.test", "Coach.Example.Test:443", "www.coach-alias.test", "a.b.coach-alias.test:8443"]:
        found = await statuses(public_url, coach, client["widget_token"], host)
        assert found["api"] == found["log-in page"] == 200, (host, found)
        assert found["dashboard"] == 302 and found["websocket"] == 101, (host, found)
        assert found["telegram webhook"] not in (400, 500), (host, found)
    for host in ["example.test", "coach-alias.test", "coach.example.test.invalid", *FOREIGN]:
        assert set((await statuses(public_url, coach, client["widget_token"], host)).values()) == {400}, host
