"""Storing a message of a conversation (shared by the chat turn and the coach's handoff actions): the
message joins its L2 session (:func:`app.memory.sessions.track_message`), and an AI or coach message is
queued for its episodic embedding (:mod:`app.memory.episodes`; a client message's vector is stored by its
turn)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Coach
from app.conversations.models import Message, SenderType
from app.db import jobs
from app.memory.models import ChatSession
from app.memory.sessions import track_message


async def store_message(
    session: AsyncSession,
    coach: Coach,
    conversation_id: uuid.UUID,
    sender_type: str,
    text: str,
    *,
    at: datetime,
    citations: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
    client_message_id: str | None = None,
    client_id: uuid.UUID | None = None,
) -> tuple[Message, ChatSession | None]:
    """Add a message (flushed, so its id is known) to its conversation's chat session; an AI or coach message
    queues its ``embed_messages`` job. The conversation's ``last_message_at`` moves to ``at`` in PostgreSQL
    (the ``messages_added`` trigger, migration 0031); a ``Conversation`` already loaded in ``session`` keeps
    the value it was read with.
    ``client_message_id`` is the client app's own id of the message, given with ``client_id``, the client who
    sent it (unique per client: a duplicate raises ``IntegrityError`` at the flush; one without the other
    violates the table's check constraint). Returns the message and the chat
    session this closed, if any (its jobs are queued in the same transaction by
    :func:`app.memory.sessions.session_ended`)."""
    message = Message(
        coach_id=coach.id,
        conversation_id=conversation_id,
        sender_type=sender_type,
        text=text,
        citations=citations or [],
        meta=meta or {},
        client_message_id=client_message_id,
        client_id=client_id,
        created_at=at,
    )
    ended = await track_message(session, coach, message, at)  # before the INSERT, which then holds session_id
    session.add(message)
    await session.flush()
    if sender_type != SenderType.CLIENT:  # queued last: flushed with the caller's other outbox rows, in one INSERT
        jobs.embed_messages(session, coach.id, conversation_id, message.id, at)
    return message, ended
