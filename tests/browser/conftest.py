"""Set-up shared by the browser tests: a coach's dashboard open in its own browser context (logged in through
the real log-in form) at a given window size."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.test_handoff_browser import PASSWORD, WAIT_MS
from tests.conftest import Coach

DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}
"""The phone window of issue 17's checks (an iPhone 12–15's CSS pixels)."""
OpenDashboard = Callable[..., AbstractAsyncContextManager[Page]]


async def log_in(page: Page, coach: Coach) -> None:
    """Log ``coach`` in through the log-in form and wait until the dashboard opened."""
    await page.goto("/login")
    await page.locator("input[name=email]").fill(coach.email)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("button[type=submit]").click()
    await expect(page).not_to_have_url(re.compile(r"/login$"), timeout=WAIT_MS)


@pytest.fixture
def open_dashboard(base_url: str) -> OpenDashboard:
    """``async with open_dashboard(browser, coach, viewport=PHONE) as page``: a new browser context with
    ``coach`` logged in (closed afterwards)."""

    @asynccontextmanager
    async def open_(browser: Browser, coach: Coach, viewport: dict[str, int] = DESKTOP) -> AsyncIterator[Page]:
        context = await browser.new_context(base_url=base_url, viewport=viewport)
        try:
            page = await context.new_page()
            await log_in(page, coach)
            yield page
        finally:
            await context.close()

    return open_
