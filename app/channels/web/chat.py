"""The web channel: the widget's REST turn, its WebSocket, feedback and the catch-up read after a reconnect.

Every path stores the client's message with :meth:`app.chat.turn.ChatService.receive` and answers it with
:meth:`~app.chat.turn.ChatService.answer`; this module only parses, authorises and renders events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, WebSocket, get, post, websocket
from litestar.channels import ChannelsPlugin
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, WebSocketDisconnect
from litestar.params import FromQuery, JSONBody
from sqlalchemy.exc import SQLAlchemyError

from app.accounts.availability import away_until, next_change
from app.accounts.service import ClientIdentity
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.auth import CLIENT_DEPENDENCIES, identify_client
from app.chat.turn import ANSWER_LATER, TurnResult
from app.container import Container
from app.conversations.metadata import client_citations, client_handoff_view, client_view
from app.conversations.models import CLIENT_MESSAGE_ID_MAX, SenderType
from app.conversations.service import MAX_FEEDBACK_CHARS, ListedMessage
from app.core.errors import DomainError, InvalidInput
from app.core.pagination import PageRequest
from app.deps import PAGE, ClientIdentityDep, ContainerDep, PathId, Uow, WantedPage, next_link, page_response
from app.handoff.catalogue import say
from app.handoff.languages import LANGUAGES, Language, preferred_language, tag_language
from app.handoff.live import LINK_REVOKED, client_channel, message_event
from app.handoff.service import taken_from
from app.rag.passages import cited_passage

log = logging.getLogger(__name__)

LINK_REVOKED_CLOSE = 4401
"""WebSocket close code of a widget socket whose token was rotated or revoked (or whose client was deleted)."""

WIDGET_API_PREFIXES = ("/api/v1/chat", "/api/v1/messages/", "/api/v1/widget/")
"""Path prefixes of the REST routes the widget calls with its token (feedback, catch-up, end session, memory):
their CORS preflights are answered (:class:`app.core.headers.SecurityHeaders`)."""


def app_language(connection: ASGIConnection[Any, Any, Any, Any]) -> Language | None:
    """The language a widget request's or socket's client reads (of ``en es fr de pt``): the embedding page's
    (``?lang=``, which ``static/widget.js`` passes on from the page's ``<html lang>`` or the snippet's
    ``data-language``, and ``static/chat.js`` on to its socket), else the browser's (``Accept-Language``:
    :func:`app.handoff.languages.preferred_language`); ``None`` when neither names one."""
    asked = tag_language(connection.query_params.get("lang"))
    return asked or preferred_language(connection.headers.get("accept-language"))


class ChatRequest(msgspec.Struct):
    """A client's message: ``text``, the ``conversation_id`` (omitted: a new conversation) and the widget's
    own ``client_message_id`` (sent again with the same id, the message is stored once). Their limits are the
    turn's (:func:`~app.chat.turn.intake.clean_text`, :func:`~app.chat.turn.intake.clean_client_message_id`), so
    every channel words an empty, blank or over-long message the same way."""

    text: str
    conversation_id: uuid.UUID | None = None
    client_message_id: str | None = None


class HandoffStatusOut(msgspec.Struct):
    """Where the conversation stands with the human coach: ``status`` ``open`` (the coach was asked to
    join), ``claimed`` (the coach has the conversation; the AI is paused) or ``draft_pending`` (the reply
    waits for the coach's approval), and its ``reason`` (:func:`~app.conversations.metadata.client_handoff_view`:
    not the AI's confidence)."""

    status: str
    reason: str


class ChatResponse(msgspec.Struct):
    """A turn's outcome. ``message_id`` is ``null`` and ``reply`` empty when no reply was sent (paused AI,
    pending draft); ``handoff`` is ``null`` while the AI handles the conversation on its own."""

    conversation_id: uuid.UUID
    message_id: uuid.UUID | None
    reply: str
    citations: list[dict[str, Any]]
    metadata: dict[str, Any]
    handoff: HandoffStatusOut | None


class FeedbackIn(msgspec.Struct, forbid_unknown_fields=True):
    """Thumbs up (``helpful: true``) or down, with an optional 1–5 ``rating`` and ``text``."""

    helpful: bool
    rating: int | None = None
    text: Annotated[str, msgspec.Meta(max_length=MAX_FEEDBACK_CHARS)] | None = None


class FeedbackOut(msgspec.Struct):
    message_id: uuid.UUID
    helpful: bool
    rating: int | None
    text: str | None
    at: str


class WidgetMessageOut(msgspec.Struct):
    """A message as the client's widget sees it: ``metadata`` is the client's view, ``client_message_id`` the
    widget's own id of a client message (``null`` otherwise)."""

    id: uuid.UUID
    sender_type: str
    text: str
    created_at: datetime
    citations: list[dict[str, Any]]
    metadata: dict[str, Any]
    client_message_id: str | None


def widget_message_out(listed: ListedMessage) -> WidgetMessageOut:
    """Serialise a listed message for the client (its citations as they read now, without scores)."""
    message = listed.message
    return WidgetMessageOut(
        message.id,
        message.sender_type,
        message.text,
        message.created_at,
        client_citations(listed.citations),
        client_view(message.meta),
        message.client_message_id,
    )


def done_event(result: TurnResult) -> dict[str, Any]:
    """The ``done`` event ending an answer on the socket (the same fields as the REST response, plus
    ``in_reply_to``: the client message it answers, and ``created_at``: when the reply was stored, ISO 8601,
    ``null`` without one)."""
    return {
        "type": "done",
        "conversation_id": str(result.conversation_id),
        "in_reply_to": str(result.received_message_id),
        "message_id": str(result.message_id) if result.message_id else None,
        "reply": result.reply,
        "citations": client_citations(result.citations),
        "metadata": client_view(result.metadata),
        "handoff": client_handoff_view(result.handoff),
        "created_at": result.created_at.isoformat() if result.created_at else None,
    }


class ChatController(Controller):
    path = "/api/v1/chat"
    tags = ["chat"]
    dependencies = CLIENT_DEPENDENCIES

    @post("/", status_code=200)
    async def chat(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChatRequest],
        identity: ClientIdentityDep,
        container: ContainerDep,
    ) -> ChatResponse:
        """One client turn, unstreamed (the same turn as the WebSocket). Auth: the client's widget token. A
        message sent again with the same ``client_message_id`` is stored and answered once (the repeat gets an
        empty ``reply``). ``?lang=``, else ``Accept-Language``, is the client's app's language
        (:func:`app_language`)."""
        turn = container.chat.turn(
            identity.coach_id,
            identity.client_id,
            data.text,
            conversation_id=data.conversation_id,
            channel="api",
            client_message_id=data.client_message_id,
            app_language=app_language(request),
        )
        result = [item async for item in turn if isinstance(item, TurnResult)][-1]
        return ChatResponse(
            result.conversation_id,
            result.message_id,
            result.reply,
            client_citations(result.citations),
            client_view(result.metadata),
            HandoffStatusOut(**handoff) if (handoff := client_handoff_view(result.handoff)) else None,
        )


