"""Handoffs (a conversation handed to the human coach) and drafts (AI replies awaiting the coach's approval).

A conversation has at most one *active* handoff (``open`` or ``claimed``; a partial unique index holds
this under concurrency). While it is active the AI does not answer: the client's messages go to the coach.
``open`` → ``claimed`` (the coach took over) → ``closed`` (handed back, or dismissed while still open).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.conversations.metadata import ReplyMeta
from app.db.base import Base, TenantMixin


class HandoffStatus:
    """``open``: waiting for the coach; ``claimed``: the coach took over; ``closed``: handed back."""

    OPEN = "open"
    CLAIMED = "claimed"
    CLOSED = "closed"
    ACTIVE = (OPEN, CLAIMED)
    ALL = (OPEN, CLAIMED, CLOSED)


class HandoffReason:
    """Why a conversation went to the coach."""

    CRISIS = "crisis"
    HUMAN_REQUEST = "human_request"
    ESCALATE_TOPIC = "escalate_topic"
    LOW_CONFIDENCE = "low_confidence"
    HUMAN_ONLY = "human_only"
    COACH_TAKEOVER = "coach_takeover"
    LABELS = {
        CRISIS: "Crisis risk",
        HUMAN_REQUEST: "Client asked for a human",
        ESCALATE_TOPIC: "Always-escalate topic",
        LOW_CONFIDENCE: "Low AI confidence",
        HUMAN_ONLY: "Human-only mode",
        COACH_TAKEOVER: "Coach took over",
    }
    """How the dashboard, alerts and briefs word each reason."""


class Handoff(TenantMixin, Base):
    """One handoff of a conversation to the human coach.

    ``confidence`` is the AI's confidence before the handoff (``None`` for a coach's unprompted takeover),
    ``signals`` the turn's signal values (:class:`app.handoff.signals.TurnSignals`), ``brief`` a short text
    for the coach built from the client's memory. ``alerts`` records the delivery of the coach's alerts,
    per channel ``{"status": "sent"|"failed"|"skipped", "at", "attempts", "error"?}`` (see
    :mod:`app.handoff.alerts`). ``resumed_message_id`` is the first AI message after
    the handback (which carries ``is_handback`` and ``human_duration_minutes``).
    """

    __tablename__ = "handoffs"
    __table_args__ = (
        Index(
            "uq_handoffs_active_conversation",
            "conversation_id",
            unique=True,
            postgresql_where=text("status IN ('open', 'claimed')"),
        ),
        # a client's active handoffs, read when each of their messages is stored (the crisis conversation)
        Index("ix_handoffs_active_client", "client_id", postgresql_where=text("status IN ('open', 'claimed')")),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default=HandoffStatus.OPEN)
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    confidence: Mapped[float | None] = mapped_column(Float)
    signals: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    brief: Mapped[str] = mapped_column(Text, default="")
    trigger_message_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("messages.id", ondelete="SET NULL")
    )
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sla_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    human_duration_minutes: Mapped[float | None] = mapped_column(Float)
    alerts: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    resumed_message_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("messages.id", ondelete="SET NULL")
    )


class DraftStatus:
    """``pending`` until the coach approves (possibly edited) or discards it."""

    PENDING = "pending"
    APPROVED = "approved"
    DISCARDED = "discarded"
    ALL = (PENDING, APPROVED, DISCARDED)


class Draft(TenantMixin, Base):
    """An AI reply written in ``draft`` mode: nothing reaches the client until the coach approves it.

    ``meta`` is the reply's attribution metadata (model, tokens, confidence, signals) and ``citations`` its
    sources, copied onto the message sent at approval. ``edited`` is true when the coach changed the text
    (the sent message is then the coach's, ``sender_type`` ``human_coach``, with the AI draft kept).
    """

    __tablename__ = "drafts"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    client_message_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("messages.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(20), default=DraftStatus.PENDING)
    text: Mapped[str] = mapped_column(Text)
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    edited: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_message_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("messages.id", ondelete="SET NULL")
    )

    @property
    def reply_meta(self) -> ReplyMeta:
        """``meta`` read as a :class:`ReplyMeta` (a fresh copy: changing it does not change the row)."""
        return ReplyMeta.from_json(self.meta)
