"""The learning loop's tables: interventions, training examples and datasets, fine-tune jobs, model versions,
experiments, and the anonymised cross-coach intervention patterns.

Feedback (thumbs up/down, rating, text) stays on the rated message (``messages.metadata.feedback``): it is
one value per message and every reader (signals, training data, dashboard) reads it with the message.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, TenantMixin
from app.db.vectors import BinaryVector
from app.llm.base import EMBEDDING_DIMENSIONS


class InterventionSource:
    """How the coach's message came about: written during a takeover, or an edit of an AI draft."""

    TAKEOVER = "takeover"
    DRAFT_EDIT = "draft_edit"
    ALL = (TAKEOVER, DRAFT_EDIT)


class Intervention(TenantMixin, Base):
    """One human-coach message sent during a takeover or as an edited draft, with its context.

    ``client_text``: the client's latest message before it (the situation), embedded in ``embedding`` to
    find this intervention again in similar situations. ``context``: the conversation so far as chat
    messages ``[{"role", "content"}]`` (oldest first, at most the coach's L1 window). ``memory``: what memory
    held about the client then, by reference (``{"insight_ids": [...], "profile": bool}``: its top active
    insights, and whether its L4 profile held lines), no copy of their text, which a forget must reach.
    ``ai_draft``: the AI reply it replaced, where one existed. ``analysis`` (set by the
    ``analyse_intervention`` job): ``strategy`` (an ESConv label), ``strategy_scores``, ``tone``, ``formality``,
    ``key_phrases``. ``outcome``: the client's next turn (``sentiment``, ``sentiment_change``) and thumbs, once
    known; ``success`` summarises it.
    """

    __tablename__ = "interventions"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    message_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    handoff_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("handoffs.id", ondelete="SET NULL")
    )
    source: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    ai_draft: Mapped[str | None] = mapped_column(Text)
    client_text: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    memory: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    embedding: Mapped[list[float] | None] = mapped_column(BinaryVector(EMBEDDING_DIMENSIONS))
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    strategy: Mapped[str | None] = mapped_column(String(40))
    analysis: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    analysed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    success: Mapped[bool | None] = mapped_column(Boolean)
    pattern_counted: Mapped[bool] = mapped_column(Boolean, default=False)
    """Whether this intervention's outcome is already in :class:`InterventionPattern` (counted once)."""


class InterventionPattern(IdMixin, Base):
    """Anonymised, cross-coach: how often a technique (``strategy``) used in a ``situation`` (the client's
    mood before it: ``negative`` / ``neutral`` / ``positive``) was followed by success. No coach, client or
    text is stored, so the table is shared by all tenants (no row-level security). Which coaches contributed
    to a cell is in :class:`InterventionPatternCoach` (tenant-owned); a cell is shown only once
    ``K_ANONYMITY`` distinct coaches did (:meth:`app.learning.interventions.InterventionService.patterns`)."""

    __tablename__ = "intervention_patterns"
    __table_args__ = (UniqueConstraint("strategy", "situation"),)

    strategy: Mapped[str] = mapped_column(String(40))
    situation: Mapped[str] = mapped_column(String(20))
    uses: Mapped[int] = mapped_column(Integer, default=0)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class InterventionPatternCoach(TenantMixin, Base):
    """One coach's contribution to an :class:`InterventionPattern` cell (``strategy``, ``situation``): one row
    per coach and cell, so the cell's distinct coaches can be counted for k-anonymity. Under row-level
    security like every tenant row; the count across coaches is read through the ``SECURITY DEFINER``
    function ``intervention_pattern_coach_counts()`` (migration 0012), which returns counts only."""

    __tablename__ = "intervention_pattern_coaches"
    __table_args__ = (UniqueConstraint("coach_id", "strategy", "situation"),)

    strategy: Mapped[str] = mapped_column(String(40))
    situation: Mapped[str] = mapped_column(String(20))


class ExampleKind:
    """``sft``: a prompt and the reply to imitate; ``preference``: a prompt with a chosen and a rejected reply."""

    SFT = "sft"
    PREFERENCE = "preference"
    ALL = (SFT, PREFERENCE)


class ExampleSource:
    """Where an example came from."""

    THUMBS_UP = "thumbs_up"
    COACH_REPLY = "coach_reply"
    DRAFT_EDIT = "draft_edit"
    FEEDBACK_PAIR = "feedback_pair"


class Split:
    """Deterministic split by conversation (see :mod:`app.learning.training`)."""

    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"
    ALL = (TRAIN, VALIDATION, TEST)


class TrainingExample(TenantMixin, Base):
    """One SFT example or preference pair. ``prompt``: the chat messages before the reply (system first);
    ``chosen``: the reply to learn (thumbs-up AI reply, or the coach's); ``rejected``: the worse reply of a
    pair. ``quality`` is 0–1; ``split`` is fixed by the conversation; ``content_hash`` de-duplicates."""

    __tablename__ = "training_examples"
    __table_args__ = (UniqueConstraint("coach_id", "kind", "content_hash"),)

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))
    message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("messages.id", ondelete="CASCADE"))
    rejected_message_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("messages.id", ondelete="CASCADE")
    )
    prompt: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    chosen: Mapped[str] = mapped_column(Text)
    rejected: Mapped[str | None] = mapped_column(Text)
    quality: Mapped[float] = mapped_column(Float)
    split: Mapped[str] = mapped_column(String(20))
    content_hash: Mapped[str] = mapped_column(String(64))


