"""Issue 17's accessibility check: axe-core finds no serious or critical violation on the widget (chat with
replies, citations and feedback, a crisis reply, the memory page; desktop and phone) and on the main dashboard
pages (get started, documents, clients, a client, the inbox alone and with a conversation open, a conversation,
handoffs, learning, settings, log-in and sign-up)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
import respx
from playwright.async_api import Browser, expect

from tests.browser.axe import serious_violations
from tests.browser.conftest import CoachWithClient
from tests.browser.test_handoff_browser import PASSWORD, REPLY, WAIT_MS, browser, llm_api, send_from_widget, shot

__all__ = ["browser", "llm_api"]  # fixtures used by name below
pytestmark = pytest.mark.browser


async def test_widget_and_dashboard_have_no_serious_accessibility_violations(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    setup = await coach_with_client("Coach Axe", "Ari")
    coach, client = setup.coach, setup.client
    found: dict[str, list[str]] = {}

    for name, viewport in (("desktop", {"width": 1200, "height": 900}), ("phone", {"width": 390, "height": 844})):
        context = await browser.new_context(base_url=base_url, viewport=viewport)
        widget = await context.new_page()
        await widget.goto(f"/w/{client['widget_token']}")
        await expect(widget.locator("#composer")).to_be_visible(timeout=WAIT_MS)
        found[f"widget greeting ({name})"] = await serious_violations(widget)
        if name == "desktop":
            await send_from_widget(widget, "How do I start my mornings?")
            await expect(widget.locator(".msg.ai").last).to_contain_text(REPLY, timeout=WAIT_MS)
            await widget.locator(".msg.ai .thumb.down").last.click()
            await send_from_widget(widget, "I want to end my life tonight")
            await expect(widget.locator(".msg.notice a[href^='tel:']").first).to_be_visible(timeout=WAIT_MS)
        await widget.reload()
        await expect(widget.locator(".msg.ai").first).to_be_visible(timeout=WAIT_MS)
        found[f"widget conversation ({name})"] = await serious_violations(widget)
        await shot(widget, f"a11y-widget-{name}.png")
        await widget.goto("/w/memory")
        found[f"widget memory ({name})"] = await serious_violations(widget)
        await context.close()

    context = await browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    for path in ("/login", "/signup"):
        await page.goto(path)
        found[path] = await serious_violations(page)
    await page.goto("/login")
    await page.locator("input[name=email]").fill(coach.email)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("button[type=submit]").click()
    await expect(page).not_to_have_url(f"{base_url}/login", timeout=WAIT_MS)
    conversations = (await http.get("/api/v1/conversations", headers=coach.headers)).json()
    for path in (
        "/dashboard/start",
        "/dashboard/documents",
        "/dashboard/clients",
        f"/dashboard/clients/{client['id']}",
        "/dashboard/inbox",
        f"/dashboard/inbox?conversation={conversations[0]['id']}",
        f"/dashboard/conversations/{conversations[0]['id']}",
        "/dashboard/handoffs",
        "/dashboard/learning",
        "/dashboard/settings",
    ):
        await page.goto(path)
        await expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=WAIT_MS)
        found[path] = await serious_violations(page)
    await shot(page, "a11y-dashboard-settings.png")
    await context.close()
    failing = {where: lines for where, lines in found.items() if lines}
    assert not failing, "\n".join(f"{where}:\n  " + "\n  ".join(lines) for where, lines in failing.items())
