"""A long conversation in the widget and on the dashboard: the chat page and the coach's transcript open on its
last 50 messages, and "Earlier messages" puts the page before them above, a page at a time, in order (in the
widget with the thumbs the client left, keeping the view where it was), until the first message (the button
then goes). After a dropped connection the widget catches up on every message stored meanwhile, following the
catch-up's pages."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from playwright.async_api import Browser, Route, WebSocketRoute, expect
from sqlalchemy import select

from app.accounts.unit_of_work import unit_of_work
from app.chat.turn import ANSWER_LATER
from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.core.pagination import MAX_PAGE_SIZE
from tests.browser.conftest import PHONE, WAIT_MS, CoachWithClient, OpenDashboard
from tests.browser.test_handoff_browser import REPLY, browser, llm_api, send_from_widget, shot
from tests.integration.api.test_pagination import add_message

__all__ = ["browser", "llm_api"]  # the fixtures, used by name below
pytestmark = pytest.mark.browser
MESSAGES = 120
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
SOCKETS_SEEN = """window.sockets = [];
window.received = [];
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    window.sockets.push(this);
    this.addEventListener("message", (event) => window.received.push(String(event.data)));
  }
};"""
"""An init script: every WebSocket the page opens is also kept in ``window.sockets`` (for the test to close),
every event it receives in ``window.received``."""


async def long_conversation(container: Container, coach_id: str, client_id: str) -> uuid.UUID:
    """``MESSAGES`` messages a minute apart, the client's and the AI's in turn; the AI's first reply rated down."""
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach_id)) as uow:
        coach = await uow.coach()
        conversation = Conversation(coach_id=coach.id, client_id=uuid.UUID(client_id), channel="widget")
        uow.session.add(conversation)
        await uow.session.flush()
        for n in range(MESSAGES):
            sender = SenderType.CLIENT if n % 2 == 0 else SenderType.AI
            meta = {"feedback": {"helpful": False}} if n == 1 else {}
            at = T0 + timedelta(minutes=n)
            await add_message(uow, conversation.id, sender, f"message {n}", at, meta=meta)
    return conversation.id


