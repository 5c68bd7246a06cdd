"""Conversations between a client and the coach's AI clone (or the coach), and their messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import InstrumentedAttribute, Mapped, mapped_column

from app.accounts.models import Coach
from app.conversations.metadata import ReplyMeta
from app.db.base import Base, TenantMixin


class SenderType:
    """Who wrote a message."""

    CLIENT = "client"
    AI = "ai"
    HUMAN_COACH = "human_coach"


class Conversation(TenantMixin, Base):
    """A thread between one client and the coach's clone; ``channel`` is ``widget``, ``api`` or ``telegram``."""

    __tablename__ = "conversations"

    client_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(20), default="widget")
    last_message_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    """The newest message's ``created_at``, kept by PostgreSQL (the ``messages_added`` trigger on ``messages``,
    migration 0031): the inbox's order."""
    urgent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Set when a client message triggered the crisis protocol; ``urgent_reason`` names the cues."""
    urgent_reason: Mapped[str | None] = mapped_column(Text)
    coach_read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the coach last opened the conversation: the client's messages after it are unread in the inbox."""
    insights_extracted_through: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Watermark of L3 extraction: messages created up to this time have been read for insights."""


CLIENT_MESSAGE_ID_MAX = 64
"""Longest client-chosen message id (a UUID is 36 characters)."""


class Message(TenantMixin, Base):
    """One message. ``citations`` is a list of ``{document_id, title, page, chunk_id, score}``; ``meta``
    (column ``metadata``) is a stored :class:`app.conversations.metadata.ReplyMeta` (attribution, confidence,
    handoff and draft flags, the client's feedback): read it through :attr:`reply_meta`; a client sees only
    :func:`app.conversations.metadata.client_view` of it.

    A client's message may carry ``client_message_id``, the id the client's app gave it (at most
    :data:`CLIENT_MESSAGE_ID_MAX` characters, unique per client: ``client_id``, the client who sent it, is set with
    it and only with it): a message sent again with the same id is stored once. ``answered_at`` is set on a client
    message when the AI answered it (reply, crisis reply, handoff notice, apology or draft), in the same transaction
    as the answer; a message that reached only the coach (the AI paused) stays unanswered.

    ``forgotten_at`` is set when the coach or the client forgot an insight this message is a source of
    (:meth:`app.memory.controls.MemoryControls.delete_insight`): the message stays in the transcript the coach
    reads, but from then on no prompt (recent turns, summaries, insight extraction, few-shot examples) and no
    training example is built from it (:data:`REMEMBERED`)."""

    __tablename__ = "messages"
    __table_args__ = (
        # a client's message ids are the client's own (migration 0034)
        Index(
            "uq_messages_client_client_message_id",
            "client_id",
            "client_message_id",
            unique=True,
            postgresql_where=text("client_message_id IS NOT NULL"),
        ),
        CheckConstraint("(client_message_id IS NULL) = (client_id IS NULL)", name="client_message_id_has_client"),
        # the inbox's search (app.conversations.inbox: text ILIKE '%…%'), pg_trgm (migration 0027)
        Index("ix_messages_text_trgm", "text", postgresql_using="gin", postgresql_ops={"text": "gin_trgm_ops"}),
        # the few forgotten messages, which episodic recall leaves out by an anti-join (migration 0033)
        Index("ix_messages_forgotten", "id", postgresql_where=text("forgotten_at IS NOT NULL")),
        # a conversation's messages in time order, read a page at a time from the end (migration 0035)
        Index("ix_messages_conversation_time", "conversation_id", "created_at", "id"),
        # the few client messages nobody answered, for the stranded-message sweep (migration 0046)
        Index(
            "ix_messages_unanswered",
            "created_at",
            postgresql_where=text("sender_type = 'client' AND answered_at IS NULL AND forgotten_at IS NULL"),
        ),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE")
    )
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("chat_sessions.id", ondelete="SET NULL"), index=True
    )
    sender_type: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    client_message_id: Mapped[str | None] = mapped_column(String(CLIENT_MESSAGE_ID_MAX))
    client_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    forgotten_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def reply_meta(self) -> ReplyMeta:
        """``meta`` read as a :class:`ReplyMeta` (a fresh copy: changing it does not change the row)."""
        return ReplyMeta.from_json(self.meta)


REMEMBERED = Message.forgotten_at.is_(None)
"""SQL filter: messages not forgotten (see :attr:`Message.forgotten_at`); every reader that builds a prompt or
training data from messages adds it."""


def outside_preview(conversation_id: InstrumentedAttribute[uuid.UUID]) -> ColumnElement[bool]:
    """SQL filter on a ``conversation_id`` column: not a conversation of the coach's preview client, the coach
    trying their own clone as "Preview (you)" (:attr:`app.accounts.models.Coach.preview_client_id`). Learning
    data and its figures (training examples and preference pairs, approval and failure figures, experiments'
    metrics, the handoff rate) leave those out: the coach testing their clone is no client's experience."""
    preview = (
        select(Conversation.id)
        .join(Coach, Coach.id == Conversation.coach_id)
        .where(Conversation.client_id == Coach.preview_client_id)
    )
    return conversation_id.not_in(preview)
