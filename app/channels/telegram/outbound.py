"""Messages the worker sends to a Telegram chat (the coach's messages, joined/left notices), in order per chat
across every worker process.

Each chat has a FIFO list in Redis; :meth:`ChatOutbox.push` appends a message and queues a ``telegram_send``
job, and the job (:meth:`ChatOutbox.flush`) takes the chat's lock (a Redis lock, so one sender per chat in the
whole deployment) and sends the list from its head until it is empty. A message leaves the list only once sent,
so a 429 (waited out with Telegram's ``retry_after`` while holding the lock) or a crash keeps it first: a later
message is never sent before an earlier one. Delivery is at least once (a crash between the send and the pop
sends that message again), except for a message's first part that edits a message the chat shows already (the rest
of a streamed reply, :meth:`ChatOutbox.push`'s ``edit``): an edit can be repeated, so it shows once. Every pushed
message has its own job, which runs after the push: whichever job holds the lock then sends it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from arq.connections import ArqRedis
from telegram import Bot, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, RetryAfter

from app.channels.telegram import render
from app.channels.telegram.service import TelegramService
from app.core.errors import NotFound

log = logging.getLogger(__name__)

SEND_JOB = "telegram_send"
SEND_ATTEMPTS = 3
"""Tries of one Bot API call that Telegram answers with 429 (each waits its ``retry_after``)."""
LOCK_S = 150.0
"""Seconds a chat's send lock lives without its holder releasing it (a worker that died)."""
LOCK_WAIT_S = 60.0
"""Seconds a job waits for the chat's lock before it is retried by arq (well within the job's timeout)."""
WAIT_IN_JOB_S = 10.0
"""The longest 429 ``retry_after`` (seconds) a send job waits out holding the chat's lock; a longer one ends the
job, retried by arq after it: two in-place waits of a minute outlasted the job's timeout, which arq does not
retry."""
DEDUPE_S = 24 * 3600
"""Seconds a pushed message id is remembered, so the same message is never queued twice."""

PUSH_SCRIPT = """
if #KEYS == 2 and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
if #KEYS == 2 then redis.call('SET', KEYS[2], 1, 'EX', ARGV[2]) end
return 1
"""
"""Lua (run atomically by Redis): append ``ARGV[1]`` to the list ``KEYS[1]`` unless the dedupe key ``KEYS[2]``
(optional) exists, then set that key for ``ARGV[2]`` seconds; 1 if appended. The key is set last: Redis does
not undo a script's earlier writes when a later command fails, so a failed append must not leave it set."""


def markup(keyboard: dict[str, Any] | None) -> InlineKeyboardMarkup | None:
    """``reply_markup`` JSON (``{"inline_keyboard": …}``) as python-telegram-bot's markup; ``None`` stays ``None``."""
    return InlineKeyboardMarkup.de_json(keyboard, None) if keyboard else None


def retry_seconds(exc: RetryAfter) -> float:
    """A 429's ``retry_after`` in seconds (python-telegram-bot gives an int, or a ``timedelta`` in later
    versions)."""
    value = exc.retry_after
    return value if isinstance(value, int | float) else value.total_seconds()


async def with_retry(
    call: Callable[..., Awaitable[Any]], *args: Any, wait_at_most_s: float = math.inf, **kwargs: Any
) -> Any:
    """``await call(*args, **kwargs)``, waiting out a 429's ``retry_after`` (at most :data:`SEND_ATTEMPTS`
    tries; the last 429, or one asking for more than ``wait_at_most_s`` seconds, raises ``RetryAfter``)."""
    for attempt in range(SEND_ATTEMPTS):
        try:
            return await call(*args, **kwargs)
        except RetryAfter as exc:
            if attempt == SEND_ATTEMPTS - 1 or retry_seconds(exc) > wait_at_most_s:
                raise
            await asyncio.sleep(retry_seconds(exc))
    return None


async def show(
    bot: Bot, chat_id: int, message_id: int, text: str, reply_markup: InlineKeyboardMarkup | None, **retry: Any
) -> None:
    """Make message ``message_id`` of the chat show ``text`` (HTML) with ``reply_markup``: an edit, which can be
    repeated (Telegram's 400 "message is not modified" says it shows them already, e.g. after an edit whose answer
    timed out). A message Telegram can no longer edit (the client deleted it, or it is too old) gets ``text`` as a
    new message instead. ``retry``: :func:`with_retry`'s ``wait_at_most_s``. Raises Telegram's error."""
    try:
        await with_retry(
            bot.edit_message_text,
            text,
            chat_id,
            message_id,
            parse_mode=render.PARSE_MODE,
            reply_markup=reply_markup,
            **retry,
        )
    except BadRequest as exc:
        if "not modified" in exc.message.lower():
            return
        await with_retry(
            bot.send_message, chat_id, text, parse_mode=render.PARSE_MODE, reply_markup=reply_markup, **retry
        )


