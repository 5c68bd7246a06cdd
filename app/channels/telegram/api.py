"""HTTP routes of the Telegram channel: the coach connects and disconnects a bot, issues invite links, and
Telegram posts updates to the webhook."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, TypeAlias

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import SerializationException
from litestar.params import JSONBody
from litestar.types import ControllerRouterHandler

from app.auth import provide_coach_id
from app.channels.telegram.adapter import TelegramChannel
from app.channels.telegram.service import WEBHOOK_PATH, BotInfo
from app.deps import CoachId, PathId

log = logging.getLogger(__name__)

SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_UPDATE_ID = 2**63 - 1
"""Telegram's update ids are positive and fit a signed 64-bit integer (Bot API ``Update``), as the column does."""
NOT_AN_UPDATE = "the body is not a Telegram update"
UPDATE_MAX_BYTES = 1024 * 1024
"""The webhook's request body limit: an update carries a message (text up to 4,096 characters), the one it
answers or quotes, their entities and captions, about 50 KB each at most even with every character escaped
(``\\ud83d\\ude00``); the secret header is checked before the body is read."""


def provide_telegram(state: State) -> TelegramChannel:
    """The process's Telegram channel (``app.state.telegram``, built at start-up)."""
    channel: Any = state.telegram
    return channel  # type: ignore[no-any-return]


TelegramDep: TypeAlias = NamedDependency[TelegramChannel]


class ConnectIn(msgspec.Struct, forbid_unknown_fields=True):
    """The bot token from @BotFather and, optionally, whether strangers may enrol (default on)."""

    bot_token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    open_enrollment: bool | None = None


class BotOut(msgspec.Struct):
    """A connected bot: ``bot_username``, ``mode`` (``webhook``/``polling``), ``webhook_url`` (``null`` when
    polling), the masked ``bot_token`` and ``open_enrollment``."""

    bot_username: str
    mode: str
    webhook_url: str | None
    bot_token: str
    open_enrollment: bool


class InviteOut(msgspec.Struct):
    """A one-time invite: ``url`` (``https://t.me/<bot>?start=<code>``), the ``code`` and ``expires_at`` (when
    an unused link stops working)."""

    url: str
    code: str
    expires_at: datetime


class ChatIn(msgspec.Struct):
    """A Bot API ``Chat``: what the channel reads of it."""

    id: int
    type: str


class UserIn(msgspec.Struct):
    """A Bot API ``User`` (the sender): what the channel reads of it (an enrolled stranger's name)."""

    id: int
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None


class MessageIn(msgspec.Struct):
    """A Bot API ``Message`` from the client (``message``, ``edited_message``)."""

    message_id: int
    chat: ChatIn
    sender: UserIn | None = msgspec.field(default=None, name="from")
    text: str | None = None
    caption: str | None = None
    edit_date: int | None = None


class PressedMessageIn(msgspec.Struct):
    """The message under a pressed button (a Bot API ``MaybeInaccessibleMessage``: an old one has only these)."""

    message_id: int
    chat: ChatIn


class CallbackQueryIn(msgspec.Struct):
    """A Bot API ``CallbackQuery`` (a button press)."""

    id: str
    sender: UserIn = msgspec.field(name="from")
    data: str | None = None
    message: PressedMessageIn | None = None


class ChatMemberIn(msgspec.Struct):
    """A Bot API ``ChatMember``: its ``status``."""

    status: str


class ChatMemberUpdatedIn(msgspec.Struct):
    """A Bot API ``ChatMemberUpdated`` (``my_chat_member``: the client blocked or unblocked the bot)."""

    chat: ChatIn
    new_chat_member: ChatMemberIn


class UpdateIn(msgspec.Struct):
    """A Bot API ``Update`` as the webhook checks it: the fields the channel reads
    (:mod:`app.channels.telegram.adapter`) must be there with their Bot API types, so an update that passes is
    never one whose processing fails on its own content (and would be tried again,
    :data:`~app.channels.telegram.service.MAX_ATTEMPTS` times).
    Other fields and update kinds are taken as they are: Telegram adds them over time."""

    update_id: Annotated[int, msgspec.Meta(ge=0, le=MAX_UPDATE_ID)]
    message: MessageIn | None = None
    edited_message: MessageIn | None = None
    callback_query: CallbackQueryIn | None = None
    my_chat_member: ChatMemberUpdatedIn | None = None


def _out(info: BotInfo) -> BotOut:
    return BotOut(info.bot_username, info.mode, info.webhook_url, info.token, info.open_enrollment)


