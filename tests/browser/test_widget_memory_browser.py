"""The widget's memory page in a real browser: deleting what the coach's AI remembers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from playwright.async_api import Browser, expect

from app.container import Container
from app.handoff.catalogue import say
from tests.browser.conftest import DESKTOP, WAIT_MS
from tests.browser.test_handoff_browser import browser
from tests.conftest import Coach
from tests.integration.memory.test_memory_controls import seed

__all__ = ["browser"]  # a fixture used by name below
pytestmark = pytest.mark.browser


async def test_deleting_the_last_insight_and_session_shows_that_nothing_is_remembered(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    container: Container,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    seeded = await seed(container, http, await make_coach("Coach Forget"), "Noor")
    context = await browser.new_context(base_url=base_url, viewport=DESKTOP)
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(f"/w/{seeded.widget_token}")  # the widget's session cookie
    await page.goto("/w/memory?lang=en")
    panel = page.locator("#memory")
    await expect(panel.locator("ul.remembered li.muted")).to_have_count(0)

    while await panel.locator("button[data-delete]").count():
        before = await panel.locator("button[data-delete]").count()
        await panel.locator("button[data-delete]").first.click()
        await expect(panel.locator("button[data-delete]")).to_have_count(before - 1, timeout=WAIT_MS)

    # what a reload shows, without the reload: an empty heading would read as a page still loading
    await expect(panel.locator("ul.remembered li.muted")).to_have_text(say("memory_page_nothing", "en"))
    await expect(panel.locator("#sessions + p.muted")).to_have_text(say("memory_page_no_summaries", "en"))
    await page.reload()
    await expect(panel.locator("ul.remembered li.muted")).to_have_text(say("memory_page_nothing", "en"))
    await expect(panel.locator("#sessions + p.muted")).to_have_text(say("memory_page_no_summaries", "en"))
    await context.close()
