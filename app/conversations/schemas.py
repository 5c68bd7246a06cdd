"""API shapes of conversations and their messages (shared by the coach's API and the channels)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from app.conversations.models import Message


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


def message_out(msg: Message) -> MessageOut:
    """Serialise a message for the API."""
    return MessageOut(msg.id, msg.sender_type, msg.text, msg.created_at, msg.citations, msg.meta)