class TelegramSettingsController(Controller):
    """The coach's Telegram bot. Auth: API key or dashboard session."""

    path = "/api/v1/channels/telegram"
    tags = ["telegram"]
    dependencies = {"coach_id": Provide(provide_coach_id), "telegram": Provide(provide_telegram, sync_to_thread=False)}

    @put("/", status_code=200)
    async def connect(self, data: JSONBody[ConnectIn], coach_id: CoachId, telegram: TelegramDep) -> BotOut:
        """Check the token with ``getMe``, register the webhook (or polling), store the token encrypted. 400
        with Telegram's reason for a bad token (nothing stored); 409 when the bot serves another account."""
        return _out(await telegram.service.connect(coach_id, data.bot_token, data.open_enrollment))

    @get("/")
    async def show(self, coach_id: CoachId, telegram: TelegramDep) -> BotOut:
        """The connected bot (token masked); 404 when none."""
        return _out(await telegram.service.status(coach_id))

    @delete("/", status_code=204)
    async def disconnect(self, coach_id: CoachId, telegram: TelegramDep) -> None:
        """``deleteWebhook`` and forget the bot; 404 when none is connected."""
        await telegram.service.disconnect(coach_id)


class TelegramInviteController(Controller):
    """Invite links for clients. Auth: API key or dashboard session."""

    path = "/api/v1/clients/{client_id:str}/telegram-invite"
    tags = ["telegram"]
    dependencies = {"coach_id": Provide(provide_coach_id), "telegram": Provide(provide_telegram, sync_to_thread=False)}

    @post("/", status_code=201)
    async def invite(self, client_id: PathId, coach_id: CoachId, telegram: TelegramDep) -> InviteOut:
        """A new one-time invite code for the client (``/start <code>`` binds the chat to them), valid for 7
        days; the client's earlier unused invites stop working. 404 for an unknown client or when no bot is
        connected."""
        invite = await telegram.service.invite(coach_id, client_id)
        return InviteOut(invite.url, invite.code, invite.expires_at)


@post(
    f"{WEBHOOK_PATH}/{{coach_id:str}}",
    status_code=200,
    tags=["telegram"],
    include_in_schema=False,
    dependencies={"telegram": Provide(provide_telegram, sync_to_thread=False)},
    request_max_body_size=UPDATE_MAX_BYTES,
)
async def telegram_webhook(
    coach_id: PathId, request: Request[Any, Any, Any], telegram: TelegramDep
) -> Response[dict[str, Any]]:
    """Telegram's update delivery (Bot API ``setWebhook``). The ``X-Telegram-Bot-Api-Secret-Token`` header must
    be the coach's secret (constant-time check; otherwise 401, nothing stored). A new ``update_id`` is
    recorded with its JSON and processed in the background; a re-sent one is acknowledged and ignored, unless its
    processing never finished (the process died: it is processed now). 400 for a body that is not an update,
    nothing stored: not JSON (a lone UTF-16 surrogate included), nested too deeply, without an ``update_id`` in
    0…2⁶³−1, or with a field the channel reads missing or of the wrong type (:class:`UpdateIn`; the detail says
    which; a warning is logged). Telegram repeats a request answered otherwise than 2xx and gives up after a
    number of attempts (Bot API ``setWebhook``): such an update is never taken, nor tried again by the worker."""
    if not await telegram.service.check_secret(coach_id, request.headers.get(SECRET_HEADER, "")):
        return Response({"status_code": 401, "detail": "wrong or missing secret token"}, status_code=401)
    try:
        update = await request.json()  # Litestar's decoding: a body nested too deeply is the app's 400
        update_id = msgspec.convert(update, UpdateIn).update_id
    except SerializationException:
        return Response({"status_code": 400, "detail": NOT_AN_UPDATE}, status_code=400)
    except msgspec.ValidationError as exc:  # (with the coach's secret: Telegram's, or someone who has the secret)
        log.warning("telegram webhook of coach %s: an update refused (400): %s", coach_id, exc)
        return Response({"status_code": 400, "detail": f"{NOT_AN_UPDATE}: {exc}"}, status_code=400)
    if (sent := await telegram.service.updates.first_delivery(coach_id, update_id, update)) is not None:
        telegram.dispatch(coach_id, update, sent)
    return Response({"ok": True}, status_code=200)


ROUTES: list[ControllerRouterHandler] = [TelegramSettingsController, TelegramInviteController, telegram_webhook]
"""The channel's route handlers, for the app."""
