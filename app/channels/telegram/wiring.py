"""Wiring of the Telegram channel into a process (web app, worker, CLI)."""

from __future__ import annotations

import asyncio
import logging

from litestar import Litestar

from app.channels.telegram.adapter import TelegramChannel, turn_lock_s
from app.channels.telegram.bot import install_token_redaction
from app.channels.telegram.poller import poll_forever
from app.channels.telegram.service import TelegramService
from app.channels.telegram.tone import TelegramTone
from app.container import Container
from app.core.security import SecretBox

log = logging.getLogger(__name__)


def build_channel(container: Container) -> TelegramChannel:
    """The process's Telegram channel, delivering the clients' live events to their chats (registered as a
    :data:`app.handoff.service.ClientSink`), with bot tokens redacted from the logs."""
    install_token_redaction()
    settings = container.settings
    service = TelegramService(
        container.sessionmaker,
        settings,
        SecretBox.from_settings(settings),
        container.accounts,
        container.enrollment_throttle,
    )
    tone = TelegramTone(container.tone, container.sessionmaker)
    channel = TelegramChannel(
        service,
        container.chat,
        container.conversations,
        container.memory,
        tone,
        container.redis,
        container.sessionmaker,
        turn_lock_s=turn_lock_s(settings.llm_timeout_seconds),
    )
    container.handoffs.client_sinks.append(channel.deliver_event)
    return channel


def start(app: Litestar) -> None:
    """Web app start-up hook (after the container's): the channel as ``app.state.telegram``; the bots saved in
    another mode moved to the install's (:meth:`~app.channels.telegram.service.TelegramService.align_modes`, in
    the background as ``app.state.telegram_aligning``) and, in polling mode (no https ``PUBLIC_URL``), the
    ``getUpdates`` poller as ``app.state.telegram_poller``."""
    state = app.state
    state.telegram = build_channel(state.container)
    state.telegram_aligning = asyncio.create_task(_align(state.telegram))
    if state.telegram.service.mode() == "polling":
        state.telegram_poller = asyncio.create_task(poll_forever(state.telegram))


async def _align(channel: TelegramChannel) -> None:
    try:
        await channel.service.align_modes()
    except Exception:  # the database out of reach at start: the next start tries again
        log.exception("telegram: could not move the bots saved in another mode")


async def stop(app: Litestar) -> None:
    """Web app shutdown hook (before the container closes): stop the poller, finish the updates in progress,
    close the Bot API clients."""
    state = app.state
    tasks = [getattr(state, name, None) for name in ("telegram_aligning", "telegram_poller")]
    for task in (t for t in tasks if t is not None):
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    channel: TelegramChannel | None = getattr(state, "telegram", None)
    if channel is not None:
        await channel.drain()
        await channel.service.close()
