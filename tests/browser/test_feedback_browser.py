"""Issue 5 in a real browser: the client rates a reply in the widget (thumbs down, then a rating and a
comment, then changes their mind to thumbs up), and the coach sees the figure on the learning dashboard.

Same set-up as :mod:`tests.browser.test_handoff_browser` (system Chromium through Playwright, the coach's
endpoint mocked with respx); the coach and client are made through the API.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import httpx
import pytest
import respx
from playwright.async_api import Browser, Route, expect

from tests.browser.conftest import CoachWithClient
from tests.browser.test_handoff_browser import PASSWORD, WAIT_MS, browser, llm_api, send_from_widget, shot

__all__ = ["browser", "llm_api"]  # fixtures used by name below
pytestmark = pytest.mark.browser


async def test_the_client_rates_a_reply_and_the_coach_sees_it(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    setup = await coach_with_client("Coach Lee", "Kai")
    coach, client = setup.coach, setup.client

    context = await browser.new_context()
    widget = await context.new_page()
    await widget.goto(f"{base_url}/w/{client['widget_token']}")
    await send_from_widget(widget, "How do I stop snoozing my alarm?")
    reply = widget.locator(".msg.ai").last
    await expect(reply.locator(".thumb.down")).to_be_visible(timeout=WAIT_MS)

    await reply.locator(".thumb.down").click()
    await expect(reply.locator(".thumb.down")).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    await reply.locator("select[name=rating]").select_option("2")
    await reply.locator("input[name=text]").fill("Too generic for me")
    await reply.locator(".feedback-more button[type=submit]").click()
    await expect(reply.locator(".feedback")).to_contain_text("Thanks for your feedback", timeout=WAIT_MS)
    await shot(widget, "feedback-1-thumbs-down.png")

    conversations = (await http.get("/api/v1/conversations", headers=coach.headers)).json()
    detail = (await http.get(f"/api/v1/conversations/{conversations[0]['id']}", headers=coach.headers)).json()
    feedback = detail["messages"][-1]["metadata"]["feedback"]
    assert (feedback["helpful"], feedback["rating"], feedback["text"]) == (False, 2, "Too generic for me")

    # reloading shows the stored choice; changing it replaces the feedback
    await widget.reload()
    reply = widget.locator(".msg.ai").last
    await expect(reply.locator(".thumb.down")).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    await reply.locator(".thumb.up").click()
    await expect(reply.locator(".thumb.up")).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    figures = (await http.get("/api/v1/learning/dashboard", headers=coach.headers)).json()
    assert figures["approval"]["overall"] == {"rated": 1, "thumbs_up": 1, "rate": 1.0}
    await context.close()

    dashboard = await (await browser.new_context()).new_page()
    await dashboard.goto(f"{base_url}/login")
    await dashboard.locator("input[name=email]").fill(coach.email)
    await dashboard.locator("input[name=password]").fill(PASSWORD)
    await dashboard.locator("form button[type=submit]").click()
    await dashboard.goto(f"{base_url}/dashboard/learning")
    await expect(dashboard.locator("#health")).to_contain_text("Excellent", timeout=WAIT_MS)
    await expect(dashboard.locator("#approval svg").first).to_be_visible()
    await shot(dashboard, "feedback-2-learning-dashboard.png")


async def test_the_first_message_from_the_widget_records_the_ai_disclosure_for_the_export(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """The chat page shows the AI disclosure; the client's first message sends its acceptance (chat.js), which
    the data export lists under ``consent`` with the version shown."""
    setup = await coach_with_client("Coach Consent", "Kai")
    coach, client = setup.coach, setup.client
    export_url = f"/api/v1/clients/{client['id']}/export"

    context = await browser.new_context()
    widget = await context.new_page()
    await widget.goto(f"{base_url}/w/{client['widget_token']}")
    await expect(widget.locator("#disclosure")).to_contain_text("Coach Consent's AI assistant")
    version = await widget.locator("#disclosure").get_attribute("data-version")
    assert (await http.get(export_url, headers=coach.headers)).json()["consent"] == {"ai_disclosure": None, "tone": []}
    async with widget.expect_response("**/api/v1/widget/disclosure") as sent:
        await send_from_widget(widget, "How do I stop snoozing my alarm?")
    assert (await sent.value).status == 200
    consent = (await http.get(export_url, headers=coach.headers)).json()["consent"]["ai_disclosure"]
    assert consent is not None and consent["version"] == version and consent["accepted_at"]
    # let the turn finish while the model is mocked (a turn still running after the test would reach the network)
    await expect(widget.locator(".msg.ai .text").last).not_to_be_empty(timeout=WAIT_MS)
    await context.close()


async def test_an_error_page_that_is_not_json_shows_a_plain_message_and_the_click_can_be_tried_again(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """A proxy's HTML error page (a 502) in front of the app: a thumb and "End session" show what failed in
    words (not the JSON parser's message) and the next try goes through."""
    setup = await coach_with_client("Coach Proxy", "Kai")
    context = await browser.new_context()
    widget = await context.new_page()
    await widget.goto(f"{base_url}/w/{setup.client['widget_token']}")
    await send_from_widget(widget, "How do I stop snoozing my alarm?")
    reply = widget.locator(".msg.ai").last
    await expect(reply.locator(".thumb.down")).to_be_visible(timeout=WAIT_MS)

    async def bad_gateway(route: Route) -> None:
        await route.fulfill(status=502, content_type="text/html", body="<html><h1>502 Bad Gateway</h1></html>")

    await widget.route(re.compile(r"/feedback$|/end-session$"), bad_gateway)
    await reply.locator(".thumb.down").click()
    await expect(reply.locator(".feedback")).to_contain_text("Could not save your feedback", timeout=WAIT_MS)
    await expect(reply.locator(".thumb.down")).to_have_attribute("aria-pressed", "false")
    await widget.locator("#end-session").click()
    await expect(widget.locator("#status")).to_have_text(
        "Could not end the session; check your connection.", timeout=WAIT_MS
    )
    await widget.unroute(re.compile(r"/feedback$|/end-session$"))
    await reply.locator(".thumb.down").click()
    await expect(reply.locator(".thumb.down")).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    await context.close()