async def test_earlier_messages_load_above_a_page_at_a_time_until_the_first(
    base_url: str,
    browser: Browser,
    container: Container,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    made = await coach_with_client("Coach History", "Hal")
    await long_conversation(container, made.coach.coach_id, made.client["id"])
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{made.client['widget_token']}")
    texts = widget.locator("#log .msg .text")
    await expect(texts).to_have_count(50, timeout=WAIT_MS)
    assert await texts.first.text_content() == "message 70" and await texts.last.text_content() == "message 119"

    earlier = widget.get_by_role("button", name="Earlier messages")
    await earlier.click()
    await expect(texts).to_have_count(100, timeout=WAIT_MS)
    assert await texts.all_text_contents() == [f"message {n}" for n in range(20, 120)]
    assert await widget.locator("#log").evaluate("e => e.scrollTop") > 0, "the view stays on what was read"
    await earlier.click()
    await expect(texts).to_have_count(MESSAGES, timeout=WAIT_MS)
    await expect(earlier).to_have_count(0)  # the first message is shown
    assert await texts.all_text_contents() == [f"message {n}" for n in range(MESSAGES)]
    first_reply = widget.locator('#log .msg.ai:has-text("message 1")').first
    await expect(first_reply.locator(".thumb.down")).to_have_attribute("aria-pressed", "true")
    await widget.locator("#log").evaluate("e => { e.scrollTop = 0; }")
    await shot(widget, "history-01-widget-earlier-messages-phone.png")
    await context.close()


async def test_the_coachs_transcript_loads_earlier_messages_in_place(
    browser: Browser,
    container: Container,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
    open_dashboard: OpenDashboard,
) -> None:
    made = await coach_with_client("Coach Transcript", "Tia")
    conversation_id = await long_conversation(container, made.coach.coach_id, made.client["id"])
    async with open_dashboard(browser, made.coach) as page:
        await page.goto(f"/dashboard/conversations/{conversation_id}")
        texts = page.locator("#transcript .msg .text")
        await expect(texts).to_have_count(50, timeout=WAIT_MS)
        earlier = page.locator("#transcript a.earlier")
        await earlier.click()
        await expect(texts).to_have_count(100, timeout=WAIT_MS)
        await earlier.click()
        await expect(texts).to_have_count(MESSAGES, timeout=WAIT_MS)
        await expect(earlier).to_have_count(0)
        assert await texts.all_text_contents() == [f"message {n}" for n in range(MESSAGES)]
        assert await page.locator("#conversation-pane").count() == 1, "the pane was not replaced inside itself"


async def test_after_a_dropped_connection_the_widget_shows_every_message_stored_meanwhile(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    container: Container,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """More messages than one catch-up response holds (the coach's, say) are stored while the widget's socket is
    down: on reconnecting it shows them all, in order, by following the catch-up's ``Link`` header. A message
    that comes live while the catch-up is still fetching goes after the messages it fetches."""
    made = await coach_with_client("Coach Away", "Cal")
    conversation_id = await long_conversation(container, made.coach.coach_id, made.client["id"])
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.add_init_script(SOCKETS_SEEN)
    await widget.goto(f"/w/{made.client['widget_token']}")
    texts = widget.locator("#log .msg .text")
    await expect(texts).to_have_count(50, timeout=WAIT_MS)
    await widget.wait_for_function("() => window.sockets.length === 1 && window.sockets[0].readyState === 1")

    missed = MAX_PAGE_SIZE + 30
    async with unit_of_work(container.sessionmaker, uuid.UUID(made.coach.coach_id)) as uow:
        for n in range(missed):
            at = T0 + timedelta(minutes=MESSAGES + n)
            await add_message(uow, conversation_id, SenderType.HUMAN_COACH, f"while away {n}", at)
    await widget.evaluate("() => window.sockets[0].close()")  # the connection drops
    await expect(texts).to_have_count(50 + missed, timeout=WAIT_MS)
    assert await widget.evaluate("() => window.sockets.length") == 2, "the widget reconnected"
    shown = await texts.all_text_contents()
    assert shown == [f"message {n}" for n in range(70, MESSAGES)] + [f"while away {n}" for n in range(missed)]

    release = asyncio.Event()

    async def held(route: Route) -> None:  # the next catch-up waits until the coach's live message has come
        await release.wait()
        await route.continue_()

    await widget.route(re.compile(r"/messages\?after="), held)
    async with unit_of_work(container.sessionmaker, uuid.UUID(made.coach.coach_id)) as uow:
        for n in range(3):
            at = T0 + timedelta(minutes=MESSAGES + missed + n)
            await add_message(uow, conversation_id, SenderType.HUMAN_COACH, f"away again {n}", at)
    await widget.evaluate("() => window.sockets[1].close()")
    await widget.wait_for_function("() => window.sockets.length === 3 && window.sockets[2].readyState === 1")
    sent = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=made.coach.headers, json={"text": "Back now"}
    )
    assert sent.status_code == 201, sent.text
    await widget.wait_for_function("() => window.received.some((data) => data.includes('Back now'))")
    release.set()
    await expect(texts).to_have_count(50 + missed + 4, timeout=WAIT_MS)
    assert (await texts.all_text_contents())[-4:] == [f"away again {n}" for n in range(3)] + ["Back now"]
    await context.close()


async def test_a_failed_answer_leaves_no_thinking_and_other_conversations_stay_out(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    container: Container,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
    llm_api: respx.MockRouter,
    answer_fails_once: list[tuple[Any, ...]],
) -> None:
    """An answer that fails after the message is stored ends the widget's "Thinking…" (it said so before only
    until the next answer, then for good) and tells the client the message will be answered; the coach's live
    messages in the client's other conversation (their Telegram chat) do not show in the widget, nor move its
    next message there."""
    made = await coach_with_client("Coach Busy", "Dee")
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.goto(f"/w/{made.client['widget_token']}")
    status, texts = widget.locator("#status"), widget.locator("#log .msg .text")
    await send_from_widget(widget, "Is anyone there?")
    await expect(status).to_have_text(ANSWER_LATER, timeout=WAIT_MS)
    await send_from_widget(widget, "How can I plan my week better?")
    await expect(texts.last).to_have_text(REPLY, timeout=WAIT_MS)
    await expect(status).to_have_text("", timeout=WAIT_MS)

    async with unit_of_work(container.sessionmaker, uuid.UUID(made.coach.coach_id)) as uow:
        other = Conversation(coach_id=uow.coach_id, client_id=uuid.UUID(made.client["id"]), channel="telegram")
        uow.session.add(other)
        await uow.session.flush()
        await add_message(uow, other.id, SenderType.CLIENT, "Hi from Telegram", T0)
    h = made.coach.headers
    elsewhere = await http.post(f"/api/v1/conversations/{other.id}/messages", headers=h, json={"text": "On Telegram"})
    assert elsewhere.status_code == 201, elsewhere.text
    [widget_conversation] = [
        c["id"] for c in (await http.get("/api/v1/conversations", headers=h)).json() if c["id"] != str(other.id)
    ]
    here = await http.post(
        f"/api/v1/conversations/{widget_conversation}/messages", headers=h, json={"text": "In the widget"}
    )
    assert here.status_code == 201, here.text
    await expect(texts.last).to_have_text("In the widget", timeout=WAIT_MS)
    assert "On Telegram" not in await texts.all_text_contents()
    await expect(widget.locator("#presence")).to_contain_text("Coach Busy", timeout=WAIT_MS)
    await send_from_widget(widget, "Thanks!")
    mine = widget.locator("#log .msg.client")
    await expect(mine).to_have_count(3, timeout=WAIT_MS)
    await expect(mine.last).not_to_have_class(re.compile("pending"), timeout=WAIT_MS)  # stored (acknowledged)
    async with unit_of_work(container.sessionmaker, uuid.UUID(made.coach.coach_id)) as uow:
        thanked = await uow.session.scalar(select(Message.conversation_id).where(Message.text == "Thanks!"))
    assert str(thanked) == widget_conversation
    await context.close()


async def test_a_message_stored_before_the_widgets_socket_listens_is_shown(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    container: Container,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
) -> None:
    """The coach writes after the chat page was made but before its socket is listening (the script still
    loading, a slow handshake): the widget's first connection catches up on it (only a reconnect did)."""
    made = await coach_with_client("Coach Quick", "Eli")
    conversation_id = await long_conversation(container, made.coach.coach_id, made.client["id"])
    release = asyncio.Event()

    async def held(route: Route) -> None:  # the page is made; its script comes once the coach has written
        await release.wait()
        await route.continue_()

    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.route(re.compile(r"/static/chat\.js"), held)
    opened = asyncio.create_task(widget.goto(f"/w/{made.client['widget_token']}"))
    texts = widget.locator("#log .msg .text")
    await expect(texts).to_have_count(50, timeout=WAIT_MS)
    sent = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=made.coach.headers, json={"text": "Just now"}
    )
    assert sent.status_code == 201, sent.text
    release.set()
    await opened
    await expect(texts).to_have_count(51, timeout=WAIT_MS)
    assert (await texts.all_text_contents())[-1] == "Just now"
    await context.close()


