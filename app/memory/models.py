"""Client memory: L2 chat sessions with their summaries, L3 insights, L4 relationship profiles.

L1 (recent turns) needs no table of its own: it is the tail of ``messages``. Every vector here is
produced by the coach's embedder and tagged with its model name, like chunks, so retrieval never compares
vectors of two different models.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantMixin
from app.db.vectors import BinaryHalfVec, BinaryVector
from app.llm.base import EMBEDDING_DIMENSIONS


class SessionStatus:
    """Life cycle of a chat session: ``open`` → ``ended`` (summary job queued) → ``summarized`` | ``failed``;
    ``failed`` → ``ended`` again when the sweep queues its summary once more (a bounded number of times, after a
    back-off: :meth:`app.memory.summaries.SummaryService.retry_failed`);
    ``deleted`` when the client or coach deleted its summary (the summary and its vector are erased), or when
    every message of it was forgotten or it holds no client message (nothing to summarise)."""

    OPEN = "open"
    ENDED = "ended"
    SUMMARIZED = "summarized"
    FAILED = "failed"
    DELETED = "deleted"
    FINISHED = (SUMMARIZED, FAILED)
    """The summary job has run: these sessions can be deleted."""
    LISTED = (ENDED, SUMMARIZED, FAILED)
    """Ended sessions: listed to the coach with their summary, "pending" or the failure (the client sees the
    summarised ones, and a session's status by id: :func:`app.memory.client_view.session_state`)."""


class ChatSession(TenantMixin, Base):
    """A sitting of one conversation: it ends after ``Coach.session_idle_minutes`` without a message, or
    explicitly. Once ended, a job writes ``summary`` (see :class:`app.memory.schemas.SessionSummary`);
    ``source_message_ids`` are the messages the summary's statements are grounded in."""

    __tablename__ = "chat_sessions"
    __table_args__ = (
        # a client's sessions newest first, a page at a time, read off the index (migration 0038)
        Index("ix_chat_sessions_client_time", "client_id", "started_at", "id"),
        # the failed summaries due for another job, read by the sweep (migration 0064)
        Index("ix_chat_sessions_summary_retry", "summary_retry_at", postgresql_where=text("status = 'failed'")),
    )

    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), default=SessionStatus.OPEN)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_message_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    summary_error: Mapped[str | None] = mapped_column(Text)
    summary_attempts: Mapped[int] = mapped_column(Integer, default=0)
    summary_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Summary jobs that failed since the summary was last written or erased (migration 0064): the sweep's back-off
    grows with it, and it bounds the jobs a failing session gets (:data:`app.memory.summaries.SUMMARY_JOBS`)."""
    summary_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the sweep queues a ``failed`` summary again; ``None``: not failed, or its failure stands (every job
    it was given failed)."""
    source_message_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), default=list)
    embedding: Mapped[list[float] | None] = mapped_column(BinaryVector(EMBEDDING_DIMENSIONS))
    embedding_model: Mapped[str | None] = mapped_column(String(200))

    def erase_summary(self, status: str) -> None:
        """Erase the summary, its error (and count of failed jobs), sources and vector, and set ``status``
        (``ended``: to be written again; ``deleted``: never again)."""
        self.status = status
        self.summary = None
        self.summary_error = None
        self.summary_failures = 0
        self.summary_retry_at = None
        self.source_message_ids = []
        self.embedding = None


class InsightKind:
    """The eight kinds of L3 insight."""

    ALL = ("goal", "blocker", "breakthrough", "preference", "achievement", "pattern", "milestone", "commitment")


class InsightStatus:
    """``active`` / ``achieved`` / ``dropped`` as the conversation says; ``deleted`` is a tombstone left
    when the client or coach deletes an item: its text is erased, its embeddings kept so the same fact is
    never extracted again (:attr:`Insight.tombstone_embedding`)."""

    ACTIVE = "active"
    ACHIEVED = "achieved"
    DROPPED = "dropped"
    DELETED = "deleted"
    VISIBLE = (ACTIVE, ACHIEVED, DROPPED)


