"""The Telegram pages of the dashboard: connect or disconnect the bot (from the settings), and a client's
one-time invite link with its QR code (an inline ``<svg>``: the CSP allows no ``data:`` images)."""

from __future__ import annotations

import uuid
from typing import Any

import segno
from litestar import Request, get, post
from litestar.di import Provide
from litestar.response import Template

from app.channels.telegram.api import TelegramDep, provide_telegram
from app.core.errors import DomainError, NotFound
from app.deps import CoachId, ContainerDep, PathId
from app.web.dashboard.auth import CoachPage, page_coach
from app.web.dashboard.forms import form_str


def invite_qr_svg(url: str) -> str:
    """``url`` as a QR code: an inline ``<svg>`` element (no XML declaration, no style attribute), scaled 4×."""
    return str(segno.make(url, error="m").svg_inline(scale=4, dark="#000", light="#fff"))


class TelegramPages(CoachPage):
    """Connecting the coach's Telegram bot, and clients' invite links."""

    dependencies = {**CoachPage.dependencies, "telegram": Provide(provide_telegram, sync_to_thread=False)}

    async def _page(
        self, container: ContainerDep, telegram: TelegramDep, coach_id: uuid.UUID, **context: Any
    ) -> Template:
        try:
            bot = await telegram.service.status(coach_id)
        except NotFound:
            bot = None
        error: DomainError | None = context.pop("error", None)
        context |= {"coach": await page_coach(container, coach_id), "bot": bot, "nav": "settings"}
        context |= {"error": error.message if error else None}
        return Template("dashboard/telegram.html", context=context, status_code=error.status_code if error else 200)

    @get("/settings/telegram")
    async def telegram_page(self, coach_id: CoachId, container: ContainerDep, telegram: TelegramDep) -> Template:
        """The bot's state and the connect / disconnect forms."""
        return await self._page(container, telegram, coach_id)

    @post("/settings/telegram")
    async def connect(
        self, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep, telegram: TelegramDep
    ) -> Template:
        """Connect (or reconnect) the bot with the form's token; Telegram's reason is shown for a bad one."""
        form = await request.form()
        open_enrollment = form.get("open_enrollment") == "on"
        try:
            token = form_str(form, "bot_token")
            if token:
                await telegram.service.connect(coach_id, token, open_enrollment)
            else:
                await telegram.service.set_open_enrollment(coach_id, open_enrollment)
        except DomainError as exc:
            return await self._page(container, telegram, coach_id, error=exc)
        return await self._page(container, telegram, coach_id, notice="Saved.")

    @post("/settings/telegram/disconnect")
    async def disconnect(self, coach_id: CoachId, container: ContainerDep, telegram: TelegramDep) -> Template:
        """Disconnect the bot (``deleteWebhook``)."""
        try:
            await telegram.service.disconnect(coach_id)
        except DomainError as exc:
            return await self._page(container, telegram, coach_id, error=exc)
        return await self._page(container, telegram, coach_id, notice="Disconnected.")

    @post("/clients/{client_id:uuid}/telegram-invite")
    async def invite(
        self, client_id: PathId, coach_id: CoachId, container: ContainerDep, telegram: TelegramDep
    ) -> Template:
        """A new one-time invite link for the client, with its QR code."""
        try:
            url, _ = await telegram.service.invite(coach_id, client_id)
        except DomainError as exc:
            return await self._page(container, telegram, coach_id, error=exc)
        async with container.tenant(coach_id) as session:
            client = await container.accounts.get_client(session, coach_id, client_id)
        context = {"coach": await page_coach(container, coach_id), "client": client, "url": url, "nav": "clients"}
        return Template("dashboard/telegram_invite.html", context=context | {"qr": invite_qr_svg(url)})
