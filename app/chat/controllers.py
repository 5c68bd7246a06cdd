"""REST API and WebSocket: the client's chat turn, the coach's conversations."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, WebSocket, get, post, websocket
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException, WebSocketDisconnect
from litestar.params import JSONBody

from app.accounts.auth import identify_client, provide_client_identity, provide_coach_id
from app.accounts.service import ClientIdentity
from app.chat.service import MAX_MESSAGE_CHARS, TurnResult
from app.db import models as m
from app.deps import ClientIdentityDep, CoachId, ContainerDep, PathId
from app.errors import DomainError

log = logging.getLogger(__name__)


class ChatRequest(msgspec.Struct):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MESSAGE_CHARS)]
    conversation_id: uuid.UUID | None = None


class ChatResponse(msgspec.Struct):
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    reply: str
    citations: list[dict[str, Any]]
    metadata: dict[str, Any]


class MessageOut(msgspec.Struct):
    id: uuid.UUID
    sender_type: str
    text: str
    created_at: datetime
    citations: list[dict[str, Any]]
    metadata: dict[str, Any]


class ConversationOut(msgspec.Struct):
    id: uuid.UUID
    client_id: uuid.UUID
    channel: str
    created_at: datetime
    messages: list[MessageOut]


class ConversationSummary(msgspec.Struct):
    id: uuid.UUID
    client_id: uuid.UUID
    client_name: str
    channel: str
    message_count: int
    last_message_at: datetime


COACH_ONLY_METADATA = ("error", "partial_reply", "risk")
"""Attribution the coach sees in transcripts but the client is not shown (provider errors can name the
coach's configuration or a masked key)."""


def client_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a reply as shown to the client: coach-only keys dropped, ``failed`` set on errors."""
    shown = {k: v for k, v in metadata.items() if k not in COACH_ONLY_METADATA}
    if "error" in metadata:
        shown["failed"] = True
    return shown


def message_out(msg: m.Message) -> MessageOut:
    """Serialise a message for the API."""
    return MessageOut(msg.id, msg.sender_type, msg.text, msg.created_at, msg.citations, msg.meta)


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
            result.conversation_id, result.message_id, result.reply, result.citations, client_metadata(result.metadata)
        )


class ConversationController(Controller):
    path = "/api/v1/conversations"
    tags = ["conversations"]
    dependencies = {"coach_id": Provide(provide_coach_id)}

    @get("/")
    async def list_conversations(self, coach_id: CoachId, container: ContainerDep) -> list[ConversationSummary]:
        """The coach's conversations, most recent first."""
        rows = await container.chat.list_conversations(coach_id)
        return [
            ConversationSummary(c.id, c.client_id, name, c.channel, count, c.last_message_at) for c, name, count in rows
        ]

    @get("/{conversation_id:uuid}")
    async def get_conversation(
        self, conversation_id: PathId, coach_id: CoachId, container: ContainerDep
    ) -> ConversationOut:
        """A full transcript with citations and attribution metadata."""
        conversation, messages = await container.chat.get_conversation(coach_id, conversation_id)
        return ConversationOut(
            conversation.id,
            conversation.client_id,
            conversation.channel,
            conversation.created_at,
            [message_out(msg) for msg in messages],
        )


_decoder = msgspec.json.Decoder(ChatRequest)


@websocket("/ws/chat")
async def chat_socket(socket: WebSocket[Any, Any, Any], container: ContainerDep) -> None:
    """Streamed chat for the widget. Auth: ``?token=<widget_token>``.

    Client → server: ``{"text": "...", "conversation_id"?: "..."}``.
    Server → client: ``{"type": "token", "text": "..."}`` per delta, then ``{"type": "done",
    "conversation_id", "message_id", "reply", "citations", "metadata"}``; ``{"type": "error", "message"}``
    for a bad message. A dropped connection does not stop the turn: the reply is still stored.
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

    while connected:
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
                            "message_id": str(item.message_id),
                            "reply": item.reply,
                            "citations": item.citations,
                            "metadata": client_metadata(item.metadata),
                        }
                    )
                else:
                    await send({"type": "token", "text": item})
        except DomainError as exc:
            await send({"type": "error", "message": exc.message})
