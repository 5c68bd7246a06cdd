"""Issue 17's client widget in a real browser: greeting and suggested questions, the typing bubble and "still
working" with a slow model, tappable crisis numbers, and the embed launcher on the coach's own site (another
origin): it opens the panel, turns into a close button, closes from the chat's own close button and Esc, shows
an unread badge and remembers open/closed; on a phone the panel fills the screen. Screenshots go to
``test-artifacts/browser/``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import respx
from playwright.async_api import Browser, BrowserContext, Route, WebSocketRoute, async_playwright, expect

from tests.browser.test_handoff_browser import CHROMIUM, REPLY, WAIT_MS, browser, llm_api, send_from_widget, shot
from tests.conftest import Coach, make_client
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS

__all__ = ["browser", "llm_api"]  # fixtures used by name below
pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}
SITE = "http://127.0.0.1:8765"
"""The coach's own site: another origin than the app (same site, so the http widget cookie is sent)."""


@pytest.fixture
async def site_browser() -> AsyncIterator[Browser]:
    """Chromium for the embed tests: the coach's site is served by the test itself (``context.route``), which
    Chromium counts as a public address, so its Local Network Access checks (which would block a public page
    from loading the loopback app) are switched off."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests",
            ],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def widget_coach(http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], name: str) -> Coach:
    coach = await make_coach(name)
    settings = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0, "widget_allowed_origins": [SITE]}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=settings)).status_code == 200
    return coach


async def test_greeting_suggestions_typing_and_still_working(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    coach = await widget_coach(http, make_coach, "Coach Greta")
    client = await make_client(http, coach, "Pia")
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    held = asyncio.Event()

    async def hold_answers(socket: WebSocketRoute) -> None:
        # the server's answer events wait until ``held`` is set (acks pass): a model slower than 5 s
        server = socket.connect_to_server()

        async def deliver(message: str | bytes) -> None:
            if '"type": "ack"' not in str(message) and '"type":"ack"' not in str(message):
                await held.wait()
            socket.send(message)

        server.on_message(lambda message: asyncio.ensure_future(deliver(message)))

    await widget.route_web_socket(re.compile(r"/ws/chat"), hold_answers)
    await widget.clock.install()
    await widget.goto(f"/w/{client['widget_token']}")
    greeting = widget.locator("#greeting")
    await expect(greeting).to_contain_text("Coach Greta's AI assistant", timeout=WAIT_MS)
    suggestion = greeting.locator("button.suggestion").first
    await expect(suggestion).to_be_visible()
    await expect(widget.get_by_label("Message to Coach Greta's assistant")).to_be_visible()
    await shot(widget, "ux-05-widget-greeting-phone.png")

    asked = (await suggestion.inner_text()).strip()
    await suggestion.click()
    await expect(widget.locator(".msg.client").last).to_contain_text(asked)
    await expect(greeting.locator("button.suggestion")).to_have_count(0)
    typing = widget.locator(".msg.typing")
    await expect(typing).to_be_visible(timeout=1000)
    await expect(typing).not_to_contain_text("Still working")
    await widget.clock.run_for(5100)  # a slow model: the answer is held back (below) past the 5 s mark
    await expect(typing).to_contain_text("Still working on your answer")
    await shot(widget, "ux-06-widget-still-working.png")
    held.set()
    await expect(widget.locator(".msg.ai").last).to_contain_text(REPLY, timeout=WAIT_MS)
    # every message's text takes its own direction (an Arabic or Hebrew message reads from the right)
    await expect(widget.locator(".msg .text:not([dir='auto'])")).to_have_count(0)
    await expect(typing).to_have_count(0)

    # a crisis reply: its numbers are tel: links
    await send_from_widget(widget, "I want to end my life tonight")
    await expect(widget.locator('.msg.notice a[href="tel:988"]').last).to_be_visible(timeout=WAIT_MS)
    await shot(widget, "ux-07-widget-crisis-tel-links.png")
    await context.close()


async def host_page(context: BrowserContext, base_url: str, token: str, *, in_head: bool = False) -> None:
    """Serve the coach's site (``SITE``) from the browser itself: a page with the embed snippet at the end of
    ``<body>`` (``in_head``: in ``<head>``, without ``async``, so it runs before ``<body>`` exists)."""
    snippet = f"<script src='{base_url}/static/widget.js' data-token='{token}'{'' if in_head else ' async'}></script>"
    html = (
        "<!doctype html><html lang='en'><head><meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Coach site</title>{snippet if in_head else ''}</head><body><h1>My coaching</h1>"
        f"{'' if in_head else snippet}</body></html>"
    )

    async def fulfil(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html", body=html)

    await context.route(f"{SITE}/", fulfil)


async def test_a_snippet_pasted_in_the_head_still_shows_the_launcher(
    base_url: str,
    http: httpx.AsyncClient,
    site_browser: Browser,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    """The snippet in ``<head>`` runs before ``<body>`` exists: the launcher is added once the page is parsed
    (it used to fail on ``document.body`` being null, and the site showed no chat)."""
    coach = await widget_coach(http, make_coach, "Coach Head")
    client = await make_client(http, coach, "Ines")
    context = await site_browser.new_context(viewport={"width": 1200, "height": 900})
    await host_page(context, base_url, client["widget_token"], in_head=True)
    site = await context.new_page()
    errors: list[str] = []
    site.on("pageerror", lambda error: errors.append(str(error)))
    await site.goto(f"{SITE}/")
    launcher = site.get_by_role("button", name="Chat with your coach")
    await expect(launcher).to_be_visible(timeout=WAIT_MS)
    await launcher.click()
    await expect(site.locator("iframe[title='Coaching chat']")).to_be_visible()
    assert errors == []
    await context.close()


async def test_a_site_the_coach_did_not_allow_shows_no_launcher(
    base_url: str,
    http: httpx.AsyncClient,
    site_browser: Browser,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    """A site not in ``widget_allowed_origins`` cannot frame the chat (``frame-ancestors``): it showed the launcher,
    which opened a grey "127.0.0.1 refused to connect" panel. The launcher waits for the chat page, which never
    loads there."""
    coach = await make_coach("Coach Elsewhere")  # allows no site
    client = await make_client(http, coach, "Eve")
    context = await site_browser.new_context(viewport={"width": 1200, "height": 900})
    await host_page(context, base_url, client["widget_token"])
    site = await context.new_page()
    async with site.expect_response(lambda response: "/w/" in response.url, timeout=WAIT_MS):
        await site.goto(f"{SITE}/")
    await site.wait_for_timeout(2000)  # (the chat page would have said its texts by now)
    await expect(site.get_by_role("button", name="Chat with your coach")).to_be_hidden()
    await expect(site.locator("iframe[title='Coaching chat']")).to_be_hidden()
    await context.close()


async def test_launcher_closes_counts_unread_and_remembers(
    base_url: str,
    http: httpx.AsyncClient,
    site_browser: Browser,
    llm_api: respx.MockRouter,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    coach = await widget_coach(http, make_coach, "Coach Lena")
    client = await make_client(http, coach, "Tom")
    context = await site_browser.new_context(viewport={"width": 1200, "height": 900})
    await host_page(context, base_url, client["widget_token"])
    site = await context.new_page()
    await site.goto(f"{SITE}/")
    launcher = site.get_by_role("button", name="Chat with your coach")
    frame_box = site.locator("iframe[title='Coaching chat']")
    await expect(launcher).to_be_visible(timeout=WAIT_MS)
    await expect(frame_box).to_be_hidden()

    await launcher.click()
    await expect(frame_box).to_be_visible()
    closer = site.get_by_role("button", name="Close chat").last
    await expect(closer).to_have_attribute("aria-expanded", "true")
    chat = site.frame_locator("iframe[title='Coaching chat']")
    await expect(chat.locator("#close")).to_be_visible(timeout=WAIT_MS)
    await send_from_widget_frame(chat, "Hello there")
    await expect(chat.locator(".msg.ai").last).to_contain_text(REPLY, timeout=WAIT_MS)
    await shot(site, "ux-08-embed-open.png")

    await chat.locator("#close").click()  # the chat's own close button
    await expect(frame_box).to_be_hidden()
    conversations = (await http.get("/api/v1/conversations", headers=coach.headers)).json()
    sent = await http.post(
        f"/api/v1/conversations/{conversations[0]['id']}/messages", headers=coach.headers, json={"text": "Hi Tom!"}
    )
    assert sent.status_code == 201, sent.text
    await expect(site.get_by_role("button", name="Chat with your coach (1 unread)")).to_be_visible(timeout=WAIT_MS)
    await shot(site, "ux-09-embed-unread-badge.png")

    await site.reload()  # closed is remembered
    await expect(site.get_by_role("button", name="Chat with your coach")).to_be_visible(timeout=WAIT_MS)
    await expect(frame_box).to_be_hidden()
    await site.get_by_role("button", name="Chat with your coach").click()
    await expect(frame_box).to_be_visible()
    await site.reload()  # open is remembered
    await expect(frame_box).to_be_visible(timeout=WAIT_MS)
    await site.keyboard.press("Escape")
    await expect(frame_box).to_be_hidden()
    await context.close()


async def send_from_widget_frame(chat: object, text: str) -> None:
    await chat.locator("#text").fill(text)  # type: ignore[attr-defined]
    await chat.locator("#send").click()  # type: ignore[attr-defined]


async def test_on_a_phone_the_panel_fills_the_screen(
    base_url: str,
    http: httpx.AsyncClient,
    site_browser: Browser,
    llm_api: respx.MockRouter,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    coach = await widget_coach(http, make_coach, "Coach Phone")
    client = await make_client(http, coach, "Ana")
    context = await site_browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
    await host_page(context, base_url, client["widget_token"])
    site = await context.new_page()
    await site.goto(f"{SITE}/")
    await site.get_by_role("button", name="Chat with your coach").click()
    frame_box = site.locator("iframe[title='Coaching chat']")
    await expect(frame_box).to_be_visible(timeout=WAIT_MS)
    box = await frame_box.bounding_box()
    assert box is not None and (box["x"], box["y"], box["width"], box["height"]) == (0, 0, 390, 844), box
    chat = site.frame_locator("iframe[title='Coaching chat']")
    for target in ("#close", "#send", "#human", "#end-session"):
        size = await chat.locator(target).bounding_box()
        assert size is not None and size["height"] >= 44 and size["width"] >= 44, (target, size)
    assert await chat.locator("#text").evaluate("e => getComputedStyle(e).fontSize") == "16px"
    await shot(site, "ux-10-embed-phone-full-screen.png")
    await chat.locator("#close").tap()
    await expect(frame_box).to_be_hidden()
    await expect(site.get_by_role("button", name="Chat with your coach")).to_be_visible()
    await context.close()


async def test_the_embedding_pages_language_reaches_the_first_human_commands_notice(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    """A Spanish site embeds the widget (``?lang=es``) in an English browser, and the client's first message is
    ``/human``, which tells no language: static/chat.js passes the page's language on to its socket, so the
    handoff notice is Spanish (it was English: the socket knew only the browser's)."""
    coach = await widget_coach(http, make_coach, "Coach Lena")
    client = await make_client(http, coach, "Rosa")
    context = await browser.new_context(base_url=base_url, viewport=PHONE, locale="en-US")
    widget = await context.new_page()
    await widget.goto(f"/w/{client['widget_token']}?lang=es")
    await expect(widget.locator("html")).to_have_attribute("lang", "es", timeout=WAIT_MS)
    await send_from_widget(widget, "/human")
    notice = widget.locator(".msg.ai, .msg.notice").last
    await expect(notice).to_contain_text("Claro: le he pedido a Coach Lena que se una", timeout=WAIT_MS)
    assert llm_api["completions"].call_count == 0
    await context.close()
