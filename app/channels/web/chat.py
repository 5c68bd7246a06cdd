"""REST API and WebSocket: the client's chat turn, the coach's conversations."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, WebSocket, post, websocket
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException, WebSocketDisconnect
from litestar.params import JSONBody

from app.accounts.service import ClientIdentity
from app.auth import identify_client, provide_client_identity
from app.chat.service import MAX_FEEDBACK_CHARS, MAX_MESSAGE_CHARS, TurnResult
from app.conversations.metadata import client_handoff_view, client_view
from app.core.errors import DomainError
from app.deps import ClientIdentityDep, ContainerDep, PathId
from app.handoff.live import client_channel

log = logging.getLogger(__name__)


class ChatRequest(msgspec.Struct):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MESSAGE_CHARS)]
    conversation_id: uuid.UUID | None = None


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


async def run_turn(
    container: ContainerDep, identity: ClientIdentity, text: str, conversation_id: uuid.UUID | None, channel: str
) -> TurnResult:
    """Run a whole turn without streaming (REST, Telegram)."""
    async for item in container.chat.turn(
        identity.coach_id, identity.client_id, text, conversation_id=conversation_id, channel=channel
    ):
        if isinstance(item, TurnResult):
            return item
    raise RuntimeError("chat turn ended without a result")


class ChatController(Controller):
    path = "/api/v1/chat"
    tags = ["chat"]
    dependencies = {"identity": Provide(provide_client_identity)}

    @post("/", status_code=200)
    async def chat(
        self, data: JSONBody[ChatRequest], identity: ClientIdentityDep, container: ContainerDep
    ) -> ChatResponse:
        """One client turn, unstreamed (the same turn as the WebSocket). Auth: the client's widget token."""
        result = await run_turn(container, identity, data.text, data.conversation_id, "api")
        return ChatResponse(
            result.conversation_id,
            result.message_id,
            result.reply,
            result.citations,
            client_view(result.metadata),
            HandoffStatusOut(**handoff) if (handoff := client_handoff_view(result.handoff)) else None,
        )


class FeedbackController(Controller):
    path = "/api/v1/messages"
    tags = ["chat"]
    dependencies = {"identity": Provide(provide_client_identity)}

    @post("/{message_id:uuid}/feedback", status_code=200)
    async def feedback(
        self, message_id: PathId, data: JSONBody[FeedbackIn], identity: ClientIdentityDep, container: ContainerDep
    ) -> FeedbackOut:
        """The client rates an AI reply (widget token of the conversation's client only; 404 otherwise).
        Sending again replaces the earlier feedback."""
        stored = await container.chat.record_feedback(
            identity.coach_id,
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
    """Streamed chat for the widget. Auth: ``?token=<widget_token>``.

    Client → server: ``{"text": "...", "conversation_id"?: "..."}``.
    Server → client: ``{"type": "token", "text": "..."}`` per delta, then ``{"type": "done",
    "conversation_id", "message_id", "reply", "citations", "metadata", "handoff"}``; ``{"type": "error",
    "message"}`` for a bad message. Live events of the client's channel (:mod:`app.handoff.live`: the
    coach's messages, ``coach_joined``, ``coach_left``) arrive on the same socket at any time. A dropped
    connection does not stop the turn: the reply is still stored.
    """
    try:
        identity = await identify_client(socket, container)
    except NotAuthorizedException as exc:
        await socket.close(code=4401, reason=str(exc.detail)[:120])
        return
    await socket.accept()
    connected = True

    async def send(payload: dict[str, Any]) -> None:
        nonlocal connected
        if not connected:
            return
        try:
            await socket.send_json(payload)
        except (WebSocketDisconnect, RuntimeError, OSError):
            connected = False

    async def forward(event: bytes) -> None:
        await send(json.loads(event))

    async with (
        channels.start_subscription([client_channel(identity.client_id)]) as subscriber,
        subscriber.run_in_background(forward),
    ):
        await _chat_loop(socket, container, identity, send, lambda: connected)


async def _chat_loop(
    socket: WebSocket[Any, Any, Any],
    container: ContainerDep,
    identity: ClientIdentity,
    send: Callable[[dict[str, Any]], Awaitable[None]],
    connected: Callable[[], bool],
) -> None:
    """Receive the client's messages and stream each turn back until the socket closes."""
    while connected():
        try:
            raw = await socket.receive_text()
        except WebSocketDisconnect:
            return
        try:
            request = _decoder.decode(raw)
        except msgspec.ValidationError as exc:
            await send({"type": "error", "message": f"invalid message: {exc}"})
            continue
        except msgspec.DecodeError:
            await send({"type": "error", "message": 'invalid message: send JSON like {"text": "..."}'})
            continue
        try:
            async for item in container.chat.turn(
                identity.coach_id,
                identity.client_id,
                request.text,
                conversation_id=request.conversation_id,
                channel="widget",
            ):
                if isinstance(item, TurnResult):
                    await send(
                        {
                            "type": "done",
                            "conversation_id": str(item.conversation_id),
                            "message_id": str(item.message_id) if item.message_id else None,
                            "reply": item.reply,
                            "citations": item.citations,
                            "metadata": client_view(item.metadata),
                            "handoff": client_handoff_view(item.handoff),
                        }
                    )
                else:
                    await send({"type": "token", "text": item})
        except DomainError as exc:
            await send({"type": "error", "message": exc.message})
