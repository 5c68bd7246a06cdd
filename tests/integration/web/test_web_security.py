"""Security headers, the widget's allowed origins (framing and CORS), tokens only in headers, and an access log
without secrets, through the real app over HTTP and WebSocket."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import respx
import websockets

from tests.conftest import Coach, make_client, widget_page
from tests.integration.handoff.test_handoff_flow import Setup, chat, llm_api, new_setup
from tests.integration.learning.test_dashboard import rate
from tests.integration.web.test_dashboard import csrf, log_in

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

SITE = "https://coach-site.example"
OTHER_SITE = "https://evil.example"


@pytest.fixture
async def browser(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        yield client


async def _origins(http: httpx.AsyncClient, coach: Coach) -> list[str]:
    response = await http.get("/api/v1/settings", headers=coach.headers)
    assert response.status_code == 200, response.text
    return response.json()["widget_allowed_origins"]  # type: ignore[no-any-return]


async def test_every_response_carries_the_security_headers(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    for path, headers in [
        ("/login", {}),
        ("/static/app.css", {}),
        ("/api/v1/settings", coach.headers),
        ("/api/v1/settings", {}),  # 401
        ("/dashboard/settings", {}),  # the redirect to the log-in page
        ("/w/not-a-token", {}),  # the widget's 404 page
        ("/w/session", {}),  # the widget session's renewal, refused (401)
    ]:
        response = await http.get(path, headers=headers)
        csp = response.headers.get("content-security-policy", "")
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp, (path, csp)
        assert csp.endswith("frame-ancestors 'none'") and response.headers["x-frame-options"] == "DENY", path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "no-referrer", path
        assert "strict-transport-security" not in response.headers, path  # PUBLIC_URL is http here
        # pages and API answers (keys, tokens, transcripts) are never kept in a browser's or proxy's cache
        assert (response.headers.get("cache-control") == "no-store") == (path != "/static/app.css"), path


async def test_widget_origins_setting_frames_the_widget_and_is_validated(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    token = (await make_client(http, coach))["widget_token"]
    page = await widget_page(http.base_url, token)
    assert page.status_code == 200
    assert page.headers["content-security-policy"].endswith("frame-ancestors 'none'")

    response = await http.patch(
        "/api/v1/settings", headers=coach.headers, json={"widget_allowed_origins": [f"{SITE}:443/", " ", SITE]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["widget_allowed_origins"] == [SITE]
    for path in ("", "/memory"):
        page = await widget_page(http.base_url, token, path)
        assert page.status_code == 200
        assert page.headers["content-security-policy"].endswith(f"frame-ancestors {SITE}"), path
        assert "script-src 'self';" in page.headers["content-security-policy"]
        assert "x-frame-options" not in page.headers, path

    for bad in (["example.com"], [f"{SITE}/shop"], ["https://*.example.com"], ["ftp://x.example"], [7], "x"):
        response = await http.patch("/api/v1/settings", headers=coach.headers, json={"widget_allowed_origins": bad})
        assert response.status_code == 400, (bad, response.text)
        assert "widget_allowed_origins" in response.text, response.text  # in detail, or in extra (schema)
    assert await _origins(http, coach) == [SITE], "a refused change stores nothing"


async def test_dashboard_settings_edit_widget_origins(
    http: httpx.AsyncClient, browser: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Origin Coach")
    await log_in(browser, coach)
    page = await browser.get("/dashboard/settings")
    assert 'name="widget_allowed_origins"' in page.text
    form = {"name": "Origin Coach", "recent_messages": "10", "session_idle_minutes": "30"}
    saved = await browser.post(
        "/dashboard/settings",
        data=form
        | {
            "widget_allowed_origins": f"{SITE}\nhttp://shop.example:8080\n",
            "_csrf_token": await csrf(browser, "/dashboard/settings"),
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text, saved.text
    assert await _origins(http, coach) == [SITE, "http://shop.example:8080"]
    refused = await browser.post(
        "/dashboard/settings",
        data=form
        | {"widget_allowed_origins": "shop.example", "_csrf_token": await csrf(browser, "/dashboard/settings")},
    )
    assert refused.status_code == 400 and "widget_allowed_origins" in refused.text
    assert await _origins(http, coach) == [SITE, "http://shop.example:8080"]


async def test_widget_api_cors_follows_the_coachs_origins(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    token = (await make_client(http, coach))["widget_token"]
    assert (
        await http.patch("/api/v1/settings", headers=coach.headers, json={"widget_allowed_origins": [SITE]})
    ).status_code == 200
    auth = {"Authorization": f"Bearer {token}"}

    allowed = await http.get("/api/v1/widget/memory", headers=auth | {"Origin": SITE})
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == SITE and "Origin" in allowed.headers["vary"]
    # the page may read a paged list's next page and a rate limit's wait
    assert allowed.headers["access-control-expose-headers"] == "Link, Retry-After"

    refused = await http.get("/api/v1/widget/memory", headers=auth | {"Origin": OTHER_SITE})
    assert refused.status_code == 403 and "widget_allowed_origins" in refused.json()["detail"]
    assert "access-control-allow-origin" not in refused.headers
    malformed = await http.get("/api/v1/widget/memory", headers=auth | {"Origin": "http://["})
    assert malformed.status_code == 403, malformed.text  # no URL: a foreign origin, not a 500

    own = await http.get("/api/v1/widget/memory", headers=auth | {"Origin": base_url})
    assert own.status_code == 200 and "access-control-allow-origin" not in own.headers

    preflight = await http.options(
        "/api/v1/widget/memory",
        headers={
            "Origin": SITE,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code < 300 and preflight.headers["access-control-allow-origin"] == SITE
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    # an origin no coach lists: no allow headers, so the browser never sends the request (refused above)
    unlisted = await http.options(
        "/api/v1/widget/memory",
        headers={"Origin": OTHER_SITE, "Access-Control-Request-Method": "GET"},
    )
    assert not [name for name in unlisted.headers if name.lower().startswith("access-control-")], unlisted.headers

    ws_url = base_url.replace("http://", "ws://") + f"/ws/chat?token={token}"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused_ws:
        async with websockets.connect(ws_url, origin=websockets.Origin(OTHER_SITE)):
            pass
    assert refused_ws.value.response.status_code == 403
    async with websockets.connect(ws_url, origin=websockets.Origin(SITE)) as ws:
        assert ws.response is not None and ws.response.status_code == 101


async def test_query_string_tokens_only_open_the_websocket(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    token = (await make_client(http, coach))["widget_token"]
    documents = await http.get("/api/v1/documents", params={"token": coach.api_key})
    assert documents.status_code == 401 and "Authorization" in documents.json()["detail"]
    memory = await http.get("/api/v1/widget/memory", params={"token": token})
    assert memory.status_code == 401
    assert (await http.get("/api/v1/documents", headers=coach.headers)).status_code == 200
    assert (await http.get("/api/v1/widget/memory", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    async with websockets.connect(base_url.replace("http://", "ws://") + f"/ws/chat?token={token}") as ws:
        assert ws.response is not None and ws.response.status_code == 101


async def test_the_access_log_never_shows_a_token_or_key(
    base_url: str,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    coach = await make_coach()
    token = (await make_client(http, coach))["widget_token"]
    # uvicorn's loggers do not propagate to the root: HTTP requests on uvicorn.access, WebSocket handshakes on
    # uvicorn.error
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    try:
        with (
            caplog.at_level(logging.INFO, logger="uvicorn.access"),
            caplog.at_level(logging.INFO, logger="uvicorn.error"),
        ):
            await http.get("/api/v1/documents", params={"token": coach.api_key, "days": "7"})
            await http.get("/api/v1/documents", headers=coach.headers | {"Cookie": "session=cookie-secret-1"})
            await widget_page(base_url, token)
            async with websockets.connect(base_url.replace("http://", "ws://") + f"/ws/chat?token={token}"):
                pass
    finally:
        for logger in loggers:
            logger.removeHandler(caplog.handler)
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("uvicorn.")]
    assert len(lines) >= 4, lines
    logged = "\n".join(lines)
    for secret in (coach.api_key, token, "cookie-secret-1"):
        assert secret not in logged, logged
    assert "/api/v1/documents?token=[redacted]&days=7" in logged and "/w/[redacted]" in logged, logged
    assert "/ws/chat?token=[redacted]" in logged, logged


async def test_the_learning_page_loads_no_third_party_script(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
) -> None:
    setup = await new_setup("Chart Coach", response_cache_ttl_seconds=0)
    await rate(http, setup, (await chat(http, setup, "How do I start the day calmly?"))["message_id"], True)
    await log_in(browser, setup.coach)
    page = await browser.get("/dashboard/learning")
    assert page.status_code == 200 and page.text.count("<svg") >= 3
    assert "kozea" not in page.text
    for tag in re.findall(r"<script\b[^>]*>", page.text):
        src = re.search(r'\b(?:xlink:)?(?:src|href)="([^"]*)"', tag)
        assert src and src.group(1).startswith("/") and not src.group(1).startswith("//"), tag
    assert not re.search(r"<style|<[a-z][^>]*\sstyle=", page.text), "inline styles are blocked by the CSP"
    stylesheet = await browser.get("/dashboard/learning/charts.css")
    assert stylesheet.status_code == 200 and stylesheet.headers["content-type"].startswith("text/css")
    assert ".pygal-chart" in stylesheet.text and '/dashboard/learning/charts.css"' in page.text


async def test_the_api_schema_is_served_as_a_document_not_a_blank_page(http: httpx.AsyncClient) -> None:
    """``/schema`` was Litestar's interactive page, whose script (from a CDN, run inline) the app's CSP refuses:
    it rendered blank. Both addresses now serve the OpenAPI document."""
    for path in ("/schema", "/schema/openapi.json"):
        response = await http.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/"), path
        assert response.json()["openapi"].startswith("3.") and "/api/v1/chat" in response.json()["paths"], path
