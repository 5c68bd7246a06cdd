"""Issue 17's tone page in a real browser (a 390×844 phone): a client opens the widget's Tone page from the chat,
picks an intensity, agrees to the coach's most intense style (asked twice), sees it applied on the page and in
the next reply's instructions, and goes back to the default style; axe-core reports no violation of any impact
on the page at each step. Screenshots go to ``test-artifacts/browser/``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import httpx
import pytest
import respx
from playwright.async_api import Browser, expect

from tests.browser.axe import violations
from tests.browser.conftest import PHONE, CoachWithClient
from tests.browser.test_handoff_browser import REPLY, WAIT_MS, browser, llm_api, send_from_widget, shot
from tests.integration.chat.test_tone import ROAST, SETTINGS

__all__ = ["browser", "llm_api"]  # fixtures used by name below
pytestmark = pytest.mark.browser


def system_prompt(router: respx.MockRouter) -> str:
    """The system message of the last prompt the model received."""
    body = json.loads(router["completions"].calls.last.request.content)
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")


async def test_a_client_picks_an_intensity_and_consents_twice_to_the_most_intense_style_on_the_tone_page(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    setup = await coach_with_client("Coach Tone", "Tess")
    coach, client = setup.coach, setup.client
    assert (await http.put("/api/v1/tone", headers=coach.headers, json=SETTINGS)).status_code == 200
    found: dict[str, list[str]] = {}

    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    page = await context.new_page()
    await page.goto(f"/w/{client['widget_token']}")
    await expect(page.locator("#composer")).to_be_visible(timeout=WAIT_MS)
    await page.get_by_role("link", name="Tone", exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("How the assistant talks to you")
    await expect(page.get_by_label("3 — balanced")).to_be_checked()
    await expect(page.locator("#current-mode")).to_have_text("Default")
    found["tone page"] = await violations(page)

    await page.get_by_label("2 — gentle").check()
    await page.get_by_role("button", name="Save intensity").click()
    await expect(page.locator("#status")).to_have_text("Intensity 2 — gentle.", timeout=WAIT_MS)

    roast = page.locator("#mode-roast")
    await expect(roast).to_contain_text('Switch to "Tough love"')
    await roast.get_by_role("button", name="I agree: use this style").click()
    again = roast.get_by_role("button", name="Yes, I'm sure: confirm again")
    await expect(again).to_be_focused(timeout=WAIT_MS)
    await expect(page.locator("#status")).to_contain_text("please confirm a second time")
    await expect(page.locator("#current-mode")).to_have_text("Default")  # not yet
    found["tone page, second confirmation"] = await violations(page)
    await shot(page, "tone-01-confirm-again-phone.png")

    await again.click()
    await expect(page.locator("#current-mode")).to_have_text("Tough love", timeout=WAIT_MS)  # after the reload
    await expect(page.get_by_label("2 — gentle")).to_be_checked()
    await expect(roast).to_contain_text("Agreed until")
    await expect(roast.get_by_role("button")).to_have_count(0)  # the style in force has no button
    found["tone page, style in force"] = await violations(page)
    await shot(page, "tone-02-style-in-force-phone.png")
    log = (await http.get(f"/api/v1/tone/consents/{client['id']}", headers=coach.headers)).json()
    assert [(e["mode"], e["event"]) for e in log] == [("roast", "confirm_1"), ("roast", "given")]

    await page.get_by_role("link", name="← Back to chat").click()
    await send_from_widget(page, "How should I plan my week?")
    await expect(page.locator(".msg.ai").last).to_contain_text(REPLY, timeout=WAIT_MS)
    prompt = system_prompt(llm_api)
    assert "Tone (gentle, 2/6)" in prompt and f"Style the client chose (Tough love): {ROAST['instruction']}" in prompt

    await page.get_by_role("link", name="Tone", exact=True).click()
    await page.get_by_role("button", name="Back to the default style").click()
    await expect(page.locator("#current-mode")).to_have_text("Default", timeout=WAIT_MS)
    await expect(page.locator("#withdraw")).to_have_count(0)
    found["tone page, back to default"] = await violations(page)
    await context.close()
    log = (await http.get(f"/api/v1/tone/consents/{client['id']}", headers=coach.headers)).json()
    assert [e["event"] for e in log] == ["confirm_1", "given", "withdrawn"]
    failing = {where: lines for where, lines in found.items() if lines}
    assert not failing, "\n".join(f"{where}:\n  " + "\n  ".join(lines) for where, lines in failing.items())
