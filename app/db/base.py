"""Declarative base and the column mixins shared by every model."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, MetaData, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of all models; constraint names follow :data:`NAMING_CONVENTION` so migrations are stable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class IdMixin:
    """UUID primary key generated app-side (so ids are known before flush) and creation time."""

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TenantMixin(IdMixin):
    """A tenant-owned row: carries ``coach_id``; row-level security keys on it (see ``app.db.tenancy``)."""

    @declared_attr
    def coach_id(cls) -> Mapped[uuid.UUID]:  # noqa: N805 - declared_attr convention
        return mapped_column(
            UUID(as_uuid=True), ForeignKey("coaches.id", ondelete="CASCADE"), index=True, nullable=False
        )


TENANT_TABLES = (
    "coach_users",
    "api_keys",
    "clients",
    "documents",
    "chunks",
    "chunk_successors",
    "document_terms",
    "conversations",
    "messages",
    "chat_sessions",
    "insights",
    "client_profiles",
    "episodes",
    "handoffs",
    "drafts",
    "interventions",
    "intervention_pattern_coaches",
    "training_examples",
    "training_datasets",
    "fine_tune_jobs",
    "model_versions",
    "experiments",
    "telegram_bots",
    "telegram_chats",
    "telegram_invites",
    "telegram_updates",
    "client_tones",
    "tone_consents",
)
"""Tables keyed by ``coach_id`` under row-level security (``coaches`` is keyed by its own ``id``;
``intervention_patterns`` is anonymised and shared by all coaches)."""