class WidgetHandoffOut(msgspec.Struct):
    """Where the client's conversation stands with the coach now: ``handoff`` as a turn's ``done`` says it
    (:class:`HandoffStatusOut`: ``open``, ``claimed``, or ``draft_pending`` while a drafted reply waits for the
    coach's review), ``null`` while the AI handles the conversation."""

    handoff: HandoffStatusOut | None


class WidgetConversationController(Controller):
    """What the widget reads to catch up. Auth: the client's widget token."""

    path = "/api/v1/widget/conversations"
    tags = ["widget"]
    dependencies = CLIENT_DEPENDENCIES

    @get("/{conversation_id:str}/messages")
    async def messages(
        self,
        request: Request[Any, Any, Any],
        conversation_id: PathId,
        identity: ClientIdentityDep,
        uow: Uow,
        container: ContainerDep,
        after: FromQuery[uuid.UUID | None] = None,
    ) -> Response[list[WidgetMessageOut]]:
        """The client's conversation's messages stored after message ``?after=<id>`` (from its first without
        it), oldest first, at most 200: what the widget missed while disconnected. When more follow, the
        ``Link`` header (``rel="next"``) asks for those after the last one returned. 404 for another client's
        conversation or an ``after`` that is not in it; 400 for a malformed id."""
        found = await container.conversations.messages_after(uow, identity.client_id, conversation_id, after)
        headers = next_link(request, after=str(found.next.id)) if found.next is not None else {}
        return Response([widget_message_out(listed) for listed in found.items], headers=headers)

    @get("/{conversation_id:str}/history", dependencies=PAGE)
    async def history(
        self,
        request: Request[Any, Any, Any],
        conversation_id: PathId,
        identity: ClientIdentityDep,
        uow: Uow,
        container: ContainerDep,
        page: WantedPage,
    ) -> Response[list[WidgetMessageOut]]:
        """The client's conversation's messages a page at a time, newest first (the chat page shows the latest
        page; its "Earlier messages" button follows the ``Link`` header's next page, :func:`app.deps.page_response`).
        404 for another client's conversation; 400 for a malformed id, a bad cursor or limit."""
        _, found = await container.conversations.history(uow, conversation_id, page, client_id=identity.client_id)
        return page_response(request, found, widget_message_out)

    @get("/{conversation_id:str}/handoff")
    async def handoff(
        self, conversation_id: PathId, identity: ClientIdentityDep, uow: Uow, container: ContainerDep
    ) -> WidgetHandoffOut:
        """The client's conversation's handoff status now (:class:`WidgetHandoffOut`): what the widget redraws its
        presence line from once its socket reconnects (the live ``coach_joined`` / ``coach_left`` events sent while
        it was down are lost: it said "Waiting for the coach…" after the coach had come and gone). 404 for another
        client's conversation; 400 for a malformed id."""
        # (the client's own conversation, else NotFound: the page read is its newest message at most)
        await container.conversations.history(uow, conversation_id, PageRequest(limit=1), client_id=identity.client_id)
        return WidgetHandoffOut(await handoff_status(container, uow, conversation_id))


