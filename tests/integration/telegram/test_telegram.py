"""The Telegram channel end to end: the real app, worker, PostgreSQL and Redis, a fake Bot API server on
loopback (tests/telegram_fake.py, recorded update payloads in tests/fixtures/telegram/) and the coach's model
endpoint mocked in the OpenAI wire format."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from sqlalchemy import func, select, update
from standardwebhooks import Webhook
from telegram.error import RetryAfter

from app import worker
from app.channels.telegram import bot as bot_module
from app.channels.telegram import poller, render, replies
from app.channels.telegram.adapter import ChatLocks
from app.channels.telegram.bot import CoachBot
from app.channels.telegram.models import TelegramChat, TelegramInvite, TelegramUpdate
from app.channels.telegram.outbound import WAIT_IN_JOB_S, ChatOutbox
from app.channels.telegram.poller import poll_once
from app.channels.telegram.service import INVITE_TTL, MAX_ATTEMPTS
from app.channels.telegram.wiring import build_channel
from app.chat.turn import ANSWER_LATER
from app.container import Container
from app.conversations.models import Conversation
from app.core.config import Settings
from app.core.runtime import Services
from app.db.engine import tenant_session
from app.db.outbox import connect_redis
from app.handoff.catalogue import say as catalogue_text
from app.handoff.crisis import crisis_reply
from app.llm.base import EMBEDDING_DIMENSIONS
from app.llm.registry import ProviderRegistry
from app.memory.models import ChatSession, Insight, SessionStatus
from tests.integration.handoff.test_alerts import Receiver
from tests.integration.handoff.test_handoff_flow import held_model
from tests.integration.telegram.conftest import DELTAS, REPLY, Bot, new_token, served
from tests.integration.web.test_dashboard import csrf, log_in, sign_up
from tests.openai_wire import openai_sse, sse_response
from tests.telegram_fake import FakeBotApi, recorded

pytestmark = pytest.mark.usefixtures("llm")
MakeBot = Callable[..., Awaitable[Bot]]
WELCOME = "Hi, I'm Tele Coach's AI assistant. What would you like to talk about today?"
"""The default greeting of the test bots' coach (the widget's, :func:`app.accounts.widget_settings.greeting`)."""
_chat_ids = iter(range(7_000_000, 8_000_000))


async def post_update(tg: httpx.AsyncClient, bot: Bot, update: dict[str, Any]) -> httpx.Response:
    response = await tg.post(bot.hook(), headers=bot.secret_headers(), json=update)
    assert response.status_code == 200, response.text
    return response


async def drain(tg: httpx.AsyncClient) -> None:
    await tg.app.state.telegram.drain()  # type: ignore[attr-defined]


async def bound_chat(tg: httpx.AsyncClient, bot: Bot, fake: FakeBotApi, name: str = "Robin") -> tuple[int, str]:
    """A client of the bot's coach bound to a new chat through an invite; returns ``(chat_id, client_id)``."""
    client = (await tg.post("/api/v1/clients", headers=bot.coach.headers, json={"name": name})).json()
    invite = (await tg.post(f"/api/v1/clients/{client['id']}/telegram-invite", headers=bot.coach.headers)).json()
    chat_id = next(_chat_ids)
    await post_update(
        tg, bot, recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text=f"/start {invite['code']}")
    )
    await drain(tg)
    assert fake.sent_to(chat_id)[-1].params["text"] == WELCOME
    return chat_id, client["id"]


async def say(tg: httpx.AsyncClient, bot: Bot, chat_id: int, text: str, update_id: int | None = None) -> None:
    await post_update(
        tg, bot, recorded("text_message", update_id=update_id or next(_chat_ids), chat_id=chat_id, text=text)
    )
    await drain(tg)


