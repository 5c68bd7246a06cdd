"""API shapes of conversations and their messages (shared by the coach's API and the channels)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from app.conversations.metadata import ClientMeta, client_citations, client_meta, client_view
from app.conversations.models import Conversation, Message


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


def conversation_summary(conversation: Conversation, client_name: str, message_count: int) -> ConversationSummary:
    """A row of :meth:`~app.conversations.service.ConversationService.list_conversations` as the API lists it."""
    return ConversationSummary(
        conversation.id,
        conversation.client_id,
        client_name,
        conversation.channel,
        message_count,
        conversation.last_message_at,
    )


def message_out(msg: Message) -> MessageOut:
    """Serialise a message for the coach's API (all of its metadata)."""
    return MessageOut(msg.id, msg.sender_type, msg.text, msg.created_at, msg.citations, msg.meta)


def client_message_out(msg: Message) -> MessageOut:
    """Serialise a message for a client (widget token APIs, channels): metadata is only
    :func:`~app.conversations.metadata.client_view` of it."""
    return MessageOut(
        msg.id, msg.sender_type, msg.text, msg.created_at, client_citations(msg.citations), client_view(msg.meta)
    )


@dataclass(frozen=True)
class ClientMessage:
    """A message as the widget page renders it (``templates/partials/message.html``): ``reply_meta`` is the
    :class:`~app.conversations.metadata.ClientMeta` allowlist, never the stored metadata."""

    id: uuid.UUID
    sender_type: str
    text: str
    created_at: datetime
    citations: list[dict[str, Any]]
    reply_meta: ClientMeta

    @classmethod
    def of(cls, msg: Message) -> ClientMessage:
        citations = client_citations(msg.citations)
        return cls(msg.id, msg.sender_type, msg.text, msg.created_at, citations, client_meta(msg.meta))