async def handoff_status(container: Container, uow: UnitOfWork, conversation_id: uuid.UUID) -> HandoffStatusOut | None:
    """The conversation's handoff status now, as a turn's ``done`` says it: its active handoff's ``status`` and
    ``reason``, else ``draft_pending`` while a drafted reply waits for the coach's review (as
    :func:`app.chat.turn.persist.result` says it), else ``None`` (the AI handles the conversation). Raises
    ``NotFound`` for another coach's conversation."""
    active, drafts = await container.handoff_queue.conversation_state(uow, conversation_id)
    if active is not None:
        return HandoffStatusOut(active.status, active.reason)
    return HandoffStatusOut("draft_pending", "draft_mode") if drafts else None


class PassageOut(msgspec.Struct):
    """A cited passage as the widget shows it: the document's ``title`` and ``page`` (``null`` without pages),
    the cited ``text`` and the sentences ``after`` it, and a transcript's ``locator`` (``"HH:MM:SS"``, else
    ``null``)."""

    chunk_id: uuid.UUID
    title: str
    page: int | None
    text: str
    after: str
    locator: str | None = None


class WidgetPassageController(Controller):
    """The passage behind a citation the client was shown. Auth: the client's widget token or session cookie."""

    path = "/api/v1/widget/passages"
    tags = ["widget"]
    dependencies = CLIENT_DEPENDENCIES

    @get("/{chunk_id:str}")
    async def passage(self, chunk_id: PathId, identity: ClientIdentityDep, uow: Uow) -> PassageOut:
        """The cited chunk ``chunk_id`` (a citation's ``chunk_id``) with title, page and the next sentences;
        404 unless a message of the client's own conversations cites it, 400 for a malformed id."""
        found = await cited_passage(uow, identity.client_id, chunk_id)
        return PassageOut(found.chunk_id, found.title, found.page, found.text, found.after, found.locator)


class PresenceOut(msgspec.Struct):
    """Whether the coach is outside their hours, as the widget's presence line says it: ``away_until`` (when they
    are back, :func:`~app.accounts.availability.away_until`; ``null`` within their hours or without hours) and
    ``changes_in``, the seconds until that changes (``null``: it does not, the coach set no hours)."""

    away_until: str | None
    changes_in: int | None


def coach_presence(availability: dict[str, Any] | None, at: datetime, language: str = "en") -> PresenceOut:
    """The coach's :class:`PresenceOut` at the aware datetime ``at`` (``Coach.availability``), the return time in
    ``language``."""
    change = next_change(availability, at)
    changes_in = None if change is None else max(1, math.ceil((change - at).total_seconds()))
    return PresenceOut(away_until(availability, at, language), changes_in)


