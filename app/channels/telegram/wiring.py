"""Wiring of the Telegram channel into a process (web app, worker, CLI)."""

from __future__ import annotations

from app.channels.telegram.adapter import TelegramChannel
from app.channels.telegram.bot import install_token_redaction
from app.channels.telegram.service import TelegramService
from app.container import Container
from app.core.security import SecretBox


def build_channel(container: Container) -> TelegramChannel:
    """The process's Telegram channel, delivering the clients' live events to their chats (registered as a
    :data:`app.handoff.service.ClientSink`), with bot tokens redacted from the logs."""
    install_token_redaction()
    settings = container.settings
    service = TelegramService(container.sessionmaker, settings, SecretBox.from_settings(settings), container.accounts)
    channel = TelegramChannel(service, container.chat, container.conversations, container.redis)
    container.handoffs.client_sinks.append(channel.deliver_event)
    return channel
