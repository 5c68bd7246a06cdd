"""Storing a message of a conversation (shared by the chat turn and the coach's handoff actions), what of
its metadata the client may see, and reading the client's feedback on a reply."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Coach
from app.conversations.models import Conversation, Message
from app.memory.models import ChatSession
from app.memory.service import MemoryService


async def store_message(
    session: AsyncSession,
    memory: MemoryService,
    coach: Coach,
    conversation_id: uuid.UUID,
    sender_type: str,
    text: str,
    *,
    at: datetime,
    citations: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
    client_message_id: str | None = None,
) -> tuple[Message, ChatSession | None]:
    """Add a message (flushed, so its id is known) to its conversation's chat session and move the
    conversation's ``last_message_at``. ``client_message_id`` is the client app's own id of the message
    (unique per coach: a duplicate raises ``IntegrityError`` at the flush). Returns the message and the chat
    session this closed, if any (the caller queues :meth:`MemoryService.session_ended` for it after
    commit)."""
    message = Message(
        coach_id=coach.id,
        conversation_id=conversation_id,
        sender_type=sender_type,
        text=text,
        citations=citations or [],
        meta=meta or {},
        client_message_id=client_message_id,
        created_at=at,
    )
    session.add(message)
    await session.flush()
    ended = await memory.track_message(session, coach, message, at)
    await session.execute(update(Conversation).where(Conversation.id == conversation_id).values(last_message_at=at))
    return message, ended
