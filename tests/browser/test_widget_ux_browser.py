"""Issue 17's widget and settings bugs in a real browser (a 390×844 phone for the widget): a reload opens at the
newest message, a new reply's thumbs are in view, "Talk to a human" sends words (not a ``/human`` bubble), the
"reviewing the reply" line goes once the coach approves an edited draft, and the availability time inputs
show their whole value; and a message refused over the client's rate limit is marked not sent, with the wait,
and its text is back in the input. Screenshots go to ``test-artifacts/browser/``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx
from limits import parse_many
from playwright.async_api import Browser, Page, expect

from app.chat.turn.intake import MAX_MESSAGE_CHARS
from app.container import Container
from app.core.config import Settings
from app.core.errors import TooManyAttempts
from app.handoff.signals import asks_for_human
from tests.browser.conftest import CoachWithClient, log_in
from tests.browser.test_handoff_browser import (
    DELTAS,
    PASSWORD,
    REPLY,
    WAIT_MS,
    browser,
    llm_api,
    send_from_widget,
    shot,
)
from tests.conftest import Coach, upload
from tests.integration.web.test_ux_bugs import NOTES
from tests.integration.web.test_widget_presence import noon_zone
from tests.openai_wire import stream_reply

__all__ = ["browser", "llm_api"]  # fixtures used by name below
pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}


async def at_bottom(page: Page) -> bool:
    return bool(await page.locator("#log").evaluate("e => e.scrollTop + e.clientHeight >= e.scrollHeight - 2"))


async def test_widget_reload_opens_at_the_newest_message_and_asks_for_a_human_in_words(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    client = (await coach_with_client("Coach Reload", "Rae")).client
    auth = {"Authorization": f"Bearer {client['widget_token']}"}
    conversation_id = None
    for n in range(8):  # a conversation longer than the phone's screen
        body = {"text": f"Question number {n} about my mornings"}
        if conversation_id:
            body["conversation_id"] = conversation_id
        turn = await http.post("/api/v1/chat", headers=auth, json=body)
        assert turn.status_code == 200, turn.text
        conversation_id = turn.json()["conversation_id"]

    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{client['widget_token']}")
    await expect(widget.locator(".msg.ai").last.locator(".thumb.up")).to_be_visible(timeout=WAIT_MS)
    assert await at_bottom(widget), "a reload opens at the newest message"
    await expect(widget.locator(".msg.ai").last.locator(".thumb.up")).to_be_in_viewport()
    await shot(widget, "ux-01-widget-reload-phone.png")

    await send_from_widget(widget, "One more question about my evenings")
    newest = widget.locator(".msg.ai").last
    await expect(newest).to_contain_text(REPLY, timeout=WAIT_MS)
    await expect(newest.locator(".thumb.up")).to_be_in_viewport(timeout=WAIT_MS)

    await widget.locator("#human").click()
    request = widget.locator(".msg.client").last
    await expect(request).not_to_have_class(re.compile(r"\bpending\b"), timeout=WAIT_MS)
    text = await request.locator(".text").inner_text()
    assert "/human" not in text and asks_for_human(text), text
    await expect(widget.locator("#presence")).to_contain_text("Waiting for Coach Reload", timeout=WAIT_MS)
    await shot(widget, "ux-02-widget-talk-to-a-human.png")
    await context.close()


async def test_a_message_over_the_rate_limit_is_marked_not_sent_and_its_text_comes_back_to_the_input(
    base_url: str,
    browser: Browser,
    settings: Settings,
    container: Container,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    client = (await coach_with_client("Coach Busy", "Flo")).client
    try:  # the client has sent as many messages as the limit allows this minute
        for _ in range(parse_many(settings.chat_rate_limit)[0].amount + 1):
            await container.message_throttle.hit(uuid.UUID(client["id"]))
    except TooManyAttempts:
        pass
    else:
        pytest.fail("the limit never refused a message")

    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{client['widget_token']}")
    await send_from_widget(widget, "Am I writing too much?")
    await expect(widget.locator(".msg.client").last).to_have_class(re.compile(r"\bfailed\b"), timeout=WAIT_MS)
    await expect(widget.locator("#status")).to_contain_text("Too many requests: try again in")
    await expect(widget.locator("#text")).to_have_value("Am I writing too much?")
    await shot(widget, "ux-11-widget-rate-limited.png")
    await context.close()


async def test_enter_confirming_an_input_methods_characters_does_not_send(
    base_url: str,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """Typing Chinese or Japanese, Enter first confirms the input method's characters (``isComposing``): the
    half-typed message is not sent; the next Enter sends it."""
    client = (await coach_with_client("Coach Kanji", "Yui")).client
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{client['widget_token']}")
    text = widget.locator("#text")
    await text.fill("今日は")
    await text.dispatch_event("keydown", {"key": "Enter", "isComposing": True, "bubbles": True, "cancelable": True})
    await widget.wait_for_timeout(300)
    await expect(widget.locator(".msg.client")).to_have_count(0)
    await expect(text).to_have_value("今日は")
    await text.press("Enter")
    await expect(widget.locator(".msg.client .text")).to_have_text(["今日は"], timeout=WAIT_MS)
    await expect(widget.locator(".msg .text").last).to_have_text(REPLY, timeout=WAIT_MS)  # answered
    await context.close()


async def test_a_message_over_the_length_limit_is_not_cut_but_counted_and_kept_to_shorten(
    base_url: str,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """The textarea's ``maxlength`` cut a pasted text at 4,000 characters without a word: the text is now kept
    whole; near the limit a count shows, and over it the message is not sent and the page says by how much it is
    too long. Characters are counted as the server counts them (an emoji is one)."""
    client = (await coach_with_client("Coach Long", "Lou")).client
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{client['widget_token']}")
    text, limit = widget.locator("#text"), widget.locator("#text-limit")
    await text.fill("a" * 100)
    await expect(limit).to_be_hidden()
    await text.fill("a" * (MAX_MESSAGE_CHARS - 100))
    await expect(limit).to_have_text(f"{MAX_MESSAGE_CHARS - 100} / {MAX_MESSAGE_CHARS} characters")
    await expect(limit).not_to_have_class(re.compile(r"\bover\b"))

    pasted = "b" * (MAX_MESSAGE_CHARS + 25)
    await text.fill(pasted)
    await expect(text).to_have_value(pasted)  # nothing cut
    await expect(limit).to_contain_text(f"Too long to send: {MAX_MESSAGE_CHARS + 25} / {MAX_MESSAGE_CHARS}")
    await expect(limit).to_contain_text("Shorten it by 25")
    await expect(limit).to_have_class(re.compile(r"\bover\b"))
    await expect(text).to_have_attribute("aria-invalid", "true")
    await text.press("Enter")
    await widget.locator("#send").click()
    await widget.wait_for_timeout(300)
    await expect(widget.locator(".msg.client")).to_have_count(0)
    await expect(text).to_have_value(pasted)
    await shot(widget, "ux-12-widget-message-too-long.png")

    longest = "\U0001f600" * MAX_MESSAGE_CHARS  # 4,000 characters (8,000 UTF-16 units): not too long
    await text.fill(longest)
    await expect(limit).to_have_text(f"{MAX_MESSAGE_CHARS} / {MAX_MESSAGE_CHARS} characters")
    await widget.locator("#send").click()
    sent = widget.locator(".msg.client")
    await expect(sent).to_have_count(1)
    await expect(sent).not_to_have_class(re.compile(r"\b(pending|failed)\b"), timeout=WAIT_MS)  # stored
    await expect(text).to_have_value("")
    await expect(limit).to_be_hidden()
    await expect(widget.locator(".msg .text").last).to_have_text(REPLY, timeout=WAIT_MS)  # answered
    await context.close()


async def test_the_reviewing_line_goes_when_the_coach_approves_an_edited_draft_or_discards_one(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    setup = await coach_with_client("Coach Draft", "Ola", handoff_mode="draft")
    coach, client = setup.coach, setup.client
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{client['widget_token']}")
    await send_from_widget(widget, "How do I plan my week?")
    presence = widget.locator("#presence")
    await expect(presence).to_contain_text("reviewing the reply", timeout=WAIT_MS)

    drafts = (await http.get("/api/v1/drafts?status=pending", headers=coach.headers)).json()
    assert len(drafts) == 1, drafts
    approved = await http.post(
        f"/api/v1/drafts/{drafts[0]['id']}/approve", headers=coach.headers, json={"text": "Pick one thing per day."}
    )
    assert approved.status_code == 201, approved.text
    await expect(widget.locator("#log")).to_contain_text("Pick one thing per day.", timeout=WAIT_MS)
    await expect(presence).to_have_text("", timeout=WAIT_MS)
    await shot(widget, "ux-03-widget-draft-approved.png")

    await send_from_widget(widget, "And my month?")
    await expect(presence).to_contain_text("reviewing the reply", timeout=WAIT_MS)
    [draft] = (await http.get("/api/v1/drafts?status=pending", headers=coach.headers)).json()
    discarded = await http.post(f"/api/v1/drafts/{draft['id']}/discard", headers=coach.headers)
    assert discarded.status_code == 200, discarded.text
    await expect(presence).to_have_text("", timeout=WAIT_MS)  # no reviewed reply is coming
    await context.close()


async def test_a_page_left_open_says_the_coach_is_away_once_their_hours_end(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """The "away until …" line was worked out when the page loaded: a page left open promised a reply within the
    SLA after the coach's hours had ended. The widget now asks again when the page said the coach's presence
    changes (here: their hours end in 30 minutes; the server is told they are over, the page's clock runs on)."""
    zone = noon_zone()
    end = datetime.now(ZoneInfo(zone)).replace(second=0, microsecond=0) + timedelta(minutes=30)
    hours = {"timezone": zone, "days": list(range(7)), "start": "00:00", "end": end.strftime("%H:%M")}
    setup = await coach_with_client("Coach Evening", "Eve", availability=hours, handoff_sla_minutes=7)
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.clock.install()
    await widget.goto(f"/w/{setup.client['widget_token']}")
    await widget.locator("#human").click()
    presence = widget.locator("#presence")
    await expect(presence).to_contain_text("typically replies within 7 minutes", timeout=WAIT_MS)

    day = (datetime.now(ZoneInfo(zone)) + timedelta(days=3)).weekday()
    over = {"timezone": zone, "days": [day], "start": "09:00", "end": "17:00"}
    saved = await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"availability": over})
    assert saved.status_code == 200, saved.text
    await widget.clock.run_for(20 * 60 * 1000)
    await expect(presence).to_contain_text("typically replies within 7 minutes")  # not asked again before then
    await widget.clock.run_for(11 * 60 * 1000)
    await expect(presence).to_contain_text("Waiting for Coach Evening, who is away until", timeout=WAIT_MS)
    await context.close()