def failing_once(method: Callable[..., Awaitable[Any]]) -> tuple[Callable[..., Awaitable[Any]], list[OSError]]:
    """``method`` raising ``OSError`` (the database out of reach a moment) the first time it is called, and the
    list of failures still to come (empty once it raised)."""
    failures = [OSError("the database is out of reach")]

    async def flaky(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return await method(*args)

    return flaky, failures


async def conversation_of(tg: httpx.AsyncClient, bot: Bot, client_id: str) -> dict[str, Any]:
    listed = (await tg.get("/api/v1/conversations", headers=bot.coach.headers)).json()
    [summary] = [c for c in listed if c["client_id"] == client_id]
    return (await tg.get(f"/api/v1/conversations/{summary['id']}", headers=bot.coach.headers)).json()


async def taken_over(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> tuple[Bot, int, str]:
    """A new bot whose client's chat said "Hello" and whose coach then took the conversation over (the joined
    notice sent): ``(bot, chat_id, conversation_id)``."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    await say(tg, bot, chat_id, "Hello")
    conversation_id = (await conversation_of(tg, bot, client_id))["id"]
    taken = await tg.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=bot.coach.headers)
    assert taken.status_code == 200, taken.text
    await tg_jobs()
    return bot, chat_id, conversation_id


# ------------------------------------------------------------------------------------------- connecting


async def test_the_get_started_checklist_ticks_telegram_once_a_bot_is_connected(
    tg: httpx.AsyncClient, make_bot: MakeBot
) -> None:
    bot = await make_bot()
    async with httpx.AsyncClient(base_url=tg.base_url, timeout=60) as tab:  # its own cookies
        await log_in(tab, bot.coach)
        page = (await tab.get("/dashboard/start")).text
        assert 'id="step-telegram" data-done="yes"' in page and f"Connected as @{bot.username}" in page
        assert (await tg.delete("/api/v1/channels/telegram", headers=bot.coach.headers)).status_code == 204
        assert 'id="step-telegram" data-done="no"' in (await tab.get("/dashboard/start")).text


async def test_start_sends_the_coachs_greeting_with_the_suggestions_as_a_reply_keyboard(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """Issue 17: the widget's greeting and suggested first questions are the bot's ``/start`` message; a tapped
    suggestion is an ordinary message that gets an answer; no suggestions: no keyboard."""
    welcome = {"widget_greeting": "Welcome! I'm Maya's assistant.", "widget_suggestions": ["Plan my week", "Sleep"]}
    bot = await make_bot(**welcome)
    chat_id = next(_chat_ids)
    await say(tg, bot, chat_id, "/start")
    start = fake.sent_to(chat_id)[-1].params
    assert start["text"] == "Welcome! I'm Maya's assistant."
    keyboard = start["reply_markup"]
    keyboard = json.loads(keyboard) if isinstance(keyboard, str) else keyboard
    assert [[button["text"] for button in row] for row in keyboard["keyboard"]] == [["Plan my week"], ["Sleep"]]
    assert keyboard["one_time_keyboard"] is True
    await say(tg, bot, chat_id, "Plan my week")
    assert fake.sent_to(chat_id)[-1].params["text"].startswith(render.escape(REPLY))
    assert (await tg.patch("/api/v1/settings", headers=bot.coach.headers, json={"widget_suggestions": []})).is_success
    await say(tg, bot, chat_id, "/start")
    assert "reply_markup" not in fake.sent_to(chat_id)[-1].params


async def test_deleting_the_account_disconnects_its_bot(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """The account's bot is disconnected as ``DELETE /api/v1/channels/telegram`` does: without ``deleteWebhook``,
    Telegram went on posting the bot's updates to a webhook that refuses them (401), its clients met silence, and
    the owner could no longer disconnect the bot here. A wrong password deletes nothing and disconnects nothing."""
    bot = await make_bot()
    url, headers = "/api/v1/account/delete", bot.coach.headers
    wrong = await tg.post(url, headers=headers, json={"password": "not the password"})
    assert wrong.status_code == 403 and not fake.of("deleteWebhook", bot.token)
    done = await tg.post(url, headers=headers, json={"password": "correct horse battery"})
    assert done.status_code == 200, done.text
    assert len(fake.of("deleteWebhook", bot.token)) == 1


async def test_connect_registers_the_webhook_shows_a_masked_token_and_disconnects(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    bot = await make_bot()
    [hook] = fake.of("setWebhook", bot.token)
    assert hook.params["url"].endswith(bot.hook())
    assert hook.params["allowed_updates"] == ["message", "edited_message", "callback_query", "my_chat_member"]
    assert len(bot.secret) >= 32
    shown = await tg.get("/api/v1/channels/telegram", headers=bot.coach.headers)
    assert shown.status_code == 200
    body = shown.json()
    assert body["mode"] == "webhook" and body["bot_username"] == bot.username and body["open_enrollment"] is True
    assert bot.token not in shown.text and body["webhook_url"].endswith(bot.hook())
    gone = await tg.delete("/api/v1/channels/telegram", headers=bot.coach.headers)
    assert gone.status_code == 204
    assert fake.of("deleteWebhook", bot.token)
    assert (await tg.get("/api/v1/channels/telegram", headers=bot.coach.headers)).status_code == 404
    # a webhook call for a disconnected bot is refused
    assert (await tg.post(bot.hook(), headers=bot.secret_headers(), json=recorded("text_message"))).status_code == 401


async def test_a_bad_token_is_a_400_with_telegrams_reason_and_nothing_is_stored(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    bot = await make_bot()
    unknown = "123456789:AAHthisTokenWasNeverIssuedByBotFather"
    response = await tg.put("/api/v1/channels/telegram", headers=bot.coach.headers, json={"bot_token": unknown})
    assert response.status_code == 400 and "Unauthorized" in response.json()["detail"]
    before = len(fake.calls)
    response = await tg.put("/api/v1/channels/telegram", headers=bot.coach.headers, json={"bot_token": "not a token"})
    assert response.status_code == 400 and "bot token" in response.json()["detail"]
    assert len(fake.calls) == before  # refused before any call
    fake.fail("getMe", 502, "Bad Gateway")  # Telegram out of reach says nothing about the token
    response = await tg.put(
        "/api/v1/channels/telegram", headers=bot.coach.headers, json={"bot_token": new_token(fake)[0]}
    )
    assert response.status_code == 400 and response.json()["detail"].startswith("could not reach Telegram")
    shown = (await tg.get("/api/v1/channels/telegram", headers=bot.coach.headers)).json()
    assert shown["bot_username"] == bot.username  # the earlier bot is untouched


async def test_a_wrong_secret_is_401_and_stores_nothing(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    bot = await make_bot()
    chat_id = next(_chat_ids)
    update = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id)
    for headers in ({"X-Telegram-Bot-Api-Secret-Token": "wrong"}, {}):
        response = await tg.post(bot.hook(), headers=headers, json=update)
        assert response.status_code == 401 and response.json()["detail"]
    await drain(tg)
    assert fake.sent_to(chat_id) == []
    await post_update(tg, bot, update)  # the same update_id with the right secret was not recorded: processed now
    await drain(tg)
    assert fake.sent_to(chat_id)


PRIVATE = {"id": 5, "type": "private"}
said = {"message_id": 1, "chat": PRIVATE, "text": "Hi"}


def as_json(update: dict[str, Any]) -> bytes:
    return json.dumps(update).encode()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not a Telegram update"),
        (b'{"message": {}}', "not a Telegram update"),
        (b'{"update_id": "7"}', "not a Telegram update"),
        (b'{"update_id": -5}', "not a Telegram update"),
        (b'{"update_id": 99999999999999999999}', "not a Telegram update"),  # past the signed 64-bit column
        (b'{"update_id": 5, "message": {"text": "a\\ud800b"}}', "not a Telegram update"),  # a lone surrogate
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (as_json({"update_id": 6, "message": said | {"text": "a\x00b"}}), "NUL character"),
        (b'{"update_id": true}', "`$.update_id`"),
        (as_json({"update_id": 7, "message": "Hello"}), "`$.message`"),
        (as_json({"update_id": 8, "message": {"chat": PRIVATE, "text": "Hi"}}), "`message_id`"),
        (as_json({"update_id": 9, "message": said | {"chat": {"id": "x", "type": "private"}}}), "`$.message.chat.id`"),
        (as_json({"update_id": 10, "message": said | {"from": "Ada"}}), "`$.message.from`"),
        (as_json({"update_id": 11, "edited_message": said | {"text": 5}}), "`$.edited_message.text`"),
        (as_json({"update_id": 12, "callback_query": {"from": {"id": 5}, "data": "h"}}), "`id`"),
        (as_json({"update_id": 13, "my_chat_member": {"chat": PRIVATE, "new_chat_member": {}}}), "`status`"),
    ],
    ids=[
        "not-json",
        "no-update-id",
        "string-id",
        "negative-id",
        "id-past-int64",
        "lone-surrogate",
        "deep",
        "nul",
        "bool-id",
        "message-not-object",
        "no-message-id",
        "chat-id-not-int",
        "from-not-object",
        "text-not-string",
        "press-without-id",
        "member-without-status",
    ],
)
async def test_a_body_that_is_not_an_update_is_a_400_and_stores_nothing(
    tg: httpx.AsyncClient, container: Container, make_bot: MakeBot, body: bytes, detail: str
) -> None:
    """With the right secret, a body that is not an update, or an update whose fields the channel reads are missing
    or of the wrong type, is a 400 naming what is wrong: it was recorded and failed as it was processed, and the
    worker's sweep processed it again and again (``MAX_ATTEMPTS``)."""
    bot = await make_bot()
    headers = bot.secret_headers() | {"content-type": "application/json"}
    response = await tg.post(bot.hook(), headers=headers, content=body)
    assert response.status_code == 400 and detail in response.json()["detail"]
    async with tenant_session(container.sessionmaker, uuid.UUID(bot.coach.coach_id)) as session:
        assert await session.scalar(select(func.count()).select_from(TelegramUpdate)) == 0


async def test_an_update_with_fields_or_kinds_the_channel_does_not_read_is_taken(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """Telegram adds fields and update kinds over time: only what the channel reads is checked."""
    bot = await make_bot()
    chat_id = next(_chat_ids)
    update = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="/start")
    update["message"]["paid_star_count"] = {"new": ["field"]}
    update["business_message"] = {"anything": True}
    await post_update(tg, bot, update)
    await post_update(tg, bot, {"update_id": next(_chat_ids), "poll": {"id": "1"}})
    await drain(tg)
    assert fake.sent_to(chat_id)[-1].params["text"] == WELCOME


# ------------------------------------------------------------------------------------------- enrolment


async def test_an_invite_binds_the_chat_to_the_client_once(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """An invite binds the first chat that uses it; another chat is told it is used up, and the client tapping
    their own link again is welcomed again."""
    bot = await make_bot()
    client = (await tg.post("/api/v1/clients", headers=bot.coach.headers, json={"name": "Robin"})).json()
    response = await tg.post(f"/api/v1/clients/{client['id']}/telegram-invite", headers=bot.coach.headers)
    assert response.status_code == 201
    invite = response.json()
    assert invite["url"] == f"https://t.me/{bot.username}?start={invite['code']}"
    assert invite["code"] != client["widget_token"]
    first, second = next(_chat_ids), next(_chat_ids)
    await say(tg, bot, first, f"/start {invite['code']}")
    await say(tg, bot, second, f"/start {invite['code']}")
    assert fake.sent_to(first)[-1].params["text"] == WELCOME
    assert fake.sent_to(second)[-1].params["text"] == catalogue_text("tg_bad_invite", "en")
    await say(tg, bot, first, f"/start {invite['code']}")  # the client taps their own link again
    assert [c.params["text"] for c in fake.sent_to(first)] == [WELCOME, WELCOME]
    await say(tg, bot, first, "Hello there")
    conversation = await conversation_of(tg, bot, client["id"])
    assert conversation["channel"] == "telegram"
    assert [m["text"] for m in conversation["messages"] if m["sender_type"] == "client"] == ["Hello there"]
    missing = await tg.post(f"/api/v1/clients/{uuid.uuid4()}/telegram-invite", headers=bot.coach.headers)
    assert missing.status_code == 404 and missing.json()["detail"]


async def test_an_invite_expires_after_a_week_and_a_new_one_revokes_the_unused_ones(
    tg: httpx.AsyncClient, container: Container, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """An unused link stops working after ``INVITE_TTL`` (a link forwarded or found later binds no chat), and
    making a new invite for the client revokes their earlier unused ones (a link sent to the wrong person)."""
    bot = await make_bot()
    client = (await tg.post("/api/v1/clients", headers=bot.coach.headers, json={"name": "Robin"})).json()
    url = f"/api/v1/clients/{client['id']}/telegram-invite"
    sent_wrong = (await tg.post(url, headers=bot.coach.headers)).json()
    invite = (await tg.post(url, headers=bot.coach.headers)).json()
    expires = datetime.fromisoformat(invite["expires_at"])
    assert abs(expires - datetime.now(UTC) - INVITE_TTL) < timedelta(minutes=1)
    stranger, robin = next(_chat_ids), next(_chat_ids)
    await say(tg, bot, stranger, f"/start {sent_wrong['code']}")
    assert fake.sent_to(stranger)[-1].params["text"] == catalogue_text("tg_bad_invite", "en")
    async with tenant_session(container.sessionmaker, uuid.UUID(bot.coach.coach_id)) as session:
        await session.execute(update(TelegramInvite).values(created_at=func.now() - INVITE_TTL - timedelta(minutes=1)))
    await say(tg, bot, robin, f"/start {invite['code']}")
    assert fake.sent_to(robin)[-1].params["text"] == catalogue_text("tg_bad_invite", "en")
    fresh = (await tg.post(url, headers=bot.coach.headers)).json()
    await say(tg, bot, robin, f"/start {fresh['code']}")
    assert fake.sent_to(robin)[-1].params["text"] == WELCOME


async def test_open_enrollment_on_creates_a_client_and_off_asks_for_an_invite(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    bot = await make_bot()
    chat_id = next(_chat_ids)
    await say(tg, bot, chat_id, "Hi, I found you online")
    clients = (await tg.get("/api/v1/clients", headers=bot.coach.headers)).json()
    assert [c["name"] for c in clients] == ["Ada Lovelace"]
    response = await tg.put(
        "/api/v1/channels/telegram", headers=bot.coach.headers, json={"bot_token": bot.token, "open_enrollment": False}
    )
    assert response.status_code == 200 and response.json()["open_enrollment"] is False
    bot.secret = fake.of("setWebhook", bot.token)[-1].params["secret_token"]
    stranger = next(_chat_ids)
    await say(tg, bot, stranger, "Hello?")
    assert fake.sent_to(stranger)[-1].params["text"] == catalogue_text("tg_ask_for_invite", "en")
    assert len((await tg.get("/api/v1/clients", headers=bot.coach.headers)).json()) == 1


async def test_a_strangers_first_messages_at_once_make_one_client_and_one_conversation(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """Two messages of a new chat arrive together (a backlog after downtime): one client is enrolled and both
    messages go to one conversation, each answered in turn (each used to enrol a client, or start a conversation)."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id = next(_chat_ids)
    updates = [recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text=t) for t in ("Hi", "Me again")]
    await asyncio.gather(*(post_update(tg, bot, update) for update in updates))
    await drain(tg)
    [client] = (await tg.get("/api/v1/clients", headers=bot.coach.headers)).json()
    conversation = await conversation_of(tg, bot, client["id"])
    assert sorted(m["text"] for m in conversation["messages"] if m["sender_type"] == "client") == ["Hi", "Me again"]
    assert [m["sender_type"] for m in conversation["messages"]] == ["client", "ai", "client", "ai"]


async def test_a_stranger_enrolled_by_two_processes_at_once_is_one_client(
    tg: httpx.AsyncClient, tg_settings: Settings, services: Services, registry: ProviderRegistry, make_bot: MakeBot
) -> None:
    """A stranger's first two messages taken by two web processes at once (each has its own per-chat lock):
    both enrol the chat, one client is made, and the later process is told it is not new (no second
    welcome)."""
    bot = await make_bot()
    coach_id, chat_id = uuid.UUID(bot.coach.coach_id), next(_chat_ids)
    other = await Container.create(tg_settings, services.database_url, services.redis_url, registry=registry)
    try:
        here, there = tg.app.state.telegram.service, build_channel(other).service  # type: ignore[attr-defined]
        enrolled = await asyncio.gather(here.enrol(coach_id, chat_id, "Alex"), there.enrol(coach_id, chat_id, "Alex"))
    finally:
        await other.close()
    assert {client_id for client_id, _ in enrolled} == {(await here.binding(coach_id, chat_id)).client_id}
    assert sorted(new for _, new in enrolled) == [False, True]
    assert len((await tg.get("/api/v1/clients", headers=bot.coach.headers)).json()) == 1


async def test_a_chats_first_messages_taken_by_two_processes_at_once_make_one_conversation(
    tg: httpx.AsyncClient,
    tg_settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    fake: FakeBotApi,
    make_bot: MakeBot,
) -> None:
    """A bound chat's first two messages handled by two web processes at once: both go to one conversation,
    each answered (each process's own per-chat lock let both read the chat with no conversation yet, and each
    began one)."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    coach_id = uuid.UUID(bot.coach.coach_id)
    other = await Container.create(tg_settings, services.database_url, services.redis_url, registry=registry)
    there = build_channel(other)
    try:
        here = tg.app.state.telegram  # type: ignore[attr-defined]
        first, second = (
            recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text=text)
            for text in ("Hi from one process", "Hi from the other")
        )
        await asyncio.gather(here.process(coach_id, first), there.process(coach_id, second))
    finally:
        await there.service.close()
        await other.close()
    conversation = await conversation_of(tg, bot, client_id)  # one conversation of the client
    assert sorted(m["text"] for m in conversation["messages"] if m["sender_type"] == "client") == [
        "Hi from one process",
        "Hi from the other",
    ]
    assert [m["sender_type"] for m in conversation["messages"]] == ["client", "ai", "client", "ai"]


async def test_a_chats_turn_lock_outlives_a_raised_model_timeout(
    tg_settings: Settings, services: Services, registry: ProviderRegistry
) -> None:
    """An install that raises ``LLM_TIMEOUT_SECONDS`` gets a chat turn lock that outlives the turn's model work
    (the fixed 180 s lock lapsed mid-turn, and another process could answer the chat's next message meanwhile).
    The chat is busy (a message arriving is screened for a crisis at once) only while a stored message is
    answered, in this process and the others, not while the lock's holder still reads or stores its message (a
    message screened then could be stored before it)."""
    settings = tg_settings.model_copy(update={"llm_timeout_seconds": 600.0})
    container = await Container.create(settings, services.database_url, services.redis_url, registry=registry)
    channel, other = build_channel(container), ChatLocks(container.redis)
    coach_id, chat_id = uuid.uuid4(), next(_chat_ids)
    try:
        async with channel.locks.hold(coach_id, {"chat": {"id": chat_id, "type": "private"}}):
            lifetime_ms = await container.redis.pttl(f"telegram:turn-lock:{coach_id}:{chat_id}")
            storing = await channel.locks.busy(coach_id, chat_id)
            async with channel.locks.answering(coach_id, chat_id):
                answering = (await channel.locks.busy(coach_id, chat_id), await other.busy(coach_id, chat_id))
            answered = (await channel.locks.busy(coach_id, chat_id), await other.busy(coach_id, chat_id))
    finally:
        await channel.service.close()
        await container.close()
    assert 600_000 < lifetime_ms <= 660_000
    assert (storing, answering, answered) == (False, (True, True), (False, False))


async def test_a_chats_turn_lock_is_renewed_while_held_and_forgotten_once_released(services: Services) -> None:
    """A turn that outlasts the lock's lifetime (waiting for a turn slot under overload, or for a 429's
    ``retry_after``) keeps its chat: the holder renews the lock, and the chat's busy mark, while it holds them
    (a fixed lifetime lapsed mid-turn, and another process could answer the chat's next message meanwhile). The
    process keeps no lock for a chat no message holds or waits for (one per chat ever seen was kept)."""
    redis = connect_redis(services.redis_url, socket_timeout_s=2.0)
    locks, other = ChatLocks(redis, hold_s=0.6), ChatLocks(redis, hold_s=0.6)  # two processes
    coach_id, chat_id = uuid.uuid4(), next(_chat_ids)
    try:
        async with locks.hold(coach_id, {"chat": {"id": chat_id}}), locks.answering(coach_id, chat_id):
            await asyncio.sleep(1.5)  # 2.5 lifetimes
            lock_ms = await redis.pttl(f"telegram:turn-lock:{coach_id}:{chat_id}")
            busy = await other.busy(coach_id, chat_id)
        released = await redis.exists(f"telegram:turn-lock:{coach_id}:{chat_id}")
        kept = dict(locks._local)
    finally:
        await redis.aclose()
    assert 0 < lock_ms <= 600 and busy, "held and busy past the lifetime"
    assert not released and not kept


async def test_a_bot_client_replaced_by_a_new_token_is_closed_after_its_grace_and_the_rest_at_shutdown(
    tg: httpx.AsyncClient,
    tg_settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    fake: FakeBotApi,
    make_bot: MakeBot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coach connects the bot again with a new token: the Bot API client cached for the old one is not
    dropped open (its HTTP connection pools leaked until the process ended) but closed once a reply it may be
    streaming had time to end; a process stopping closes its clients at once."""
    # the clients themselves, compared with ``is`` (a Bot compares by its getMe user, which these clients never
    # fetched; an id could be that of a client closed and freed earlier, such as the one connecting made)
    closed: list[CoachBot] = []
    shutdown = CoachBot.shutdown

    async def recorded_shutdown(self: CoachBot) -> None:
        closed.append(self)
        await shutdown(self)

    monkeypatch.setattr(CoachBot, "shutdown", recorded_shutdown)
    bot = await make_bot()
    coach_id = uuid.UUID(bot.coach.coach_id)
    other = await Container.create(tg_settings, services.database_url, services.redis_url, registry=registry)
    try:
        service = build_channel(other).service
        service.retire_after_s = 0.2
        old = await service.bot(coach_id)
        assert await service.bot(coach_id) is old, "cached while the token is the same"
        token, _ = new_token(fake)
        reconnected = await tg.put("/api/v1/channels/telegram", headers=bot.coach.headers, json={"bot_token": token})
        assert reconnected.status_code == 200, reconnected.text
        new = await service.bot(coach_id)  # this process sees the token changed
        assert new is not old and not _among(old, closed), "not closed under a call that may still use it"
        await asyncio.sleep(0.5)
        assert _among(old, closed) and not _among(new, closed)
        await service.close()
        assert _among(new, closed)
    finally:
        await other.close()


def _among(bot: CoachBot, closed: list[CoachBot]) -> bool:
    return any(each is bot for each in closed)


async def test_strangers_over_the_enrollment_limit_are_asked_to_wait_and_no_client_is_made(
    tg: httpx.AsyncClient,
    tg_settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    fake: FakeBotApi,
    make_bot: MakeBot,
) -> None:
    bot = await make_bot()
    limited = tg_settings.model_copy(update={"telegram_enrollment_limit": "1/hour"})
    async with served(limited, services, registry) as client:
        first, second = next(_chat_ids), next(_chat_ids)
        await say(client, bot, first, "Hi, I found you online")
        await say(client, bot, second, "Hi, me too")
        # an invited client is not a stranger: invites still bind whatever the limit
        await bound_chat(client, bot, fake, name="Invited")
    assert fake.sent_to(first)[-1].params["text"] != catalogue_text("tg_enrollment_full", "en")
    assert fake.sent_to(second)[-1].params["text"] == catalogue_text("tg_enrollment_full", "en")
    clients = (await tg.get("/api/v1/clients", headers=bot.coach.headers)).json()
    assert sorted(c["name"] for c in clients) == ["Ada Lovelace", "Invited"]


# ------------------------------------------------------------------------------------------- the turn


async def test_a_cited_answer_streams_with_typing_footnotes_escaping_and_feedback_buttons(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    bot = await make_bot(material=True, jobs=tg_jobs, confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    await say(tg, bot, chat_id, "What is the two-minute reset?")
    assert fake.of("sendChatAction")[-1].params["action"] == "typing"
    calls = fake.sent_to(chat_id)
    final = calls[-1]
    assert final.method == "editMessageText" and final.params["parse_mode"] == "HTML"
    # Telegram's servers would fetch a URL in the reply for its preview before anyone opens it
    assert all(c.params["link_preview_options"] == {"is_disabled": True} for c in calls if "text" in c.params)
    assert final.params["text"].startswith(render.escape(REPLY)) and "&lt;now&gt;" in final.params["text"]
    assert "<i>[1] The Two-Minute Reset</i>" in final.params["text"]  # (its heading, not its file name)
    keyboard = final.params["reply_markup"]["inline_keyboard"]
    conversation = await conversation_of(tg, bot, client_id)
    ai = [m for m in conversation["messages"] if m["sender_type"] == "ai"][-1]
    assert keyboard[0][0]["callback_data"] == f"f:{uuid.UUID(ai['id']).hex}:1"
    await post_update(
        tg,
        bot,
        recorded("callback_query", update_id=next(_chat_ids), chat_id=chat_id, data=keyboard[0][1]["callback_data"]),
    )
    await drain(tg)
    assert fake.of("answerCallbackQuery")[-1].params["text"] == "Thanks for the feedback!"
    conversation = await conversation_of(tg, bot, client_id)
    rated = [m for m in conversation["messages"] if m["id"] == ai["id"]][0]
    assert rated["metadata"]["feedback"]["helpful"] is False


async def test_streaming_edits_at_most_once_per_interval(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, llm: respx.MockRouter
) -> None:
    """A slow model: the reply is sent once, then edited no more often than ``edit_interval_s``."""
    import asyncio

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            for chunk in openai_sse(["word "] * 12, (5, 12)).split(b"\n\n"):
                if chunk:
                    yield chunk + b"\n\n"
                    await asyncio.sleep(0.1)

    llm.routes["completions"].mock(
        side_effect=lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Slow())
    )
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    channel.edit_interval_s = 0.4
    try:
        bot = await make_bot(handoff_mode="auto", confidence_threshold=0.0)
        chat_id, _ = await bound_chat(tg, bot, fake)
        await say(tg, bot, chat_id, "Tell me something")
    finally:
        channel.edit_interval_s = 1.0
    calls = [c for c in fake.sent_to(chat_id) if c.params.get("text") != WELCOME]
    assert calls[0].method == "sendMessage" and all(c.method == "editMessageText" for c in calls[1:])
    streamed = calls[1:-1]  # the last edit is the final text
    assert len(streamed) >= 1
    gaps = [b.at - a.at for a, b in zip(calls, streamed, strict=False)]
    assert all(gap >= 0.35 for gap in gaps), gaps


async def test_a_duplicate_update_id_makes_one_turn(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, llm: respx.MockRouter
) -> None:
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    calls_before = llm.routes["completions"].call_count
    update_id = next(_chat_ids)
    await say(tg, bot, chat_id, "How do I start my day?", update_id=update_id)
    await say(tg, bot, chat_id, "How do I start my day?", update_id=update_id)
    conversation = await conversation_of(tg, bot, client_id)
    assert [m["sender_type"] for m in conversation["messages"]] == ["client", "ai"]
    assert llm.routes["completions"].call_count == calls_before + 1


async def test_a_client_over_the_message_limit_is_told_to_wait_and_nothing_is_stored(
    tg_settings: Settings, services: Services, registry: ProviderRegistry, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    bot = await make_bot(confidence_threshold=0.0)
    limited = tg_settings.model_copy(update={"chat_rate_limit": "2/minute"})
    async with served(limited, services, registry) as client:
        chat_id, client_id = await bound_chat(client, bot, fake)
        for text in ("How do I start my day?", "And how do I end it?", "One more thing"):
            await say(client, bot, chat_id, text)
        conversation = await conversation_of(client, bot, client_id)
    assert [m["text"] for m in conversation["messages"] if m["sender_type"] == "client"] == [
        "How do I start my day?",
        "And how do I end it?",
    ]
    assert re.fullmatch(r"Too many requests: try again in \d+ s\.", fake.sent_to(chat_id)[-1].params["text"])


async def test_an_edited_message_is_stored_and_answered_as_a_new_message_once(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, llm: respx.MockRouter
) -> None:
    """README "In the chat": an edit is a new message of the chat (the original stays); each edit makes one turn
    even when its update comes again under another ``update_id``; edited commands and unbound chats are ignored."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    update_id = next(_chat_ids)
    await say(tg, bot, chat_id, "Hello", update_id=update_id)
    calls_before = llm.routes["completions"].call_count
    edit = recorded("edited_message", update_id=next(_chat_ids), chat_id=chat_id, message_id=update_id % 2**31)
    await post_update(tg, bot, edit)
    await drain(tg)
    assert llm.routes["completions"].call_count == calls_before + 1
    assert fake.sent_to(chat_id)[-1].params["text"].startswith(render.escape(REPLY))
    await post_update(tg, bot, edit | {"update_id": next(_chat_ids)})  # the same edit again: no second turn
    command = recorded("edited_message", update_id=next(_chat_ids), chat_id=chat_id, text="/forget")
    await post_update(tg, bot, command)
    stranger = next(_chat_ids)
    await post_update(tg, bot, recorded("edited_message", update_id=next(_chat_ids), chat_id=stranger))
    await drain(tg)
    assert llm.routes["completions"].call_count == calls_before + 1
    assert fake.sent_to(stranger) == [] and fake.sent_to(chat_id)[-1].params["text"].startswith(render.escape(REPLY))
    conversation = await conversation_of(tg, bot, client_id)
    assert [(m["sender_type"], m["text"]) for m in conversation["messages"] if m["sender_type"] == "client"] == [
        ("client", "Hello"),
        ("client", "Hello, I meant: good morning"),
    ]
    assert [m["sender_type"] for m in conversation["messages"]] == ["client", "ai", "client", "ai"]


async def test_an_update_whose_process_died_before_storing_it_is_processed_when_sent_again_or_swept(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, llm: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web process records the ``update_id`` and dies before the message is stored (here: the update is
    recorded but never dispatched). Telegram's re-send is then processed once the claim is old, not dropped as a
    duplicate; an update acknowledged but never processed (no re-send comes) is processed by the worker's sweep
    (:meth:`TelegramChannel.recover`, the ``telegram_recover`` cron)."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    lost = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="Are you there?")
    swept = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="Hello again")
    with monkeypatch.context() as patch:
        patch.setattr(channel, "dispatch", lambda *args: None)  # the process dies after recording
        await post_update(tg, bot, lost)
        await post_update(tg, bot, swept)
    calls_before = llm.routes["completions"].call_count
    await post_update(tg, bot, lost)  # a re-send while the claim is fresh: maybe still in progress elsewhere
    await drain(tg)
    assert llm.routes["completions"].call_count == calls_before
    monkeypatch.setattr(channel.service.updates, "reclaim_after_s", 0.2)
    await asyncio.sleep(0.3)
    await post_update(tg, bot, lost)  # Telegram sends it again: processed now
    await drain(tg)
    assert llm.routes["completions"].call_count == calls_before + 1
    assert fake.sent_to(chat_id)[-1].params["text"].startswith(render.escape(REPLY))
    await post_update(tg, bot, lost)  # processed: a further re-send is a duplicate
    await drain(tg)
    assert llm.routes["completions"].call_count == calls_before + 1
    assert await channel.recover() == 1  # the acknowledged one that Telegram will not send again
    assert await channel.recover() == 0
    assert llm.routes["completions"].call_count == calls_before + 2
    conversation = await conversation_of(tg, bot, client_id)
    texts = [m["text"] for m in conversation["messages"] if m["sender_type"] == "client"]
    assert texts == ["Are you there?", "Hello again"]
    assert [m["sender_type"] for m in conversation["messages"]] == ["client", "ai", "client", "ai"]


async def stored_update(container: Container, bot: Bot, update_id: int) -> TelegramUpdate:
    async with tenant_session(container.sessionmaker, uuid.UUID(bot.coach.coach_id)) as session:
        row = await session.scalar(select(TelegramUpdate).where(TelegramUpdate.update_id == update_id))
    assert row is not None
    return row


async def test_an_update_that_fails_before_its_message_is_stored_is_processed_again_by_the_sweep(
    tg: httpx.AsyncClient,
    container: Container,
    fake: FakeBotApi,
    make_bot: MakeBot,
    llm: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Processing an update raises before the client's message is stored (the database out of reach a moment).
    Telegram has its 200 and sends nothing again: the update stays, with its payload, and the worker's sweep
    processes it, the message stored and answered once. An update that fails every time is given up after
    ``MAX_ATTEMPTS`` attempts (marked done, its payload dropped) instead of being swept for ever."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    flaky_binding, failures = failing_once(channel.service.binding)
    monkeypatch.setattr(channel.service, "binding", flaky_binding)
    update = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="Are you there?")
    await post_update(tg, bot, update)
    await drain(tg)
    assert not failures
    row = await stored_update(container, bot, update["update_id"])
    assert row.done_at is None and row.attempts == 1 and row.payload == update
    listed = (await tg.get("/api/v1/conversations", headers=bot.coach.headers)).json()
    assert [c for c in listed if c["client_id"] == client_id] == []  # nothing stored yet
    monkeypatch.setattr(channel.service.updates, "reclaim_after_s", 0.2)
    await asyncio.sleep(0.3)
    calls_before = llm.routes["completions"].call_count
    assert await channel.recover() == 1
    assert llm.routes["completions"].call_count == calls_before + 1
    assert fake.sent_to(chat_id)[-1].params["text"].startswith(render.escape(REPLY))
    conversation = await conversation_of(tg, bot, client_id)
    assert [(m["sender_type"], m["text"]) for m in conversation["messages"]][0] == ("client", "Are you there?")
    assert [m["sender_type"] for m in conversation["messages"]] == ["client", "ai"]
    assert (await stored_update(container, bot, update["update_id"])).done_at is not None

    async def unreachable(*args: Any) -> Any:
        raise OSError("the database is out of reach")

    monkeypatch.setattr(channel.service, "binding", unreachable)
    poisoned = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="Hello again")
    await post_update(tg, bot, poisoned)
    await drain(tg)
    for attempt in range(2, MAX_ATTEMPTS + 1):
        await asyncio.sleep(0.3)
        assert await channel.recover() == 1
        assert (await stored_update(container, bot, poisoned["update_id"])).attempts == attempt
    row = await stored_update(container, bot, poisoned["update_id"])
    assert row.done_at is not None and row.payload is None
    await asyncio.sleep(0.3)
    assert await channel.recover() == 0


async def test_an_update_processed_again_sends_nothing_it_sent_before(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update is processed again when its process could not mark it done (the database out of reach a moment,
    or the process died): the worker's sweep took it again and the chat got the ``/start`` welcome twice, or "I can
    read text messages" twice. What its processing sent is now recorded with it, and not sent again."""
    bot = await make_bot()
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    client = (await tg.post("/api/v1/clients", headers=bot.coach.headers, json={"name": "Robin"})).json()
    invite = (await tg.post(f"/api/v1/clients/{client['id']}/telegram-invite", headers=bot.coach.headers)).json()
    invited, stranger = next(_chat_ids), next(_chat_ids)
    done, failures = failing_once(channel.service.updates.done)
    monkeypatch.setattr(channel.service.updates, "done", done)
    await say(tg, bot, invited, f"/start {invite['code']}")
    assert not failures
    done, failures = failing_once(channel.service.updates.done)
    monkeypatch.setattr(channel.service.updates, "done", done)
    await post_update(tg, bot, recorded("photo_message", update_id=next(_chat_ids), chat_id=stranger))  # enrols
    await drain(tg)
    assert not failures
    monkeypatch.setattr(channel.service.updates, "reclaim_after_s", 0.2)
    await asyncio.sleep(0.3)
    assert await channel.recover() == 2
    assert [c.params["text"] for c in fake.sent_to(invited)] == [WELCOME]
    assert [c.params["text"] for c in fake.sent_to(stranger)] == [WELCOME, catalogue_text("tg_non_text", "en")]


def dying(channel: Any, patch: pytest.MonkeyPatch) -> list[asyncio.Task[None]]:
    """Updates dispatched from now on are processed in tasks the test can cancel (their process dies)."""
    tasks: list[asyncio.Task[None]] = []
    patch.setattr(channel, "dispatch", lambda *args: tasks.append(asyncio.create_task(channel.process(*args))))
    return tasks


async def die(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_reply_whose_process_died_while_streaming_goes_on_in_the_streamed_message(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, llm: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process died while the reply streamed (its first words were in the chat). Telegram's re-send of the
    update was answered in a second streamed message, below the first one's fragment; it now goes on in the
    streamed message, and the chat shows the reply once."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, _ = await bound_chat(tg, bot, fake)
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    started = asyncio.Event()

    class Stuck(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            # its role, then every word: the stream runs HELD_WORDS behind the model, so "Stop" is shown
            for chunk in openai_sse(DELTAS, (80, 10)).split(b"\n\n")[:10]:
                yield chunk + b"\n\n"
            started.set()
            await asyncio.Event().wait()

    update = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="How do I calm down?")
    with monkeypatch.context() as patch:
        llm.routes["completions"].mock(
            side_effect=lambda request: httpx.Response(
                200, headers={"content-type": "text/event-stream"}, stream=Stuck()
            )
        )
        tasks = dying(channel, patch)
        await post_update(tg, bot, update)
        await asyncio.wait_for(started.wait(), 30)
        for _ in range(100):
            if fake.shown(chat_id)[1:]:
                break
            await asyncio.sleep(0.05)
        assert [text.strip() for text in fake.shown(chat_id)] == [WELCOME, "Stop"]
        await die(tasks)
    llm.routes["completions"].mock(side_effect=lambda request: sse_response(openai_sse(DELTAS, (80, 10))))
    monkeypatch.setattr(channel.service.updates, "reclaim_after_s", 0.2)
    await asyncio.sleep(0.3)
    await post_update(tg, bot, update)  # Telegram sends it again
    await drain(tg)
    assert fake.shown(chat_id) == [WELCOME, render.escape(REPLY)]


async def test_a_reply_stored_by_a_process_that_died_before_the_chat_showed_it_is_shown_by_the_sweep(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process died after the reply was stored, before the chat showed it: processed again, the message was
    found answered and nothing more was sent, so the chat kept the streamed fragment and never got the reply. The
    stored reply is now shown in the streamed message."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    finishing = asyncio.Event()

    async def stuck(*args: Any) -> None:
        finishing.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as patch:
        patch.setattr(replies.ReplyStream, "finish", stuck)
        tasks = dying(channel, patch)
        await post_update(tg, bot, recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="Hi"))
        await asyncio.wait_for(finishing.wait(), 30)
        await die(tasks)
    [welcome, fragment] = fake.shown(chat_id)
    assert welcome == WELCOME and fragment.strip() and render.escape(REPLY).startswith(fragment.strip())
    assert [m["sender_type"] for m in (await conversation_of(tg, bot, client_id))["messages"]] == ["client", "ai"]
    monkeypatch.setattr(channel.service.updates, "reclaim_after_s", 0.2)
    await asyncio.sleep(0.3)
    assert await channel.recover() == 1
    assert fake.shown(chat_id) == [WELCOME, render.escape(REPLY)]
    assert last_keyboard(fake, chat_id)[0][0]["text"] == "👍"


async def test_a_long_reply_partly_shown_then_queued_is_not_sent_again_when_its_update_is_processed_again(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    llm: respx.MockRouter,
    tg_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reply in several messages: the first went out, Telegram refused the next one for a moment (the rest went
    to the chat's outbox), and the update could not be marked done. Processed again, it shows nothing a second time:
    the outbox sends the rest, once."""
    long = " ".join(f"Sentence number {n} is here." for n in range(300))
    llm.routes["completions"].mock(side_effect=lambda request: sse_response(openai_sse([long], (80, 900))))
    # a reply this long needs a limit of its length (the suite's 40 tokens stop a reply at 480 characters)
    monkeypatch.setattr(tg.app.state.container.settings, "llm_max_tokens", 1000)  # type: ignore[attr-defined]
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, _ = await bound_chat(tg, bot, fake)
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    fake.fail("sendMessage", 502, "Bad Gateway", after=1)
    done, failures = failing_once(channel.service.updates.done)
    monkeypatch.setattr(channel.service.updates, "done", done)
    await say(tg, bot, chat_id, "Tell me everything")
    assert not failures
    monkeypatch.setattr(channel.service.updates, "reclaim_after_s", 0.2)
    await asyncio.sleep(0.3)
    assert await channel.recover() == 1
    await tg_jobs()
    parts = render.split_html(long)
    assert len(parts) > 1 and fake.shown(chat_id) == [WELCOME, *parts]


async def test_a_new_bot_of_the_coach_answers_messages_numbered_as_the_old_bots_were(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    llm: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coach replaces the bot (a new token): the client's chat keeps its binding (a private chat's id is the
    client's user id, whatever the bot), and the new bot numbers its messages, and maybe its updates, from its
    own start. A message whose number the old bot's chat used, in an update whose id it used, is a new message:
    stored and answered, not taken for the old one."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    first = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="Hello", message_id=40)
    await post_update(tg, bot, first)
    await drain(tg)
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:  # an update of the old bot recorded, its process gone before processing
        patch.setattr(channel, "dispatch", lambda *args: None)
        await post_update(tg, bot, recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="Hm"))
    token, _ = new_token(fake)
    replaced = await tg.put("/api/v1/channels/telegram", headers=bot.coach.headers, json={"bot_token": token})
    assert replaced.status_code == 200, replaced.text
    assert fake.of("deleteWebhook", bot.token), "the old bot's webhook no longer points at a webhook that refuses it"
    new = Bot(
        bot.coach, token, replaced.json()["bot_username"], fake.of("setWebhook", token)[-1].params["secret_token"]
    )
    calls_before = llm.routes["completions"].call_count
    again = recorded("text_message", update_id=first["update_id"], chat_id=chat_id, text="Still there?", message_id=40)
    await post_update(tg, new, again)
    await drain(tg)
    assert llm.routes["completions"].call_count == calls_before + 1
    assert fake.sent_to(chat_id)[-1].token == token
    conversation = await conversation_of(tg, new, client_id)
    texts = [m["text"] for m in conversation["messages"] if m["sender_type"] == "client"]
    assert texts == ["Hello", "Still there?"]
    assert [m["sender_type"] for m in conversation["messages"]] == ["client", "ai", "client", "ai"]
    monkeypatch.setattr(channel.service.updates, "reclaim_after_s", 0.0)
    assert await channel.recover() == 0, "the old bot's unprocessed update is not sent through the new bot"


async def test_an_update_whose_turn_outlasts_the_reclaim_window_is_not_taken_from_its_process(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, llm: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow model keeps the turn going past the reclaim window: the process renews the update's claim, so
    neither the sweep nor a re-send processes it a second time (the answer used to be generated twice)."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    monkeypatch.setattr(channel.service.updates, "reclaim_after_s", 0.3)
    asked, go_on = asyncio.Event(), asyncio.Event()

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            asked.set()
            await go_on.wait()
            yield openai_sse(["Take", " your", " time", "."], (5, 4))

    llm.routes["completions"].mock(
        side_effect=lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Slow())
    )
    update = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="Are you there?")
    calls_before = llm.routes["completions"].call_count
    await post_update(tg, bot, update)
    await asyncio.wait_for(asked.wait(), 30)
    await asyncio.sleep(1.0)  # over three reclaim windows into the turn
    assert await channel.recover() == 0
    await post_update(tg, bot, update)  # Telegram's re-send
    go_on.set()
    await drain(tg)
    assert llm.routes["completions"].call_count == calls_before + 1
    conversation = await conversation_of(tg, bot, client_id)
    assert [m["sender_type"] for m in conversation["messages"]] == ["client", "ai"]


async def test_non_text_messages_get_a_polite_reply_and_store_nothing(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    bot = await make_bot()
    chat_id, client_id = await bound_chat(tg, bot, fake)
    await post_update(tg, bot, recorded("photo_message", update_id=next(_chat_ids), chat_id=chat_id))
    await drain(tg)
    assert fake.sent_to(chat_id)[-1].params["text"] == catalogue_text("tg_non_text", "en")
    listed = (await tg.get("/api/v1/conversations", headers=bot.coach.headers)).json()
    assert [c for c in listed if c["client_id"] == client_id] == []
    # a caption is what the client wrote: stored and answered, the crisis screen included
    captioned = recorded("photo_message", update_id=next(_chat_ids), chat_id=chat_id)
    captioned["message"]["caption"] = caption = "I want to end my life tonight"
    await post_update(tg, bot, captioned)
    await drain(tg)
    conversation = await conversation_of(tg, bot, client_id)
    assert [m["text"] for m in conversation["messages"] if m["sender_type"] == "client"] == [caption]
    [handoff] = (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()
    assert handoff["reason"] == "crisis"


async def remember(container: Container, bot: Bot, client_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Seed what the assistant remembers about the client: an insight and a summarised session; their ids."""
    coach_id, client = uuid.UUID(bot.coach.coach_id), uuid.UUID(client_id)
    now = datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        conversation = Conversation(coach_id=coach_id, client_id=client, channel="telegram")
        session.add(conversation)
        await session.flush()
        insight = Insight(
            coach_id=coach_id,
            client_id=client,
            kind="goal",
            text="Robin wants to run a marathon <in May>",
            importance=8,
            status="active",
            mentions=1,
            source_message_ids=[],
            first_seen_at=now,
            last_seen_at=now,
            edited_by_coach=False,
            embedding=[1.0] + [0.0] * (EMBEDDING_DIMENSIONS - 1),
            embedding_model="test-unit-vectors",
        )
        summarized = ChatSession(
            coach_id=coach_id,
            client_id=client,
            conversation_id=conversation.id,
            status=SessionStatus.SUMMARIZED,
            started_at=now - timedelta(days=1),
            last_message_at=now - timedelta(days=1),
            ended_at=now - timedelta(days=1),
            message_count=4,
            summary={"summary": "Robin planned her training weeks.", "topics": [], "action_items": []},
            source_message_ids=[],
        )
        session.add_all([insight, summarized])
        await session.flush()
        return insight.id, summarized.id


async def test_forget_lists_what_is_remembered_and_a_button_deletes_it(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, container: Container
) -> None:
    bot = await make_bot()
    chat_id, client_id = await bound_chat(tg, bot, fake)
    insight_id, session_id = await remember(container, bot, client_id)
    await say(tg, bot, chat_id, "/forget")
    shown = fake.sent_to(chat_id)[-1]
    assert shown.method == "sendMessage" and shown.params["parse_mode"] == "HTML"
    assert "1. Robin wants to run a marathon &lt;in May&gt;" in shown.params["text"]
    assert "2. Our session of " in shown.params["text"] and "planned her training weeks" in shown.params["text"]
    buttons = [b for row in shown.params["reply_markup"]["inline_keyboard"] for b in row]
    assert [b["callback_data"] for b in buttons] == [f"m:i:{insight_id.hex}", f"m:s:{session_id.hex}"]

    async def press(data: str, message_id: int = 4242) -> None:
        update = recorded("callback_query", update_id=next(_chat_ids), chat_id=chat_id, data=data)
        update["callback_query"]["message"]["message_id"] = message_id
        await post_update(tg, bot, update)
        await drain(tg)

    await press(buttons[0]["callback_data"])
    assert fake.of("answerCallbackQuery", bot.token)[-1].params["text"] == catalogue_text("tg_forgotten", "en")
    edited = fake.sent_to(chat_id)[-1]
    assert edited.method == "editMessageText" and int(edited.params["message_id"]) == 4242
    assert "marathon" not in edited.params["text"] and "1. Our session of " in edited.params["text"]
    assert edited.params["reply_markup"]["inline_keyboard"] == [
        [{"text": "🗑 1", "callback_data": f"m:s:{session_id.hex}"}]
    ]
    async with tenant_session(container.sessionmaker, uuid.UUID(bot.coach.coach_id)) as session:
        forgotten = await session.get(Insight, insight_id)
        assert forgotten is not None and forgotten.status == "deleted" and forgotten.text == ""  # the widget's rule
    # pressed again in an old list (another message; on this one it is a second tap, which changes nothing):
    await press(buttons[0]["callback_data"], 4241)  # nothing left to delete
    assert fake.of("answerCallbackQuery", bot.token)[-1].params["text"] == catalogue_text("tg_already_forgotten", "en")
    await press(buttons[1]["callback_data"])
    last = fake.sent_to(chat_id)[-1]
    assert last.params["text"] == catalogue_text("tg_nothing_remembered", "en") and "reply_markup" not in last.params


# ------------------------------------------------------------------------------------------- handoff


async def test_human_command_and_button_hand_off(tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot) -> None:
    bot = await make_bot()
    chat_id, _ = await bound_chat(tg, bot, fake)
    await say(tg, bot, chat_id, "/human")
    [handoff] = (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()
    assert handoff["reason"] == "human_request" and handoff["status"] == "open"
    assert "asked" in fake.sent_to(chat_id)[-1].params["text"]
    other_id, _ = await bound_chat(tg, bot, fake, "Sam")
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    async with channel.locks.hold(uuid.UUID(bot.coach.coach_id), {"chat": {"id": other_id}}):  # a turn in progress
        await post_update(tg, bot, recorded("callback_query", update_id=next(_chat_ids), chat_id=other_id, data="h"))
        await asyncio.sleep(0.5)
        assert len((await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()) == 1  # the button waits
    await drain(tg)
    assert len((await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()) == 2
    assert fake.of("answerCallbackQuery")[-1].params["text"].startswith("Asking your coach")


async def test_commands_addressed_to_the_bot_by_its_username_work_and_help_lists_the_commands(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, llm: respx.MockRouter
) -> None:
    """Telegram sends ``/cmd@<bot username>`` for a command tapped in a message or sent in a group: it works as
    ``/cmd`` does (the username in any case), and reaches neither the transcript as written nor the model; a
    command addressed to another bot is none of this bot's: the client's message, answered as one. ``/help``
    lists the bot's commands in the sender's language."""
    bot = await make_bot()
    chat_id, client_id = await bound_chat(tg, bot, fake)
    completions = llm.routes["completions"]
    await say(tg, bot, chat_id, "/tone@another_coach_bot")
    assert completions.call_count == 1
    await say(tg, bot, chat_id, "/tone")
    tone = fake.sent_to(chat_id)[-1].params
    assert tone["parse_mode"] == "HTML" and tone["reply_markup"]["inline_keyboard"]
    await say(tg, bot, chat_id, f"/tone@{bot.username.upper()}")
    assert fake.sent_to(chat_id)[-1].params == tone
    await say(tg, bot, chat_id, f"/forget@{bot.username}")
    assert fake.sent_to(chat_id)[-1].params["text"] == catalogue_text("tg_nothing_remembered", "en")
    await say(tg, bot, chat_id, f"/help@{bot.username}")
    assert fake.sent_to(chat_id)[-1].params["text"] == catalogue_text("tg_help", "en")
    assert "/tone" in catalogue_text("tg_help", "en") and "/human" in catalogue_text("tg_help", "en")
    german = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="/help")
    german["message"]["from"]["language_code"] = "de"
    await post_update(tg, bot, german)
    await drain(tg)
    assert fake.sent_to(chat_id)[-1].params["text"] == catalogue_text("tg_help", "de")
    await say(tg, bot, chat_id, f"/human@{bot.username} please")
    [handoff] = (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()
    assert handoff["reason"] == "human_request" and handoff["status"] == "open"
    conversation = await conversation_of(tg, bot, client_id)
    client_said = [m["text"] for m in conversation["messages"] if m["sender_type"] == "client"]
    assert client_said == ["/tone@another_coach_bot", "/human please"] and completions.call_count == 1


async def test_a_double_tap_on_talk_to_a_human_asks_the_coach_once(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """Two taps on "Talk to a human" (two callback query ids, one keyboard) stored a second ask for the coach
    and answered both with "Asking your coach to join…"; the second tap is now answered and does nothing else."""
    bot = await make_bot()
    chat_id, client_id = await bound_chat(tg, bot, fake)
    taps = [recorded("callback_query", update_id=next(_chat_ids), chat_id=chat_id, data="h") for _ in range(2)]
    for tap in taps:
        await post_update(tg, bot, tap)
    await drain(tg)
    [handoff] = (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()
    assert handoff["reason"] == "human_request"
    messages = (await conversation_of(tg, bot, client_id))["messages"]
    assert [m["text"] for m in messages if m["sender_type"] == "client"] == [
        catalogue_text("widget_human_request", "en")
    ]
    ids = {tap["callback_query"]["id"] for tap in taps}
    pressed = [c for c in fake.of("answerCallbackQuery", bot.token) if c.params["callback_query_id"] in ids]
    answers = [c.params.get("text") for c in pressed]
    assert sorted(str(text) for text in answers) == ["Asking your coach to join…", "None"]


async def test_a_button_press_too_old_to_answer_still_does_what_it_says(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """A "Talk to a human" press processed late (again after its process died, or after a slow turn): Telegram
    refuses to answer the press itself, and the coach is asked to join all the same."""
    bot = await make_bot()
    chat_id, _ = await bound_chat(tg, bot, fake)
    fake.fail(
        "answerCallbackQuery", 400, "Bad Request: query is too old and response timeout expired or query id is invalid"
    )
    await post_update(tg, bot, recorded("callback_query", update_id=next(_chat_ids), chat_id=chat_id, data="h"))
    await drain(tg)
    [handoff] = (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()
    assert handoff["reason"] == "human_request" and handoff["status"] == "open"
    assert "asked" in fake.sent_to(chat_id)[-1].params["text"]


async def test_a_crisis_message_gets_the_crisis_reply_an_urgent_handoff_and_an_alert(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    receiver: Receiver,
    tg_jobs: Callable[[], Awaitable[None]],
) -> None:
    bot = await make_bot(alert_webhook_url=receiver.url)
    made = await tg.post("/api/v1/settings/alert-webhook-secret", headers=bot.coach.headers)  # (shown once: a new one)
    secret = made.json()["alert_webhook_secret"]
    chat_id, client_id = await bound_chat(tg, bot, fake)
    await say(tg, bot, chat_id, "I want to kill myself tonight")
    [handoff] = (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()
    assert handoff["reason"] == "crisis"
    sent = "".join(c.params["text"] for c in fake.sent_to(chat_id)[-3:])
    assert crisis_reply([])[:60] in sent.replace("&#x27;", "'") or render.escape(crisis_reply([])[:60]) in sent
    assert not fake.sent_to(chat_id)[-1].params.get("reply_markup"), "no thumbs under the crisis reply"
    await tg_jobs()
    [alert] = [Webhook(secret).verify(r.body, r.headers) for r in receiver.requests]
    assert alert["type"] == "handoff.opened" and alert["data"]["urgent"] is True
    assert alert["data"]["reason"] == "crisis" and alert["data"]["handoff_id"] == handoff["id"]
    assert alert["data"]["conversation_id"] == (await conversation_of(tg, bot, client_id))["id"]


async def test_a_crisis_sent_while_the_ai_answers_an_earlier_message_gets_the_crisis_reply_first(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    llm: respx.MockRouter,
    tg_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A chat's messages are answered one at a time (its turn lock spans the answer), and one answer can wait on
    the model for up to ``LLM_TIMEOUT_SECONDS``. A crisis message that arrives meanwhile is stored and screened at
    once: the crisis reply and the urgent handoff come while the earlier answer still waits on the model, and
    that answer is then kept out (the coach has the conversation)."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    await say(tg, bot, chat_id, "Hello")  # the chat has its conversation
    # (the worker's jobs are answered at once)
    asked, go_on = held_model(llm, DELTAS, holds=lambda request: b"plan my week" in request.content)
    update = functools.partial(recorded, "text_message", chat_id=chat_id)
    await post_update(tg, bot, update(update_id=next(_chat_ids), text="How can I plan my week better?"))
    await asyncio.wait_for(asked.wait(), 30)
    await post_update(tg, bot, update(update_id=next(_chat_ids), text="I want to kill myself tonight"))
    for _ in range(100):  # the crisis's handoff opens (at most 20 s) while the model still holds the answer
        if handoffs := (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json():
            break
        await asyncio.sleep(0.2)
    await tg_jobs()  # the chat's outbox sends the crisis reply
    calls_while_held = len(fake.calls)
    sent_while_held = "".join(c.params["text"] for c in fake.sent_to(chat_id)).replace("&#x27;", "'")
    go_on.set()
    await drain(tg)
    after = [c.method for c in fake.calls[calls_while_held:] if c.params.get("chat_id") == str(chat_id)]
    shown = [m for m in after if m in ("sendMessage", "editMessageText", "deleteMessage")]

    assert [h["reason"] for h in handoffs] == ["crisis"]
    assert crisis_reply([])[:60] in sent_while_held or render.escape(crisis_reply([])[:60]) in sent_while_held
    messages = (await conversation_of(tg, bot, client_id))["messages"]
    assert [(m["sender_type"], m["text"]) for m in messages][2:] == [
        ("client", "How can I plan my week better?"),
        ("client", "I want to kill myself tonight"),
        ("ai", messages[-1]["text"]),
    ]
    assert messages[-1]["metadata"].get("crisis") is True
    assert not shown or shown[-1] == "deleteMessage", "the earlier answer's streamed text is taken back"


def slow_model(
    llm: respx.MockRouter, words: list[str], every_s: float, *, slow: Callable[[httpx.Request], bool]
) -> list[int]:
    """The model streaming ``words``, one every ``every_s`` seconds, to the requests ``slow`` picks (the others get
    :data:`DELTAS` at once). Returns a list whose length counts the chunks of those streams read so far."""
    read: list[int] = []

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in openai_sse(words, (5, len(words))).split(b"\n\n"):
                if chunk:
                    read.append(1)
                    yield chunk + b"\n\n"
                    await asyncio.sleep(every_s)

    def completion(request: httpx.Request) -> httpx.Response:
        if not slow(request):
            return sse_response(openai_sse(DELTAS, (80, 10)))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Slow())

    llm.routes["completions"].mock(side_effect=completion)
    return read


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 20.0) -> Any:
    """Poll ``check`` every 0.05 s until it returns something truthy (returned), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (found := await check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return found


@pytest.mark.parametrize("taker", ["crisis", "takeover"])
async def test_a_reply_streaming_when_a_crisis_reply_or_the_coach_takes_the_conversation_is_deleted_at_once(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    llm: respx.MockRouter,
    tg_jobs: Callable[[], Awaitable[None]],
    taker: str,
) -> None:
    """A slow model streams the answer to "slowreply: …" when the client's next message gets the crisis reply, or
    when the coach takes the conversation over: the streamed answer stopped only when the model was done (edited
    every interval below the crisis reply or the coach's notice), then was deleted. Now the next check (once per
    edit interval) deletes it at once; no edit and no "typing…" follow, the model's stream is not read on, and
    nothing of the answer is stored (the message waits for the coach)."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    await say(tg, bot, chat_id, "Hello")  # the chat has its conversation
    conversation_id = (await conversation_of(tg, bot, client_id))["id"]
    words = ["Let", " me", " think", " about", " this", " slowly"] * 5
    read = slow_model(llm, words, 0.2, slow=lambda request: b"slowreply" in request.content)
    update = functools.partial(recorded, "text_message", chat_id=chat_id)
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    channel.edit_interval_s = 0.3
    try:
        await post_update(tg, bot, update(update_id=next(_chat_ids), text="slowreply: wie fange ich an?"))

        async def streamed() -> list[Any]:
            return [c for c in fake.sent_to(chat_id) if c.method == "editMessageText" and "Let me" in c.params["text"]]

        [first, *_] = await until(streamed)  # (sent, then edited: it streams)
        if taker == "crisis":
            text = "Ich will nicht mehr leben, ich bringe mich heute um"
            await post_update(tg, bot, update(update_id=next(_chat_ids), text=text))
        else:
            taken = await tg.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=bot.coach.headers)
            assert taken.status_code == 200, taken.text

        async def handoffs() -> list[Any]:
            return (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()  # type: ignore[no-any-return]

        await until(handoffs)
        taken_at = time.monotonic()
        await drain(tg)
    finally:
        channel.edit_interval_s = 1.0
    await tg_jobs()  # (the chat's outbox sends the crisis reply, or the coach's joined notice)
    calls = [c for c in fake.calls if c.params.get("chat_id") == str(chat_id)]
    [deleted] = [c for c in calls if c.method == "deleteMessage"]
    after = [c.method for c in calls[calls.index(deleted) :]]

    assert deleted.params["message_id"] == str(first.params["message_id"])
    assert deleted.at - taken_at < 1.0, "deleted at the next check, not when the model is done"
    assert "editMessageText" not in after and "sendChatAction" not in after
    assert len(read) < len(words), "the model's stream is not read on"
    texts = [m["text"] for m in (await conversation_of(tg, bot, client_id))["messages"] if m["sender_type"] == "ai"]
    assert not any("Let me" in t for t in texts)


async def test_a_low_confidence_notice_is_shown_though_its_own_handoff_took_the_conversation(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """The AI works on the reply ("typing…"), then hands off for low confidence: the notice saying the coach was asked
    to join is the turn's answer, streamed as any; the handoff it opened does not count as the conversation taken
    from the AI (the stream check above would delete it)."""
    bot = await make_bot(high_stakes_topics=["quitting my job"], confidence_threshold=0.95)
    chat_id, _ = await bound_chat(tg, bot, fake)
    await say(tg, bot, chat_id, "I'm thinking about quitting my job next week")

    [handoff] = (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()
    assert handoff["reason"] == "low_confidence"
    assert typing_shown(fake, chat_id) >= 1
    assert "join" in fake.shown(chat_id)[-1]
    assert not [c for c in fake.of("deleteMessage") if c.params["chat_id"] == str(chat_id)]


async def test_coach_takeover_messages_and_notices_reach_the_chat(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    await say(tg, bot, chat_id, "Hello")
    conversation_id = (await conversation_of(tg, bot, client_id))["id"]
    h = bot.coach.headers
    assert (await tg.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=h)).status_code == 200
    sent = await tg.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "Hi, it's me <3"}
    )
    assert sent.status_code == 201
    await tg_jobs()
    texts = [c.params["text"] for c in fake.sent_to(chat_id)]
    assert "Tele Coach joined the conversation." in texts and "Hi, it&#x27;s me &lt;3" not in texts
    assert "Hi, it's me &lt;3" in texts
    coach_message = [c for c in fake.sent_to(chat_id) if c.params["text"] == "Hi, it's me &lt;3"][0]
    assert coach_message.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "👍"
    await say(tg, bot, chat_id, "Thanks")  # the AI is paused: no AI reply
    assert fake.sent_to(chat_id)[-1].params["text"] == "Hi, it's me &lt;3"
    clients = [
        m["text"] for m in (await conversation_of(tg, bot, client_id))["messages"] if m["sender_type"] == "client"
    ]
    assert clients == ["Hello", "Thanks"]  # the coach got it
    assert (await tg.post(f"/api/v1/conversations/{conversation_id}/handback", headers=h)).status_code == 200
    await tg_jobs()
    assert any("left the conversation" in c.params["text"] for c in fake.sent_to(chat_id))


def typing_shown(fake: FakeBotApi, chat_id: int) -> int:
    """How many times "typing…" was shown in the chat (``sendChatAction``)."""
    return len([c for c in fake.of("sendChatAction") if int(c.params["chat_id"]) == chat_id])


async def test_typing_shows_only_while_the_ai_works_on_a_reply_for_the_client(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """ "typing…" showed for every message, also one the AI does not answer: while the coach has the conversation
    (taken over, or asked to join and not there yet) or in draft mode, where the reply waits for the coach."""
    bot, chat_id, _ = await taken_over(tg, fake, make_bot, tg_jobs)
    assert typing_shown(fake, chat_id) >= 1  # ("Hello", answered by the AI)
    before = typing_shown(fake, chat_id)
    await say(tg, bot, chat_id, "Thanks")  # the coach has it
    assert typing_shown(fake, chat_id) == before

    waiting = await make_bot(confidence_threshold=0.0)
    chat_id, _ = await bound_chat(tg, waiting, fake)
    await say(tg, waiting, chat_id, "/human")
    await say(tg, waiting, chat_id, "Are you there?")  # the coach was asked to join: only the coach answers
    assert typing_shown(fake, chat_id) == 0

    drafting = await make_bot(handoff_mode="draft")
    chat_id, _ = await bound_chat(tg, drafting, fake)
    await say(tg, drafting, chat_id, "How can I plan my week?")
    assert typing_shown(fake, chat_id) == 0


async def test_a_coachs_message_reaches_the_chat_of_its_conversation_when_the_client_has_two_chats(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """A stranger enrolled by writing to the bot, then the coach's invite for that client was used in another
    chat: the client has two chats, each with its conversation. The coach's messages went to the newest chat
    only, so those written into the first chat's conversation were dropped with its joined/left notices."""
    bot = await make_bot(confidence_threshold=0.0)
    enrolled, invited = next(_chat_ids), next(_chat_ids)
    await say(tg, bot, enrolled, "Hi, I found you online")
    [client] = (await tg.get("/api/v1/clients", headers=bot.coach.headers)).json()
    first = (await conversation_of(tg, bot, client["id"]))["id"]
    invite = (await tg.post(f"/api/v1/clients/{client['id']}/telegram-invite", headers=bot.coach.headers)).json()
    await say(tg, bot, invited, f"/start {invite['code']}")
    await say(tg, bot, invited, "Hello from my other phone")
    h = bot.coach.headers
    assert (await tg.post(f"/api/v1/conversations/{first}/takeover", headers=h)).status_code == 200
    sent = await tg.post(f"/api/v1/conversations/{first}/messages", headers=h, json={"text": "Hi from your coach"})
    assert sent.status_code == 201
    await tg_jobs()
    assert "Hi from your coach" in [c.params["text"] for c in fake.sent_to(enrolled)]
    assert "Hi from your coach" not in [c.params["text"] for c in fake.sent_to(invited)]


async def test_draft_mode_says_the_coach_reviews_the_reply_then_sends_it_or_says_none_comes(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """The AI's reply waits for the coach's approval: the chat is told the coach reviews it (as the widget
    shows), gets it once approved, and is told no reply comes when the coach discards the next one. The chat
    heard nothing of either before."""
    bot = await make_bot(handoff_mode="draft")
    chat_id, _ = await bound_chat(tg, bot, fake)
    renamed = await tg.patch("/api/v1/settings", headers=bot.coach.headers, json={"name": "Tess & Co <Coaching>"})
    assert renamed.status_code == 200, renamed.text
    before = len(fake.sent_to(chat_id))
    await say(tg, bot, chat_id, "How can I plan my week?")
    [reviewing] = fake.sent_to(chat_id)[before:]
    # the coach's name escaped, in HTML parse mode as the chat's other lines (it showed "Tess &amp; Co &lt;…")
    assert reviewing.params["text"] == render.escape(render.reviewing_text("Tess & Co <Coaching>"))
    assert "Tess &amp; Co &lt;Coaching&gt;" in reviewing.params["text"] and reviewing.params["parse_mode"] == "HTML"
    [draft] = (await tg.get("/api/v1/drafts?status=pending", headers=bot.coach.headers)).json()
    assert (await tg.post(f"/api/v1/drafts/{draft['id']}/approve", headers=bot.coach.headers)).status_code == 201
    await tg_jobs()
    assert fake.sent_to(chat_id)[-1].params["text"] == render.escape(REPLY)

    await say(tg, bot, chat_id, "And my evenings?")
    [draft] = (await tg.get("/api/v1/drafts?status=pending", headers=bot.coach.headers)).json()
    assert (await tg.post(f"/api/v1/drafts/{draft['id']}/discard", headers=bot.coach.headers)).status_code == 200
    await tg_jobs()
    assert "will not send the prepared reply" in fake.sent_to(chat_id)[-1].params["text"]


# ------------------------------------------------------------------------------------------- reliability


async def test_a_429_is_retried_after_retry_after_and_a_403_marks_the_chat_inactive(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    tg_jobs: Callable[[], Awaitable[None]],
    container: Container,
) -> None:
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    h = bot.coach.headers
    fake.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "One"})
    await tg_jobs()
    tries = [c for c in fake.sent_to(chat_id) if c.params["text"] == "One"]
    assert len(tries) == 2 and tries[1].at - tries[0].at >= 1.0
    fake.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
    await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "Two"})
    await tg_jobs()
    async with tenant_session(container.sessionmaker, uuid.UUID(bot.coach.coach_id)) as session:
        active = await session.scalar(select(TelegramChat.active).where(TelegramChat.chat_id == chat_id))
    assert active is False
    await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "Three"})
    await tg_jobs()
    assert [c for c in fake.sent_to(chat_id) if c.params["text"] == "Three"] == []


async def test_a_429_on_the_streamed_reply_stops_the_streamed_sends_until_retry_after(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, llm: respx.MockRouter
) -> None:
    """Telegram refuses the streamed reply's first send with a 429: the stream sent again at every delta (one
    call a token, prolonging the flood control). It now waits out ``retry_after``; the final text is sent once
    Telegram allows it."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, _client_id = await bound_chat(tg, bot, fake)
    fake.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1, times=3)
    before = len(fake.calls)
    await say(tg, bot, chat_id, "How do I calm down?")
    final = render.escape(REPLY)
    sends = [c for c in fake.calls[before:] if c.method == "sendMessage" and int(c.params["chat_id"]) == chat_id]
    assert len([c for c in sends if c.params["text"] != final]) == 1, "one streamed send, refused"
    assert sends[-1].params["text"] == final and fake.sent_to(chat_id)[-1].params["text"] == final


async def test_a_long_429_ends_the_send_job_at_once_with_the_message_kept_first(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """Telegram asks the bot to wait longer than a send job waits holding the chat (``WAIT_IN_JOB_S``): the
    flush raises ``RetryAfter`` at once (the job is retried by arq after it) instead of sleeping through the
    job's timeout, which arq does not retry; the message stays first in the chat's list and goes next."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    fake.fail("sendMessage", 429, "Too Many Requests: retry after 90", retry_after=90)
    sent = await tg.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=bot.coach.headers, json={"text": "Later"}
    )
    assert sent.status_code == 201, sent.text
    started = time.monotonic()
    with pytest.raises(RetryAfter):
        await channel.outbox.flush(uuid.UUID(bot.coach.coach_id), chat_id)
    assert time.monotonic() - started < WAIT_IN_JOB_S
    await tg_jobs()  # the job the message queued: Telegram takes it now
    assert len([c for c in fake.sent_to(chat_id) if c.params["text"] == "Later"]) == 2


async def test_a_5xx_or_a_timeout_keeps_the_coachs_message_until_telegram_takes_it(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """Telegram out of order for a moment (502, 500): the coach's message is sent again with back-off until it
    goes, not dropped; a message Telegram refuses as malformed (400) is dropped and the next one still goes."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    h = bot.coach.headers
    fake.fail("sendMessage", 502, "Bad Gateway")
    fake.fail("sendMessage", 500, "Internal Server Error")
    await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "One"})
    await tg_jobs()
    tries = [c for c in fake.sent_to(chat_id) if c.params["text"] == "One"]
    assert len(tries) == 3 and tries[2].at - tries[0].at >= 3.0  # retried after 1 s, then 2 s
    fake.fail("sendMessage", 400, "Bad Request: can't parse entities")
    for text in ("Two", "Three"):
        await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": text})
    await tg_jobs()
    texts = [c.params["text"] for c in fake.sent_to(chat_id) if c.params["text"] in ("Two", "Three")]
    assert texts == ["Two", "Three"]


async def test_a_message_left_queued_after_its_last_try_goes_out_once_telegram_takes_it_again(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    tg_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Telegram refused a coach's message through every try of its send job (here the only one): the message stayed
    first in the chat's list "for the next message's job", and with no next message it was never sent (found by a
    run against a stub Bot API; a reply of a turn goes the same way). The ``telegram_resend`` cron queues the chat's
    send again, and the message goes out, once."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    monkeypatch.setattr(worker, "TELEGRAM_SEND_TRIES", 1)
    fake.fail("sendMessage", 502, "Bad Gateway")
    sent = await tg.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=bot.coach.headers, json={"text": "Stuck"}
    )
    assert sent.status_code == 201, sent.text
    await tg_jobs()
    assert len([c for c in fake.sent_to(chat_id) if c.params["text"] == "Stuck"]) == 1, "one try, refused"

    ctx = {"telegram": tg.app.state.telegram}  # type: ignore[attr-defined]
    await worker.telegram_resend(ctx)  # (other tests' chats may hold messages too: Redis is the session's)
    await tg_jobs()
    assert len([c for c in fake.sent_to(chat_id) if c.params["text"] == "Stuck"]) == 2, "sent again"
    await worker.telegram_resend(ctx)
    await tg_jobs()
    assert len([c for c in fake.sent_to(chat_id) if c.params["text"] == "Stuck"]) == 2, "once: it left the list"


async def test_a_coachs_message_redis_refuses_as_it_is_stored_still_reaches_the_chat_once(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    tg_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis out of reach for the moment the coach's message is handed to the chat's outbox: the message is
    stored, so the ``telegram_deliver`` job (transactional outbox) queues it once Redis takes jobs again, and the
    client gets it once, with its feedback buttons. Before, it was only in the coach's transcript."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    push, refused = ChatOutbox.push, []

    async def refused_once(self: ChatOutbox, *args: Any, **kwargs: Any) -> bool:
        if kwargs.get("dedupe") and not refused:
            refused.append(kwargs["dedupe"])
            raise RedisConnectionError("Connection refused (Redis restarting)")
        return await push(self, *args, **kwargs)

    monkeypatch.setattr(ChatOutbox, "push", refused_once)
    sent = await tg.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=bot.coach.headers, json={"text": "Still there?"}
    )
    assert sent.status_code == 201 and refused == [f"tg:{sent.json()['id']}"]
    await tg_jobs()
    await tg_jobs()
    [delivered] = [c for c in fake.sent_to(chat_id) if c.params["text"] == "Still there?"]
    assert delivered.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "👍"


async def test_a_push_redis_fails_leaves_no_dedupe_key_so_pushing_again_works(services: Services) -> None:
    """The dedupe check, the append and the key are one Redis script: an append that fails (here the chat's list
    key holds a string) leaves the key unset, so the message can be pushed again; once pushed, it is not again."""
    redis = connect_redis(services.redis_url, socket_timeout_s=5.0, queue=f"test-outbox:{uuid.uuid4()}")
    outbox = ChatOutbox(redis, None)  # type: ignore[arg-type]  # push never asks the service
    coach_id, chat_id = uuid.uuid4(), 4242
    key = f"telegram:out:{coach_id}:{chat_id}"
    try:
        await redis.set(key, "not a list")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await outbox.push(coach_id, chat_id, ["Hi"], None, dedupe=f"test:{coach_id}")
        await redis.delete(key)
        assert await outbox.push(coach_id, chat_id, ["Hi"], None, dedupe=f"test:{coach_id}") is True
        assert await outbox.push(coach_id, chat_id, ["Hi"], None, dedupe=f"test:{coach_id}") is False
        assert await redis.llen(key) == 1  # type: ignore[misc]
    finally:
        await redis.delete(key, f"telegram:pushed:test:{coach_id}")
        await redis.aclose()


async def test_a_turn_that_fails_over_telegram_is_answered_by_the_worker(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    tg_jobs: Callable[[], Awaitable[None]],
    answer_fails_once: list[tuple[Any, ...]],
) -> None:
    """The live answer fails after the message is stored (a database pool wait timing out): the client is told
    it will be answered, and the worker answers it once, through the chat."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    await say(tg, bot, chat_id, "Hello")
    assert fake.sent_to(chat_id)[-1].params["text"] == ANSWER_LATER
    conversation = await conversation_of(tg, bot, client_id)
    assert [m["sender_type"] for m in conversation["messages"]] == ["client"]
    await tg_jobs()
    assert fake.sent_to(chat_id)[-1].params["text"] == render.escape(REPLY)
    conversation = await conversation_of(tg, bot, client_id)
    assert [m["sender_type"] for m in conversation["messages"]] == ["client", "ai"]
    await tg_jobs()
    assert (
        len(answer_fails_once) == 2
        and [c.params["text"] for c in fake.sent_to(chat_id)].count(render.escape(REPLY)) == 1
    )


def last_keyboard(fake: FakeBotApi, chat_id: int) -> Any:
    """The inline keyboard under the newest message the chat shows."""
    return max(fake.chats[chat_id].items())[1]["reply_markup"]["inline_keyboard"]


async def test_a_reply_telegram_fails_to_take_goes_out_through_the_worker_into_the_streamed_message(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """The streamed reply's final edit fails with a 5xx: the stored reply is shown by the worker, with its feedback
    buttons, instead of staying half-shown. It is the streamed message that shows it: the worker sent it as a new
    message, below the streamed one, which kept the fragment it showed."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, client_id = await bound_chat(tg, bot, fake)
    fake.fail("editMessageText", 502, "Bad Gateway", times=2)  # (the worker's first try too)
    await say(tg, bot, chat_id, "Hello")
    await tg_jobs()
    assert fake.shown(chat_id) == [WELCOME, render.escape(REPLY)]
    conversation = await conversation_of(tg, bot, client_id)
    ai = [m for m in conversation["messages"] if m["sender_type"] == "ai"]
    assert len(ai) == 1
    assert last_keyboard(fake, chat_id)[0][0]["callback_data"] == f"f:{uuid.UUID(ai[0]['id']).hex}:1"


async def test_a_final_edit_telegram_answers_late_is_not_shown_twice(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    tg_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Telegram makes the final edit of the streamed reply but answers after the client gave up on it (its read
    timeout): the worker sent the reply again as a new message, and the chat showed it twice. The worker now edits the
    streamed message again, which Telegram finds done already."""
    monkeypatch.setattr(bot_module, "READ_TIMEOUT_S", 0.5)
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, _ = await bound_chat(tg, bot, fake)
    fake.stall("editMessageText", 2.0)
    await say(tg, bot, chat_id, "Hello")
    await tg_jobs()
    assert fake.shown(chat_id) == [WELCOME, render.escape(REPLY)]
    assert last_keyboard(fake, chat_id)[0][0]["text"] == "👍"


async def test_a_streamed_reply_whose_first_send_telegram_answers_late_shows_the_reply_once(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    tg_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Telegram answers the streamed reply's first send after the client's usual read timeout: the client gave up
    on it, sent the final text as a new message, and the first, already in the chat, stayed as a stray fragment. A
    send (which cannot be taken back without its id) now waits for Telegram's answer (``SEND_TIMEOUT_S``)."""
    monkeypatch.setattr(bot_module, "READ_TIMEOUT_S", 0.5)
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, _ = await bound_chat(tg, bot, fake)
    fake.stall("sendMessage", 2.0)
    await say(tg, bot, chat_id, "Hello")
    await tg_jobs()
    assert fake.shown(chat_id) == [WELCOME, render.escape(REPLY)]


async def test_a_streamed_first_send_never_answered_is_not_followed_by_more_fragments(
    tg: httpx.AsyncClient,
    fake: FakeBotApi,
    make_bot: MakeBot,
    llm: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The streamed reply's first send gets no answer in time, however long the client waits: it may be in the chat
    (the Bot API cannot say, and without its id it cannot be edited). A new streamed send followed at every interval,
    each one a fragment more in the chat; now the reply shows no more fragments and comes whole at the end."""

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            for chunk in openai_sse(["word "] * 15, (5, 15)).split(b"\n\n"):
                if chunk:
                    yield chunk + b"\n\n"
                    await asyncio.sleep(0.1)

    llm.routes["completions"].mock(
        side_effect=lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Slow())
    )
    monkeypatch.setattr(bot_module, "READ_TIMEOUT_S", 0.3)
    monkeypatch.setattr(replies, "SEND_TIMEOUT_S", 0.3)
    monkeypatch.setattr(tg.app.state.telegram, "edit_interval_s", 0.2)  # type: ignore[attr-defined]
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, _ = await bound_chat(tg, bot, fake)
    before = len(fake.calls)
    fake.stall("sendMessage", 0.6, times=10)
    await say(tg, bot, chat_id, "Tell me something")
    sends = [c.params["text"] for c in fake.calls[before:] if c.method == "sendMessage"]
    final = render.escape(("word " * 15).strip())
    assert len([text for text in sends if text != final]) == 1, sends
    assert fake.shown(chat_id)[-1] == final


async def test_a_client_who_unblocks_the_bot_gets_the_coachs_messages_again(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """Blocked, the chat gets nothing; unblocked (Telegram's ``my_chat_member`` update, or simply the client
    writing again), the coach's messages reach it again."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    h = bot.coach.headers

    async def membership(status: str) -> None:
        update = recorded(status, update_id=next(_chat_ids))
        update["my_chat_member"]["chat"]["id"] = update["my_chat_member"]["from"]["id"] = chat_id
        await post_update(tg, bot, update)
        await drain(tg)

    async def coach_says(text: str) -> bool:
        await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": text})
        await tg_jobs()
        return any(c.params["text"] == text for c in fake.sent_to(chat_id))

    await membership("blocked")
    assert not await coach_says("While blocked")
    await membership("unblocked")
    assert await coach_says("Welcome back")
    await membership("blocked")
    await say(tg, bot, chat_id, "I'm here again")
    assert await coach_says("Good to see you")


async def test_messages_queued_when_the_coach_disconnects_the_bot_are_not_sent_after_a_reconnect(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """The coach writes, then disconnects the bot before the worker sent it: the message stays in the transcript
    only. Reconnected later, the bot sends what the coach writes then, not the old message out of the blue."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    h = bot.coach.headers
    await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "Before"})
    assert (await tg.delete("/api/v1/channels/telegram", headers=h)).status_code == 204
    await tg_jobs()
    connected = await tg.put("/api/v1/channels/telegram", headers=h, json={"bot_token": bot.token})
    assert connected.status_code == 200, connected.text
    await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "After"})
    await tg_jobs()
    sent = [c.params["text"] for c in fake.sent_to(chat_id)]
    assert "After" in sent and "Before" not in sent
    transcript = (await tg.get(f"/api/v1/conversations/{conversation_id}", headers=h)).json()["messages"]
    assert [m["text"] for m in transcript][-2:] == ["Before", "After"]


async def test_worker_sends_to_one_chat_keep_their_order_across_two_workers_and_a_429(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """Three coach messages to one chat, sent by two worker processes at once, the first refused with a 429:
    the first is sent again after ``retry_after`` before the others go (arq's retry alone would send it last)."""
    bot, chat_id, conversation_id = await taken_over(tg, fake, make_bot, tg_jobs)
    h = bot.coach.headers
    fake.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    for text in ("First", "Second", "Third"):
        sent = await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": text})
        assert sent.status_code == 201
    await asyncio.gather(tg_jobs(), tg_jobs())
    texts = [c.params["text"] for c in fake.sent_to(chat_id) if c.params["text"] in ("First", "Second", "Third")]
    assert texts == ["First", "First", "Second", "Third"]
    tries = [c for c in fake.sent_to(chat_id) if c.params["text"] == "First"]
    assert tries[1].at - tries[0].at >= 1.0


async def test_two_coaches_bots_never_see_each_others_clients(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    first, second = await make_bot(), await make_bot()
    chat_id, client_id = await bound_chat(tg, first, fake)
    await say(tg, second, chat_id, "Hello from the same Telegram user")  # the same person writes to both bots
    second_clients = (await tg.get("/api/v1/clients", headers=second.coach.headers)).json()
    assert client_id not in [c["id"] for c in second_clients] and len(second_clients) == 1
    assert all(c.token == second.token for c in fake.sent_to(chat_id)[-1:])
    crossed = await tg.post(
        second.hook(), headers=first.secret_headers(), json=recorded("text_message", update_id=next(_chat_ids))
    )
    assert crossed.status_code == 401
    invite = await tg.post(f"/api/v1/clients/{client_id}/telegram-invite", headers=second.coach.headers)
    assert invite.status_code == 404


async def test_the_bot_token_never_appears_in_logs(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bot = await make_bot()
    chat_id, _ = await bound_chat(tg, bot, fake)
    assert any("/bot" in r.getMessage() for r in caplog.records)  # the Bot API URLs were logged …
    assert not any(bot.token in r.getMessage() for r in caplog.records)  # … without the token
    assert chat_id


async def test_a_bot_connected_to_another_account_is_a_409(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """Nothing of the refused connection is kept, and the bot's webhook stays the first account's (it used to be
    moved to the second account before the refusal: the first account's bot went silent)."""
    first, second = await make_bot(), await make_bot()
    before = (await tg.get("/api/v1/channels/telegram", headers=second.coach.headers)).json()
    hooks = len(fake.of("setWebhook", first.token))
    response = await tg.put("/api/v1/channels/telegram", headers=second.coach.headers, json={"bot_token": first.token})
    assert response.status_code == 409 and response.json()["detail"]
    assert len(fake.of("setWebhook", first.token)) == hooks
    assert (await tg.get("/api/v1/channels/telegram", headers=second.coach.headers)).json() == before
    token, _ = new_token(fake)
    assert token != first.token


async def test_polling_mode_fetches_updates_with_get_updates_once_each(
    tg_settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    fake: FakeBotApi,
    make_bot: MakeBot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a webhook (``TELEGRAM_MODE=polling``, as with an http PUBLIC_URL and Telegram's own server): the
    bot's webhook is deleted and ``getUpdates`` brings the updates, each processed once; the bot's polling
    loop goes on after an error."""
    coach = (await make_bot()).coach
    polling = tg_settings.model_copy(update={"telegram_mode": "polling"})
    container = await Container.create(polling, services.database_url, services.redis_url, registry=registry)
    try:
        channel = build_channel(container)
        token, _ = new_token(fake)
        coach_id = uuid.UUID(coach.coach_id)
        info = await channel.service.connect(coach_id, token, None)
        assert info.mode == "polling" and info.webhook_url is None and fake.of("deleteWebhook", token)
        assert coach_id in await channel.service.polling_coaches()
        chat_id = next(_chat_ids)
        update = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="/start")
        fake.updates[token] = [update]
        assert await poll_once(channel, coach_id, wait_s=0) == 1
        await channel.drain()
        assert [c.params["text"] for c in fake.sent_to(chat_id)] == [WELCOME]
        assert await poll_once(channel, coach_id, wait_s=0) == 0  # the offset moved past it
        assert int(fake.of("getUpdates", token)[-1].params["offset"]) == update["update_id"] + 1

        # an update PostgreSQL cannot store (U+0000) is skipped, not fetched again at every poll with the next
        nul = recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="a\x00b")
        fake.updates[token] = [nul, recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="/start")]
        assert await poll_once(channel, coach_id, wait_s=0) == 2
        await channel.drain()
        assert [c.params["text"] for c in fake.sent_to(chat_id)] == [WELCOME, WELCOME]
        assert await poll_once(channel, coach_id, wait_s=0) == 0

        # the bot's polling loop outlives an error that is not Telegram's (the database out of reach a moment)
        monkeypatch.setattr(poller, "ERROR_PAUSE_S", 0.05)
        flaky_offset, failures = failing_once(channel.service.poll_offset)
        monkeypatch.setattr(channel.service, "poll_offset", flaky_offset)
        dispatch, dispatched = channel.dispatch, asyncio.Event()

        def dispatch_and_tell(*args: Any) -> None:
            dispatch(*args)
            dispatched.set()

        monkeypatch.setattr(channel, "dispatch", dispatch_and_tell)
        fake.updates[token] = [recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="Hi")]
        loop = asyncio.create_task(poller._poll_coach(channel, coach_id))
        try:
            await asyncio.wait_for(dispatched.wait(), 10)
            assert not failures and not loop.done()
        finally:
            loop.cancel()
            await channel.drain()
        assert len(fake.sent_to(chat_id)) > 1  # the welcome, then the reply to "Hi"
        assert await channel.service.poll_offset(coach_id) > 0
        await channel.service.connect(coach_id, token, None)  # the same bot again: it goes on where it was
        assert await channel.service.poll_offset(coach_id) > 0
        latest, _ = new_token(fake)
        await channel.service.connect(coach_id, latest, None)  # another bot: from its first update
        assert await channel.service.poll_offset(coach_id) == 0

        # the token revoked in @BotFather (401): one warning every REFUSED_PAUSE_S, not a request every 5 s
        fake.bots.pop(latest)
        monkeypatch.setattr(poller, "REFUSED_PAUSE_S", 60.0)
        before = len(fake.of("getUpdates", latest))
        loop = asyncio.create_task(poller._poll_coach(channel, coach_id))
        await asyncio.sleep(0.5)
        loop.cancel()
        assert len(fake.of("getUpdates", latest)) - before == 1
        await channel.service.disconnect(coach_id)
    finally:
        await container.close()


async def test_polling_paused_for_a_refused_token_resumes_once_the_coach_connects_a_new_one(
    tg_settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    fake: FakeBotApi,
    make_bot: MakeBot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token revoked in @BotFather (401) pauses the bot's polling for REFUSED_PAUSE_S; a new token connected
    meanwhile ends the pause within TOKEN_CHECK_S, not at its end (the bot stayed silent for up to 5 minutes)."""
    coach = (await make_bot()).coach
    polling = tg_settings.model_copy(update={"telegram_mode": "polling"})
    container = await Container.create(polling, services.database_url, services.redis_url, registry=registry)
    try:
        channel = build_channel(container)
        coach_id, (revoked, _) = uuid.UUID(coach.coach_id), new_token(fake)
        await channel.service.connect(coach_id, revoked, None)
        fake.bots.pop(revoked)
        monkeypatch.setattr(poller, "REFUSED_PAUSE_S", 60.0)
        monkeypatch.setattr(poller, "TOKEN_CHECK_S", 0.05)
        dispatch, dispatched = channel.dispatch, asyncio.Event()

        def dispatch_and_tell(*args: Any) -> None:
            dispatch(*args)
            dispatched.set()

        monkeypatch.setattr(channel, "dispatch", dispatch_and_tell)
        loop = asyncio.create_task(poller._poll_coach(channel, coach_id))
        try:
            await asyncio.sleep(0.5)
            assert len(fake.of("getUpdates", revoked)) == 1  # refused once, then paused
            token, _ = new_token(fake)
            await channel.service.connect(coach_id, token, None)
            chat_id = next(_chat_ids)
            fake.updates[token] = [recorded("text_message", update_id=next(_chat_ids), chat_id=chat_id, text="/start")]
            await asyncio.wait_for(dispatched.wait(), 5)
            assert len(fake.of("getUpdates", revoked)) == 1
        finally:
            loop.cancel()
            await channel.drain()
        assert [c.params["text"] for c in fake.sent_to(chat_id)] == [WELCOME]
        await channel.service.disconnect(coach_id)
    finally:
        await container.close()


async def test_a_bot_saved_in_another_mode_moves_to_the_installs_mode_at_start(
    tg: httpx.AsyncClient,
    tg_settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    fake: FakeBotApi,
    make_bot: MakeBot,
) -> None:
    """The install's mode changed since the bot was connected (``PUBLIC_URL`` became https after a laptop demo,
    or the reverse): at start the bot moves to it, once however many processes start. A polling install deletes
    its webhook and polls it; a webhook install sets its webhook with a new secret, and its updates come in."""
    bot = await make_bot()
    coach_id = uuid.UUID(bot.coach.coach_id)
    polling = tg_settings.model_copy(update={"telegram_mode": "polling"})
    container = await Container.create(polling, services.database_url, services.redis_url, registry=registry)
    try:
        service = build_channel(container).service
        await asyncio.gather(service.align_modes(), service.align_modes())  # two processes starting at once
        assert len(fake.of("deleteWebhook", bot.token)) == 1
        assert coach_id in await service.polling_coaches()
    finally:
        await container.close()

    webhooks = tg.app.state.telegram.service  # type: ignore[attr-defined]
    assert await webhooks.align_modes() >= 1
    [moved] = fake.of("setWebhook", bot.token)[1:]  # (the first: when the bot was connected)
    assert moved.params["url"].endswith(bot.hook()) and moved.params["secret_token"] != bot.secret
    assert (await webhooks.status(coach_id)).mode == "webhook"
    assert coach_id not in await webhooks.polling_coaches()
    update = recorded("text_message", update_id=next(_chat_ids), chat_id=next(_chat_ids), text="/start")
    stale = await tg.post(bot.hook(), headers=bot.secret_headers(), json=update)
    assert stale.status_code == 401
    headers = {"X-Telegram-Bot-Api-Secret-Token": moved.params["secret_token"]}
    assert (await tg.post(bot.hook(), headers=headers, json=update)).status_code == 200
    await drain(tg)
    assert [c.params["text"] for c in fake.sent_to(update["message"]["chat"]["id"])] == [WELCOME]


async def test_dashboard_connects_the_bot_and_shows_an_invite_qr_code(tg: httpx.AsyncClient, fake: FakeBotApi) -> None:
    """Settings links to the Telegram page; a bad token shows Telegram's reason (400); a good one connects; the
    client's page makes a one-time invite shown with an inline SVG QR code (CSP: no data: URLs)."""
    async with httpx.AsyncClient(base_url=str(tg.base_url), timeout=60) as browser:
        await sign_up(browser, "Dash Tele Coach")
        assert 'href="/dashboard/settings/telegram"' in (await browser.get("/dashboard/settings")).text
        page = "/dashboard/settings/telegram"
        bad = await browser.post(
            page,
            data={"bot_token": "123456789:AAHneverIssuedByBotFatherAtAll", "_csrf_token": await csrf(browser, page)},
        )
        assert bad.status_code == 400 and "Unauthorized" in bad.text
        token, _ = new_token(fake)
        good = await browser.post(
            page, data={"bot_token": token, "open_enrollment": "on", "_csrf_token": await csrf(browser, page)}
        )
        assert good.status_code == 200 and "Connected: " in good.text and token not in good.text
        await browser.post(
            "/dashboard/clients", data={"name": "Kim", "_csrf_token": await csrf(browser, "/dashboard/clients")}
        )
        listed = (await browser.get("/dashboard/clients")).text
        [client_id] = re.findall(r'<a href="/dashboard/clients/([0-9a-f-]{36})">Kim</a>', listed)
        client_page = f"/dashboard/clients/{client_id}"
        assert f'action="{client_page}/telegram-invite"' in (await browser.get(client_page)).text
        invite = await browser.post(
            f"{client_page}/telegram-invite", data={"_csrf_token": await csrf(browser, client_page)}
        )
        assert invite.status_code == 200
        assert re.search(r"https://t\.me/coach_bot_\d+\?start=[\w-]{20,}", invite.text)
        assert "<svg" in invite.text and "data:" not in invite.text
