"""The Telegram pages of the dashboard: connect or disconnect the bot (from the settings), and a client's
one-time invite link with its QR code (an inline ``<svg>``: the CSP allows no ``data:`` images)."""

from __future__ import annotations

from typing import Any

import segno
from litestar import Request, get, post
from litestar.di import Provide
from litestar.response import Template

from app.channels.telegram.api import TelegramDep, provide_telegram
from app.core.errors import DomainError, NotFound
from app.deps import ContainerDep, PathId, Uow
from app.web.dashboard.auth import CoachPage
from app.web.dashboard.forms import form_str


def invite_qr_svg(url: str) -> str:
    """``url`` as a QR code: an inline ``<svg>`` element (no XML declaration, no style attribute), scaled 4×."""
    return str(segno.make(url, error="m").svg_inline(scale=4, dark="#000", light="#fff"))


class TelegramPages(CoachPage):
    """Connecting the coach's Telegram bot, and clients' invite links."""

    dependencies = {**CoachPage.dependencies, "telegram": Provide(provide_telegram, sync_to_thread=False)}

    async def _page(self, telegram: TelegramDep, uow: Uow, **context: Any) -> Template:
        try:
            bot = await telegram.service.status(uow.coach_id)
        except NotFound:
            bot = None
        error: DomainError | None = context.pop("error", None)
        context |= {"coach": await uow.coach(), "bot": bot, "nav": "settings"}
        context |= {"error": error.message if error else None}
        return Template("dashboard/telegram.html", context=context, status_code=error.status_code if error else 200)

    @get("/settings/telegram")
    async def telegram_page(self, uow: Uow, telegram: TelegramDep) -> Template:
        """The bot's state and the connect / disconnect forms."""
        return await self._page(telegram, uow)

    @post("/settings/telegram")
    async def connect(self, request: Request[Any, Any, Any], uow: Uow, telegram: TelegramDep) -> Template:
        """Connect (or reconnect) the bot with the form's token; Telegram's reason is shown for a bad one. The
        Telegram service keeps its own short units of work around the calls to Telegram."""
        coach_id = uow.coach_id
        form = await request.form()
        open_enrollment = form.get("open_enrollment") == "on"
        try:
            token = form_str(form, "bot_token")
            if token:
                await telegram.service.connect(coach_id, token, open_enrollment)
            else:
                await telegram.service.set_open_enrollment(coach_id, open_enrollment)
        except DomainError as exc:
            return await self._page(telegram, uow, error=exc)
        return await self._page(telegram, uow, notice="Saved.")

    @post("/settings/telegram/disconnect")
    async def disconnect(self, uow: Uow, telegram: TelegramDep) -> Template:
        """Disconnect the bot (``deleteWebhook``)."""
        try:
            await telegram.service.disconnect(uow.coach_id)
        except DomainError as exc:
            return await self._page(telegram, uow, error=exc)
        return await self._page(telegram, uow, notice="Disconnected.")

    @post("/clients/{client_id:str}/telegram-invite")
    async def invite(self, client_id: PathId, uow: Uow, container: ContainerDep, telegram: TelegramDep) -> Template:
        """A new one-time invite link for the client, with its QR code."""
        try:
            invite = await telegram.service.invite(uow.coach_id, client_id)
        except DomainError as exc:
            return await self._page(telegram, uow, error=exc)
        client = await container.accounts.get_client(uow, client_id)
        context = {"coach": await uow.coach(), "client": client, "invite": invite, "nav": "clients"}
        return Template("dashboard/telegram_invite.html", context=context | {"qr": invite_qr_svg(invite.url)})