class WidgetPresenceController(Controller):
    """Whether the coach is away, for a widget page left open (``static/chat.js`` asks again when it changes).
    Auth: the client's widget token or session cookie."""

    path = "/api/v1/widget/presence"
    tags = ["widget"]
    dependencies = CLIENT_DEPENDENCIES

    @get("/")
    async def presence(self, uow: Uow, language: FromQuery[str] = "en") -> PresenceOut:
        """The client's coach's :class:`PresenceOut` now, the return time in ``language`` (the chat page's
        ``data-language``: ``en es fr de pt``; 400 for any other)."""
        if language not in LANGUAGES:
            raise InvalidInput(f"language must be one of {', '.join(LANGUAGES)}")
        coach = await uow.coach()
        return coach_presence(coach.availability, datetime.now(UTC), language)


class FeedbackController(Controller):
    path = "/api/v1/messages"
    tags = ["chat"]
    dependencies = CLIENT_DEPENDENCIES

    @post("/{message_id:str}/feedback", status_code=200)
    async def feedback(
        self,
        message_id: PathId,
        data: JSONBody[FeedbackIn],
        identity: ClientIdentityDep,
        uow: Uow,
        container: ContainerDep,
    ) -> FeedbackOut:
        """The client rates an AI reply (widget token of the conversation's client only; 404 otherwise).
        Sending again replaces the earlier feedback."""
        stored = await container.conversations.record_feedback(
            uow,
            identity.client_id,
            message_id,
            helpful=data.helpful,
            rating=data.rating,
            comment=data.text,
        )
        return FeedbackOut(message_id, stored["helpful"], stored["rating"], stored["text"], stored["at"])


_decoder = msgspec.json.Decoder(ChatRequest)


@websocket("/ws/chat")
async def chat_socket(
    socket: WebSocket[Any, Any, Any], container: ContainerDep, channels: NamedDependency[ChannelsPlugin]
) -> None:
    """Streamed chat for the widget. Auth: ``?token=<widget_token>``, or the widget session cookie from the widget
    page (``app.auth.identify_client``: the handshake's ``Origin`` must be this server). ``?lang=`` (else the
    handshake's ``Accept-Language``) is the client's app's language, kept with each message (:func:`app_language`).

    Client → server: ``{"text": "...", "conversation_id"?: "...", "client_message_id"?: "..."}``.
    Server → client: ``{"type": "ack", "client_message_id", "message_id", "conversation_id", "created_at",
    "answering"}`` as soon as a message is stored (whatever answer is in progress; ``answering`` false: it was
    answered before, or it is a repeat of a message this socket answers already, so no ``done`` follows for it);
    answers follow in the order the messages arrived: ``{"type": "token", "text": "..."}`` per delta, then
    ``{"type": "done", "conversation_id", "in_reply_to", "message_id", "reply", "citations", "metadata", "handoff",
    "created_at"}``; ``{"type": "stopped", "in_reply_to", "reason": "taken"}`` instead of the remaining tokens and
    ``done`` when the conversation is taken from the AI while it answers (the coach joined, or a later message got
    the crisis reply: the streamed text is to go; nothing of it is stored). A message stored while another is
    answered that calls for the crisis protocol gets the crisis reply at once, one ``message`` event
    (:meth:`_SocketChat._screen`), and in its turn a ``done`` without a reply whose ``handoff`` is the one the crisis
    opened. ``{"type": "error", "message",
    "code"?, "fields"?, "client_message_id"?}`` for a message that was refused (nothing stored: :func:`error_event`,
    ``code`` e.g. ``rate_limited`` with ``fields.retry_after``, ``too_long``, ``empty``); ``{"type": "error",
    "message", "code"?, "fields"?, "in_reply_to"}`` (``answer_later``, ``not_answered``) instead of ``done`` for a
    stored message whose answer failed (a job answers it later, or the message was gone). Live events of the
    client's channel (:mod:`app.handoff.live`: the coach's messages, ``coach_joined``, ``coach_left``,
    ``coach_dismissed``, ``draft_discarded``, and every message the client sends and its reply, whichever socket or
    channel it came from, so that the client's other tabs show them: a reply this socket streamed arrives again as a
    ``message`` event, the same ``id``; a message that came on this socket with its ``client_message_id`` does not)
    arrive on the same socket at any time. A dropped connection stops neither the reading of what already arrived
    nor the answers: every stored message is answered, and replies finished after the drop go to the client's live
    channel (the widget's next connection, and the client's other channels, e.g. a Telegram chat continuing the
    conversation).
    """
    try:
        identity = await identify_client(socket, container)
    except (NotAuthorizedException, PermissionDeniedException) as exc:
        await socket.close(code=4000 + exc.status_code, reason=str(exc.detail)[:120])
        return
    await socket.accept()
    chat = _SocketChat(socket, container, identity)
    async with (
        channels.start_subscription([client_channel(identity.client_id)]) as subscriber,
        subscriber.run_in_background(chat.forward),
    ):
        answering = asyncio.create_task(chat.answer_queued())
        try:
            await chat.read()
        finally:
            chat.queue.put_nowait(None)  # answer what was stored, then stop
            await answering
            await asyncio.gather(*chat.screens)