class Insight(TenantMixin, Base):
    """One L3 memory item about a client. ``importance`` is 0–10; ``effectiveness`` (0–1, unset until the
    learning loop scores it) says how well acting on it worked; ``mentions`` counts restatements.
    ``first_seen_at`` is when the fact as it now reads was first said (an extraction that updates the fact to a
    changed one moves it), ``last_seen_at`` its latest mention. ``edited_by_coach``: the coach changed one of
    its fields; extraction then keeps its text, kind, importance and status as the coach left them."""

    __tablename__ = "insights"
    # a client's top active insights (the memory digest) read off the index (migration 0038)
    __table_args__ = (
        Index(
            "ix_insights_client_active_rank",
            "client_id",
            text("importance DESC"),
            text("last_seen_at DESC"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    client_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    importance: Mapped[int] = mapped_column(SmallInteger, default=5)
    status: Mapped[str] = mapped_column(String(20), default=InsightStatus.ACTIVE)
    effectiveness: Mapped[float | None] = mapped_column(Float)
    mentions: Mapped[int] = mapped_column(Integer, default=1)
    source_message_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), default=list)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    edited_by_coach: Mapped[bool] = mapped_column(default=False)
    embedding: Mapped[list[float]] = mapped_column(BinaryVector(EMBEDDING_DIMENSIONS))
    embedding_model: Mapped[str] = mapped_column(String(200))
    tombstone_embedding: Mapped[list[float] | None] = mapped_column(BinaryVector(EMBEDDING_DIMENSIONS))
    """A deleted insight's text embedded by the offline all-MiniLM-L6-v2 when it was deleted (``None`` for a live
    one, and for a tombstone from before migration 0041 made by another model): the text is gone, so a switch
    of the coach's embedder cannot embed it again, and extraction compares with it in that fixed space."""


class ClientProfile(TenantMixin, Base):
    """L4: the relationship with one client. Lists hold short statements; jobs append to them, the coach
    edits them. ``tone`` is not overwritten by jobs once the coach has set it (``coach_edited_at``)."""

    __tablename__ = "client_profiles"
    __table_args__ = (UniqueConstraint("client_id"),)

    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    communication_preferences: Mapped[list[str]] = mapped_column(JSONB, default=list)
    what_works: Mapped[list[str]] = mapped_column(JSONB, default=list)
    what_doesnt_work: Mapped[list[str]] = mapped_column(JSONB, default=list)
    tone: Mapped[str] = mapped_column(Text, default="")
    sensitive_topics: Mapped[list[str]] = mapped_column(JSONB, default=list)
    coach_edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    entry_sessions: Mapped[dict[str, dict[str, list[str]]]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    """Where the ``update_profile`` job's lines came from: ``{field name: {line casefolded: [chat session ids]}}``
    for the lists (migration 0042) and ``tone`` (:data:`app.memory.profile.LEARNT_FIELDS`). A line with no entry
    (the coach's own, or learnt before its sources were recorded) is kept when sessions are forgotten
    (:func:`app.memory.profile.forget_sessions`)."""


class Episode(TenantMixin, Base):
    """The episodic layer: one client or coach message made recallable on its own (see
    :mod:`app.memory.episodes`). ``embedding`` is the message text's vector (for a client message, the very
    query vector its turn computed; stored as ``halfvec``, 2-byte floats, for the dense arm's index-only scan),
    ``tsv`` its English full-text vector (``to_tsvector('english', text)``
    when stored), ``dl`` its BM25 document length (distinct lexemes, at least 1; generated), ``at`` the
    message's time. The row goes when its message goes (erasure cascades); a forgotten message keeps its row but
    is never recalled (the recall joins ``messages.forgotten_at``)."""

    __tablename__ = "episodes"
    __table_args__ = (
        UniqueConstraint("message_id"),
        # the episodic BM25 (episode_bm25(), migration 0037): collection statistics by an index-only scan, and
        # the episodes sharing a lexeme with the query
        Index(
            "ix_episodes_client_lengths",
            "client_id",
            "embedding_model",
            postgresql_include=["coach_id", "message_id", "dl"],
        ),
        Index("ix_episodes_terms", text("tsvector_to_array(tsv)"), postgresql_using="gin"),
        # the dense arm (app.memory.episodes._ARMS) ranks a client's vectors by an index-only scan (migration 0039)
        Index(
            "ix_episodes_client_vectors",
            "client_id",
            "embedding_model",
            postgresql_include=["coach_id", "message_id", "at", "embedding"],
        ),
    )

    message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("messages.id", ondelete="CASCADE"))
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    embedding: Mapped[list[float]] = mapped_column(BinaryHalfVec(EMBEDDING_DIMENSIONS))
    embedding_model: Mapped[str] = mapped_column(String(200))
    tsv: Mapped[str] = mapped_column(TSVECTOR)
    dl: Mapped[int] = mapped_column(Integer, Computed("greatest(length(tsv), 1)", persisted=True))
