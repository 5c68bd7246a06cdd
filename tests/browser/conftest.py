"""Set-up shared by the browser tests: a coach on the mocked model endpoint with one client, the coach logged
in on a dashboard page, and a coach's dashboard in a browser context of its own at a given window size."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import Coach, make_client
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS

PASSWORD = "correct horse battery"
WAIT_MS = 15_000
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}
"""The phone window of issue 17's checks (an iPhone 12–15's CSS pixels)."""
OpenDashboard = Callable[..., AbstractAsyncContextManager[Page]]


@dataclass
class CoachWithClient:
    """A coach (API key, e-mail) on the mocked endpoint and one client (``client["id"]``,
    ``client["widget_token"]``)."""

    coach: Coach
    client: dict[str, Any]


@pytest.fixture
def coach_with_client(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> Callable[..., Awaitable[CoachWithClient]]:
    """Make a coach named ``coach_name`` whose clone answers from the mocked endpoint (response cache off,
    plus any ``settings``), with one client named ``client_name``."""

    async def make(coach_name: str, client_name: str, **settings: Any) -> CoachWithClient:
        coach = await make_coach(coach_name)
        changes = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0} | settings
        saved = await http.patch("/api/v1/settings", headers=coach.headers, json=changes)
        assert saved.status_code == 200, saved.text
        return CoachWithClient(coach, await make_client(http, coach, client_name))

    return make


async def log_in(page: Page, coach: Coach, then: str) -> None:
    """Log ``coach`` in through the form, open ``then`` and wait until its live event stream is on."""
    await page.goto("/login")
    await page.locator("input[name=email]").fill(coach.email)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("form button[type=submit]").click()
    await expect(page).not_to_have_url("/login", timeout=WAIT_MS)
    await page.goto(then)
    await expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=WAIT_MS)


@pytest.fixture
def open_dashboard(base_url: str) -> OpenDashboard:
    """``async with open_dashboard(browser, coach, viewport=PHONE) as page``: a new browser context with
    ``coach`` logged in (on the "Get started" page; closed afterwards)."""

    @asynccontextmanager
    async def open_(browser: Browser, coach: Coach, viewport: dict[str, int] = DESKTOP) -> AsyncIterator[Page]:
        context = await browser.new_context(base_url=base_url, viewport=viewport)
        try:
            page = await context.new_page()
            await log_in(page, coach, "/dashboard/start")
            yield page
        finally:
            await context.close()

    return open_
