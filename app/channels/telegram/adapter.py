"""The Telegram adapter: turns a Bot API update into the channel-neutral turn (:class:`app.chat.turn.ChatService`
``receive`` then ``answer``) and renders the turn's events in the chat.

Updates are processed off the webhook request, one chat at a time in arrival order (a lock per chat, in this
process and across processes: :class:`ChatLocks`); a message that arrives while its chat's previous one is
being answered is screened for a crisis first (:meth:`TelegramChannel._screening`). A reply
(:mod:`app.channels.telegram.replies`) streams by editing one message at most every
:attr:`TelegramChannel.edit_interval_s` seconds (Telegram's
limits, Bot API FAQ "My bot is hitting limits": about one message a second per chat), then the final text
with footnotes and the 👍/👎 and "Talk to a human" keyboard; replies over 4,096 characters are split at sentence
ends. Live events for the client (the coach's messages, joined/left notices) go out through the worker's
``telegram_send`` job (:mod:`app.channels.telegram.outbound`: in order per chat across workers), which honours
429 ``retry_after`` and marks a chat that blocked the bot (403) inactive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from redis.commands.core import AsyncScript
from redis.exceptions import LockError, RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import Bot, ReplyKeyboardMarkup
from telegram.error import BadRequest, Forbidden

from app.accounts.unit_of_work import unit_of_work
from app.accounts.widget_settings import suggestions
from app.channels.telegram import render
from app.channels.telegram.bot import bot_id
from app.channels.telegram.outbound import ChatOutbox, markup
from app.channels.telegram.replies import ChatReplies
from app.channels.telegram.service import ChatBinding, Sent, TelegramService
from app.channels.telegram.tone import TONE_COMMAND, TelegramTone, TonePress, parse_tone
from app.chat.turn import ChatService
from app.conversations.service import ConversationService
from app.core.errors import DomainError, NotFound, TooManyAttempts
from app.handoff.catalogue import greeting, refusal, say
from app.handoff.languages import Language
from app.memory.client_view import remembered_out
from app.memory.controls import MemoryControls

log = logging.getLogger(__name__)

TURN_LOCK_S = 180.0
"""Seconds a chat's cross-process turn lock (Redis) lives past its holder's last renewal (:class:`ChatLocks`),
and a message waits at most for the lock held by another process before it goes ahead anyway (a message is
never dropped for a lock): longer than a turn takes, short enough that a process that died holding it holds the
chat up no longer. An install whose ``LLM_TIMEOUT_SECONDS`` (the bound on a turn's model work) leaves less than
:data:`TURN_LOCK_MARGIN_S` under it gets a longer lock (:func:`turn_lock_s`)."""
PRESS_MARK_S = 24 * 3600
"""Seconds a button press's callback query id is remembered (:meth:`TelegramChannel._first_press`): as long as
Telegram keeps an update it could deliver again (the Bot API keeps undelivered updates up to 24 hours)."""
PRESS_REPEAT_S = 10
"""Seconds a press of a button counts as a second tap of the press before it on the same keyboard with the same
button (:func:`_new_tap`): a double tap, or a tap on a keyboard not yet redrawn after the first."""
TURN_LOCK_MARGIN_S = 60.0
"""Seconds a turn's lock outlives its model work: storing the message and the reply, and the chat's edits."""


class ChatLocks:
    """The turn lock of each Telegram chat: a chat's messages are handled one at a time, in the order they came,
    from reading the chat's binding (so two first messages of a stranger make one client, and two messages one
    conversation) to the end of their answer. In this process an :class:`asyncio.Lock` keeps the order (kept only
    while a message holds or waits for it); across the web processes a Redis lock (redis-py's
    :class:`~redis.asyncio.lock.Lock`) keeps a second process from reading the binding before the first stored
    the conversation it began. ``hold_s``: the Redis lock's lifetime and the longest wait for it
    (:func:`turn_lock_s`); its holder renews it every third of that while it holds it (a turn waiting for a turn
    slot under overload, or for a 429's ``retry_after``, outlasts any fixed lifetime), so only a process that
    died holding it holds the chat up, for ``hold_s`` at most."""

    def __init__(self, redis: ArqRedis, hold_s: float = TURN_LOCK_S) -> None:
        self._redis = redis
        self._hold_s = hold_s
        self._local: dict[tuple[uuid.UUID, int], tuple[asyncio.Lock, int]] = {}
        self._answering: dict[tuple[uuid.UUID, int], int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, coach_id: uuid.UUID, message: dict[str, Any]) -> AsyncIterator[None]:
        """Hold the chat of ``message`` (a Bot API message) while the block runs. Redis out of reach, or the lock
        still held after ``hold_s``, lets the message go ahead (a message is never dropped for a lock)."""
        chat_id = (message.get("chat") or {}).get("id")
        if not isinstance(chat_id, int):
            yield
            return
        key, hold_s = (coach_id, chat_id), self._hold_s
        lock, users = self._local.get(key, (asyncio.Lock(), 0))
        self._local[key] = (lock, users + 1)
        try:
            async with lock:
                shared = self._redis.lock(_key(coach_id, chat_id), timeout=hold_s, blocking_timeout=hold_s)
                try:
                    held = await shared.acquire()
                except RedisError as exc:
                    log.warning("chat %s of coach %s: no cross-process turn lock (%s)", chat_id, coach_id, exc)
                    held = False
                else:
                    if not held:
                        log.warning("chat %s of coach %s: turn lock still held after %d s", chat_id, coach_id, hold_s)
                renewal = asyncio.create_task(self._renew(shared.reacquire)) if held else None
                try:
                    yield
                finally:
                    if renewal is not None:
                        renewal.cancel()
                        with contextlib.suppress(RedisError):  # expired meanwhile, or Redis gone: it lapses
                            await shared.release()
        finally:
            lock, users = self._local[key]
            if users == 1:
                del self._local[key]
            else:
                self._local[key] = (lock, users - 1)

    async def _renew(self, renew: Callable[[], Awaitable[Any]]) -> None:
        """Renew a lease in Redis every third of ``hold_s`` until cancelled (Redis out of reach: the next time)
        or until it is no longer this process's (:class:`~redis.exceptions.LockError`)."""
        while True:
            await asyncio.sleep(self._hold_s / 3)
            try:
                await renew()
            except LockError:
                return
            except RedisError as exc:
                log.warning("a Telegram chat's lease was not renewed: %r", exc)
            except Exception:  # (nothing awaits this task: an error would end it unseen)
                log.exception("renewing a Telegram chat's lease failed; it lapses")
                return

    @contextlib.asynccontextmanager
    async def answering(self, coach_id: uuid.UUID, chat_id: int) -> AsyncIterator[None]:
        """Mark the chat busy (:meth:`busy`) while the block answers a stored message: in this process a count,
        across processes a Redis key renewed like the turn lock, which lapses ``hold_s`` after its process died
        (Redis out of reach: this process only)."""
        key, mark, lifetime_ms = (coach_id, chat_id), _key(coach_id, chat_id, "answering"), int(self._hold_s * 1000)
        self._answering[key] = self._answering.get(key, 0) + 1
        with contextlib.suppress(RedisError):
            await self._redis.set(mark, 1, px=lifetime_ms)
        renewal = asyncio.create_task(self._renew(lambda: self._redis.pexpire(mark, lifetime_ms)))
        try:
            yield
        finally:
            renewal.cancel()
            self._answering[key] -= 1
            if not self._answering[key]:
                del self._answering[key]
                with contextlib.suppress(RedisError):
                    await self._redis.delete(mark)

    async def busy(self, coach_id: uuid.UUID, chat_id: Any) -> bool:
        """Whether a stored message of the chat is being answered now (:meth:`answering`), in this process or
        another (``False`` when Redis is out of reach and this process answers none). Not while a message is
        being read or stored: a message screened then could be stored before it."""
        if not isinstance(chat_id, int):
            return False
        if (coach_id, chat_id) in self._answering:
            return True
        try:
            return bool(await self._redis.exists(_key(coach_id, chat_id, "answering")))
        except RedisError:
            return False


def turn_lock_s(llm_timeout_s: float) -> float:
    """The chat's turn lock lifetime (and longest wait for it), in seconds, for turns whose model work is bounded by
    ``llm_timeout_s`` (``LLM_TIMEOUT_SECONDS``): :data:`TURN_LOCK_S`, or that bound plus :data:`TURN_LOCK_MARGIN_S`
    when longer."""
    return max(TURN_LOCK_S, llm_timeout_s + TURN_LOCK_MARGIN_S)


def _key(coach_id: uuid.UUID, chat_id: int, kind: str = "turn-lock") -> str:
    return f"telegram:{kind}:{coach_id}:{chat_id}"


def _written(message: dict[str, Any]) -> Any:
    """What the client wrote in a Bot API message: its ``text``, else the ``caption`` of a photo, a document or
    a voice message (the attachment itself is not read; its caption is a message like any other, crisis screen
    included)."""
    return message.get("text") if message.get("text") is not None else message.get("caption")


def _plain_text(message: dict[str, Any]) -> str | None:
    """The text of a Bot API message that is neither empty nor a command (every command starts with "/")."""
    text = _written(message)
    return text if isinstance(text, str) and text.strip() and not text.startswith("/") else None


def _client_message_id(bot: Bot, chat_id: int, message: dict[str, Any], suffix: str = "") -> str:
    """The ``client_message_id`` a chat's message is stored under (once, however often it is handled):
    ``tg:<bot id>:<chat id>:<message id><suffix>``. The bot is part of it: a private chat's id is the client's
    user id whatever the bot, so a chat the coach's new bot continues (a new token) keeps its binding, while
    the new bot numbers its messages from the start again."""
    return f"tg:{bot_id(bot)}:{chat_id}:{message.get('message_id')}{suffix}"


class TelegramChannel:
    """Processes the updates of every coach's bot and delivers the clients' live events to their chats."""

    edit_interval_s = 1.0
    """Seconds between two edits of a streamed reply."""

    def __init__(
        self,
        service: TelegramService,
        chat: ChatService,
        conversations: ConversationService,
        memory: MemoryControls,
        tone: TelegramTone,
        redis: ArqRedis,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        turn_lock_s: float = TURN_LOCK_S,
    ) -> None:
        """``turn_lock_s``: the chats' turn lock lifetime (:class:`ChatLocks`, :func:`turn_lock_s`)."""
        self.service = service
        self._chat = chat
        self._conversations = conversations
        self._memory = memory
        self._tone = tone
        self.outbox = ChatOutbox(redis, service)
        self.replies = ChatReplies(service, chat, self.outbox, sessionmaker)
        """Replies and live events into the clients' chats."""
        self._sessionmaker = sessionmaker
        self._redis = redis
        self._last_press = redis.register_script(_LAST_PRESS)
        self.locks = ChatLocks(redis, turn_lock_s)
        """The chats' turn locks."""
        self._tasks: set[asyncio.Task[None]] = set()

    def dispatch(self, coach_id: uuid.UUID, update: dict[str, Any], sent: dict[str, Any] | None = None) -> None:
        """Process ``update`` in the background (the webhook answers at once); ``sent`` as :meth:`process`."""
        task = asyncio.create_task(self.process(coach_id, update, sent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the updates being processed (shutdown, tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def process(self, coach_id: uuid.UUID, update: dict[str, Any], sent: dict[str, Any] | None = None) -> None:
        """Handle one update: a message, a button press or the client blocking the bot. ``sent``: what an earlier
        processing of it sent to the chat (:class:`~app.channels.telegram.service.Sent`), which is not sent again:
        that processing is finished instead (a reply's streamed message shows the reply, its parts not shown yet
        are sent). Errors are logged (with the update id, never the token). The update's claim is renewed meanwhile
        (:meth:`~app.channels.telegram.service.UpdateLedger.renew`). It is then done, unless it failed
        otherwise than on what it asks (a ``DomainError``: the bot disconnected) or on the client (who blocked the
        bot): the database or Redis out of reach, a bug. Such a failure leaves it to the worker's sweep
        (:meth:`recover`), a few times (:meth:`~app.channels.telegram.service.UpdateLedger.failed`): a message
        that failed before it was stored is not lost (a message stored meanwhile is answered once)."""
        update_id = update.get("update_id")
        claim = self.service.updates.keep_claimed(coach_id, update_id) if isinstance(update_id, int) else None
        out = Sent(self.service.updates, coach_id, update_id if isinstance(update_id, int) else None, sent or {})
        failed = False
        try:
            bot = await self.service.bot(coach_id)
            if isinstance(callback := update.get("callback_query"), dict):
                if await self._first_press(coach_id, callback, update_id):  # (not a copy of a press)
                    if await _new_tap(self._last_press, coach_id, callback, update_id):
                        await self._callback(bot, coach_id, callback, out)
                    else:  # a second tap: changes nothing, sends nothing, but its button stops spinning
                        await _acknowledge(bot, callback)
            elif isinstance(message := update.get("message"), dict):
                screen = await self._screening(bot, coach_id, message)
                try:
                    async with self.locks.hold(coach_id, message):
                        if screen is not None:  # (it ran while the message waited for its place)
                            await screen
                        await self._message(bot, coach_id, message, out)
                finally:
                    if screen is not None:  # (process cancelled while it waited)
                        screen.cancel()
            elif isinstance(edited := update.get("edited_message"), dict):
                async with self.locks.hold(coach_id, edited):
                    await self._edited(bot, coach_id, edited, out)
            elif isinstance(member := update.get("my_chat_member"), dict) and (status := _status(member)) in (
                "kicked",
                "member",
            ):  # the client blocked the bot, or unblocked it
                await self.service.set_chat(coach_id, int(member["chat"]["id"]), active=status == "member")
        except Forbidden:
            chat_id = _chat_id(update)
            if chat_id is not None:
                await self.service.set_chat(coach_id, chat_id, active=False)
        except DomainError as exc:
            log.warning("telegram update %s of coach %s not processed: %s", update_id, coach_id, exc.message)
        except Exception:
            log.exception("telegram update %s of coach %s failed", update_id, coach_id)
            failed = True
        finally:
            if claim is not None:
                claim.cancel()
        await self.service.updates.finish(coach_id, update_id, failed=failed)

    async def _screening(self, bot: Bot, coach_id: uuid.UUID, message: dict[str, Any]) -> asyncio.Task[None] | None:
        """A text message arriving while one of its chat is answered (:meth:`ChatLocks.busy`) is screened for a
        crisis at once (:meth:`_screen`), in a task started before it asks for the lock: it keeps its place in the
        chat's order, and its turn awaits the screen. ``None``: no screen (a command, a chat at rest)."""
        chat, text = message.get("chat") or {}, _plain_text(message)
        if text is None or chat.get("type") != "private" or not await self.locks.busy(coach_id, chat.get("id")):
            return None
        client_message_id = _client_message_id(bot, int(chat["id"]), message)
        sender = render.app_language(message.get("from"))
        return asyncio.create_task(self._screen(coach_id, int(chat["id"]), text, client_message_id, sender))

    async def _screen(
        self, coach_id: uuid.UUID, chat_id: int, text: str, client_message_id: str, app_language: Language | None
    ) -> None:
        """Store the message (``text``, ``client_message_id``) in its chat's conversation and run the crisis
        protocol if it calls for one (:meth:`~app.chat.turn.ChatService.answer_crisis`; the reply goes through the
        chat's outbox). Its turn then finds it stored (its ``client_message_id``), and answered if a crisis. No
        conversation (or a deleted one), a refusal (the rate limit) or a failure leaves the message to its turn,
        which begins one or tells the client."""
        try:
            binding = await self.service.binding(coach_id, chat_id)
            if binding is None or binding.conversation_id is None:  # (a new conversation begins under the lock)
                return
            received = await self._chat.receive(
                coach_id,
                binding.client_id,
                text,
                conversation_id=binding.conversation_id,
                channel="telegram",
                client_message_id=client_message_id,
                app_language=app_language,
            )
            if not received.answered:
                await self._chat.answer_crisis(coach_id, binding.client_id, received.message_id)
        except DomainError:
            return
        except Exception:
            log.exception("telegram: the early crisis screen of a message in chat %s failed", chat_id)

    async def recover(self) -> int:
        """Process the updates of every bot that were recorded but never finished (their process died after
        answering Telegram, which then never re-sends them); each is taken first, so a live process's update is
        left alone. Returns how many were processed."""
        processed = 0
        for coach_id, update_id in await self.service.updates.stale_updates():
            taken = await self.service.updates.reclaim(coach_id, update_id)
            if taken is not None:
                await self.process(coach_id, *taken)
                processed += 1
        return processed

    async def _message(self, bot: Bot, coach_id: uuid.UUID, message: dict[str, Any], out: Sent) -> None:
        chat = message.get("chat") or {}
        if chat.get("type") != "private":
            return
        chat_id, text = int(chat["id"]), await self.service.own_command(coach_id, _written(message))
        language = render.update_language(message.get("from"), text)
        if isinstance(text, str) and text.startswith("/start"):
            code = text.partition(" ")[2].strip()
            if code:
                bound = await self.service.redeem(coach_id, chat_id, code)
                if bound:
                    await self._welcome(bot, coach_id, chat_id, out, language)
                else:
                    await _notice(bot, chat_id, say("tg_bad_invite", language), out)
                return
        binding = await self.service.binding(coach_id, chat_id)
        if binding is None:
            binding = await self._enrol(bot, coach_id, chat_id, message.get("from") or {}, out, language)
            if binding is None or (isinstance(text, str) and text.startswith("/start")):
                return
        if not isinstance(text, str) or not text.strip():
            log.info("telegram: a non-text message in chat %s of coach %s (not stored)", chat_id, coach_id)
            await _notice(bot, chat_id, say("tg_non_text", language), out)
            return
        if text.startswith("/start"):
            await self._welcome(bot, coach_id, chat_id, out, language)
            return
        if text.strip() == render.FORGET_COMMAND:
            shown, keyboard = await self._remembered(coach_id, binding.client_id, language)
            await _notice(bot, chat_id, shown, out, parse_mode=render.PARSE_MODE, reply_markup=markup(keyboard))
            return
        if text.strip() == TONE_COMMAND:
            shown, keyboard = await self._tone.show(coach_id, binding.client_id, datetime.now(UTC), language)
            await _notice(bot, chat_id, shown, out, parse_mode=render.PARSE_MODE, reply_markup=markup(keyboard))
            return
        if text.strip() == render.HELP_COMMAND:  # (another command goes to the turn: "/kill…" may be a crisis)
            await _notice(bot, chat_id, say("tg_help", language), out)
            return
        client_message_id = _client_message_id(bot, chat_id, message)
        sender = render.app_language(message.get("from"))
        await self._turn(bot, coach_id, binding, text, client_message_id, out, language, app_language=sender)

    async def _edited(self, bot: Bot, coach_id: uuid.UUID, message: dict[str, Any], out: Sent) -> None:
        """The client edited a text message they sent: the new text is a new message of the chat, stored and
        answered in turn (the original stays in the transcript as the coach saw it, answered or not). Each edit
        is stored once (``client_message_id`` ``tg:<bot>:<chat>:<message>:e<edit_date>``). An edited caption
        counts as an edited text (:func:`_written`); an edited command, an edit left empty and an edit in a chat
        bound to no client are ignored."""
        chat, text = message.get("chat") or {}, _written(message)
        if chat.get("type") != "private" or not isinstance(text, str) or not text.strip() or text.startswith("/"):
            return
        binding = await self.service.binding(coach_id, int(chat["id"]))
        if binding is not None:
            client_message_id = _client_message_id(bot, binding.chat_id, message, f":e{message.get('edit_date')}")
            language = render.update_language(message.get("from"), text)
            sender = render.app_language(message.get("from"))
            await self._turn(bot, coach_id, binding, text, client_message_id, out, language, app_language=sender)

    async def _enrol(
        self, bot: Bot, coach_id: uuid.UUID, chat_id: int, sender: dict[str, Any], out: Sent, language: str
    ) -> ChatBinding | None:
        """Open enrolment: a client named from the Telegram profile; else ask for an invite (``None``), in
        ``language``."""
        name = " ".join(str(sender.get(k)) for k in ("first_name", "last_name") if sender.get(k))
        try:
            enrolled = await self.service.enrol(coach_id, chat_id, name or str(sender.get("username") or ""))
        except TooManyAttempts:
            log.warning("coach %s: a Telegram stranger was not enrolled (TELEGRAM_ENROLLMENT_LIMIT)", coach_id)
            await _notice(bot, chat_id, say("tg_enrollment_full", language), out)
            return None
        if enrolled is None:
            await _notice(bot, chat_id, say("tg_ask_for_invite", language), out)
            return None
        if enrolled[1]:  # (not when another process enrolled the stranger meanwhile: it welcomes them)
            await self._welcome(bot, coach_id, chat_id, out, language)
        return await self.service.binding(coach_id, chat_id)

    async def _welcome(self, bot: Bot, coach_id: uuid.UUID, chat_id: int, out: Sent, language: str) -> None:
        """The coach's greeting (as in the widget; the default one in ``language``) with the suggested first
        questions as a one-time reply keyboard: a tap sends the question as the client's message. Once per update
        (``welcome``)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            coach = await uow.coach()
            text, questions = greeting(coach.widget_greeting, coach.name, language), suggestions(coach)
        keyboard = ReplyKeyboardMarkup([[q] for q in questions], one_time_keyboard=True, resize_keyboard=True)
        await out.once("welcome", lambda: bot.send_message(chat_id, text, reply_markup=keyboard if questions else None))

    async def _first_press(self, coach_id: uuid.UUID, callback: dict[str, Any], update_id: Any) -> bool:
        """Whether the button press ``callback`` (a Bot API ``CallbackQuery``) of update ``update_id`` is to be
        processed: not when another update carried the same callback query id (a copy of the press; Telegram
        numbers each press once, so it is no new one) within :data:`PRESS_MARK_S`. The first update's id is kept in
        Redis under the press's id, so that update processed again (its process died) goes on. ``True`` when Redis
        is out of reach."""
        key, value = f"telegram:press:{coach_id}:{callback.get('id')}", str(update_id)
        try:
            if await self._redis.set(key, value, nx=True, ex=PRESS_MARK_S):
                return True
            first = await self._redis.get(key)
        except RedisError:
            return True
        if first is not None and (first.decode() if isinstance(first, bytes) else str(first)) != value:
            log.info("telegram update %s of coach %s: a press already processed, ignored", update_id, coach_id)
            return False
        return True

    async def _callback(self, bot: Bot, coach_id: uuid.UUID, callback: dict[str, Any], out: Sent) -> None:
        data, chat_id = str(callback.get("data") or ""), _chat_id({"callback_query": callback})
        binding = await self.service.binding(coach_id, chat_id) if chat_id is not None else None
        if binding is None:
            await _acknowledge(bot, callback)
            return
        language = render.update_language(callback.get("from"))
        if data == "h":  # a turn of the chat: after the one in progress, as a typed /human would be
            await _acknowledge(bot, callback, say("tg_asking_coach", language))
            async with self.locks.hold(coach_id, {"chat": {"id": binding.chat_id}}):
                asked = f"tg:{binding.chat_id}:cb:{callback['id']}"
                # the widget's button's words, in the sender's language: the handoff notice answers in it
                request = say("widget_human_request", language)
                sender = render.app_language(callback.get("from"))
                await self._turn(bot, coach_id, binding, request, asked, out, language, app_language=sender)
            return
        if (forget := render.parse_forget(data)) is not None:
            await self._forget(bot, coach_id, binding, callback, forget, language)
            return
        if (press := parse_tone(data)) is not None:
            if out.get("tone") is not None:  # made by this update's processing before: only show the tone now
                press = TonePress("show")
            answer = await self._tone.press(coach_id, binding.client_id, press, datetime.now(UTC), language)
            await out.note(tone=True)
            await _acknowledge(bot, callback, answer.note, alert=answer.alert)
            await self._edit(bot, binding, callback, answer.text, answer.keyboard)
            return
        feedback = render.parse_feedback(data)
        note = None
        if feedback is not None:
            try:
                async with unit_of_work(self._sessionmaker, coach_id) as uow:
                    await self._conversations.record_feedback(uow, binding.client_id, feedback[0], helpful=feedback[1])
                note = say("tg_feedback_thanks", language)
            except DomainError as exc:  # (a reply gone since: the coach deleted its conversation)
                note = refusal(exc, language)
        await _acknowledge(bot, callback, note)

    async def _remembered(
        self, coach_id: uuid.UUID, client_id: uuid.UUID, language: str
    ) -> tuple[str, dict[str, Any] | None]:
        """The ``/forget`` message: what the client's widget memory page shows (:func:`remembered_out`), its lines in
        ``language``."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            memory = await self._memory.client_memory(uow.session, coach_id, client_id)
        return render.memory_message(remembered_out(memory), language)

    async def _forget(
        self,
        bot: Bot,
        coach_id: uuid.UUID,
        binding: ChatBinding,
        callback: dict[str, Any],
        item: tuple[str, uuid.UUID],
        language: str,
    ) -> None:
        """A ``/forget`` button: delete the item as the widget's memory API does (:class:`MemoryControls`), answer
        the button, and edit the list to what is remembered now (in ``language``)."""
        kind, item_id = item
        try:
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                if kind == "insight":
                    await self._memory.delete_insight(uow, binding.client_id, item_id)
                else:
                    await self._memory.delete_summary(uow, binding.client_id, item_id)
            note = say("tg_forgotten", language)
        except NotFound:
            note = say("tg_already_forgotten", language)
        await _acknowledge(bot, callback, note)
        shown, keyboard = await self._remembered(coach_id, binding.client_id, language)
        await self._edit(bot, binding, callback, shown, keyboard)

    async def _edit(
        self, bot: Bot, binding: ChatBinding, callback: dict[str, Any], shown: str, keyboard: dict[str, Any] | None
    ) -> None:
        """Edit the message under a pressed button in place (HTML ``shown``, ``keyboard``); nothing when the
        press carries no message (too old for Telegram to send it)."""
        message_id = (callback.get("message") or {}).get("message_id")
        if message_id is None:
            return
        with contextlib.suppress(BadRequest):  # "message is not modified": already shown so
            await bot.edit_message_text(
                shown, binding.chat_id, int(message_id), parse_mode=render.PARSE_MODE, reply_markup=markup(keyboard)
            )

    async def _turn(
        self,
        bot: Bot,
        coach_id: uuid.UUID,
        binding: ChatBinding,
        text: str,
        client_id: str,
        out: Sent,
        language: str = "en",
        *,
        app_language: Language | None = None,
    ) -> None:
        """Store the client's message and answer it (the caller holds the chat's lock, :class:`ChatLocks`), the
        reply's buttons and a refusal (:func:`~app.handoff.catalogue.refusal`: the rate limit, a message too long…) in
        ``language`` (:func:`render.update_language`). ``app_language`` is the sender's app's
        (:func:`render.app_language`), kept with the message (:meth:`~app.chat.turn.ChatService.receive`). A message
        answered when the update was processed before has the rest of its stored reply shown
        (:meth:`ChatReplies.resume`)."""
        try:
            received = await self._receive(coach_id, binding, text, client_id, app_language)
        except DomainError as exc:  # (the rate limit, a message too long…: in the client's language)
            await _notice(bot, binding.chat_id, refusal(exc, language), out)
            return
        if received.conversation_id != binding.conversation_id or not binding.active:  # (a client writing
            # to a chat marked blocked has unblocked the bot: the coach's messages reach it again)
            await self.service.set_chat(coach_id, binding.chat_id, conversation_id=received.conversation_id)
        if not received.answered:
            async with self.locks.answering(coach_id, binding.chat_id):  # a message arriving meanwhile is screened
                await self.replies.answer(
                    bot, coach_id, binding, received.message_id, self.edit_interval_s, out, language=language
                )
        elif out.get("reply") is not None:
            await self.replies.resume(bot, coach_id, binding, received.message_id, out, language=language)

    async def _receive(
        self,
        coach_id: uuid.UUID,
        binding: ChatBinding,
        text: str,
        client_message_id: str,
        app_language: Language | None,
    ) -> Any:
        receive = functools.partial(
            self._chat.receive, channel="telegram", client_message_id=client_message_id, app_language=app_language
        )
        try:
            return await receive(coach_id, binding.client_id, text, conversation_id=binding.conversation_id)
        except NotFound:  # the conversation was deleted since: start a new one
            return await receive(coach_id, binding.client_id, text, conversation_id=None)

    async def deliver_event(self, coach_id: uuid.UUID, client_id: uuid.UUID, event: dict[str, Any]) -> None:
        """A :data:`app.handoff.service.ClientSink`: :meth:`ChatReplies.deliver_event`."""
        await self.replies.deliver_event(coach_id, client_id, event)

    async def deliver_stored(self, coach_id: uuid.UUID, client_id: uuid.UUID, message_id: uuid.UUID) -> str:
        """Worker job body (``telegram_deliver``): :meth:`ChatReplies.deliver_stored`."""
        return await self.replies.deliver_stored(coach_id, client_id, message_id)


async def _notice(bot: Bot, chat_id: int, text: str, out: Sent, **options: Any) -> None:
    """Send the update's one text answer (an invite refused, a command's answer, a refusal…), once per update."""
    await out.once("notice", lambda: bot.send_message(chat_id, text, **options))


async def _acknowledge(
    bot: Bot, callback: dict[str, Any], text: str | None = None, *, alert: bool | None = None
) -> None:
    """Answer a button press (``answerCallbackQuery``: the client's button stops spinning, ``text`` shows as a
    notification, or an ``alert``). Best-effort: Telegram refuses to answer a press after about 15 s (400
    "query is too old"), as for a press processed again after its process died; what the press does is done
    all the same."""
    with contextlib.suppress(BadRequest):
        await bot.answer_callback_query(callback["id"], text=text, show_alert=alert)


_LAST_PRESS = """
local value = ARGV[2] .. '\\n' .. ARGV[1]
local last = redis.call('GET', KEYS[1])
if last == value then return 1 end
if last and string.sub(last, string.find(last, '\\n', 1, true) + 1) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], value, 'EX', ARGV[3])
return 1
"""
"""Lua, atomic: ``KEYS[1]`` a keyboard's last press (``"<update id>\\n<button data>"``); ``ARGV`` the new press's
button data, update id and :data:`PRESS_REPEAT_S`. 0 when the last press, another update, was of the same
button; else 1, the new press kept as the last (unless it is the last, processed again)."""


async def _new_tap(last_press: AsyncScript, coach_id: uuid.UUID, callback: dict[str, Any], update_id: Any) -> bool:
    """Whether the button press ``callback`` of update ``update_id`` is to be processed: not when it is a second tap,
    i.e. the press before it on the same keyboard (chat and message id) was of the same button (callback data), in
    another update, within :data:`PRESS_REPEAT_S`. A double tap sends two presses with two callback query ids, which
    :meth:`TelegramChannel._first_press` both lets through; a tone choice, a "Talk to a human" would be made twice.
    Another button in between (A, B, A) makes a new press; so does the same update processed again (its process
    died). ``last_press``: :data:`_LAST_PRESS`, registered; Redis key ``telegram:press:<coach>:tap:<chat>:<message
    id>``. ``True`` for a press without its message (too old for Telegram to send it) and when Redis is out of
    reach."""
    message_id, chat_id = (callback.get("message") or {}).get("message_id"), _chat_id({"callback_query": callback})
    if message_id is None or chat_id is None:
        return True
    key, data = f"telegram:press:{coach_id}:tap:{chat_id}:{message_id}", str(callback.get("data") or "")
    try:
        return bool(await last_press(keys=[key], args=[data, str(update_id), PRESS_REPEAT_S]))
    except RedisError:
        return True


def _status(member: dict[str, Any]) -> str | None:
    """The bot's new status in a private chat from a ``my_chat_member`` update: ``"kicked"`` when the client
    blocked the bot, ``"member"`` when they unblocked it (Bot API ``ChatMemberUpdated``)."""
    status = (member.get("new_chat_member") or {}).get("status")
    return status if isinstance(status, str) else None


def _chat_id(update: dict[str, Any]) -> int | None:
    """The chat an update belongs to (message or button press), if any."""
    message = (
        update.get("message") or update.get("edited_message") or (update.get("callback_query") or {}).get("message")
    ) or {}
    chat = message.get("chat") if isinstance(message, dict) else None
    return int(chat["id"]) if isinstance(chat, dict) and "id" in chat else None
