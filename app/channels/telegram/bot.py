"""Bot API clients (python-telegram-bot 22) pointed at ``TELEGRAM_API_URL`` through the egress guard, and the
log filter that keeps bot tokens out of logs (Bot API URLs carry the token: ``/bot<token>/sendMessage``)."""

from __future__ import annotations

import asyncio
import logging
import re

from telegram import Bot, LinkPreviewOptions
from telegram.ext import Defaults, ExtBot
from telegram.request import HTTPXRequest

from app.core.config import Settings
from app.core.egress import EgressGuard

TOKEN_RE = re.compile(r"\d{3,}:[A-Za-z0-9_-]{20,}")
"""A bot token as BotFather issues it (``123456789:AA…``)."""
LOGGER_ROOTS = ("httpx", "httpcore", "telegram", "app")
"""Loggers under these names get the filter (a logger's filters do not apply to its children's records)."""
POLL_TIMEOUT_S = 25
"""``getUpdates`` long-poll timeout; the HTTP read timeout is a few seconds longer."""
READ_TIMEOUT_S = 15.0
"""Seconds a Bot API call waits for Telegram's answer, unless the call gives its own ``read_timeout``."""
SEND_TIMEOUT_S = 60.0
"""Seconds a turn's ``sendMessage`` waits for Telegram's answer (its ``read_timeout``). A send whose answer never
came may be in the chat all the same, and without its message id it can be neither edited nor deleted: a send
waits longer than an edit, which can be repeated safely."""


class RedactBotTokens(logging.Filter):
    """Replaces anything shaped like a bot token in a record's message with ``[bot-token]``; keeps the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the formatted message in place; always ``True``."""
        message = record.getMessage()
        if TOKEN_RE.search(message):
            record.msg, record.args = TOKEN_RE.sub("[bot-token]", message), None
        return True


def install_token_redaction() -> None:
    """Put :class:`RedactBotTokens` once on every logger under :data:`LOGGER_ROOTS` that exists (python-telegram-bot
    and httpx create theirs at import, which has happened here) and on the roots themselves (idempotent)."""
    names = {*LOGGER_ROOTS, *(n for n in logging.root.manager.loggerDict if n.split(".")[0] in LOGGER_ROOTS)}
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactBotTokens) for f in logger.filters):
            logger.addFilter(RedactBotTokens())


NO_LINK_PREVIEWS = Defaults(link_preview_options=LinkPreviewOptions(is_disabled=True))
"""Every message is sent without a link preview: Telegram's servers would fetch any URL in a reply (one a planted
instruction made the model write, carrying what it knows about the client) before anyone opens it."""


class CoachBot(ExtBot[None]):
    """python-telegram-bot's ``ExtBot`` (with :data:`NO_LINK_PREVIEWS`) whose :meth:`shutdown` closes its two HTTP
    connection pools even when it was never initialized: ``Bot.shutdown`` alone closes nothing then, and the app
    does not call ``Bot.initialize`` (it asks ``getMe`` once more, and words a refused token with the token in
    it)."""

    async def shutdown(self) -> None:
        """Close the HTTP connection pools (idempotent)."""
        await asyncio.gather(*(request.shutdown() for request in self._request))
        await super().shutdown()


def bot_id(bot: Bot) -> int:
    """The bot's user id, as ``getMe`` gives it, without asking: a token is ``<bot id>:<secret>``
    (:data:`TOKEN_RE`; the Bot API's "Authorizing your bot")."""
    return int(bot.token.partition(":")[0])


def make_bot(settings: Settings, guard: EgressGuard, token: str) -> Bot:
    """A Bot API client for ``token`` on ``settings.telegram_api_url`` whose HTTP goes through ``guard``
    (``OUTBOUND_ALLOW`` applies; no redirects, no proxy from the environment). Raises
    ``telegram.error.InvalidToken`` for an empty token."""
    base = settings.telegram_api_url.rstrip("/")

    def request(read_timeout: float) -> HTTPXRequest:
        return HTTPXRequest(
            connection_pool_size=8,
            read_timeout=read_timeout,
            httpx_kwargs={"transport": guard.transport(), "trust_env": False, "follow_redirects": False},
        )

    return CoachBot(
        token,
        base_url=f"{base}/bot{{token}}",
        base_file_url=f"{base}/file/bot{{token}}",
        request=request(READ_TIMEOUT_S),
        get_updates_request=request(POLL_TIMEOUT_S + 10.0),
        defaults=NO_LINK_PREVIEWS,
    )
