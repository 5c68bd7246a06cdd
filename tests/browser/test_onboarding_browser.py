"""Issue 17 in a real browser: the "Get started" checklist a new coach follows (with screenshots), the copy
buttons, the settings page's sections, and the main dashboard pages at phone width (390×844: nothing wider
than the screen, measured as ``document.scrollingElement.scrollWidth``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
import respx
from playwright.async_api import Browser, expect

from tests.browser.conftest import PHONE, OpenDashboard
from tests.browser.test_handoff_browser import REPLY, WAIT_MS, browser, llm_api, send_from_widget, shot
from tests.conftest import Coach, make_client, upload
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS

__all__ = ["browser", "llm_api"]  # fixtures used by name below
pytestmark = pytest.mark.browser


async def test_a_new_coach_follows_the_checklist(
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    make_coach: Callable[..., Awaitable[Coach]],
    open_dashboard: OpenDashboard,
) -> None:
    coach = await make_coach("Coach Onboard")
    settings = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=settings)).status_code == 200
    async with open_dashboard(browser, coach) as page:
        await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        await page.goto("/dashboard/start")
        await expect(page.locator(".checklist .step.todo")).to_have_count(4)
        await shot(page, "onboarding-1-new.png")

        await upload(http, coach, "notes.md", b"# Mornings\n\nTwo quiet minutes before the phone.")
        async with page.context.expect_page() as popup:
            await page.get_by_role("button", name="Open the preview chat").click()
        preview = await popup.value
        await expect(preview.locator("#composer")).to_be_visible(timeout=WAIT_MS)
        await send_from_widget(preview, "How do I start my mornings?")
        await expect(preview.locator(".msg.ai").last).to_contain_text(REPLY, timeout=WAIT_MS)
        await shot(preview, "onboarding-2-preview-chat.png")
        await preview.close()

        await page.goto("/dashboard/clients")
        await expect(page.locator("tr[data-status=active]")).to_contain_text("(your preview)")
        await page.locator("input[name=name]").fill("Robin")
        await page.get_by_role("button", name="Add client").click()
        await expect(page.locator("tr[data-status=new]")).to_contain_text("Robin", timeout=WAIT_MS)
        await expect(page.get_by_role("button", name="Copy link for Robin")).to_be_visible()
        copy = page.locator("tr", has_text="Robin").locator("button.copy").first  # its name changes on click
        await page.wait_for_load_state()  # static/copy.js (deferred) is listening
        await copy.click()
        await expect(copy.locator(".copy-text")).to_have_text("Copied")
        await expect(page.locator("body > [role=status]")).to_have_text("Copied to the clipboard")
        copied = await page.evaluate("() => navigator.clipboard.readText()")
        assert copied.startswith("http") and "/w/ocw_" in copied
        await shot(page, "onboarding-3-clients.png")

        await page.goto("/dashboard/start")
        for key in ("document", "preview", "client"):
            await expect(page.locator(f"#step-{key}")).to_have_attribute("data-done", "yes")
        await expect(page.locator("#step-telegram")).to_have_attribute("data-done", "no")
        await expect(page.locator(".onboarding")).to_contain_text("3 of 4 done")
        await shot(page, "onboarding-4-three-done.png")


async def test_a_settings_section_saves_alone(
    http: httpx.AsyncClient,
    browser: Browser,
    make_coach: Callable[..., Awaitable[Coach]],
    open_dashboard: OpenDashboard,
) -> None:
    coach = await make_coach("Coach Sections")
    async with open_dashboard(browser, coach) as page:
        await page.goto("/dashboard/settings")
        await page.locator("#profile-settings input[name=name]").fill("Renamed but not saved")
        welcome = page.locator("#widget-settings")
        await welcome.locator("textarea[name=widget_greeting]").fill("Welcome to my practice!")
        await welcome.get_by_role("button", name="Save welcome").click()
        await expect(page.locator("#widget-settings [role=status]")).to_have_text("Saved.", timeout=WAIT_MS)
        stored = (await http.get("/api/v1/settings", headers=coach.headers)).json()
        assert stored["widget_greeting"] == "Welcome to my practice!" and stored["name"] == "Coach Sections"
        assert await page.locator("select[name=avail_timezone] option").count() > 300, "the IANA list"
        text = await page.locator("main").inner_text()
        for jargon in ("SFT", "preference pair", "cache TTL", "TTL"):
            assert jargon not in text, jargon
        assert await page.locator("[title='Response cache TTL (seconds)']").count() == 1
        await page.goto("/dashboard/learning")
        text = await page.locator("main").inner_text()
        assert "SFT" not in text and "preference pair" not in text.lower()
        assert await page.locator("[title='Preference pairs (chosen / rejected)']").count() == 1
        await shot(page, "onboarding-settings-sections.png")


async def test_a_refused_settings_section_keeps_what_the_coach_typed(
    http: httpx.AsyncClient,
    browser: Browser,
    make_coach: Callable[..., Awaitable[Coach]],
    open_dashboard: OpenDashboard,
) -> None:
    coach = await make_coach("Coach Typing")
    before = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    async with open_dashboard(browser, coach) as page:
        await page.goto("/dashboard/settings")
        await page.wait_for_load_state()  # static/settings.js (deferred) is listening
        handoff = page.locator("#handoff-settings")
        topics, sla = (
            handoff.locator("textarea[name=high_stakes_topics]"),
            handoff.locator("[name=handoff_sla_minutes]"),
        )
        await topics.fill("divorce\nmoney")
        await sla.fill("45")
        await handoff.locator("input[name=always_available]").uncheck()
        for day in await handoff.locator("input[name=avail_days]").all():
            await day.uncheck()  # working hours on no day: refused
        await handoff.get_by_role("button", name="Save handoff settings").click()
        await expect(handoff.locator("[role=alert]")).to_contain_text("availability.days", timeout=WAIT_MS)
        await page.wait_for_load_state()
        await expect(topics).to_have_value("divorce\nmoney")
        await expect(sla).to_have_value("45")
        await expect(handoff.locator("input[name=always_available]")).not_to_be_checked()
        await expect(handoff.locator("input[name=avail_days]:checked")).to_have_count(0)
        stored = (await http.get("/api/v1/settings", headers=coach.headers)).json()
        assert (stored["high_stakes_topics"], stored["handoff_sla_minutes"], stored["availability"]) == (
            before["high_stakes_topics"],
            before["handoff_sla_minutes"],
            before["availability"],
        ), "a refused section stores nothing"

        await handoff.locator("input[name=avail_days][value='2']").check()  # the one field fixed
        await handoff.get_by_role("button", name="Save handoff settings").click()
        await expect(handoff.locator("[role=status]")).to_have_text("Saved.", timeout=WAIT_MS)
        stored = (await http.get("/api/v1/settings", headers=coach.headers)).json()
        assert stored["high_stakes_topics"] == ["divorce", "money"] and stored["handoff_sla_minutes"] == 45
        assert stored["availability"]["days"] == [2]

        await page.locator("#profile-settings input[name=name]").fill("Typed, then left")
        await page.reload()  # no refused save: the page shows what is stored
        await page.wait_for_load_state()
        await expect(page.locator("#profile-settings input[name=name]")).to_have_value("Coach Typing")


async def test_the_dashboard_fits_a_phone(
    http: httpx.AsyncClient,
    browser: Browser,
    make_coach: Callable[..., Awaitable[Coach]],
    open_dashboard: OpenDashboard,
) -> None:
    coach = await make_coach("Coach With A Rather Long Name")
    client = await make_client(http, coach, "Alexandra Wolkenstein-Barrington")
    # no heading: the file's long name is its title in the table
    await upload(http, coach, "a-document-with-a-long-file-name-for-the-table.md", b"Some notes.\n\nSome text.")
    pages = (
        "/dashboard/start",
        "/dashboard/documents",
        "/dashboard/clients",
        f"/dashboard/clients/{client['id']}",
        "/dashboard/conversations",
        "/dashboard/handoffs",
        "/dashboard/learning",
        "/dashboard/settings",
        "/dashboard/settings/telegram",
    )
    wide = {}
    async with open_dashboard(browser, coach, viewport=PHONE) as page:
        for path in pages:
            await page.goto(path)
            width = await page.evaluate("() => document.scrollingElement.scrollWidth")
            if width > PHONE["width"]:
                wide[path] = width
            await shot(page, "phone" + path.replace("/", "-").replace(client["id"], "one") + ".png")
    assert not wide, f"wider than the 390 px screen: {wide}"
