"""The widget in a real browser as a client uses it across tabs and reconnects: two tabs of one client show each
other's messages and replies live, each once (also after one of them reloads mid-reply); a reply caught up after a
reconnect goes above the message sent while the connection was down (where a reload shows it), and the presence
line says where the conversation stands with the coach then; an answer the conversation was taken from while it
streamed leaves nothing behind; live bubbles show their time as the page's history does; a 👍 after a 👎 with a
rating says the rating was cleared, as the server stores it; and opening the embedded panel puts the focus in the
message input."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import httpx
import pytest
import respx
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from tests.browser.conftest import PHONE, WAIT_MS, CoachWithClient
from tests.browser.test_handoff_browser import REPLY, browser, llm_api, send_from_widget
from tests.browser.test_widget_client_browser import SITE, host_page, site_browser, widget_coach
from tests.browser.test_widget_history_browser import SOCKETS_SEEN
from tests.conftest import Coach, make_client
from tests.integration.chat.test_widget_taken import slow_model

__all__ = ["browser", "llm_api", "site_browser"]  # fixtures used by name below
pytestmark = pytest.mark.browser
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


async def open_widget(page: Page, token: str) -> None:
    """Open the chat link and wait until the page's socket is open (``SOCKETS_SEEN``)."""
    await page.add_init_script(SOCKETS_SEEN)
    await page.goto(f"/w/{token}")
    await page.wait_for_function("() => window.sockets.length && window.sockets.at(-1).readyState === 1")


async def shown(page: Page) -> list[tuple[str, str]]:
    """The transcript as ``(sender, text)``, top to bottom."""
    rows = await page.locator("#log .msg:not(.greeting):not(.typing)").evaluate_all(
        """rows => rows.map((row) => [["client", "ai", "human_coach"].find((c) => row.classList.contains(c)),
                                      row.querySelector(".text").textContent.trim()])"""
    )
    return [(sender, text) for sender, text in rows]


