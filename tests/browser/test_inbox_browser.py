"""Issue 17's inbox in a real browser: a client writes in the widget while the coach watches the inbox; the
conversation appears with its unread count and state, and its ask for a human raises the alerts (tab-title
count, browser notification); the coach opens it, takes over, writes and hands back, all without a page
reload (a marker set on the page's window survives). Then a draft in draft mode is approved beside the
question it answers. Screenshots go to ``test-artifacts/browser/``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import respx
from playwright.async_api import Browser, BrowserContext, Page, Route, expect

from app.core.runtime import Services
from tests.browser.axe import serious_violations
from tests.browser.conftest import WAIT_MS, CoachWithClient, log_in
from tests.browser.test_handoff_browser import REPLY, browser, llm_api, send_from_widget, shot
from tests.conftest import Coach
from tests.integration.web.test_inbox import seed_conversations

__all__ = ["browser", "llm_api"]  # fixtures used by name below
pytestmark = pytest.mark.browser
DESKTOP = {"width": 1280, "height": 900}
RECORD_NOTICES = """
window.__notices = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notices.push(title); }
  close() {}
};
window.__tones = 0;
window.AudioContext = class {
  constructor() { this.state = "running"; this.currentTime = 0; this.destination = {}; }
  resume() { this.state = "running"; return Promise.resolve(); }
  createOscillator() {
    return { frequency: {}, connect: (node) => node, start: () => { window.__tones += 1; }, stop: () => {} };
  }
  createGain() {
    return { gain: { setValueAtTime: () => {}, exponentialRampToValueAtTime: () => {} }, connect: (node) => node };
  }
};
"""
"""Stands in for the browser's notifications (headless Chromium shows none) and its Web Audio: each
notification's title is recorded in ``window.__notices``, each tone started counted in ``window.__tones``
(one for a handoff, two for a crisis)."""


async def coach_page(browser: Browser, base_url: str, setup: CoachWithClient) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(base_url=base_url, viewport=DESKTOP)
    await context.add_init_script(RECORD_NOTICES)
    page = await context.new_page()
    await log_in(page, setup.coach, "/dashboard/inbox")
    await page.evaluate("window.__sameDocument = true")
    return context, page


@asynccontextmanager
async def coach_and_widget(
    browser: Browser, base_url: str, setup: CoachWithClient, widget_viewport: dict[str, int] | None = None
) -> AsyncIterator[tuple[Page, Page]]:
    """``(coach's inbox page, client's page)`` in two browser contexts of their own (the client's at
    ``widget_viewport``, else the browser's default), both closed afterwards."""
    coach_context, coach = await coach_page(browser, base_url, setup)
    client_context = await browser.new_context(base_url=base_url, viewport=widget_viewport)
    try:
        yield coach, await client_context.new_page()
    finally:
        await coach_context.close()
        await client_context.close()


async def not_reloaded(page: Page) -> None:
    assert await page.evaluate("window.__sameDocument === true"), "the page was reloaded"


async def test_inbox_flow_without_a_reload(
    base_url: str,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    setup = await coach_with_client("Coach Inés", "Robin")
    async with coach_and_widget(browser, base_url, setup, {"width": 480, "height": 800}) as (coach, widget):
        await coach.locator("#alerts-toggle").click()
        await expect(coach.locator("#alerts-toggle")).to_have_attribute("aria-pressed", "true")
        await expect(coach.locator("#conversation-pane")).to_contain_text("Choose a conversation")

        # 1. the client writes, asking for a human: the conversation appears in the inbox without a reload,
        # unread and waiting for the coach; the tab title counts it and a notification is shown
        await widget.goto(f"/w/{setup.client['widget_token']}")
        await send_from_widget(widget, "Can I talk to a real person please?")
        row = coach.locator(".inbox-row").filter(has_text="Robin")
        await expect(row).to_have_count(1, timeout=WAIT_MS)
        await expect(row.locator(".unread-count")).to_contain_text("1", timeout=WAIT_MS)
        await expect(row.locator(".badge.state")).to_have_text("Waiting for you", timeout=WAIT_MS)
        await expect(row.locator(".badge.channel")).to_have_text("Widget")
        await expect(coach).to_have_title("(1) Inbox · OpenCoach", timeout=WAIT_MS)
        assert await coach.evaluate("window.__notices") == ["Handoff: Robin"]
        assert await coach.evaluate("window.__tones") == 1
        await send_from_widget(widget, "It's about my job.")
        await expect(row.locator(".unread-count")).to_contain_text("2", timeout=WAIT_MS)
        await expect(row.locator(".preview")).to_contain_text("It's about my job.")
        await shot(coach, "inbox-01-handoff-alert.png")

        # 3. open it: the transcript beside the list, read, the composer in view
        await row.locator("a").click()
        pane = coach.locator("#conversation-pane")
        await expect(pane.locator("#transcript")).to_contain_text("It's about my job.", timeout=WAIT_MS)
        await expect(coach.locator("#handoff-panel")).to_contain_text("Handed to you")
        await expect(row.locator(".unread-count")).to_have_count(0, timeout=WAIT_MS)
        await expect(coach.locator("#coach-text")).to_be_in_viewport()
        assert await serious_violations(coach) == [], "the inbox with a conversation open passes axe-core"
        await expect(coach).to_have_url(
            f"{base_url}/dashboard/inbox?conversation={await pane.get_attribute('data-conversation')}"
        )

        # 4. take over, write, hand back
        await coach.locator("#takeover").click()
        await expect(coach.locator("#handoff-panel")).to_contain_text("You are in this conversation", timeout=WAIT_MS)
        # the takeover's live event replaces the handoff panel, its form with it, while the request is under way:
        # the answer still replaces the pane alone (the whole page went into the pane)
        await expect(coach.locator("nav")).to_have_count(1)
        await expect(coach.locator("#conversation-pane")).to_have_count(1)
        await expect(row.locator(".badge.state")).to_have_text("You", timeout=WAIT_MS)
        await expect(coach).to_have_title("Inbox · OpenCoach", timeout=WAIT_MS)
        await expect(widget.locator("#log")).to_contain_text("Coach Inés joined the conversation", timeout=WAIT_MS)
        await coach.locator("#coach-text").fill("Hi Robin, I'm here. What's on your mind?")
        await coach.locator("#coach-send").click()
        await expect(widget.locator("#log .msg.human_coach").last).to_contain_text("I'm here", timeout=WAIT_MS)
        await expect(coach.locator("#transcript .msg.human_coach")).to_contain_text("I'm here", timeout=WAIT_MS)
        await expect(coach.locator("#coach-text")).to_have_value("")
        await expect(row.locator(".preview")).to_contain_text("You: Hi Robin", timeout=WAIT_MS)
        await shot(coach, "inbox-02-coach-writes.png")

        await send_from_widget(widget, "Thanks, I feel stuck at work.")
        await expect(coach.locator("#transcript")).to_contain_text("I feel stuck at work", timeout=WAIT_MS)
        await expect(row.locator(".unread-count")).to_have_count(0)  # read: it arrived in the open conversation

        await coach.locator("#handback-silent").click()
        await expect(coach.locator("#handoff-panel")).to_contain_text("The AI is answering", timeout=WAIT_MS)
        await expect(coach.locator("nav")).to_have_count(1)
        await expect(coach.locator("#conversation-pane")).to_have_count(1)
        await expect(row.locator(".badge.state")).to_have_text("AI answering", timeout=WAIT_MS)
        await expect(widget.locator("#log")).to_contain_text("handed the conversation back", timeout=WAIT_MS)
        await not_reloaded(coach)
        await shot(coach, "inbox-03-handed-back.png")
        await shot(widget, "inbox-04-widget.png")

        # 5. the handoff history shows it, with its outcome
        await coach.goto("/dashboard/handoffs")
        history = coach.locator("#handoff-history")
        await expect(history).to_contain_text("Robin")
        await expect(history.locator(".outcome")).to_have_text("Handed back")
        await shot(coach, "inbox-05-handoff-history.png")


async def test_a_draft_is_approved_beside_the_question_it_answers(
    base_url: str,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    setup = await coach_with_client("Coach Draft Inbox", "Sam", handoff_mode="draft")
    async with coach_and_widget(browser, base_url, setup) as (coach, widget):
        await widget.goto(f"/w/{setup.client['widget_token']}")
        await send_from_widget(widget, "How do I plan my week?")
        row = coach.locator(".inbox-row").filter(has_text="Sam")
        await expect(row.locator(".badge.state")).to_have_text("Draft pending", timeout=WAIT_MS)
        await row.locator("a").click()
        question = coach.locator("#transcript .msg.client").filter(has_text="How do I plan my week?")
        draft = question.locator("xpath=following-sibling::*[1]")
        await expect(draft).to_have_class("draft", timeout=WAIT_MS)
        await expect(draft.locator("textarea")).to_have_value(REPLY)
        await shot(coach, "inbox-06-draft-beside-question.png")

        await draft.locator("textarea").fill("Pick one thing per day.")
        await draft.get_by_role("button", name="Approve / send edited").click()
        await expect(widget.locator("#log")).to_contain_text("Pick one thing per day.", timeout=WAIT_MS)
        await expect(coach.locator("#transcript .draft")).to_have_count(0, timeout=WAIT_MS)
        await expect(coach.locator("#transcript .msg.human_coach")).to_contain_text("Pick one thing per day.")
        await expect(row.locator(".badge.state")).to_have_text("AI answering", timeout=WAIT_MS)
        await not_reloaded(coach)


async def test_a_crisis_in_a_conversation_the_coach_holds_rings_and_shows_crisis(
    base_url: str,
    browser: Browser,
    http: httpx.AsyncClient,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """The client asked for a human (one notice, one tone) and the coach took the conversation over; the
    client's crisis message then rings again (crisis tone, "Crisis: Robin" notification), shows the crisis
    banner and turns the inbox row to "Crisis" until the coach opens it; the next ordinary message rings
    nothing (it gets the crisis acknowledgement, the coach not having written since the crisis reply)."""
    setup = await coach_with_client("Coach Held", "Robin")
    async with coach_and_widget(browser, base_url, setup, {"width": 480, "height": 800}) as (coach, widget):
        await coach.locator("#alerts-toggle").click()
        await widget.goto(f"/w/{setup.client['widget_token']}")
        await send_from_widget(widget, "Can I talk to a real person please?")
        row = coach.locator(".inbox-row").filter(has_text="Robin")
        await expect(row.locator(".badge.state")).to_have_text("Waiting for you", timeout=WAIT_MS)
        conversation_id = await row.get_attribute("data-conversation")
        taken = await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
        assert taken.status_code == 200, taken.text
        await expect(row.locator(".badge.state")).to_have_text("You", timeout=WAIT_MS)
        assert await coach.evaluate("[window.__notices, window.__tones]") == [["Handoff: Robin"], 1]

        await send_from_widget(widget, "I want to end my life tonight")
        await expect(row.locator(".badge.state")).to_have_text("Crisis", timeout=WAIT_MS)
        await expect(coach.locator("#alerts .crisis-alert")).to_contain_text("Crisis: Robin", timeout=WAIT_MS)
        assert await coach.evaluate("[window.__notices, window.__tones]") == [["Handoff: Robin", "Crisis: Robin"], 3]
        await shot(coach, "inbox-07-crisis-in-held-conversation.png")

        await send_from_widget(widget, "Okay, I will wait here for you.")
        # the crisis acknowledgement answers it: the coach has not written since the crisis reply
        await expect(row.locator(".preview")).to_contain_text("goes straight to Coach Held", timeout=WAIT_MS)
        await expect(coach.locator("#alerts .crisis-alert")).to_have_count(1)
        assert await coach.evaluate("window.__tones") == 3, "an ordinary message rings nothing"

        await row.locator("a").click()
        await expect(coach.locator("#transcript")).to_contain_text("I will wait here", timeout=WAIT_MS)
        await expect(row.locator(".badge.state")).to_have_text("You", timeout=WAIT_MS)
        await not_reloaded(coach)


LIVE_MESSAGE = "document.dispatchEvent(new CustomEvent('oc:live', {detail: {type: 'message', data: {}}}))"
SCROLL_LIST_TO_END = (
    "(() => { const list = document.getElementById('inbox-list');"
    " list.scrollTop = list.scrollHeight; return list.scrollTop; })()"
)


async def test_load_more_appends_the_next_rows_in_place(
    base_url: str,
    browser: Browser,
    services: Services,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    """60 conversations: the inbox shows 50 and "Load more", which appends the other 10 without a reload
    (and goes); a live refresh of the list afterwards keeps all 60, and the coach's place in the scrolled list
    (before, every refresh put the list back at its top)."""
    coach = await make_coach("Coach Many")
    expected = await seed_conversations(services, coach, 60)
    context, page = await coach_page(browser, base_url, CoachWithClient(coach, {}))
    try:
        rows = page.locator("#inbox-list .inbox-row")
        await expect(rows).to_have_count(50)
        await page.locator("#inbox-more").click()
        await expect(rows).to_have_count(60, timeout=WAIT_MS)
        await expect(page.locator("#inbox-more")).to_have_count(0)
        assert await rows.evaluate_all("rows => rows.map(r => r.dataset.conversation)") == expected
        # page.evaluate, not a locator's: a refresh may replace the list between a locator finding it and
        # the script running on it (a detached list reads scrollTop 0)
        scrolled = await page.evaluate(SCROLL_LIST_TO_END)
        assert scrolled > 0, "the list of 60 rows should scroll"
        # a live event re-fetches the list (static/inbox.js): with as many rows as are shown
        await page.evaluate(
            "document.getElementById('inbox-list').dataset.old = 'yes';"
            "document.dispatchEvent(new CustomEvent('oc:live', {detail: {type: 'handoff', data: {}}}))"
        )
        await expect(page.locator("#inbox-list[data-old]")).to_have_count(0, timeout=WAIT_MS)  # replaced
        await expect(rows).to_have_count(60)
        assert await page.evaluate("document.getElementById('inbox-list').scrollTop") == scrolled
        await not_reloaded(page)
    finally:
        await context.close()


@pytest.mark.parametrize("overlapping", [False, True], ids=["one-refresh", "older-one-answered-first"])
async def test_a_list_refresh_started_before_load_more_is_dropped(
    base_url: str,
    browser: Browser,
    services: Services,
    make_coach: Callable[..., Awaitable[Coach]],
    overlapping: bool,
) -> None:
    """A live refresh of the list is on its way when the coach clicks "Load more": its answer (the first 50
    rows) is held back until the refresh that "Load more" starts afterwards (all 60) has been shown. The late
    answer must be dropped, keeping the 60 rows. ``overlapping``: an older refresh was also on its way, and
    was answered (and dropped) before the click.

    Before, static/inbox.js's staleness check read a variable that a later ``var`` of the same name hid
    (always undefined), so the late answer put back 50 rows and the "Load more" link; the same stale refresh
    could also replace the list while "Load more" was loading, losing the appended rows. And the older
    refresh's answer marked no refresh as on its way, so "Load more" then kept the newer one's answer."""
    coach = await make_coach("Coach Many")
    await seed_conversations(services, coach, 60)
    context, page = await coach_page(browser, base_url, CoachWithClient(coach, {}))
    held = 2 if overlapping else 1  # list requests held back, each until its release
    asked, arrived = 0, [asyncio.Event() for _ in range(held)]
    release = [asyncio.Event() for _ in range(held)]

    async def inbox_list(route: Route) -> None:
        nonlocal asked
        asked += 1
        if asked <= held:
            arrived[asked - 1].set()
            async with asyncio.timeout(3 * WAIT_MS / 1000):  # longer than any wait of the test's own
                await release[asked - 1].wait()
        await route.continue_()

    async def let_go(n: int) -> None:
        """Releases held request ``n`` and waits until its answer has been read."""
        async with page.expect_response(lambda r: "/dashboard/inbox/list" in r.url and "limit=" not in r.url):
            release[n].set()
        await page.wait_for_timeout(500)

    try:
        rows = page.locator("#inbox-list .inbox-row")
        await expect(rows).to_have_count(50)
        await page.route(lambda url: "/dashboard/inbox/list" in url, inbox_list)
        for n in range(held):
            await page.evaluate(LIVE_MESSAGE)
            async with asyncio.timeout(WAIT_MS / 1000):
                await arrived[n].wait()
        if overlapping:
            await let_go(0)
        await page.locator("#inbox-more").click()
        await expect(rows).to_have_count(60, timeout=WAIT_MS)
        await expect(page.locator('#inbox-list[data-count="60"]')).to_have_count(1, timeout=WAIT_MS)  # refreshed
        await let_go(held - 1)
        assert asked == held + 1
        await expect(rows).to_have_count(60)
        await expect(page.locator("#inbox-more")).to_have_count(0)
        await not_reloaded(page)
    finally:
        for held_back in release:  # a failure above leaves none waiting
            held_back.set()
        await context.close()


async def test_an_older_summary_answer_never_overwrites_a_newer_one(
    browser: Browser, base_url: str, coach_with_client: Callable[..., Awaitable[CoachWithClient]]
) -> None:
    """A dashboard page asks for the handoff summary twice as it opens (on load, and when its live events
    connect). The first answer (3 open) is held back until the second (none open) has been shown: the tab
    title must keep the newer count. Live events start such overlapping refreshes whenever several arrive
    together; before, the late answer put back a count the coach had already cleared."""
    setup = await coach_with_client("Coach Ada", "Sam")
    context, page = await coach_page(browser, base_url, setup)
    asked, second_shown, first_sent = 0, asyncio.Event(), asyncio.Event()

    async def summary(route: Route) -> None:
        nonlocal asked
        asked += 1
        if asked == 1:
            async with asyncio.timeout(WAIT_MS / 1000):
                await second_shown.wait()
            await route.fulfill(json={"open": 3, "crisis": []})
            first_sent.set()
        else:
            await route.fulfill(json={"open": 0, "crisis": []})
            second_shown.set()

    try:
        await page.route("**/dashboard/handoffs/summary", summary)
        await page.goto("/dashboard/inbox")
        async with asyncio.timeout(WAIT_MS / 1000):
            await first_sent.wait()
        await page.wait_for_timeout(500)  # the held-back answer has been read by now
        assert asked == 2
        assert await page.title() == "Inbox · OpenCoach"
    finally:
        await context.close()