class TrainingDataset(TenantMixin, Base):
    """A frozen set of examples (one kind) that a fine-tune job trained on: ``example_ids`` (and the
    ``conversation_ids`` they came from) and the per-split ``counts`` ``{"train", "validation", "test"}``."""

    __tablename__ = "training_datasets"

    kind: Mapped[str] = mapped_column(String(20))
    example_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), default=list)
    conversation_ids: Mapped[list[uuid.UUID]] = mapped_column(
        ARRAY(UUID(as_uuid=True)), default=list, server_default=text("'{}'")
    )
    """The conversations its examples came from (migration 0043): a refresh gives a conversation's examples new
    ids, so erasures and forgets find the snapshots, and the fine-tunes trained on them, by these."""
    counts: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    scrub_pii: Mapped[bool] = mapped_column(Boolean, default=True)


class FineTuneStatus:
    """Our side (``preparing``) then OpenAI's job statuses (fine-tuning API reference)."""

    PREPARING = "preparing"
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ACTIVE = (PREPARING, VALIDATING_FILES, QUEUED, RUNNING)
    FINAL = (SUCCEEDED, FAILED, CANCELLED)


class FineTuneJob(TenantMixin, Base):
    """One fine-tune of the coach's base model through the OpenAI fine-tuning API, with the coach's key.

    ``method``: ``supervised`` (SFT) or ``dpo`` (preference). ``provider_job_id`` is OpenAI's ``ftjob-…``;
    ``training_file_id`` / ``validation_file_id`` its ``file-…`` ids. ``trained_tokens`` and
    ``cost_estimate_usd`` once it succeeded; ``error`` when it failed."""

    __tablename__ = "fine_tune_jobs"

    dataset_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("training_datasets.id", ondelete="SET NULL")
    )
    base_model: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(20), default="supervised")
    status: Mapped[str] = mapped_column(String(20), default=FineTuneStatus.PREPARING)
    provider_job_id: Mapped[str | None] = mapped_column(String(100))
    training_file_id: Mapped[str | None] = mapped_column(String(100))
    validation_file_id: Mapped[str | None] = mapped_column(String(100))
    fine_tuned_model: Mapped[str | None] = mapped_column(String(200))
    trained_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_estimate_usd: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ModelVersionStatus:
    """``staging`` (trained, not serving) → ``production`` (serving the coach's chat) → ``retired``;
    ``rejected``: the promotion gate refused it."""

    STAGING = "staging"
    PRODUCTION = "production"
    RETIRED = "retired"
    REJECTED = "rejected"
    ALL = (STAGING, PRODUCTION, RETIRED, REJECTED)


class ModelVersion(TenantMixin, Base):
    """A model the coach's chat can serve: ``model`` is the provider's name (``ft:gpt-4o-mini:…``).
    ``evaluation`` holds the promotion gate's result (metric, candidate and current scores, examples).
    At most one ``production`` version per coach (partial unique index); none means the base model."""

    __tablename__ = "model_versions"
    __table_args__ = (
        Index(
            "uq_model_versions_production",
            "coach_id",
            unique=True,
            postgresql_where=text("status = 'production'"),
        ),
    )

    model: Mapped[str] = mapped_column(String(200))
    base_model: Mapped[str] = mapped_column(String(200))
    fine_tune_job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("fine_tune_jobs.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(20), default=ModelVersionStatus.STAGING)
    evaluation: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ExperimentStatus:
    """``running`` (assigning clients), ``concluded`` (a winner was declared) or ``stopped`` by the coach."""

    RUNNING = "running"
    CONCLUDED = "concluded"
    STOPPED = "stopped"
    ALL = (RUNNING, CONCLUDED, STOPPED)


class Experiment(TenantMixin, Base):
    """An A/B test of the coach's AI replies. ``variants``: ``[{"name", "persona"?, "model"?,
    "temperature"?}]`` (two or more; a missing field keeps the coach's setting). ``metric``:
    ``thumbs_up_rate`` (higher is better) or ``handoff_rate`` (lower is better). At most one experiment per
    coach runs at a time (partial unique index)."""

    __tablename__ = "experiments"
    __table_args__ = (
        Index("uq_experiments_running", "coach_id", unique=True, postgresql_where=text("status = 'running'")),
    )

    name: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(40))
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), default=ExperimentStatus.RUNNING)
    alpha: Mapped[float] = mapped_column(Float, default=0.05)
    min_samples: Mapped[int] = mapped_column(Integer, default=30)
    winner: Mapped[str | None] = mapped_column(String(100))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
