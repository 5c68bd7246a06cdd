"""Issue 4 in a real browser: a client in the widget and their coach on the dashboard, side by side.

Headless Chromium (Debian's ``chromium`` package, driven by Playwright's Python API) opens two browser
contexts against the app served by the test process: the client's widget page (``/w/<token>``) and the
coach's dashboard, signed up through the real form. The coach's chat model is an OpenAI-compatible endpoint
mocked with respx (the app runs in this process), so the AI's answer is known and its calls are counted.

The flow: crisis message → crisis reply in the widget, crisis banner and queue entry on the dashboard live →
take over → "joined" in the widget → the coach's message reaches the widget live → the client's answer
reaches the dashboard live with no AI reply → hand back without a reply (a crisis: confirmed) → the AI answers
again. Screenshots of every step go to ``test-artifacts/browser/``. The test fails (it does not skip) when
Chromium is missing: CI installs it (``.ci/run``).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import respx
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect

from tests.openai_wire import MOCK_BASE_URL, mock_chat_endpoint

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
DELTAS = ["Let's", " plan", " tomorrow", " together", "."]
REPLY = "".join(DELTAS)
WAIT_MS = 15_000
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.browser
COACH = "Coach Maya"
CLIENT = "Robin"


@pytest.fixture
def llm_api() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, mocked (see :func:`tests.openai_wire.mock_chat_endpoint`)."""
    with mock_chat_endpoint(DELTAS, (80, 5)) as router:
        yield router


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from the system package (no Playwright browser download)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed ({CHROMIUM}); install Debian's chromium package (see .ci/run)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def live(page: Page) -> None:
    """Wait until the dashboard page's event stream is subscribed (``dashboard.js`` sets data-live)."""
    await expect(page.locator("body")).to_have_attribute("data-live", "on", timeout=WAIT_MS)


async def send_from_widget(widget: Page, text: str) -> None:
    await widget.locator("#text").fill(text)
    await widget.locator("#send").click()