async def test_a_reply_citing_one_source_twice_shows_its_label_once_with_both_markers(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """Several passages of one file cited in a reply showed its label once per passage; the streamed reply and the
    reloaded page now show it once, led by the reply's markers ("[1, 2, …] Routines")."""
    setup = await coach_with_client("Coach Cites", "Cy")
    await upload(http, setup.coach, "routines.txt", NOTES.encode())
    await run_jobs()
    stream_reply(llm_api, [*DELTAS, " [1][2][3]"], (80, 5))  # the reply cites three passages of the file
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{setup.client['widget_token']}")
    await send_from_widget(widget, "What should my morning routine look like?")
    cited = widget.locator(".msg.ai").last.locator(".citations li")
    await expect(cited).to_have_count(1, timeout=WAIT_MS)
    await expect(cited).to_have_text(re.compile(r"^\[1, 2(, \d+)*\] Routines$"))
    label = await cited.inner_text()
    await widget.reload()
    await expect(widget.locator(".msg.ai").last.locator(".citations li")).to_have_text([label], timeout=WAIT_MS)
    await context.close()


async def test_a_citation_standing_for_several_passages_opens_every_one(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """ "[1, 2, …] Routines" stands for every passage of that file the reply cites, but opening it showed only the
    first. It now shows each, led by its marker, with the source once, in the streamed reply and on the reloaded
    page."""
    setup = await coach_with_client("Coach Passages", "Pia")
    await upload(http, setup.coach, "routines.txt", NOTES.encode())
    await run_jobs()
    stream_reply(llm_api, [*DELTAS, " [1][2][3]"], (80, 5))  # the reply cites three passages of the file
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{setup.client['widget_token']}")
    await send_from_widget(widget, "What should my morning routine look like?")
    await expect(widget.locator(".msg.ai").last.locator(".citations li")).to_have_count(1, timeout=WAIT_MS)

    [conversation] = (await http.get("/api/v1/conversations", headers=setup.coach.headers)).json()
    found = await http.get(f"/api/v1/conversations/{conversation['id']}", headers=setup.coach.headers)
    cited = next(m for m in found.json()["messages"] if m["sender_type"] == "ai")["citations"]
    assert len(cited) >= 2, cited
    auth = {"Authorization": f"Bearer {setup.client['widget_token']}"}
    expected = []
    for n, citation in enumerate(cited, start=1):
        passage = (await http.get(f"/api/v1/widget/passages/{citation['chunk_id']}", headers=auth)).json()
        expected.append(f"[{n}] {passage['text']}" + (f" {passage['after']}" if passage["after"] else ""))

    for reloaded in (False, True):
        if reloaded:
            await widget.reload()
        button = widget.locator(".msg.ai").last.locator(".citations button.citation")
        await button.click(timeout=WAIT_MS)
        quote = widget.locator(".msg.ai").last.locator("blockquote.passage")
        await expect(quote.locator("p")).to_have_text(expected, timeout=WAIT_MS)
        await expect(quote.locator("footer")).to_have_text("— Routines")
        await expect(button).to_have_attribute("aria-expanded", "true")
        await shot(widget, f"ux-13-widget-merged-citation{'-reloaded' if reloaded else ''}.png")
    await context.close()


async def test_availability_time_inputs_show_the_whole_time(
    base_url: str, browser: Browser, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Coach Hours")
    context = await browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    await page.goto("/login")
    await page.locator("input[name=email]").fill(coach.email)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("button[type=submit]").click()
    await page.goto("/dashboard/settings")
    for name in ("avail_start", "avail_end"):
        field = page.locator(f"input[name={name}]")
        await expect(field).to_be_visible(timeout=WAIT_MS)
        width = await field.evaluate("e => e.getBoundingClientRect().width")
        assert width >= 100, f"{name} is {width}px wide: its value is cut off"
    await page.locator("input[name=avail_start]").scroll_into_view_if_needed()
    await shot(page, "ux-04-settings-availability.png")
    await context.close()


MARKDOWN_REPLY = [
    "**Breathe** first.\n\n",
    "1. Sit down\n2. Count to four\n\n",
    "Try `box breathing`. [Read more](javascript:alert(1)) ",
    "![chart](/static/favicon.svg) <img src=/static/favicon.svg onerror=window.pwned=1><script>window.pwned=2</script>",
    "\n\nPress <Enter> to start: 2*3*4 = 24 breaths.\n\n| Day | Tempo |\n|---|---|\n| Mon | 5:30/km |\n\n",
    "```\n[1]: notes\n```\n",
]
"""An AI reply in Markdown, as real models write them, with a link, an image and HTML a poisoned document could ask
for."""


async def test_an_ai_replys_markdown_shows_formatted_without_links_images_or_html(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """A model's Markdown showed raw ("**Breathe** first. 1. Sit down…"): the streamed reply and the reloaded page
    now show its bold, list and code formatted, its link as text, no image and none of its HTML (nothing of it
    runs: the HTML shows as text); "2*3*4" stays a product; the client's own message stays as typed. The coach's
    dashboard shows the reply as the client saw it."""
    setup = await coach_with_client("Coach Marks", "Mo")
    stream_reply(llm_api, MARKDOWN_REPLY, (80, 5))
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{setup.client['widget_token']}")
    await send_from_widget(widget, "How do I calm **down** before a talk?")
    for reload in (False, True):
        if reload:
            await widget.reload()
        reply = widget.locator(".msg.ai").last.locator(".text")
        await expect(reply.locator("strong")).to_have_text("Breathe", timeout=WAIT_MS)
        await expect(reply.locator("ol li")).to_have_text(["Sit down", "Count to four"])
        await expect(reply.locator("p code")).to_have_text("box breathing")
        await expect(reply).to_contain_text("Read more")
        assert await reply.locator("a, img, script").count() == 0
        assert await widget.evaluate("window.pwned") is None
        # what the model wrote as HTML is text; a product is no emphasis; a table; a code block as written
        await expect(reply).to_contain_text("Press <Enter> to start: 2*3*4 = 24 breaths.")
        await expect(reply).to_contain_text("<img src=/static/favicon.svg onerror=window.pwned=1>")
        assert await reply.locator("em").count() == 0
        await expect(reply.locator("table td")).to_have_text(["Mon", "5:30/km"])
        await expect(reply.locator("pre code")).to_have_text("[1]: notes")
        own = widget.locator(".msg.client .text")
        await expect(own).to_have_text("How do I calm **down** before a talk?")
        assert await own.locator("strong").count() == 0
    await shot(widget, "widget-markdown.png")
    # a very long word wraps in its bubble: the page stays as wide as the phone (it zoomed out to 980 px)
    await send_from_widget(widget, "x" * 300)
    await expect(widget.locator(".msg.ai")).to_have_count(2, timeout=WAIT_MS)
    assert await widget.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await context.close()

    [conversation] = (await http.get("/api/v1/conversations", headers=setup.coach.headers)).json()
    dashboard = await (await browser.new_context(base_url=base_url)).new_page()
    await log_in(dashboard, setup.coach, f"/dashboard/conversations/{conversation['id']}")
    reply = dashboard.locator(".msg.ai").last.locator(".text")
    await expect(reply.locator("strong")).to_have_text("Breathe", timeout=WAIT_MS)
    await expect(reply.locator("ol li")).to_have_text(["Sit down", "Count to four"])
    assert await reply.locator("a, img, script").count() == 0
    assert await dashboard.evaluate("window.pwned") is None
    await dashboard.context.close()