async def test_two_tabs_of_a_client_show_each_others_messages_once(
    base_url: str,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """Both tabs open before the client's first message: the second tab shows the first's message and the reply
    live (it showed nothing until reloaded), and after the first tab reloads while its next reply is on its way,
    each tab shows every message once, in order (the other tab showed two replies in a row)."""
    made = await coach_with_client("Coach Tabs", "Tia")
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    first, second = await context.new_page(), await context.new_page()
    await open_widget(first, made.client["widget_token"])
    await open_widget(second, made.client["widget_token"])

    await send_from_widget(first, "How can I plan my week better?")
    exchange = [("client", "How can I plan my week better?"), ("ai", REPLY)]
    for page in (first, second):
        await expect(page.locator("#log .msg.ai .text")).to_have_text([REPLY], timeout=WAIT_MS)
        await expect(page.locator("#log .msg.client")).not_to_have_class(re.compile("pending"), timeout=WAIT_MS)
        assert await shown(page) == exchange

    await send_from_widget(first, "And how do I keep to it?")
    await expect(first.locator("#log .msg.client").last).not_to_have_class(re.compile("pending"), timeout=WAIT_MS)
    await first.reload()  # mid-reply: the reply comes to the reloaded tab by its page or live
    both = [*exchange, ("client", "And how do I keep to it?"), ("ai", REPLY)]
    for page in (second, first):
        await expect(page.locator("#log .msg.ai .text")).to_have_text([REPLY, REPLY], timeout=WAIT_MS)
        await expect(page.locator("#log .msg.client .text")).to_have_count(2)
        assert await shown(page) == both
    await context.close()


async def test_a_reply_caught_up_after_a_reconnect_goes_above_the_message_sent_meanwhile(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """The reply to the client's first message is stored, but the connection drops before it arrives; the client
    sends another message while the server is out of reach. On reconnecting the widget catches the reply up above
    that message, as a reload shows them (it was added below it), and answers the new one after it."""
    made = await coach_with_client("Coach Order", "Ola")
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    down = asyncio.Event()
    sockets: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    async def first_loses_its_answers(socket: WebSocketRoute) -> None:
        if down.is_set():  # the server is out of reach: the connection fails
            await socket.close()
            return
        server, first = socket.connect_to_server(), not sockets
        sockets.append((socket, server))
        server.on_message(lambda message: socket.send(message) if not first or '"ack"' in str(message) else None)

    await widget.route_web_socket(re.compile(r"/ws/chat"), first_loses_its_answers)
    await widget.goto(f"/w/{made.client['widget_token']}")
    await send_from_widget(widget, "How can I plan my week better?")
    await expect(widget.locator("#log .msg.client")).not_to_have_class(re.compile("pending"), timeout=WAIT_MS)
    for _ in range(WAIT_MS // 100):  # the reply is stored (its events never reach the page)
        listed = (await http.get("/api/v1/conversations", headers=made.coach.headers)).json()
        url = f"/api/v1/conversations/{listed[0]['id']}"
        if len((await http.get(url, headers=made.coach.headers)).json()["messages"]) == 2:
            break
        await asyncio.sleep(0.1)

    down.set()
    socket, server = sockets[0]
    await server.close()
    await socket.close()
    await expect(widget.locator("#status")).to_have_text("Reconnecting…", timeout=WAIT_MS)
    await send_from_widget(widget, "Are you there?")
    await expect(widget.locator("#log .msg.client.pending")).to_have_count(1)
    down.clear()
    order = [("client", "How can I plan my week better?"), ("ai", REPLY), ("client", "Are you there?"), ("ai", REPLY)]
    await expect(widget.locator("#log .msg.ai .text")).to_have_text([REPLY, REPLY], timeout=WAIT_MS)
    assert await shown(widget) == order
    await widget.unroute_all()
    await widget.reload()
    await expect(widget.locator("#log .msg.ai .text")).to_have_text([REPLY, REPLY], timeout=WAIT_MS)
    assert await shown(widget) == order, "a reload shows the same order"
    await context.close()


async def test_after_a_reconnect_the_presence_line_says_where_the_conversation_stands(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """The client asked for a person ("Waiting for Dana Coach…"), then lost the connection; meanwhile the coach wrote
    and handed back. Once reconnected the widget caught the coach's message up but still said "Waiting for Dana
    Coach (typically replies within 1 minutes)…" until the next AI reply: the coach's coming and going are live
    events, lost while the socket was down. Now it asks where the conversation stands: no waiting line, and a line
    says the coach handed the conversation back."""
    made = await coach_with_client("Dana Coach", "Ola", handoff_sla_minutes=1)
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    down = asyncio.Event()
    sockets: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    async def reachable_unless_down(socket: WebSocketRoute) -> None:
        if down.is_set():  # the server is out of reach: the connection fails
            await socket.close()
            return
        sockets.append((socket, socket.connect_to_server()))

    await widget.route_web_socket(re.compile(r"/ws/chat"), reachable_unless_down)
    await open_widget(widget, made.client["widget_token"])
    await widget.locator("#human").click()
    presence = widget.locator("#presence")
    await expect(presence).to_have_text("Waiting for Dana Coach (typically replies within 1 minute)…", timeout=WAIT_MS)

    down.set()
    for socket, server in sockets:
        await server.close()
        await socket.close()
    await expect(widget.locator("#status")).to_have_text("Reconnecting…", timeout=WAIT_MS)
    [conversation] = (await http.get("/api/v1/conversations", headers=made.coach.headers)).json()
    url = f"/api/v1/conversations/{conversation['id']}"
    sent = await http.post(f"{url}/messages", headers=made.coach.headers, json={"text": "Hi Ola, all good now?"})
    assert sent.status_code == 201, sent.text
    back = await http.post(f"{url}/handback", headers=made.coach.headers)
    assert back.status_code == 200, back.text
    down.clear()

    await expect(widget.locator("#log .msg.human_coach .text")).to_have_text(["Hi Ola, all good now?"], timeout=WAIT_MS)
    await expect(presence).to_have_text("", timeout=WAIT_MS)
    left = "Dana Coach handed the conversation back to the AI assistant"
    await expect(widget.locator("#log .sys")).to_have_text([left], timeout=WAIT_MS)
    await context.close()


async def test_an_answer_streaming_when_a_crisis_reply_comes_leaves_nothing_behind(
    base_url: str,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """A slow model streams the answer to the client's question when their next message gets the crisis reply: the
    answer streamed on under the crisis reply for seconds, with an "AI assistant: Still working on your answer…"
    bubble and "Thinking…", then vanished. Now it stops there (the socket's ``stopped``): under the crisis reply no
    streamed text, no typing bubble and no "Thinking…" are left, long before the model would be done."""
    slow_model(llm_api, 0.3)  # (30 chunks: about 9 s)
    made = await coach_with_client("Coach Calm", "Cleo")
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await open_widget(widget, made.client["widget_token"])
    await send_from_widget(widget, "How can I plan my week better?")
    await expect(widget.locator("#log .msg.ai .text")).to_contain_text(["Let me"], timeout=WAIT_MS)
    await send_from_widget(widget, "forget it. i want to kill myself tonight")
    await expect(widget.locator("#log .msg.ai.notice")).to_have_count(1, timeout=WAIT_MS)

    quickly = 3_000  # (the model streams on for about 6 s more)
    await expect(widget.locator("#log .msg.ai .text")).to_have_count(1, timeout=quickly)  # the crisis reply alone
    await expect(widget.locator("#log .msg.typing")).to_have_count(0, timeout=quickly)
    await expect(widget.locator("#status")).to_have_text("", timeout=quickly)
    assert [sender for sender, _ in await shown(widget)] == ["client", "client", "ai"]
    await context.close()


async def test_live_bubbles_show_their_time_as_a_reload_does(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """The client's own message, the AI's reply and the coach's message, all shown live, show the time each was
    stored, the same element and text as the history a reload shows (they had no time until reloaded)."""
    made = await coach_with_client("Coach Clock", "Cleo")
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await open_widget(widget, made.client["widget_token"])
    await send_from_widget(widget, "How can I plan my week better?")
    await expect(widget.locator("#log .msg.ai .text")).to_have_text([REPLY], timeout=WAIT_MS)
    [conversation] = (await http.get("/api/v1/conversations", headers=made.coach.headers)).json()
    sent = await http.post(
        f"/api/v1/conversations/{conversation['id']}/messages", headers=made.coach.headers, json={"text": "Hi Cleo!"}
    )
    assert sent.status_code == 201, sent.text
    await expect(widget.locator("#log .msg.human_coach")).to_have_count(1, timeout=WAIT_MS)
    times = widget.locator("#log .msg .who .small.muted")
    await expect(times).to_have_count(3, timeout=WAIT_MS)
    live = await times.all_inner_texts()
    assert all(TIME.match(t) for t in live), live

    await widget.reload()
    await expect(times).to_have_count(3, timeout=WAIT_MS)
    assert [t.strip() for t in await times.all_inner_texts()] == live
    await context.close()


async def test_a_thumbs_up_after_a_rated_thumbs_down_says_the_rating_was_cleared(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    llm_api: respx.MockRouter,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """A new thumb replaces the whole feedback (a kept 2 ★ would count the 👍 as a 👎): the bar says the earlier
    rating and comment were cleared and its form shows none, as stored, in the same page and after a reload (the
    form kept showing the 2 ★ the server had dropped, without a word)."""
    made = await coach_with_client("Coach Stars", "Sol")
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await open_widget(widget, made.client["widget_token"])
    await send_from_widget(widget, "How can I plan my week better?")
    reply = widget.locator(".msg.ai").last
    await expect(reply.locator(".thumb.down")).to_be_visible(timeout=WAIT_MS)

    async def rate_down() -> None:
        await reply.locator(".thumb.down").click()
        await expect(reply.locator(".thumb.down")).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
        await reply.locator("select[name=rating]").select_option("2")
        await reply.locator("input[name=text]").fill("Too generic")
        await reply.locator(".feedback-more button[type=submit]").click()
        await expect(reply.locator(".feedback")).to_contain_text("Thanks for your feedback", timeout=WAIT_MS)

    async def stored() -> dict[str, object]:
        [conversation] = (await http.get("/api/v1/conversations", headers=made.coach.headers)).json()
        detail = await http.get(f"/api/v1/conversations/{conversation['id']}", headers=made.coach.headers)
        return detail.json()["messages"][-1]["metadata"]["feedback"]  # type: ignore[no-any-return]

    await rate_down()
    await reply.locator(".thumb.up").click()
    cleared = "Your earlier rating and comment were cleared"
    await expect(reply.locator(".feedback")).to_contain_text(cleared, timeout=WAIT_MS)
    await expect(reply.locator("select[name=rating]")).to_have_value("")
    await expect(reply.locator("input[name=text]")).to_have_value("")
    assert {k: v for k, v in (await stored()).items() if k != "at"} == {"helpful": True, "rating": None, "text": None}

    await rate_down()
    await widget.reload()
    reply = widget.locator(".msg.ai").last
    await reply.locator(".thumb.up").click()
    await expect(reply.locator(".feedback")).to_contain_text(cleared, timeout=WAIT_MS)
    await reply.locator(".thumb.down").click()  # nothing left to clear
    await expect(reply.locator(".feedback")).to_contain_text("what was missing?", timeout=WAIT_MS)
    await context.close()


async def test_opening_the_panel_focuses_the_message_input(
    base_url: str,
    http: httpx.AsyncClient,
    site_browser: Browser,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    """A keyboard user opens the embedded chat: the focus is in the message input (it was on the frame's body, and
    Tab went through every message's controls before reaching the input)."""
    coach = await widget_coach(http, make_coach, "Coach Keys")
    client = await make_client(http, coach, "Kit")
    context = await site_browser.new_context(viewport={"width": 1200, "height": 900})
    await host_page(context, base_url, client["widget_token"])
    site = await context.new_page()
    await site.goto(f"{SITE}/")
    launcher = site.get_by_role("button", name="Chat with your coach")
    await expect(launcher).to_be_visible(timeout=WAIT_MS)
    await launcher.focus()
    await site.keyboard.press("Enter")
    chat = site.frame_locator("iframe[title='Coaching chat']")
    await expect(chat.locator("#text")).to_be_focused(timeout=WAIT_MS)
    await site.keyboard.type("Hello")
    await expect(chat.locator("#text")).to_have_value("Hello")
    await context.close()
