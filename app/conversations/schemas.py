"""API shapes of conversations and their messages (shared by the coach's API and the channels)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from app.conversations.metadata import ClientMeta, ReplyMeta, client_citations, client_meta
from app.conversations.models import Conversation, Message
from app.conversations.service import ListedMessage


class MessageOut(msgspec.Struct):
    id: uuid.UUID
    sender_type: str
    text: str
    created_at: datetime
    citations: list[dict[str, Any]]
    metadata: dict[str, Any]
    forgotten_at: datetime | None = None
    """When the client or the coach forgot an insight this message is a source of (or the reply to such a
    message): kept in the transcript, left out of every prompt and of the training data."""


class ConversationOut(msgspec.Struct):
    id: uuid.UUID
    client_id: uuid.UUID
    channel: str
    created_at: datetime
    messages: list[MessageOut]
    undelivered_reason: str | None = None
    """Why the coach's messages do not reach the client (the client blocked the Telegram bot, no bot is
    connected, the client's chat continues another conversation): they are stored in the transcript only.
    ``None``: they reach the client."""


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


def message_out(msg: Message, citations: list[dict[str, Any]] | None = None) -> MessageOut:
    """Serialise a message for the coach's API (all of its metadata): with ``citations`` as a transcript lists
    them (:class:`~app.conversations.service.ListedMessage`), else as stored (a message just sent)."""
    cited = msg.citations if citations is None else citations
    return MessageOut(msg.id, msg.sender_type, msg.text, msg.created_at, cited, msg.meta, msg.forgotten_at)


@dataclass(frozen=True)
class ShownMessage:
    """A listed message as a page renders it (``templates/partials/message.html``): ``citations`` as they read
    now (:class:`~app.conversations.service.ListedMessage`); ``reply_meta`` the coach's
    :class:`~app.conversations.metadata.ReplyMeta` on the dashboard, the client's
    :class:`~app.conversations.metadata.ClientMeta` allowlist in the widget, never the stored metadata."""

    id: uuid.UUID
    sender_type: str
    text: str
    created_at: datetime
    citations: list[dict[str, Any]]
    reply_meta: ReplyMeta | ClientMeta
    forgotten: bool = False
    """On the coach's transcript: the message is forgotten (:attr:`MessageOut.forgotten_at`), which the page marks."""

    @classmethod
    def for_client(cls, listed: ListedMessage) -> ShownMessage:
        """As the client's widget page shows it: citations without scores, the client's view of the metadata."""
        msg, citations = listed.message, client_citations(listed.citations)
        return cls(msg.id, msg.sender_type, msg.text, msg.created_at, citations, client_meta(msg.meta))

    @classmethod
    def for_coach(cls, listed: ListedMessage) -> ShownMessage:
        """As the coach's transcript shows it: every citation field and all of the metadata."""
        msg = listed.message
        forgotten = msg.forgotten_at is not None
        return cls(msg.id, msg.sender_type, msg.text, msg.created_at, listed.citations, msg.reply_meta, forgotten)
