"""Storing a message of a conversation (shared by the chat turn and the coach's handoff actions), what of
its metadata the client may see, and reading the client's feedback on a reply."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.memory.service import MemoryService


async def store_message(
    session: AsyncSession,
    memory: MemoryService,
    coach: m.Coach,
    conversation_id: uuid.UUID,
    sender_type: str,
    text: str,
    *,
    at: datetime,
    citations: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[m.Message, m.ChatSession | None]:
    """Add a message (flushed, so its id is known) to its conversation's chat session and move the
    conversation's ``last_message_at``. Returns the message and the chat session this closed, if any (the
    caller queues :meth:`MemoryService.session_ended` for it after commit)."""
    message = m.Message(
        coach_id=coach.id,
        conversation_id=conversation_id,
        sender_type=sender_type,
        text=text,
        citations=citations or [],
        meta=meta or {},
        created_at=at,
    )
    session.add(message)
    await session.flush()
    ended = await memory.track_message(session, coach, message, at)
    await session.execute(update(m.Conversation).where(m.Conversation.id == conversation_id).values(last_message_at=at))
    return message, ended


COACH_ONLY_METADATA = ("error", "partial_reply", "risk")
"""Attribution the coach sees in transcripts but the client is not shown (provider errors can name the
coach's configuration or a masked key)."""


def client_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a reply as shown to the client: coach-only keys dropped, ``failed`` set on errors."""
    shown = {k: v for k, v in metadata.items() if k not in COACH_ONLY_METADATA}
    if "error" in metadata:
        shown["failed"] = True
    return shown


def feedback_of(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The client's feedback stored on a reply (``metadata.feedback``: ``{"helpful", "rating", "text",
    "at"}``, see :meth:`app.chat.service.ChatService.record_feedback`), ``None`` when not rated."""
    feedback = (meta or {}).get("feedback")
    return feedback if isinstance(feedback, dict) else None


def helpful(meta: Mapping[str, Any] | None) -> bool | None:
    """The client's thumbs up (``True``) / down (``False``) on a reply, ``None`` when not rated."""
    value = (feedback_of(meta) or {}).get("helpful")
    return value if isinstance(value, bool) else None