class _SocketChat:
    """One widget socket: a reader that stores (and acknowledges) every message as it arrives, and an
    answering task that answers the stored messages one by one, in order. A message stored while another is
    being answered is screened for a crisis at once (:meth:`~app.chat.turn.ChatService.answer_crisis`): a crisis
    reply does not wait behind the answers before it."""

    def __init__(self, socket: WebSocket[Any, Any, Any], container: ContainerDep, identity: ClientIdentity) -> None:
        self.socket = socket
        self.container = container
        self.identity = identity
        self.queue: asyncio.Queue[uuid.UUID | None] = asyncio.Queue()
        self._queued: set[uuid.UUID] = set()  # the messages this socket answers (or answered)
        self._sent: set[str] = set()  # the client_message_ids of the messages that came on this socket
        self._shown: set[str] = set()  # the ids of the messages sent on this socket as message events
        self._answering: uuid.UUID | None = None  # the message being answered
        self._generating = False  # the AI works on that answer (ChatService.answer's on_answering)
        self._may_be_taken = False  # a live event since the last check: the conversation may be taken (_taken)
        self.screens: set[asyncio.Task[None]] = set()  # the crisis screens of messages stored meanwhile
        self.connected = True
        self._conversation_id: uuid.UUID | None = None
        self._send_lock = asyncio.Lock()
        self.app_language = app_language(socket)  # the messages' (ChatService.receive)

    async def send(self, payload: dict[str, Any]) -> None:
        """Send one event; a failed send marks the socket gone (the work goes on)."""
        if not self.connected:
            return
        try:
            async with self._send_lock:
                await self.socket.send_json(payload)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.connected = False

    async def forward(self, event: bytes) -> None:
        """Pass a live event of the client's channel on to the socket; :data:`~app.handoff.live.LINK_REVOKED`
        closes it instead. A message that came on this socket is not passed back (its ``ack`` tells it), nor one
        this socket was sent already (:meth:`_show`: a crisis reply of :meth:`_screen`)."""
        data = json.loads(event)
        if data.get("type") == LINK_REVOKED:
            await self.close_revoked()
            return
        if data.get("type") == "coach_joined" or (
            data.get("type") == "message" and data["message"].get("sender_type") != SenderType.CLIENT
        ):
            self._may_be_taken = True  # (the coach joined or wrote, or a crisis reply: the answer may have to stop)
        if data.get("type") != "message":
            await self.send(data)
        elif data["message"].get("client_message_id") not in self._sent:
            await self._show(data)

    async def _show(self, event: dict[str, Any]) -> None:
        """Send a ``message`` event unless this socket was sent that message already: a crisis reply comes both
        from :meth:`_screen` and from the client's live channel, whichever is first (a client of the socket that
        does not drop repeated ids showed it twice)."""
        message_id = event["message"]["id"]
        if message_id not in self._shown:
            self._shown.add(message_id)
            await self.send(event)

    async def close_revoked(self) -> None:
        """Close the socket (:data:`LINK_REVOKED_CLOSE`): its token no longer opens the client. The messages it
        stored are still answered; the widget's reconnect is refused and asks for the coach's new link."""
        if not self.connected:
            return
        self.connected = False
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            async with self._send_lock:
                await self.socket.close(code=LINK_REVOKED_CLOSE, reason="the chat link was revoked")

    async def read(self) -> None:
        """Store and acknowledge each message as it arrives, until the client disconnects."""
        while self.connected:
            try:
                raw = await self.socket.receive_text()
            except WebSocketDisconnect:
                break
            await self._store(raw)
        self.connected = False

    async def _store(self, raw: str) -> None:
        try:
            request = _decoder.decode(raw)
        except msgspec.ValidationError as exc:
            await self.send({"type": "error", "message": f"invalid message: {exc}", **_client_id_of(raw)})
            return
        except (msgspec.DecodeError, RecursionError):  # (msgspec recurses once per nesting level)
            await self.send({"type": "error", "message": 'invalid message: send JSON like {"text": "..."}'})
            return
        if not await self.container.accounts.still_valid(self.identity):  # (the live event may have been lost)
            await self.close_revoked()
            return
        if request.client_message_id is not None:
            self._sent.add(request.client_message_id)
        try:
            received = await self.container.chat.receive(
                self.identity.coach_id,
                self.identity.client_id,
                request.text,
                conversation_id=request.conversation_id or self._conversation_id,
                channel="widget",
                client_message_id=request.client_message_id,
                app_language=self.app_language,
            )
        except DomainError as exc:
            await self.send(error_event(exc) | _client_id_of(raw))
            return
        self._conversation_id = received.conversation_id
        # a message sent again on this socket before its answer came (the widget re-sends what it has no ack
        # for) is answered once: its first answer's done is the one that follows
        answering = not received.answered and received.message_id not in self._queued
        await self.send(
            {
                "type": "ack",
                "client_message_id": received.client_message_id,
                "message_id": str(received.message_id),
                "conversation_id": str(received.conversation_id),
                "created_at": received.created_at.isoformat(),
                "answering": answering,
            }
        )
        if answering:
            self._queued.add(received.message_id)
            self.queue.put_nowait(received.message_id)
            if self._answering is not None:  # it waits for an answer: a crisis in it must not
                screen = asyncio.create_task(self._screen(received.message_id))
                self.screens.add(screen)
                screen.add_done_callback(self.screens.discard)

    async def _screen(self, message_id: uuid.UUID) -> None:
        """The crisis protocol for a message that waits for the answers before it, if it calls for one: its reply
        comes on this socket as one ``message`` event (also published on the client's live channel: the first of
        the two is sent, :meth:`_show`); the message's own answer then ends in a ``done`` without a reply that
        carries the handoff the crisis opened (:meth:`_done`)."""
        try:
            reply = await self.container.chat.answer_crisis(self.identity.coach_id, self.identity.client_id, message_id)
        except Exception:  # (its transaction rolled back: its own answer screens it when its turn comes)
            log.exception("the early crisis screen of message %s failed", message_id)
            return
        if reply is not None:
            self._may_be_taken = True  # (the answer in progress stops at its next token)
            await self._show(message_event(reply, client_view=client_view(reply.meta)))

    async def answer_queued(self) -> None:
        """Answer the stored messages in order until the reader is done and the queue is empty."""
        while (message_id := await self.queue.get()) is not None:
            self._answering = message_id
            try:
                await self._answer(message_id)
            except DomainError as exc:
                await self.send(error_event(exc) | {"in_reply_to": str(message_id)})
            except Exception:  # one failed answer must not leave the messages queued after it unanswered
                log.exception("answering message %s failed; a job answers it", message_id)
                await self._answer_later(message_id)
            finally:
                self._answering = None

    async def _answer(self, message_id: uuid.UUID) -> None:
        """Stream the answer to stored message ``message_id``: its ``token`` events, then ``done``. Once the AI works
        on it (``ChatService.answer``'s ``on_answering``), a token that follows a hint that the conversation may
        have been taken from the AI (:meth:`forward`, :meth:`_screen`) first asks :meth:`_taken`; taken (the coach
        joined, or a later message got the crisis reply), the answer stops: a ``stopped`` event instead of the
        remaining tokens and ``done``, and the turn is closed, its model stream too (nothing of it is stored; the
        message waits for the coach)."""
        self._generating = self._may_be_taken = False
        turn = self.container.chat.answer(
            self.identity.coach_id,
            self.identity.client_id,
            message_id,
            to_client=lambda: not self.connected,
            on_answering=self._on_answering,
        )
        async with contextlib.aclosing(turn):  # a turn stopped is closed here, its model stream too
            async for item in turn:
                if isinstance(item, TurnResult):
                    await self.send(await self._done(item))
                elif await self._taken(message_id):
                    await self.send({"type": "stopped", "in_reply_to": str(message_id), "reason": "taken"})
                    return
                else:
                    await self.send({"type": "token", "text": item})

    async def _done(self, result: TurnResult) -> dict[str, Any]:
        """The ``done`` event of ``result``. A message answered before its turn came (by its early crisis screen,
        :meth:`_screen`) has a result without reply or handoff: its ``done`` carries the conversation's handoff
        status now instead (:func:`handoff_status`: the handoff the crisis opened, as the crisis turn's own
        ``done`` says it), ``null`` when the database cannot tell now."""
        event = done_event(result)
        if result.message_id is not None or result.handoff is not None:
            return event
        try:
            async with unit_of_work(self.container.sessionmaker, self.identity.coach_id, autocommit=True) as uow:
                status = await handoff_status(self.container, uow, result.conversation_id)
        except (SQLAlchemyError, OSError, DomainError) as exc:
            log.warning("widget: the handoff status of conversation %s is unknown: %r", result.conversation_id, exc)
            return event
        return event | {"handoff": msgspec.structs.asdict(status) if status is not None else None}

    def _on_answering(self) -> None:
        """The AI works on the answer in progress (its tokens are the model's, which a takeover stops)."""
        self._generating = True

    async def _taken(self, message_id: uuid.UUID) -> bool:
        """Whether the answer in progress to ``message_id`` is to stop: the AI works on it, a hint came since the
        last check (each hint is one read, never one per token), and :func:`~app.handoff.service.taken_from` says
        the conversation was taken from the AI. ``False`` when the database cannot tell now (the answer then ends
        as the turn decides: an empty ``done`` when the coach has the conversation)."""
        if not (self._generating and self._may_be_taken):
            return False
        self._may_be_taken = False
        try:
            async with unit_of_work(self.container.sessionmaker, self.identity.coach_id, autocommit=True) as uow:
                return await taken_from(uow.session, message_id)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("widget: whether message %s's conversation was taken is unknown: %r", message_id, exc)
            return False

    async def _answer_later(self, message_id: uuid.UUID) -> None:
        """Hand a stored message whose live answer failed to the worker
        (:meth:`app.chat.turn.ChatService.answer_later`); the reply reaches the client through its live channel.
        Tells the client which happened."""
        try:
            await self.container.chat.answer_later(self.identity.coach_id, message_id)
        except Exception:  # (the database may still be out of reach: the coach's inbox shows the message)
            log.exception("queueing the answer of message %s failed", message_id)
            failed = DomainError(say("refused_not_answered", "en"), code="not_answered")
            await self.send(error_event(failed) | {"in_reply_to": str(message_id)})
            return
        await self.send(error_event(DomainError(ANSWER_LATER, code="answer_later")) | {"in_reply_to": str(message_id)})


def error_event(error: DomainError) -> dict[str, Any]:
    """The socket's ``error`` event of a refusal: ``{"type": "error", "message"}`` (English), with its ``code``
    and ``fields`` when it has a code (``static/chat.js`` shows the catalogue's ``refused_<code>`` in the page's
    language: :func:`app.handoff.catalogue.refusal`)."""
    event: dict[str, Any] = {"type": "error", "message": error.message}
    return event | {"code": error.code, "fields": error.fields} if error.code else event


def _client_id_of(raw: str) -> dict[str, str]:
    """``{"client_message_id": …}`` of a refused message when it named one (so the widget stops re-sending
    it), else ``{}``; an id longer than any the turn stores (:data:`CLIENT_MESSAGE_ID_MAX`), which the widget never
    makes, is not echoed back (a 5,000-character one came back whole; the error's message says its length)."""
    try:
        value = json.loads(raw).get("client_message_id")
    except (ValueError, AttributeError, RecursionError):
        return {}
    return {"client_message_id": value} if isinstance(value, str) and len(value) <= CLIENT_MESSAGE_ID_MAX else {}