async def test_crisis_takeover_and_handback_in_two_browsers(
    base_url: str, browser: Browser, llm_api: respx.MockRouter
) -> None:
    completions = llm_api["completions"]
    coach_context = await browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 900})
    client_context = await browser.new_context(base_url=base_url, viewport={"width": 480, "height": 800})
    coach = await coach_context.new_page()
    widget = await client_context.new_page()
    try:
        # the coach signs up, points the clone at the (mocked) endpoint and adds a client
        await coach.goto("/signup")
        await coach.locator("input[name=coach_name]").fill(COACH)
        await coach.locator("input[name=email]").fill(f"{uuid.uuid4().hex[:10]}@example.com")
        await coach.locator("input[name=password]").fill(PASSWORD)
        await coach.get_by_role("button", name="Sign up").click()
        await expect(coach).to_have_url(re.compile(r"/dashboard/start$"), timeout=WAIT_MS)
        await coach.goto("/dashboard/settings")
        await coach.locator("input[name=llm_provider][value=openai]").check()
        await coach.locator("input[name=llm_model]").fill("gpt-4o-mini")
        await coach.locator("input[name=llm_base_url]").fill(MOCK_BASE_URL)
        await coach.locator("input[name=llm_api_key]").fill("sk-test")
        await coach.get_by_role("button", name="Save advanced settings").click()
        await expect(coach.get_by_role("status")).to_contain_text(
            "Your model answered a test message.", timeout=WAIT_MS
        )
        probed = completions.call_count  # the save's one test message
        assert probed == 1

        await coach.goto("/dashboard/clients")
        await coach.locator("input[name=name]").fill(CLIENT)
        await coach.locator("input[name=name]").press("Enter")
        link = coach.locator("a[href*='/w/ocw_']").first
        await expect(link).to_be_visible(timeout=WAIT_MS)
        href = await link.get_attribute("href")
        token = re.search(r"/w/(ocw_[A-Za-z0-9_-]+)", href or "")
        assert token, href

        await widget.goto(f"/w/{token.group(1)}")
        await coach.goto("/dashboard/handoffs")
        await live(coach)

        # 1. a crisis message: the crisis reply in the widget at once
        await send_from_widget(widget, "I want to end my life tonight")
        log = widget.locator("#log")
        await expect(log).to_contain_text("I've flagged our conversation for Coach Maya as urgent", timeout=WAIT_MS)
        await expect(widget.locator("#presence")).to_contain_text("Waiting for Coach Maya", timeout=WAIT_MS)
        await shot(widget, "01-crisis-widget.png")

        # 2. the dashboard: crisis banner and the handoff in the queue, without a reload
        banner = coach.locator("#alerts .crisis-alert")
        await expect(banner).to_contain_text(f"Crisis: {CLIENT}", timeout=WAIT_MS)
        queue = coach.locator("#queue")
        await expect(queue).to_contain_text("Crisis risk", timeout=WAIT_MS)
        await expect(queue).to_contain_text(CLIENT)
        await expect(coach.locator("#handoff-badge")).to_have_text("1", timeout=WAIT_MS)
        await shot(coach, "02-alert-dashboard.png")

        # 3. the coach opens the conversation from the banner and takes over
        await banner.get_by_role("link", name="open conversation").click()
        await expect(coach.locator("#transcript")).to_contain_text("I want to end my life tonight", timeout=WAIT_MS)
        await expect(coach.locator("#handoff-panel")).to_contain_text("Handed to you", timeout=WAIT_MS)
        await coach.locator("#takeover").click()
        await expect(coach.locator("#handoff-panel")).to_contain_text("You are in this conversation", timeout=WAIT_MS)
        await expect(log).to_contain_text("Coach Maya joined the conversation", timeout=WAIT_MS)
        await expect(widget.locator("#presence")).to_contain_text("Coach Maya is in the conversation")
        await shot(coach, "03-takeover-dashboard.png")
        await shot(widget, "04-joined-widget.png")

        # 4. the coach writes: the message appears in the widget live, labelled "Coach"
        await live(coach)
        await coach.locator("#coach-text").fill("Robin, I'm here with you now. Are you safe right now?")
        await coach.locator("#coach-send").click()
        coach_bubble = log.locator(".msg.human_coach").last
        await expect(coach_bubble).to_contain_text("I'm here with you now", timeout=WAIT_MS)
        await expect(coach_bubble.locator(".who")).to_have_text(re.compile(r"^Coach \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
        await shot(widget, "05-coach-message-widget.png")

        # 5. the client answers: it reaches the coach's page live and the AI stays quiet
        await live(coach)
        await send_from_widget(widget, "I'm at home. Thank you for coming.")
        await expect(coach.locator("#transcript")).to_contain_text("Thank you for coming.", timeout=WAIT_MS)
        await expect(widget.locator("#send")).to_be_enabled(timeout=WAIT_MS)
        await expect(log.locator(".msg.ai")).to_have_count(1)  # only the crisis reply
        assert completions.call_count == probed, "the AI does not answer while the coach holds the conversation"
        await shot(coach, "06-client-reply-dashboard.png")

        # 6. hand back without a reply: a crisis handoff's button asks first; dismissed, nothing changes; confirmed,
        # it hands back (htmx sends the confirmation the server asks for), and the widget says so
        asked: list[str] = []
        dismissed = asyncio.Event()

        async def dismiss(dialog: Dialog) -> None:
            asked.append(dialog.message)
            await dialog.dismiss()
            dismissed.set()

        async def accept(dialog: Dialog) -> None:
            asked.append(dialog.message)
            await dialog.accept()

        coach.once("dialog", dismiss)
        await coach.locator("#handback-silent").click()
        await asyncio.wait_for(dismissed.wait(), WAIT_MS / 1000)
        await coach.wait_for_timeout(500)  # (a request sent anyway would swap the pane meanwhile)
        await expect(coach.locator("#handoff-panel")).to_contain_text("You are in this conversation")
        coach.once("dialog", accept)
        await coach.locator("#handback-silent").click()
        await expect(coach.locator("#handoff-panel")).to_contain_text("The AI is answering", timeout=WAIT_MS)
        assert len(asked) == 2 and all("This is a crisis handoff." in message for message in asked), asked
        await expect(log).to_contain_text(
            "Coach Maya handed the conversation back to the AI assistant", timeout=WAIT_MS
        )
        await expect(widget.locator("#presence")).to_have_text("")
        await shot(widget, "07-handback-widget.png")

        # 7. the AI (the mocked endpoint) answers again, and the coach sees that live too
        await live(coach)
        await send_from_widget(widget, "Can you help me plan tomorrow?")
        await expect(log.locator(".msg.ai").last).to_contain_text(REPLY, timeout=WAIT_MS)
        await expect(coach.locator("#transcript")).to_contain_text(REPLY, timeout=WAIT_MS)
        assert completions.call_count == probed + 1
        await shot(widget, "08-ai-answers-widget.png")
        await shot(coach, "09-ai-answer-dashboard.png")
    finally:
        await coach_context.close()
        await client_context.close()
