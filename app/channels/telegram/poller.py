"""``getUpdates`` long polling, for installs without an https ``PUBLIC_URL`` (a laptop demo): every bot in
``polling`` mode is polled, each update de-duplicated by ``update_id`` and processed as a webhook's would be."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from sqlalchemy.exc import DBAPIError
from telegram import Bot
from telegram.error import InvalidToken, TelegramError

from app.channels.telegram.adapter import TelegramChannel
from app.channels.telegram.bot import POLL_TIMEOUT_S
from app.channels.telegram.service import ALLOWED_UPDATES
from app.core.validation import NUL_REFUSED, refused_for_nul

log = logging.getLogger(__name__)

REFRESH_S = 10.0
"""How often the poller looks for newly connected (or disconnected) bots."""
ERROR_PAUSE_S = 5.0
REFUSED_PAUSE_S = 300.0
"""Pause of a bot's polling after Telegram refused its token (it stays refused until the coach connects a new
one): a warning every 5 minutes, not every 5 seconds. It ends early when the coach connects a token again
(:func:`_refused_pause`)."""
TOKEN_CHECK_S = 5.0
"""How often a bot's polling paused for a refused token looks whether the coach connected a token since."""


async def poll_once(channel: TelegramChannel, coach_id: uuid.UUID, wait_s: int = POLL_TIMEOUT_S) -> int:
    """One ``getUpdates`` call for the coach's bot (long poll of ``wait_s`` seconds): new updates are
    dispatched and the offset stored. An update PostgreSQL cannot store (it holds U+0000) is logged and skipped,
    as the webhook refuses it with a 400: it would otherwise come back at every poll and stop the bot. Returns
    how many updates arrived. Raises ``TelegramError``."""
    bot = await channel.service.bot(coach_id)
    offset = await channel.service.poll_offset(coach_id)
    updates = await bot.get_updates(offset=offset, timeout=wait_s, allowed_updates=ALLOWED_UPDATES)
    for update in updates:
        payload = update.to_dict()
        try:
            sent = await channel.service.updates.first_delivery(coach_id, update.update_id, payload)
        except DBAPIError as exc:
            if not refused_for_nul(exc):
                raise
            log.warning("telegram update %s of coach %s skipped: %s", update.update_id, coach_id, NUL_REFUSED)
            continue
        if sent is not None:
            channel.dispatch(coach_id, payload, sent)
    if updates:
        await channel.service.poll_offset(coach_id, updates[-1].update_id + 1)
    return len(updates)


async def _refused_pause(channel: TelegramChannel, coach_id: uuid.UUID, refused: Bot | None) -> None:
    """Wait :data:`REFUSED_PAUSE_S` after Telegram refused the token of ``refused`` (the coach's Bot API client),
    less once the coach connected a token since (``PUT /api/v1/channels/telegram``: the service then gives another
    client, :meth:`~app.channels.telegram.service.TelegramService.bot`), looked at every :data:`TOKEN_CHECK_S`
    seconds, or once the stored bot cannot be read (disconnected, the database out of reach: the next poll says
    so)."""
    clock = asyncio.get_running_loop()
    end = clock.time() + REFUSED_PAUSE_S
    while (left := end - clock.time()) > 0:
        await asyncio.sleep(min(TOKEN_CHECK_S, left))
        try:
            if await channel.service.bot(coach_id) is not refused:
                return
        except Exception:  # (told by the next poll)
            return


async def _poll_coach(channel: TelegramChannel, coach_id: uuid.UUID) -> None:
    """Poll the coach's bot until cancelled; after an error (Telegram's, or the database or Redis out of reach
    a moment) it pauses :data:`ERROR_PAUSE_S` and goes on; after Telegram refused the token (revoked in
    @BotFather) it pauses up to :data:`REFUSED_PAUSE_S` (:func:`_refused_pause`: a new token ends the pause within
    :data:`TOKEN_CHECK_S`), with a warning that says how to mend it."""
    polled: Bot | None = None
    while True:
        try:
            polled = await channel.service.bot(coach_id)  # (the client poll_once uses, unless the token changes)
            await poll_once(channel, coach_id)
        except InvalidToken as exc:
            log.warning(
                "telegram polling for coach %s: Telegram refuses the bot token (%s); the coach must connect the bot "
                "again with a new token (Settings → Telegram). Trying again then, or in %d s",
                coach_id,
                exc.message,
                REFUSED_PAUSE_S,
            )
            await _refused_pause(channel, coach_id, polled)
        except TelegramError as exc:
            log.warning("telegram polling for coach %s: %s", coach_id, exc.message)
            await asyncio.sleep(ERROR_PAUSE_S)
        except Exception:
            log.exception("telegram polling for coach %s failed", coach_id)
            await asyncio.sleep(ERROR_PAUSE_S)


async def poll_forever(channel: TelegramChannel) -> None:
    """Poll every bot in ``polling`` mode until cancelled, picking up bots connected or disconnected since
    every :data:`REFRESH_S` seconds."""
    running: dict[uuid.UUID, asyncio.Task[None]] = {}
    try:
        while True:
            try:
                wanted = set(await channel.service.polling_coaches())
            except Exception:
                log.exception("telegram polling: could not list the bots")
                wanted = set(running)
            for coach_id in wanted - running.keys():
                running[coach_id] = asyncio.create_task(_poll_coach(channel, coach_id))
            for coach_id in running.keys() - wanted:
                running.pop(coach_id).cancel()
            await asyncio.sleep(REFRESH_S)
    finally:
        for task in running.values():
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*running.values(), return_exceptions=True)
        await channel.drain()