class ChatOutbox:
    """Per-chat ordered sending through the worker (see the module)."""

    def __init__(self, redis: ArqRedis, service: TelegramService) -> None:
        self._redis = redis
        self._service = service
        self._push = redis.register_script(PUSH_SCRIPT)

    @staticmethod
    def _key(coach_id: uuid.UUID | str, chat_id: int | str) -> str:
        return f"telegram:out:{coach_id}:{chat_id}"

    async def push(
        self,
        coach_id: uuid.UUID,
        chat_id: int,
        parts: list[str],
        keyboard: dict[str, Any] | None,
        *,
        dedupe: str | None = None,
        edit: int | None = None,
    ) -> bool:
        """Append a message (``parts``: HTML texts sent in turn, ``keyboard`` under the last) to the chat's list and
        queue the ``telegram_send`` job that sends it. ``edit``: the id of a message the chat shows that is to show
        the first part (:func:`show`; the streamed message of a reply whose final edit failed), instead of a new
        message below it. ``dedupe`` (e.g. the stored message's id): a message pushed
        before with the same key is not pushed again (``False``; the job is queued all the same, so a message whose
        push got no job, Redis failing in between, still goes). The check, the append and the key are one step
        (:data:`PUSH_SCRIPT`): a push that fails leaves no key behind, and pushing again works. Raises Redis
        errors."""
        keys = [self._key(coach_id, chat_id)] + ([f"telegram:pushed:{dedupe}"] if dedupe is not None else [])
        message = json.dumps({"parts": parts, "keyboard": keyboard, "edit": edit})
        pushed = await self._push(keys=keys, args=[message, DEDUPE_S])
        await self._redis.enqueue_job(SEND_JOB, str(coach_id), chat_id)
        return bool(pushed)

    async def requeue_waiting(self) -> int:
        """Queue the ``telegram_send`` job again for every chat whose list still holds messages (a ``SCAN`` of the
        lists' keys): a job that used up its tries while Telegram refused (a long outage, a revoked token until the
        coach connected a new one) left its message first in the list for "the job of the next message", and a chat
        whose next message never comes kept it for good. A chat's job running meanwhile is harmless: the chat's lock
        orders them, and the second finds its list empty. Returns the number of chats."""
        chats = 0
        async for key in self._redis.scan_iter(match=self._key("*", "*"), count=1000):
            _, _, coach_id, chat_id = (key.decode() if isinstance(key, bytes) else key).split(":", 3)
            await self._redis.enqueue_job(SEND_JOB, coach_id, int(chat_id))
            chats += 1
        return chats

    async def flush(self, coach_id: uuid.UUID, chat_id: int) -> str:
        """Worker job body: under the chat's lock, send the chat's list in order until it is empty. A 429 is waited out
        (:func:`with_retry`) up to :data:`WAIT_IN_JOB_S`; one still refused, or asking for longer, raises
        ``RetryAfter`` (the message stays first, for the job's retry). A 403 (the client blocked the bot) marks the
        chat inactive and drops its list; a message Telegram refuses as malformed (400) is logged and dropped. Any
        other failure (a timeout, a 5xx, a network error, a revoked token) raises with the message still first: a
        retry of the job sends it, or the job of the next message pushed. A coach who disconnected the bot meanwhile
        has the list dropped (the messages stay in the transcript; a reconnect days later does not send them out of
        the blue). Raises ``redis.exceptions.LockError`` when the lock stays taken for :data:`LOCK_WAIT_S`. Returns
        a short status for arq."""
        key = self._key(coach_id, chat_id)
        sent = 0
        async with self._redis.lock(
            f"telegram:lock:{coach_id}:{chat_id}", timeout=LOCK_S, blocking_timeout=LOCK_WAIT_S
        ):
            try:
                bot = await self._service.bot(coach_id)
            except NotFound:  # the coach disconnected the bot: nothing queued goes out on a later reconnect
                await self._redis.delete(key)
                return "no bot connected: the chat's queued messages dropped"
            while (raw := await self._redis.lindex(key, 0)) is not None:  # type: ignore[misc]
                item = json.loads(raw)
                try:
                    while item["parts"]:
                        parts: list[str] = item["parts"]
                        reply_markup = markup(item["keyboard"]) if len(parts) == 1 else None
                        if item.get("edit") is not None:
                            await show(bot, chat_id, item["edit"], parts[0], reply_markup, wait_at_most_s=WAIT_IN_JOB_S)
                        else:
                            await with_retry(
                                bot.send_message,
                                chat_id,
                                parts[0],
                                parse_mode=render.PARSE_MODE,
                                reply_markup=reply_markup,
                                wait_at_most_s=WAIT_IN_JOB_S,
                            )
                        sent, item = sent + 1, item | {"parts": parts[1:], "edit": None}
                        if item["parts"]:  # a long message's parts already sent are not sent again
                            await self._redis.lset(key, 0, json.dumps(item))  # type: ignore[misc]
                except Forbidden:
                    await self._service.set_chat(coach_id, chat_id, active=False)
                    await self._redis.delete(key)
                    return "blocked: chat marked inactive"
                except BadRequest as exc:  # this message can never be sent (400): the ones after it still can
                    log.warning(
                        "telegram: a message to chat %s of coach %s refused: %s", chat_id, coach_id, exc.message
                    )
                await self._redis.lpop(key)  # type: ignore[misc]
        return f"{sent} messages sent"
