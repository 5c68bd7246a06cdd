"""The coach sees when a Telegram conversation's messages cannot reach the client (the client blocked the bot, the
coach disconnected it): the conversation API, the coach's message API and the dashboard's conversation page say
so, and the message is stored all the same. The real app, worker, PostgreSQL and Redis, the fake Bot API server
(tests/telegram_fake.py)."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

import httpx
import pytest

from app.channels.telegram.delivery import BLOCKED, NO_BOT, UNLINKED
from tests.integration.telegram.conftest import Bot
from tests.integration.telegram.test_telegram import drain, post_update, taken_over
from tests.integration.web.test_dashboard import csrf, log_in
from tests.telegram_fake import FakeBotApi, recorded

pytestmark = pytest.mark.usefixtures("llm")
MakeBot = Callable[..., Awaitable[Bot]]
Jobs = Callable[[], Awaitable[None]]
_ids = iter(range(13_000_000, 14_000_000))


async def membership(tg: httpx.AsyncClient, bot: Bot, chat_id: int, status: str) -> None:
    """The client blocks (``blocked``: a ``my_chat_member`` "kicked" update) or unblocks the bot."""
    update = recorded(status, update_id=next(_ids))
    update["my_chat_member"]["chat"]["id"] = update["my_chat_member"]["from"]["id"] = chat_id
    await post_update(tg, bot, update)
    await drain(tg)


async def coach_writes(tg: httpx.AsyncClient, bot: Bot, conversation_id: str, text: str) -> dict[str, object]:
    sent = await tg.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=bot.coach.headers, json={"text": text}
    )
    assert sent.status_code == 201, sent.text
    return sent.json()  # type: ignore[no-any-return]


async def reason_of(tg: httpx.AsyncClient, bot: Bot, conversation_id: str) -> object:
    conversation = await tg.get(f"/api/v1/conversations/{conversation_id}", headers=bot.coach.headers)
    assert conversation.status_code == 200, conversation.text
    return conversation.json()["undelivered_reason"]


async def test_a_blocked_chat_is_shown_and_the_coachs_message_is_stored_but_not_delivered(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Jobs
) -> None:
    """The client blocks the bot: the conversation (API and dashboard page) says the coach's messages are saved but
    not delivered, a message the coach writes then (API or the dashboard's form) is stored with ``delivered`` false
    and the reason; unblocked, messages are delivered again and the notice is gone."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    assert await reason_of(tg, bot, conversation_id) is None
    sent = await coach_writes(tg, bot, conversation_id, "Reaches you")
    assert sent["delivered"] is True and sent["undelivered_reason"] is None
    page = f"/dashboard/conversations/{conversation_id}"
    async with httpx.AsyncClient(base_url=str(tg.base_url), timeout=60) as browser:
        await log_in(browser, bot.coach)
        assert 'id="undelivered"' not in (await browser.get(page)).text
        await membership(tg, bot, chat_id, "blocked")
        assert await reason_of(tg, bot, conversation_id) == BLOCKED
        sent = await coach_writes(tg, bot, conversation_id, "Saved only")
        assert sent["delivered"] is False and sent["undelivered_reason"] == BLOCKED and sent["text"] == "Saved only"
        form = {"text": "Saved from the dashboard", "_csrf_token": await csrf(browser, page)}
        posted = await browser.post(f"{page}/messages", data=form, follow_redirects=True)
        assert posted.status_code == 200 and html.escape(BLOCKED) in posted.text
        await tg_jobs()
        texts = [c.params["text"] for c in fake.sent_to(chat_id)]
        assert "Reaches you" in texts and "Saved only" not in texts and "Saved from the dashboard" not in texts
        transcript = (await tg.get(f"/api/v1/conversations/{conversation_id}", headers=bot.coach.headers)).json()
        assert [m["text"] for m in transcript["messages"]][-2:] == ["Saved only", "Saved from the dashboard"]
        await membership(tg, bot, chat_id, "unblocked")
        assert await reason_of(tg, bot, conversation_id) is None
        assert 'id="undelivered"' not in (await browser.get(page)).text
    assert (await coach_writes(tg, bot, conversation_id, "Welcome back"))["delivered"] is True


async def test_a_403_from_telegram_shows_the_chat_blocked(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Jobs
) -> None:
    """Telegram refuses a coach's message with a 403 (the client blocked the bot, no update said so yet): the
    conversation then says the chat is blocked."""
    bot, _chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    fake.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
    assert (await coach_writes(tg, bot, conversation_id, "Refused"))["delivered"] is True  # (not known yet)
    await tg_jobs()
    assert await reason_of(tg, bot, conversation_id) == BLOCKED
    assert (await coach_writes(tg, bot, conversation_id, "After the 403"))["undelivered_reason"] == BLOCKED


async def test_a_disconnected_bot_is_shown_and_the_coachs_message_is_stored_but_not_delivered(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Jobs
) -> None:
    """The coach disconnects the bot: the Telegram conversation says no bot is connected, and a message written
    then is stored with ``delivered`` false; reconnected, the notice is gone."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    h = bot.coach.headers
    assert (await tg.delete("/api/v1/channels/telegram", headers=h)).status_code == 204
    assert await reason_of(tg, bot, conversation_id) == NO_BOT
    sent = await coach_writes(tg, bot, conversation_id, "Nobody sends this")
    assert sent["delivered"] is False and sent["undelivered_reason"] == NO_BOT
    async with httpx.AsyncClient(base_url=str(tg.base_url), timeout=60) as browser:
        await log_in(browser, bot.coach)
        page = (await browser.get(f"/dashboard/conversations/{conversation_id}")).text
        assert html.escape(NO_BOT) in page
    await tg_jobs()
    assert "Nobody sends this" not in [c.params["text"] for c in fake.sent_to(chat_id)]
    assert (await tg.put("/api/v1/channels/telegram", headers=h, json={"bot_token": bot.token})).status_code == 200
    assert await reason_of(tg, bot, conversation_id) is None


async def test_a_conversation_whose_chat_was_bound_to_another_client_is_shown_unlinked(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Jobs
) -> None:
    """The chat redeems another client's invite: the first client's conversation has no chat any more, and a
    message the coach writes in it is stored with ``delivered`` false."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    h = bot.coach.headers
    other = (await tg.post("/api/v1/clients", headers=h, json={"name": "Other"})).json()
    invite = (await tg.post(f"/api/v1/clients/{other['id']}/telegram-invite", headers=h)).json()
    update = recorded("text_message", update_id=next(_ids), chat_id=chat_id, text=f"/start {invite['code']}")
    await post_update(tg, bot, update)
    await drain(tg)
    assert await reason_of(tg, bot, conversation_id) == UNLINKED
    sent = await coach_writes(tg, bot, conversation_id, "To nobody")
    assert sent["delivered"] is False and sent["undelivered_reason"] == UNLINKED


async def test_a_widget_conversation_has_no_undelivered_reason(tg: httpx.AsyncClient, make_bot: MakeBot) -> None:
    """A conversation of another channel than Telegram: its messages are never said to be undelivered, even with
    no bot connected."""
    bot = await make_bot()
    assert (await tg.delete("/api/v1/channels/telegram", headers=bot.coach.headers)).status_code == 204
    client = (await tg.post("/api/v1/clients", headers=bot.coach.headers, json={"name": "Widget Wren"})).json()
    chat = await tg.post(
        "/api/v1/chat", headers={"Authorization": f"Bearer {client['widget_token']}"}, json={"text": "Hello"}
    )
    assert chat.status_code == 200, chat.text
    conversation_id = chat.json()["conversation_id"]
    assert await reason_of(tg, bot, conversation_id) is None
    sent = await coach_writes(tg, bot, conversation_id, "Hi from the coach")
    assert sent["delivered"] is True and sent["undelivered_reason"] is None
