"""The Telegram channel's state: connecting a coach's bot, invite codes, chat bindings and processed updates.

Every method runs in the coach's tenant transaction (row-level security). The Bot API is called through
:func:`app.channels.telegram.bot.make_bot`; its errors reach the coach as a 400 with Telegram's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import case, delete, func, literal, null, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import Bot
from telegram.error import BadRequest, NetworkError, TelegramError

from app.accounts.service import AccountService
from app.accounts.unit_of_work import unit_of_work
from app.channels.telegram import render
from app.channels.telegram.bot import TOKEN_RE, make_bot
from app.channels.telegram.models import TelegramBot, TelegramChat, TelegramInvite, TelegramUpdate
from app.core.config import Settings
from app.core.egress import EgressGuard
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.ratelimit import IdThrottle
from app.core.security import SecretBox, mask_secret, token_hash
from app.core.validation import is_https
from app.db.engine import tenant_session

log = logging.getLogger(__name__)

PUBLIC_API_HOST = "api.telegram.org"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
WEBHOOK_PATH = "/api/v1/telegram/webhook"
RECLAIM_AFTER_S = 120.0
"""Seconds after which an update taken but never finished counts as lost with its process: a re-send of it is
processed, and the worker's sweep processes it. The process working on an update renews its claim every third
of this (:meth:`UpdateLedger.renew`), so a turn longer than this is not taken from it."""
INVITE_TTL = timedelta(days=7)
"""How long an unused invite link works (an old link, forwarded or found later, binds no chat)."""
MAX_ATTEMPTS = 5
"""Attempts at processing an update that failed (:meth:`UpdateLedger.failed`) after which it is given up
(marked done, its payload dropped, an error logged): about this many sweeps, minutes apart."""
RETIRE_AFTER_S = 600.0
"""Seconds a coach's replaced Bot API client (the token changed, the bot connected again) stays open before its
connection pools close: longer than a streamed reply that may still be using it (its model call's overall
deadline, ``LLM_DEADLINE_SECONDS``, is 300 s by default)."""


@dataclass(frozen=True)
class BotInfo:
    """A connected bot as the coach sees it: ``bot_username``, ``mode`` (``webhook``/``polling``), the
    ``webhook_url`` (``None`` when polling), the masked token and ``open_enrollment``."""

    bot_username: str
    mode: str
    webhook_url: str | None
    token: str
    open_enrollment: bool


def _refused(exc: TelegramError) -> InvalidInput:
    """The coach's error for a Bot API call of :meth:`TelegramService.connect` that failed: Telegram's reason
    for refusing the token, or that Telegram could not be reached (a network error or a timeout: python-telegram-
    bot's ``NetworkError`` other than its ``BadRequest``), which says nothing about the token."""
    if isinstance(exc, NetworkError) and not isinstance(exc, BadRequest):
        return InvalidInput(f"could not reach Telegram ({exc.message}); nothing was saved, try again later")
    return InvalidInput(f"Telegram refused the bot token: {exc.message}")


@dataclass(frozen=True)
class Invite:
    """A client's one-time invite: ``url`` (``https://t.me/<bot>?start=<code>``), the ``code`` and when it
    stops working (``expires_at``)."""

    url: str
    code: str
    expires_at: datetime


@dataclass(frozen=True)
class ChatBinding:
    """A Telegram chat bound to ``client_id``, continuing ``conversation_id`` (``None``: none yet)."""

    chat_id: int
    client_id: uuid.UUID
    conversation_id: uuid.UUID | None
    active: bool


def _unfinished(coach_id: uuid.UUID, update_id: int) -> Any:
    """SQL: an ``UPDATE`` of the coach's update ``update_id`` while it is not done."""
    return update(TelegramUpdate).where(
        TelegramUpdate.coach_id == coach_id, TelegramUpdate.update_id == update_id, TelegramUpdate.done_at.is_(None)
    )


class UpdateLedger:
    """The update ids each coach's bot received (``telegram_updates``): an update is taken once, renewed while
    processed, done, or counted failed and taken again by the worker's sweep once its claim is
    :attr:`reclaim_after_s` old."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self.reclaim_after_s = RECLAIM_AFTER_S

    def _stale(self) -> Any:
        """SQL: the update was taken but not finished, and its claim is older than :attr:`reclaim_after_s`."""
        cutoff = func.now() - timedelta(seconds=self.reclaim_after_s)
        return TelegramUpdate.done_at.is_(None) & (TelegramUpdate.claimed_at < cutoff)

    async def first_delivery(
        self, coach_id: uuid.UUID, update_id: int, payload: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Record the update (``payload``, its JSON, kept until :meth:`done`) and take it. When it is to be
        processed now, what its processing sent so far (:class:`Sent`): ``{}`` on its first delivery, what the
        process that died before finishing it had sent on a re-send of one taken over :attr:`reclaim_after_s`
        seconds ago and never done. ``None`` for a re-send of one processed or in progress."""
        statement = insert(TelegramUpdate).values(
            id=uuid.uuid4(), coach_id=coach_id, update_id=update_id, payload=payload
        )
        async with tenant_session(self._sessionmaker, coach_id) as session:
            sent: dict[str, Any] | None = await session.scalar(
                statement.on_conflict_do_update(
                    index_elements=["coach_id", "update_id"], set_={"claimed_at": func.now()}, where=self._stale()
                ).returning(TelegramUpdate.sent)
            )
        return sent

    async def done(self, coach_id: uuid.UUID, update_id: int) -> None:
        """Mark the update processed (its payload and what it sent are dropped): never processed again."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            await session.execute(
                update(TelegramUpdate)
                .where(TelegramUpdate.coach_id == coach_id, TelegramUpdate.update_id == update_id)
                .values(done_at=func.now(), payload=None, sent={})
            )

    async def note_sent(self, coach_id: uuid.UUID, update_id: int, entries: dict[str, Any]) -> None:
        """Add ``entries`` to what the update's processing sent (:class:`Sent`), while it is not done."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            await session.execute(
                _unfinished(coach_id, update_id).values(sent=TelegramUpdate.sent.op("||")(literal(entries, JSONB)))
            )

    async def failed(self, coach_id: uuid.UUID, update_id: int) -> int | None:
        """Count a failed attempt at the update (the database or Redis out of reach, a bug: not the client's
        input). It stays taken, with its payload, so the worker's sweep processes it again once its claim is
        :attr:`reclaim_after_s` old (:meth:`stale_updates`); the :data:`MAX_ATTEMPTS`-th failure marks it done
        instead, as :meth:`done`. Returns the failed attempts so far (``None``: it was done meanwhile)."""
        given_up = TelegramUpdate.attempts + 1 >= MAX_ATTEMPTS
        async with tenant_session(self._sessionmaker, coach_id) as session:
            attempts: int | None = await session.scalar(
                _unfinished(coach_id, update_id)
                .values(
                    attempts=TelegramUpdate.attempts + 1,
                    done_at=case((given_up, func.now())),
                    payload=case((given_up, null()), else_=TelegramUpdate.payload),
                    sent=case((given_up, literal({}, JSONB)), else_=TelegramUpdate.sent),
                )
                .returning(TelegramUpdate.attempts)
            )
        return attempts

    async def finish(self, coach_id: uuid.UUID, update_id: Any, *, failed: bool) -> None:
        """After processing the update: :meth:`done`, or a failed attempt counted (:meth:`failed`; an error
        logged when it is given up). Errors are logged: an update not marked stays taken, as if its process
        died, and the sweep takes it again."""
        if not isinstance(update_id, int):
            return
        try:
            if not failed:
                await self.done(coach_id, update_id)
                return
            attempts = await self.failed(coach_id, update_id)
        except Exception:
            log.exception("telegram update %s of coach %s: could not record its outcome", update_id, coach_id)
            return
        if attempts is not None and attempts >= MAX_ATTEMPTS:
            log.error("telegram update %s of coach %s given up after %d attempts", update_id, coach_id, attempts)

    def keep_claimed(self, coach_id: uuid.UUID, update_id: int) -> asyncio.Task[None]:
        """A task renewing the update's claim (:meth:`renew`) every third of :attr:`reclaim_after_s` until
        cancelled (a failed renewal is logged; the next one tries again)."""

        async def renewing() -> None:
            while True:
                await asyncio.sleep(self.reclaim_after_s / 3)
                try:
                    await self.renew(coach_id, update_id)
                except Exception:
                    log.exception("telegram update %s of coach %s: could not renew its claim", update_id, coach_id)

        return asyncio.create_task(renewing())

    async def renew(self, coach_id: uuid.UUID, update_id: int) -> None:
        """Renew the claim of an update still being processed (its ``claimed_at`` is now), so a re-send and the
        sweep (:meth:`reclaim`) leave it alone however long its turn takes: a slow model, a wait for a turn slot
        or for the chat's previous update."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            await session.execute(_unfinished(coach_id, update_id).values(claimed_at=func.now()))

    async def reclaim(self, coach_id: uuid.UUID, update_id: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Take an update whose process died (see :meth:`first_delivery`): its payload and what its processing
        sent so far (:class:`Sent`), or ``None`` when it was finished or is taken by a live process meanwhile."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            row = (
                await session.execute(
                    update(TelegramUpdate)
                    .where(TelegramUpdate.coach_id == coach_id, TelegramUpdate.update_id == update_id, self._stale())
                    .values(claimed_at=func.now())
                    .returning(TelegramUpdate.payload, TelegramUpdate.sent)
                )
            ).one_or_none()
        return None if row is None or row.payload is None else (row.payload, row.sent)

    async def stale_updates(self) -> list[tuple[uuid.UUID, int]]:
        """``(coach_id, update_id)`` of the updates of every coach taken but never finished (read across tenants
        by a SECURITY DEFINER function), oldest claim first, at most 500."""
        async with self._sessionmaker() as session:
            rows = await session.execute(
                text("SELECT coach_id, update_id FROM telegram_stale_updates(:lease)"), {"lease": self.reclaim_after_s}
            )
        return [(row[0], int(row[1])) for row in rows]


class Sent:
    """What processing one update sent to its chat so far (``telegram_updates.sent``), so that processing it again
    (its process died, or it failed and the worker's sweep took it again) sends nothing twice and finishes what was
    begun. Keys: a one-off text's name (``welcome``, ``notice``: :meth:`once`), and of a reply the streamed
    message's id (``stream``), the stored reply's id (``reply``), how many of its parts the chat shows (``parts``)
    and whether the rest went to the chat's outbox (``queued``), and that a ``/tone`` button's change was made
    (``tone``: processed again, the press only shows the tone). Each entry is recorded as soon as it went out; one
    that cannot be recorded (the database out of reach) is logged, and may go out again should the update be
    processed again. A Bot API call whose answer never came cannot be recorded at all: it may be in the chat, and
    is sent again."""

    def __init__(self, ledger: UpdateLedger, coach_id: uuid.UUID, update_id: int | None, sent: dict[str, Any]) -> None:
        """``sent``: what was recorded before; no ``update_id`` (not an update Telegram numbered): nothing is
        recorded."""
        self._ledger, self._coach_id, self._update_id = ledger, coach_id, update_id
        self._sent = dict(sent)

    def get(self, key: str) -> Any:
        """What was recorded under ``key``, ``None`` if nothing."""
        return self._sent.get(key)

    async def note(self, **entries: Any) -> None:
        """Record ``entries`` (JSON values): sent now."""
        self._sent.update(entries)
        if self._update_id is None:
            return
        try:
            await self._ledger.note_sent(self._coach_id, self._update_id, entries)
        except Exception:  # (it went out: the update's processing goes on)
            log.exception(
                "telegram update %s of coach %s: could not record %s", self._update_id, self._coach_id, entries
            )

    async def once(self, key: str, send: Callable[[], Awaitable[object]]) -> None:
        """``await send()`` unless ``key`` is recorded already, then record it."""
        if self.get(key) is None:
            await send()
            await self.note(**{key: True})


class TelegramService:
    """Bots, invites and chat bindings of the coaches' Telegram channels."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        secrets_box: SecretBox,
        accounts: AccountService,
        enrollments: IdThrottle,
    ) -> None:
        """``enrollments`` counts each coach's strangers who become clients (``TELEGRAM_ENROLLMENT_LIMIT``)."""
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._secrets = secrets_box
        self._accounts = accounts
        self._enrollments = enrollments
        self.guard = EgressGuard.from_settings(settings)
        self._bots: dict[uuid.UUID, tuple[bytes, Bot]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self.retire_after_s = RETIRE_AFTER_S
        self.updates = UpdateLedger(sessionmaker)
        """The updates received and their processing (:class:`UpdateLedger`)."""

    def mode(self) -> str:
        """``webhook`` when PUBLIC_URL is https or TELEGRAM_API_URL is a self-hosted Bot API server (or
        ``TELEGRAM_MODE`` says so), else ``polling``."""
        if self._settings.telegram_mode != "auto":
            return self._settings.telegram_mode
        host = urlsplit(self._settings.telegram_api_url).hostname or ""
        return "webhook" if is_https(self._settings.public_url) or host != PUBLIC_API_HOST else "polling"

    def webhook_url(self, coach_id: uuid.UUID) -> str:
        """Where Telegram posts the coach's updates."""
        return f"{self._settings.public_url.rstrip('/')}{WEBHOOK_PATH}/{coach_id}"

    async def connect(self, coach_id: uuid.UUID, token: str, open_enrollment: bool | None) -> BotInfo:
        """Check ``token`` with ``getMe``, store the bot (token and secret encrypted), register the webhook
        (``setWebhook`` with a new secret and :data:`ALLOWED_UPDATES`) or drop it for polling
        (``deleteWebhook``), and commit. Raises ``InvalidInput`` (not a token, or Telegram's reason for refusing
        it; nothing stored) and ``Conflict`` (the bot is connected to another account: nothing stored and its
        webhook left as it was). Another bot than the one connected starts with no update ids recorded and from
        the first ``getUpdates`` offset (its update ids are not the old bot's), and the old bot's webhook is
        deleted (:meth:`_release`)."""
        token = token.strip()
        if not TOKEN_RE.fullmatch(token):
            raise InvalidInput("bot_token is not a Telegram bot token (like 123456789:AA…, from @BotFather)")
        secret, mode = secrets.token_urlsafe(32), self.mode()
        bot = make_bot(self._settings, self.guard, token)
        try:
            try:
                me = await bot.get_me()
            except TelegramError as exc:
                raise _refused(exc) from None
            # stored (flushed) before the webhook moves, committed after: a bot connected to another account
            # is refused before its updates are taken from that account
            async with tenant_session(self._sessionmaker, coach_id) as session:
                row = await session.scalar(select(TelegramBot).where(TelegramBot.coach_id == coach_id))
                row = row or TelegramBot(coach_id=coach_id)
                replaced = row.token_encrypted if row.bot_id is not None and row.bot_id != me.id else None
                if row.bot_id != me.id:  # another bot (or none since a disconnect): its update ids are its own,
                    row.poll_offset = 0  # and the old bot's updates left unprocessed go with it (the new bot
                    await session.execute(delete(TelegramUpdate).where(TelegramUpdate.coach_id == coach_id))
                    # could not answer in chats that never started it)
                row.bot_id, row.username, row.mode = me.id, me.username or str(me.id), mode
                row.token_encrypted = self._secrets.encrypt(token)
                row.webhook_secret_encrypted = self._secrets.encrypt(secret)
                if open_enrollment is not None:
                    row.open_enrollment = open_enrollment
                session.add(row)
                try:
                    await session.flush()
                except IntegrityError:
                    raise Conflict("this bot is connected to another account") from None
                try:
                    await self._register(bot, coach_id, mode, secret)
                except TelegramError as exc:
                    raise _refused(exc) from None
        finally:
            await bot.shutdown()
        self._retire(coach_id)
        await self._release(replaced)
        return await self.status(coach_id)

    async def _release(self, token_encrypted: bytes | None) -> None:
        """``deleteWebhook`` for the bot a coach replaced by another (best effort, as :meth:`disconnect`: its token
        may be revoked or unreadable), so Telegram stops posting its chats' updates to a webhook that now refuses
        them (401) and retries them for a day."""
        if token_encrypted is None:
            return
        with contextlib.suppress(ValueError):
            old = make_bot(self._settings, self.guard, self._secrets.decrypt(token_encrypted))
            try:
                with contextlib.suppress(TelegramError):
                    await old.delete_webhook()
            finally:
                await old.shutdown()

    async def _register(self, bot: Bot, coach_id: uuid.UUID, mode: str, secret: str) -> None:
        """Point the bot's updates at this install: ``setWebhook`` (:meth:`webhook_url`, ``secret``,
        :data:`ALLOWED_UPDATES`) in ``webhook`` mode, else ``deleteWebhook`` (for ``getUpdates``). Raises
        ``TelegramError``."""
        if mode == "webhook":
            await bot.set_webhook(self.webhook_url(coach_id), secret_token=secret, allowed_updates=ALLOWED_UPDATES)
        else:
            await bot.delete_webhook()

    async def align_modes(self) -> int:
        """Move every bot saved in the other mode than this install's :meth:`mode` to it: a bot connected for
        polling before ``PUBLIC_URL`` became https would otherwise get its updates from no one (no poller runs
        then, and Telegram has no webhook for it), and a webhook bot on a polling install the same. Each bot is
        moved under its row's lock (several processes starting at once move it once) with a new webhook secret.
        A bot Telegram refuses (a revoked token, Telegram out of reach) is logged and left as it was, for the
        next start or a reconnect. Returns how many bots moved."""
        mode = self.mode()
        other = "polling" if mode == "webhook" else "webhook"
        async with self._sessionmaker() as session:
            rows = await session.execute(text("SELECT coach_id FROM telegram_bots_in_mode(:mode)"), {"mode": other})
        moved = 0
        for coach_id in [row[0] for row in rows]:
            try:
                moved += await self._move(coach_id, mode)
            except TelegramError as exc:
                log.warning("telegram: the bot of coach %s stays in %s mode: %s", coach_id, other, exc.message)
        return moved

    async def _move(self, coach_id: uuid.UUID, mode: str) -> bool:
        """:meth:`align_modes` for one bot: whether it moved (``False``: gone, or moved by another process)."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            row = await session.scalar(select(TelegramBot).where(TelegramBot.coach_id == coach_id).with_for_update())
            if row is None or row.mode == mode:
                return False
            secret = secrets.token_urlsafe(32)
            bot = make_bot(self._settings, self.guard, self._secrets.decrypt(row.token_encrypted))
            try:
                await self._register(bot, coach_id, mode, secret)
            finally:
                await bot.shutdown()
            row.mode, row.webhook_secret_encrypted = mode, self._secrets.encrypt(secret)
        log.info("telegram: the bot of coach %s moved to %s mode", coach_id, mode)
        return True

    async def status(self, coach_id: uuid.UUID) -> BotInfo:
        """The coach's bot (token masked). Raises ``NotFound`` when no bot is connected."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            row = await self._bot_row(session, coach_id)
        return BotInfo(
            row.username,
            row.mode,
            self.webhook_url(coach_id) if row.mode == "webhook" else None,
            mask_secret(self._secrets.decrypt(row.token_encrypted)),
            row.open_enrollment,
        )

    async def own_command(self, coach_id: uuid.UUID, text: Any) -> Any:
        """A message's ``text`` whose command is addressed to the coach's bot, ``/cmd@<its username>`` (the
        username compared case-insensitively; :func:`render.addressed_command`), as ``/cmd``, so that it works as
        ``/cmd`` does. Any other text as it is, without a query: a command addressed to another bot is none of this
        bot's (Bot API "Commands"), and ``None`` (no text) stays ``None``. Raises ``NotFound`` (no bot)."""
        addressed = render.addressed_command(text)
        if addressed is None:
            return text
        async with tenant_session(self._sessionmaker, coach_id) as session:
            username = (await self._bot_row(session, coach_id)).username
        return addressed[0] if addressed[1].casefold() == username.casefold() else text

    async def set_open_enrollment(self, coach_id: uuid.UUID, value: bool) -> BotInfo:
        """Turn open enrolment on or off. Raises ``NotFound`` when no bot is connected."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            (await self._bot_row(session, coach_id)).open_enrollment = value
        return await self.status(coach_id)

    async def disconnect(self, coach_id: uuid.UUID) -> None:
        """``deleteWebhook`` (a failure is ignored: the bot may be revoked) and forget the bot; chat
        bindings stay for a later reconnect. Raises ``NotFound`` when no bot is connected."""
        bot = await self.bot(coach_id)
        with contextlib.suppress(TelegramError):
            await bot.delete_webhook()
        async with tenant_session(self._sessionmaker, coach_id) as session:
            await session.execute(delete(TelegramBot).where(TelegramBot.coach_id == coach_id))
        self._bots.pop(coach_id, None)
        await bot.shutdown()

    async def disconnect_any(self, coach_id: uuid.UUID) -> None:
        """:meth:`disconnect` the coach's bot if one is connected (an account being deleted): otherwise Telegram
        would go on posting its updates to a webhook that refuses them, and the owner could no longer disconnect
        the bot here."""
        with contextlib.suppress(NotFound):
            await self.disconnect(coach_id)

    async def _bot_row(self, session: AsyncSession, coach_id: uuid.UUID, *, lock: bool = False) -> TelegramBot:
        stmt = select(TelegramBot).where(TelegramBot.coach_id == coach_id)
        row = await session.scalar(stmt.with_for_update() if lock else stmt)
        if row is None:
            raise NotFound("no Telegram bot is connected")
        return row

    async def bot(self, coach_id: uuid.UUID) -> Bot:
        """The coach's Bot API client (cached until the token changes). Raises ``NotFound``."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            encrypted = (await self._bot_row(session, coach_id)).token_encrypted
        cached = self._bots.get(coach_id)
        if cached is not None and cached[0] == encrypted:
            return cached[1]
        self._retire(coach_id)  # the token changed: the client made with the old one goes
        bot = make_bot(self._settings, self.guard, self._secrets.decrypt(encrypted))
        self._bots[coach_id] = (encrypted, bot)
        return bot

    def _retire(self, coach_id: uuid.UUID) -> None:
        """Drop the coach's cached Bot API client, if any; its connection pools close :attr:`retire_after_s`
        later, so a call still using it (a reply being streamed) ends first."""
        cached = self._bots.pop(coach_id, None)
        if cached is not None:
            task = asyncio.create_task(self._close_later(cached[1]))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _close_later(self, bot: Bot) -> None:
        try:
            await asyncio.sleep(self.retire_after_s)
        finally:  # cancelled by close(): at once
            await bot.shutdown()

    async def close(self) -> None:
        """Close every Bot API client this service made, the retired ones at once (the process is stopping)."""
        cached, self._bots = list(self._bots.values()), {}
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*self._retiring, *(bot.shutdown() for _, bot in cached), return_exceptions=True)

    async def check_secret(self, coach_id: uuid.UUID, secret: str) -> bool:
        """Whether ``secret`` (the ``X-Telegram-Bot-Api-Secret-Token`` header) is the coach's webhook secret,
        compared in constant time; ``False`` when the coach has no bot."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            row = await session.scalar(select(TelegramBot).where(TelegramBot.coach_id == coach_id))
        expected = self._secrets.decrypt(row.webhook_secret_encrypted) if row is not None else secrets.token_hex(32)
        return hmac.compare_digest(expected.encode(), secret.encode()) and row is not None

    async def invite(self, coach_id: uuid.UUID, client_id: uuid.UUID) -> Invite:
        """A new one-time invite for the client, valid for :data:`INVITE_TTL`; the client's earlier unused
        invites stop working (a link sent to the wrong person is revoked by making a new one). Raises
        ``NotFound`` (no such client, or no bot connected)."""
        code = secrets.token_urlsafe(24)
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            bot = await self._bot_row(session, coach_id)
            await self._accounts.get_client(uow, client_id)
            await session.execute(
                delete(TelegramInvite).where(TelegramInvite.client_id == client_id, TelegramInvite.used_at.is_(None))
            )
            invite = TelegramInvite(coach_id=coach_id, client_id=client_id, code_hash=token_hash(code))
            session.add(invite)
            await session.flush()
            await session.refresh(invite, ["created_at"])
        return Invite(f"https://t.me/{bot.username}?start={code}", code, invite.created_at + INVITE_TTL)

    async def binding(self, coach_id: uuid.UUID, chat_id: int) -> ChatBinding | None:
        """The client bound to ``chat_id`` in the coach's bot, if any."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            row = await session.scalar(
                select(TelegramChat).where(TelegramChat.coach_id == coach_id, TelegramChat.chat_id == chat_id)
            )
        return None if row is None else ChatBinding(row.chat_id, row.client_id, row.conversation_id, row.active)

    async def chat_of_conversation(
        self, coach_id: uuid.UUID, client_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> ChatBinding | None:
        """The client's active Telegram chat that continues ``conversation_id``, if any. A client can have two
        chats (one enrolled by writing to the bot, one bound by an invite), each with its own conversation: the
        newest of them was taken before, and a message to the other's conversation went nowhere."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            row = await session.scalar(
                select(TelegramChat)
                .where(
                    TelegramChat.client_id == client_id,
                    TelegramChat.conversation_id == conversation_id,
                    TelegramChat.active.is_(True),
                )
                .order_by(TelegramChat.created_at.desc())
                .limit(1)
            )
        return None if row is None else ChatBinding(row.chat_id, row.client_id, row.conversation_id, row.active)

    async def redeem(self, coach_id: uuid.UUID, chat_id: int, code: str) -> uuid.UUID | None:
        """Bind ``chat_id`` to the client of the unused invite ``code`` (used up now) and return the client's
        id. The invite this chat's own client used already (the client tapping their link again) returns that
        client, the chat left as it is; ``None`` for an unknown code, one used by another chat, one older than
        :data:`INVITE_TTL` or one a newer invite of its client revoked."""
        code_hash = token_hash(code)
        async with tenant_session(self._sessionmaker, coach_id) as session:
            client_id: uuid.UUID | None = await session.scalar(
                update(TelegramInvite)
                .where(
                    TelegramInvite.code_hash == code_hash,
                    TelegramInvite.used_at.is_(None),
                    TelegramInvite.created_at > func.now() - INVITE_TTL,
                )
                .values(used_at=datetime.now(UTC))
                .returning(TelegramInvite.client_id)
            )
            if client_id is not None:
                await self._bind(session, coach_id, chat_id, client_id)
            else:  # used already: by this chat's own client?
                client_id = await session.scalar(
                    select(TelegramInvite.client_id)
                    .join(TelegramChat, TelegramChat.client_id == TelegramInvite.client_id)
                    .where(TelegramInvite.code_hash == code_hash, TelegramChat.chat_id == chat_id)
                )
        return client_id

    async def enrol(self, coach_id: uuid.UUID, chat_id: int, name: str) -> tuple[uuid.UUID, bool] | None:
        """A stranger writing to the bot: with open enrolment, a new client named ``name`` bound to the chat, as
        ``(client id, True)``; ``None`` when the coach turned open enrolment off. The coach's enrolments are one at
        a time (the bot's row locked), so the stranger's first messages handled at once by two processes make one
        client: the later finds the chat bound, ``(its client id, False)``. Raises ``TooManyAttempts`` (no client
        made) when the coach has had ``TELEGRAM_ENROLLMENT_LIMIT`` new clients this way lately."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            if not (await self._bot_row(session, coach_id, lock=True)).open_enrollment:
                return None
            bound = await session.scalar(
                select(TelegramChat.client_id).where(TelegramChat.coach_id == coach_id, TelegramChat.chat_id == chat_id)
            )
            if bound is not None:
                return bound, False
            await self._enrollments.hit(coach_id)
            client, _ = await self._accounts.create_client(uow, name[:200] or "Telegram client")
            await self._bind(session, coach_id, chat_id, client.id)
        return client.id, True

    async def _bind(self, session: AsyncSession, coach_id: uuid.UUID, chat_id: int, client_id: uuid.UUID) -> None:
        await session.execute(
            insert(TelegramChat)
            .values(id=uuid.uuid4(), coach_id=coach_id, chat_id=chat_id, client_id=client_id, active=True)
            .on_conflict_do_update(
                index_elements=["coach_id", "chat_id"],
                set_={"client_id": client_id, "active": True, "conversation_id": None},
            )
        )

    async def set_chat(
        self, coach_id: uuid.UUID, chat_id: int, *, conversation_id: uuid.UUID | None = None, active: bool = True
    ) -> None:
        """Remember the conversation the chat continues, or mark the chat inactive (the client blocked the
        bot: ``active=False``)."""
        values: dict[str, object] = {"active": active}
        if conversation_id is not None:
            values["conversation_id"] = conversation_id
        async with tenant_session(self._sessionmaker, coach_id) as session:
            await session.execute(
                update(TelegramChat)
                .where(TelegramChat.coach_id == coach_id, TelegramChat.chat_id == chat_id)
                .values(**values)
            )

    async def polling_coaches(self) -> list[uuid.UUID]:
        """Coaches whose bot gets updates by ``getUpdates`` (read across tenants by a SECURITY DEFINER
        function)."""
        async with self._sessionmaker() as session:
            rows = await session.execute(text("SELECT coach_id FROM telegram_bots_in_mode('polling')"))
        return [row[0] for row in rows]

    async def poll_offset(self, coach_id: uuid.UUID, offset: int | None = None) -> int:
        """The next ``getUpdates`` offset; stores ``offset`` first when given."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            row = await self._bot_row(session, coach_id)
            if offset is not None:
                row.poll_offset = offset
            return row.poll_offset
