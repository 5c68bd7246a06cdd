"""The Bot API client the app makes: its HTTP connection pools are closed when it is shut down."""

from __future__ import annotations

import pytest
from telegram.error import NetworkError

from app.channels.telegram.bot import make_bot
from app.core.config import Settings
from app.core.egress import EgressGuard


async def test_shutting_a_bot_down_closes_its_connection_pools() -> None:
    """A bot the app made and never initialized (as every one is) holds two httpx clients: shutdown closes both
    (python-telegram-bot's own shutdown closes nothing for a bot never initialized: a leak per connect)."""
    settings = Settings(telegram_api_url="http://127.0.0.1:9", outbound_allow="127.0.0.1")
    bot = make_bot(settings, EgressGuard.from_settings(settings), "123456789:AAHabcdefghijklmnopqrstuvwxyz0123456")
    await bot.shutdown()
    with pytest.raises(NetworkError, match="not initialized"):
        await bot.get_me()
    with pytest.raises(NetworkError, match="not initialized"):
        await bot.get_updates(timeout=0)
    await bot.shutdown()  # again: nothing left to close