async def test_an_expired_session_says_so_instead_of_reconnecting_for_ever(
    base_url: str, browser: Browser, coach_with_client: Callable[..., Awaitable[CoachWithClient]]
) -> None:
    """The page stays open past its session (a tab left open overnight): the socket's reconnects are refused,
    and the widget tells the client to open their coach's link again instead of "Reconnecting…" for ever. While
    the session is valid, ``/w/session`` renews its cookie."""
    made = await coach_with_client("Coach Later", "Fay")
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    await widget.add_init_script(SOCKETS_SEEN)
    await widget.goto(f"/w/{made.client['widget_token']}")
    await widget.wait_for_function("() => window.sockets.length === 1 && window.sockets[0].readyState === 1")
    renewed = await widget.request.get("/w/session")
    assert renewed.status == 204 and "oc_widget=" in renewed.headers["set-cookie"]

    await context.clear_cookies()  # the session expired
    await widget.evaluate("() => window.sockets[0].close()")
    await expect(widget.locator("#status")).to_have_text(
        "This chat has expired. Please open the link from your coach again.", timeout=WAIT_MS
    )
    await expect(widget.locator("#text")).to_be_disabled()
    await expect(widget.locator("#send")).to_be_disabled()
    tries = await widget.evaluate("() => window.sockets.length")
    await widget.wait_for_timeout(2500)  # longer than the first reconnect delays
    assert await widget.evaluate("() => window.sockets.length") == tries, "no more reconnects"
    assert (await widget.request.get("/w/session")).status == 401
    await context.close()


async def test_a_reply_whose_done_is_lost_after_the_next_messages_ack_is_caught_up(
    base_url: str,
    http: httpx.AsyncClient,
    browser: Browser,
    coach_with_client: Callable[..., Awaitable[CoachWithClient]],
    llm_api: respx.MockRouter,
) -> None:
    """The socket drops after the client's next message was acknowledged but before the reply to the one before
    arrived (that reply was stored before the next message): the reconnected widget shows it all the same. The
    catch-up started after the acknowledged message, so the reply was missing until the page was reloaded."""
    made = await coach_with_client("Coach Drop", "Eve")
    context = await browser.new_context(base_url=base_url, viewport=PHONE)
    widget = await context.new_page()
    routes: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    async def answers_lost_on_the_first_socket(socket: WebSocketRoute) -> None:
        server, first = socket.connect_to_server(), not routes
        routes.append((socket, server))

        def deliver(message: str | bytes) -> None:
            if not first or json.loads(message)["type"] == "ack":
                socket.send(message)

        server.on_message(deliver)

    await widget.route_web_socket(re.compile(r"/ws/chat"), answers_lost_on_the_first_socket)
    await widget.goto(f"/w/{made.client['widget_token']}")

    async def replies_stored(count: int) -> None:
        for _ in range(WAIT_MS // 100):
            listed = (await http.get("/api/v1/conversations", headers=made.coach.headers)).json()
            if listed:
                url = f"/api/v1/conversations/{listed[0]['id']}"
                messages = (await http.get(url, headers=made.coach.headers)).json()["messages"]
                if sum(m["sender_type"] == "ai" for m in messages) == count:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{count} replies were not stored")

    await send_from_widget(widget, "How can I plan my week better?")
    await replies_stored(1)
    await send_from_widget(widget, "And my month?")
    await expect(widget.locator("#log .msg.client").last).not_to_have_class(re.compile("pending"), timeout=WAIT_MS)
    await replies_stored(2)
    socket, server = routes[0]
    await server.close()
    await socket.close()
    await expect(widget.locator("#log .msg.ai .text")).to_have_text([REPLY, REPLY], timeout=WAIT_MS)
    assert len(routes) == 2, "the widget reconnected"
    await context.close()
