"""The Content-Security-Policy in a real browser: the widget and the dashboard pages (the learning page with its
charts included) work without the browser reporting a single blocked script, style or connection, and the
widget refuses to be framed by a site the coach did not list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
import respx
from playwright.async_api import Browser, ConsoleMessage, Page, expect

from tests.browser.conftest import CoachWithClient
from tests.browser.test_handoff_browser import PASSWORD, WAIT_MS, browser, llm_api
from tests.conftest import Coach, make_client

__all__ = ["browser", "llm_api"]  # fixtures used by name below
pytestmark = pytest.mark.browser


def _collect_violations(page: Page, into: list[str]) -> None:
    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            into.append(message.text)

    page.on("console", on_console)


async def test_pages_run_under_the_policy_without_violations(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    setup = await coach_with_client("Coach Csp", "Kai")
    coach, client = setup.coach, setup.client
    auth = {"Authorization": f"Bearer {client['widget_token']}"}
    reply = await http.post("/api/v1/chat", headers=auth, json={"text": "How do I start the day calmly?"})
    assert reply.status_code == 200, reply.text
    # a rated reply: the learning page draws its charts
    feedback = await http.post(
        f"/api/v1/messages/{reply.json()['message_id']}/feedback", headers=auth, json={"helpful": True}
    )
    assert feedback.status_code == 200, feedback.text

    violations: list[str] = []
    context = await browser.new_context(base_url=base_url)
    page = await context.new_page()
    _collect_violations(page, violations)
    await page.goto(f"/w/{client['widget_token']}")
    await expect(page.locator("#log")).to_contain_text("How do I start the day calmly?", timeout=WAIT_MS)
    await expect(page.locator("#composer")).to_be_visible()
    await page.goto(f"/w/{client['widget_token']}/memory")
    await expect(page.locator("#memory h1")).to_be_visible(timeout=WAIT_MS)

    await page.goto("/login")
    await page.locator("input[name=email]").fill(coach.email)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("button[type=submit]").click()
    for path in ("/dashboard/documents", "/dashboard/clients", "/dashboard/settings", "/dashboard/learning"):
        await page.goto(path)
        await expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=WAIT_MS)  # dashboard.js ran
    chart = page.locator("#approval svg").first
    await expect(chart).to_be_visible(timeout=WAIT_MS)
    # the chart stylesheet applied: pygal's background rectangles are transparent, not black
    fill = await page.locator("#approval svg rect.background").first.evaluate("e => getComputedStyle(e).fill")
    assert fill in ("transparent", "rgba(0, 0, 0, 0)", "none"), fill
    assert violations == [], violations
    await context.close()


async def test_the_widget_cannot_be_framed_by_an_unlisted_site(
    base_url: str, http: httpx.AsyncClient, browser: Browser, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Coach Frame")
    client = await make_client(http, coach, "Ana")
    context = await browser.new_context()
    page = await context.new_page()
    violations: list[str] = []
    _collect_violations(page, violations)
    # an unlisted page (about:blank, opaque origin) frames the widget: the browser blocks it
    await page.set_content(f'<iframe id="w" src="{base_url}/w/{client["widget_token"]}"></iframe>')
    await page.wait_for_timeout(1500)
    frame = page.frame_locator("#w")
    assert await frame.locator("#composer").count() == 0
    assert any("frame-ancestors" in v for v in violations), violations
    await context.close()
