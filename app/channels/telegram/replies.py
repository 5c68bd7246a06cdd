"""Replies in a client's Telegram chat: a turn's answer streamed into the chat (:class:`ReplyStream`: the first
delta sent, then edits of that message at most every interval, then the final text with footnotes and the
keyboard), and stored messages handed to the chat's outbox (:class:`ChatReplies`: the coach's messages, notices,
and a reply Telegram did not take at once)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import Bot
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from app.accounts.unit_of_work import unit_of_work
from app.channels.telegram import render
from app.channels.telegram.bot import SEND_TIMEOUT_S
from app.channels.telegram.outbound import ChatOutbox, markup, retry_seconds, show, with_retry
from app.channels.telegram.service import ChatBinding, Sent, TelegramService
from app.chat.turn import ChatService, TurnResult
from app.conversations.metadata import client_citations, client_view
from app.conversations.models import Message
from app.core.errors import DomainError
from app.db import jobs
from app.db.outbox import UNAVAILABLE
from app.handoff.catalogue import say
from app.handoff.live import message_event
from app.handoff.service import taken_from
from app.handoff.sla import notice_language

log = logging.getLogger(__name__)

TYPING_EVERY_S = 4.0
"""A chat action shows for about 5 s (Bot API ``sendChatAction``): repeated while the model works."""


def feedback(message_id: uuid.UUID, view: dict[str, Any], language: str = "en") -> dict[str, Any] | None:
    """The 👍/👎 buttons (:func:`render.feedback_keyboard`, in ``language``) under a reply whose client view
    (``view``, :func:`client_view`) is the AI's or the coach's answer; none under the product's own texts, a crisis
    reply, a notice or an apology, as the widget shows them."""
    if any(view.get(flag) for flag in ("crisis", "notice", "failed")):
        return None
    return render.feedback_keyboard(message_id, language)


class ReplyStream:
    """One reply in one chat: "typing…" from :meth:`typing` until the first delta, which is sent; later ones edit
    that message at most every ``interval`` seconds, :meth:`finish` writes the final text (split, footnotes,
    keyboard). The streamed edits are best-effort (a failed one is skipped: the final text replaces it);
    :attr:`unsent` holds the final text's parts :meth:`finish` has not sent yet, :attr:`keyboard` the buttons that
    go under the last one, :attr:`edit` the streamed message while it does not show the first part yet.

    The chat is to show the reply once: a send waits for Telegram's answer (:data:`SEND_TIMEOUT_S`), since a message
    sent whose id never came back can be neither edited nor deleted, while the final edit can be repeated (by the
    outbox, :func:`~app.channels.telegram.outbound.show`) where a new message would show the reply twice, or leave
    the streamed fragment above it. What went out is recorded in ``out`` (the update's :class:`Sent`: the streamed
    message's id as ``stream``, the parts shown as ``parts``), and a stream of the same update processed again
    goes on from there: it edits the streamed message rather than send another, and sends only the parts not shown.

    Once the AI works on the reply (:meth:`typing`), ``taken`` is asked before each streamed send or edit and each
    repeated "typing…" (so at most once per ``interval``, and per :data:`TYPING_EVERY_S`) whether the conversation
    was taken from the AI since (the crisis protocol of a later message, the coach's takeover: its reply will not
    be stored); if so the stream stops (:attr:`stopped`): no more "typing…" or edits, the streamed message deleted.
    """

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        interval: float,
        out: Sent,
        language: str = "en",
        taken: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """``language``: that of the buttons under the reply (:func:`render.update_language`); ``taken``: whether
        the conversation was taken from the AI (:func:`~app.handoff.service.taken_from`), none: never asked."""
        self.bot, self.chat_id, self.interval, self.out = bot, chat_id, interval, out
        self.language = language
        self._taken = taken
        self._answering = False  # (the AI works on the reply: taken is asked from then on)
        self.stopped = False
        self.text = ""
        self._units = 0  # (the text's length as Telegram counts it, summed as deltas arrive)
        self.message_id: int | None = out.get("stream")
        self.unsent: list[str] = []
        self.keyboard: dict[str, Any] | None = None
        self.edit: int | None = None
        self._next = 0.0  # (monotonic time before which no streamed send or edit is tried)
        self._typing: asyncio.Task[None] | None = None

    def typing(self) -> None:
        """Show "typing…" in the chat (repeated every :data:`TYPING_EVERY_S`) until the first delta or
        :meth:`stop_typing`: the AI works on a reply for the client (``ChatService.answer``'s ``on_answering``)."""
        self._answering = True
        if self._typing is None:
            self._typing = asyncio.create_task(self._show_typing())

    def stop_typing(self) -> None:
        """No more "typing…" (the reply shows, or the turn ended)."""
        if self._typing is not None:
            self._typing.cancel()

    async def _show_typing(self) -> None:
        """Show "typing…" in the chat until cancelled, a failed chat action, or the conversation taken."""
        with contextlib.suppress(TelegramError):
            while True:
                await self.bot.send_chat_action(self.chat_id, "typing")
                await asyncio.sleep(TYPING_EVERY_S)
                if await self._taken_over():
                    return

    async def _taken_over(self) -> bool:
        """Whether the stream stopped: the AI works on the reply and ``taken`` says the conversation was taken
        from it since (the streamed message is deleted then, best-effort)."""
        if not self.stopped and self._answering and self._taken is not None and await self._taken():
            self.stopped = True
            if self._typing is not asyncio.current_task():
                self.stop_typing()
            await self.discard()
        return self.stopped

    async def delta(self, text: str) -> None:
        """Show the reply so far (a 403 raises ``Forbidden``: the client blocked the bot). At most one send or edit
        per ``interval``, failed ones included, and none until a 429's ``retry_after`` has passed: a failed first
        send used to be tried again at every delta, prolonging Telegram's flood control. A first send that failed
        otherwise than refused (no answer in time, a 5xx) may be in the chat all the same: no other streamed send
        follows it (each would be one more fragment), and the final text comes whole. Nothing once the stream
        :attr:`stopped` (checked before the send or edit: the conversation taken from the AI)."""
        if self.stopped:
            return
        self.stop_typing()
        self.text += text
        self._units += render.utf16_len(text)
        now = time.monotonic()
        if self._units > render.MAX_MESSAGE_CHARS or now < self._next:
            return
        self._next = now + self.interval
        if await self._taken_over():
            return
        try:
            if self.message_id is None:
                sent = await self.bot.send_message(
                    self.chat_id, render.escape(self.text), parse_mode=render.PARSE_MODE, read_timeout=SEND_TIMEOUT_S
                )
                self.message_id = sent.message_id
                await self.out.note(stream=sent.message_id)
            else:
                await self.bot.edit_message_text(
                    render.escape(self.text), self.chat_id, self.message_id, parse_mode=render.PARSE_MODE
                )
        except RetryAfter as exc:
            self._next = max(self._next, now + retry_seconds(exc))
        except BadRequest:  # (refused: the final text replaces it)
            pass
        except NetworkError as exc:  # (no answer in time, a 5xx: a failed edit is replaced by the final text)
            if self.message_id is None:
                log.warning("telegram: a streamed reply's first send to chat %s failed: %s", self.chat_id, exc.message)
                self._next = math.inf

    async def finish(self, result: TurnResult) -> None:
        """Write the final reply: the streamed message edited into its first part (:func:`show`), the others sent;
        the parts the chat shows already (``parts`` in ``out``) are left as they are. Raises Telegram's error of a
        part that could not be sent (those still in :attr:`unsent`; the first of them is for :attr:`edit` while it
        is set)."""
        if not result.reply:
            await self.discard()  # nothing was stored (the coach took the conversation meanwhile)
            return
        parts = render.split_html(result.reply, client_citations(result.citations))
        view = client_view(result.metadata)
        self.keyboard = feedback(result.message_id, view, self.language) if result.message_id else None
        shown = self.out.get("parts") or 0
        self.unsent, self.edit = parts[shown:], self.message_id if shown == 0 else None
        for index in range(shown, len(parts)):
            keyboard = markup(self.keyboard) if index == len(parts) - 1 else None
            if self.edit is not None:
                await show(self.bot, self.chat_id, self.edit, parts[index], keyboard)
            else:
                await with_retry(
                    self.bot.send_message,
                    self.chat_id,
                    parts[index],
                    parse_mode=render.PARSE_MODE,
                    reply_markup=keyboard,
                    read_timeout=SEND_TIMEOUT_S,
                )
            self.unsent, self.edit = parts[index + 1 :], None
            await self.out.note(parts=index + 1)

    async def discard(self) -> None:
        """Delete the streamed message (best-effort): the reply it showed was not stored."""
        if self.message_id is not None:
            with contextlib.suppress(TelegramError):
                await self.bot.delete_message(self.chat_id, self.message_id)
            self.message_id = None
            await self.out.note(stream=None)


class ChatReplies:
    """A turn's answer into the client's chat (:meth:`answer`), and the client's live events and stored messages
    through the chat's outbox (:meth:`deliver_event`, :meth:`deliver_stored`)."""

    def __init__(
        self,
        service: TelegramService,
        chat: ChatService,
        outbox: ChatOutbox,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        """``outbox``: the chats' outbox (:class:`ChatOutbox`), which the worker sends from."""
        self._service = service
        self._chat = chat
        self._outbox = outbox
        self._sessionmaker = sessionmaker

    async def answer(
        self,
        bot: Bot,
        coach_id: uuid.UUID,
        binding: ChatBinding,
        message_id: uuid.UUID,
        interval: float,
        out: Sent,
        *,
        language: str = "en",
    ) -> None:
        """Answer the stored client message ``message_id``, streaming the reply into the chat ("typing…" only while
        the AI works on a reply the client will get: not while the coach has the conversation). When the turn
        fails (the database out of reach, a pool exhausted), the worker answers it later
        (:meth:`~app.chat.turn.ChatService.answer_later`; the reply comes through the chat's outbox) and the
        client is told so (``refused_answer_later`` in ``language``); when the final text cannot be sent (a
        timeout, a 5xx), the parts not sent go through the chat's outbox, which retries. ``out``: what the update's
        processing sent (:class:`ReplyStream`; the stored reply's id is recorded as ``reply`` before it is shown).
        Raises ``Forbidden`` (the client blocked the bot). ``language``: that of the reply's buttons and of that
        notice (the update's, :func:`render.update_language`). Once the conversation is taken from the AI while it
        answers (:attr:`ReplyStream.stopped`: a crisis reply or the coach came), the answer is dropped: the
        streamed message deleted, the turn closed (its generation stopped; nothing of it is stored)."""
        taken = functools.partial(self._taken, coach_id, message_id)
        stream = ReplyStream(bot, binding.chat_id, interval, out, language, taken)
        result: TurnResult | None = None
        try:
            turn = self._chat.answer(coach_id, binding.client_id, message_id, on_answering=stream.typing)
            async with contextlib.aclosing(turn):  # a turn dropped is closed here, its model stream too
                async for item in turn:
                    if isinstance(item, TurnResult):
                        result = item
                    else:
                        await stream.delta(item)
                    if stream.stopped:
                        break
        except (DomainError, Forbidden):
            raise
        except Exception:  # the message is stored: it must not stay unanswered
            log.exception("telegram: answering message %s failed; a job answers it", message_id)
            await stream.discard()
            await self._chat.answer_later(coach_id, message_id)
            with contextlib.suppress(TelegramError):
                later = say("refused_answer_later", language)
                await out.once("notice", lambda: bot.send_message(binding.chat_id, later))
            return
        finally:
            stream.stop_typing()
        if result is None:
            return
        if not result.reply and (result.handoff or {}).get("status") == "draft_pending":
            await stream.discard()  # the reply waits for the coach: say so, as the widget does
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                reviewing = render.escape(render.reviewing_text((await uow.coach()).name, language))
            with contextlib.suppress(TelegramError):
                await out.once(
                    "notice", lambda: bot.send_message(binding.chat_id, reviewing, parse_mode=render.PARSE_MODE)
                )
            return
        if result.message_id is not None:
            await out.note(reply=str(result.message_id))
        await self._finish(coach_id, binding, stream, result)

    async def _taken(self, coach_id: uuid.UUID, message_id: uuid.UUID) -> bool:
        """Whether the conversation of client message ``message_id`` was taken from the AI
        (:func:`~app.handoff.service.taken_from`); ``False`` when the database cannot tell now (the reply then ends
        as the turn decides: nothing stored, nothing shown, when the coach has the conversation)."""
        try:
            async with unit_of_work(self._sessionmaker, coach_id, autocommit=True) as uow:
                return await taken_from(uow.session, message_id)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("telegram: whether message %s's conversation was taken is unknown: %r", message_id, exc)
            return False

    async def resume(
        self,
        bot: Bot,
        coach_id: uuid.UUID,
        binding: ChatBinding,
        message_id: uuid.UUID,
        out: Sent,
        *,
        language: str = "en",
    ) -> None:
        """Show the rest of the stored reply (``reply`` in ``out``) to client message ``message_id``, answered when
        the update was processed before, whose process stopped before the chat showed all of it: the streamed
        message edited into its first part, the parts not shown sent (:meth:`ReplyStream.finish`). Nothing for a
        reply handed to the chat's outbox (``queued``), which shows it, nor for a reply erased since."""
        if out.get("queued"):
            return
        async with unit_of_work(self._sessionmaker, coach_id, autocommit=True) as uow:
            reply = await uow.session.get(Message, uuid.UUID(out.get("reply")))
        if reply is None:
            return
        result = TurnResult(reply.conversation_id, message_id, reply.id, reply.text, reply.citations, reply.meta)
        await self._finish(coach_id, binding, ReplyStream(bot, binding.chat_id, 0.0, out, language), result)

    async def _finish(self, coach_id: uuid.UUID, binding: ChatBinding, stream: ReplyStream, result: TurnResult) -> None:
        """:meth:`ReplyStream.finish`; what Telegram did not take goes through the chat's outbox. Raises
        ``Forbidden``."""
        try:
            await stream.finish(result)
        except Forbidden:
            raise
        except TelegramError as exc:
            message_id = result.received_message_id
            log.warning("telegram: the reply to message %s goes through the outbox: %s", message_id, exc.message)
            if result.message_id is not None:
                unsent, keyboard = stream.unsent, stream.keyboard
                await self.push_message(coach_id, binding, result.message_id, unsent, keyboard, edit=stream.edit)
                await stream.out.note(queued=True)

    async def deliver_event(self, coach_id: uuid.UUID, client_id: uuid.UUID, event: dict[str, Any]) -> None:
        """A :data:`app.handoff.service.ClientSink`: a live event of a client whose Telegram chat continues the
        event's conversation is queued for the worker (:meth:`ChatOutbox.push`; a coach's message with the
        feedback keyboard, a joined/left notice), in the language the client reads the conversation's handoff in
        (:func:`~app.handoff.sla.notice_language`: no update, no ``language_code`` here). A message the chat's
        outbox cannot take now (Redis out of reach) is not lost: see :meth:`push_message`."""
        try:
            conversation_id = uuid.UUID(str(event.get("conversation_id")))
        except ValueError:  # (an event of no conversation)
            return
        binding = await self._service.chat_of_conversation(coach_id, client_id, conversation_id)
        if binding is None:
            return
        message = event.get("message") if event.get("type") == "message" else None
        if not isinstance(message, dict) and render.notice_text(event) is None:
            return  # (an event the chat does not show)
        async with unit_of_work(self._sessionmaker, coach_id, autocommit=True) as uow:
            language = await notice_language(uow.session, conversation_id)  # no update here: the handoff's
        if isinstance(message, dict):
            parts = render.split_html(str(message.get("text") or ""), message.get("citations") or [])
            message_id = uuid.UUID(str(message["id"]))
            keyboard = feedback(message_id, message.get("metadata") or {}, language)
            await self.push_message(coach_id, binding, message_id, parts, keyboard)
        elif (notice := render.notice_text(event, language)) is not None:
            await self._outbox.push(coach_id, binding.chat_id, [render.escape(notice)], None)

    async def push_message(
        self,
        coach_id: uuid.UUID,
        binding: ChatBinding,
        message_id: uuid.UUID,
        parts: list[str],
        keyboard: dict[str, Any] | None,
        *,
        edit: int | None = None,
    ) -> None:
        """Queue stored message ``message_id`` for the chat (``parts``, ``keyboard`` and ``edit`` as
        :meth:`ChatOutbox.push` takes them), once. When Redis refuses the push, the ``telegram_deliver`` job is
        queued through the transactional outbox instead (:func:`app.db.jobs.telegram_deliver`): the relay sends it
        once Redis is back and the worker pushes the message then (:meth:`deliver_stored`; the whole message, as new
        messages). Raises when PostgreSQL is out of reach too."""
        try:
            await self._outbox.push(coach_id, binding.chat_id, parts, keyboard, dedupe=f"tg:{message_id}", edit=edit)
        except UNAVAILABLE as exc:
            log.warning("telegram: message %s waits in the outbox for Redis: %s", message_id, exc)
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                jobs.telegram_deliver(uow.session, coach_id, binding.client_id, message_id)

    async def deliver_stored(self, coach_id: uuid.UUID, client_id: uuid.UUID, message_id: uuid.UUID) -> str:
        """Worker job body (``telegram_deliver``): queue stored message ``message_id`` for the client's Telegram
        chat if that chat still continues its conversation (a message erased since, or a chat unbound, goes
        nowhere), unless it was queued before. Returns a short status for arq."""
        async with unit_of_work(self._sessionmaker, coach_id, autocommit=True) as uow:
            message = await uow.session.get(Message, message_id)
            event = message_event(message, client_view=client_view(message.meta)) if message is not None else None
        if event is None:
            return "message gone"
        await self.deliver_event(coach_id, client_id, event)
        return "queued for the chat"
