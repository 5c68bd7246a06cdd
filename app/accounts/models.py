"""Coaches (tenants), their dashboard users, API keys, and their clients."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, deferred, mapped_column

from app.db.base import Base, IdMixin, TenantMixin


class Coach(IdMixin, Base):
    """The tenant. Its ``id`` is the ``coach_id`` every tenant-owned row carries.

    Provider settings: ``llm_provider`` is ``"local"`` (packaged SmolLM2 via llama-cpp-python) or
    ``"openai"`` (any OpenAI-compatible endpoint: ``llm_base_url``, ``llm_model`` and the coach's own key,
    stored Fernet-encrypted in ``llm_api_key_encrypted``). ``embedding_provider`` works the same way.
    """

    __tablename__ = "coaches"

    name: Mapped[str] = mapped_column(String(200))
    persona: Mapped[str] = mapped_column(Text, default="")
    llm_provider: Mapped[str] = mapped_column(String(20), default="local")
    llm_model: Mapped[str | None] = mapped_column(String(200))
    llm_base_url: Mapped[str | None] = mapped_column(String(500))
    llm_api_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_provider: Mapped[str] = mapped_column(String(20), default="local")
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    embedding_base_url: Mapped[str | None] = mapped_column(String(500))
    embedding_api_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The four ``embedding_*`` fields above are the embedder *in use*: the one every stored vector of the
    coach was made with and every query uses. A change is *requested* in the ``embedding_requested_*`` fields;
    the re-embedding job (:mod:`app.chat.embeddings`) copies them here, in the transaction that replaces the
    vectors, when it finishes."""
    embedding_requested_provider: Mapped[str | None] = mapped_column(String(20))
    embedding_requested_model: Mapped[str | None] = mapped_column(String(200))
    embedding_requested_base_url: Mapped[str | None] = mapped_column(String(500))
    embedding_requested_api_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """Names the latest request; a job of an earlier one stops without switching."""
    embedding_job_status: Mapped[str | None] = mapped_column(String(20))
    """``queued`` | ``running`` | ``done`` | ``failed`` (``None``: never changed)."""
    embedding_job_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    embedding_job_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Progress: texts embedded with the requested model / texts to embed."""
    embedding_job_error: Mapped[str | None] = mapped_column(Text)
    """Why the last request failed (the provider's error, never its body); the old embedder stays in use."""
    model_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Replies the chat model failed to write (each client got the apology) since ``model_failing_since``; back to 0
    at the model's next reply. The dashboard says so on every page, with ``model_failure``."""
    model_failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    model_failure: Mapped[str | None] = mapped_column(Text)
    """The last failure's reason (:func:`app.llm.openai_compat.describe_error`: never the provider's body)."""
    recent_messages: Mapped[int] = mapped_column(Integer, default=10, server_default="10")
    """L1: how many of the conversation's latest messages go into the prompt."""
    session_idle_minutes: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    """L2: a chat session ends after this long without a message."""
    handoff_mode: Mapped[str] = mapped_column(String(20), default="auto", server_default="auto")
    """``auto`` | ``draft`` | ``human_only`` (see :class:`app.conversations.handoffs.HandoffMode`)."""
    confidence_threshold: Mapped[float] = mapped_column(Float, default=0.5, server_default="0.5")
    """In ``auto`` mode the AI answers only when its confidence (:mod:`app.handoff.confidence`) is at least this."""
    high_stakes_topics: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")
    """Topics that lower the AI's confidence (e.g. "quitting a job", "medication", "legal")."""
    always_escalate_topics: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")
    """Topics always handed to the coach, whatever the confidence."""
    handoff_sla_minutes: Mapped[int] = mapped_column(Integer, default=15, server_default="15")
    """After this long without the coach taking over, the client gets a holding message."""
    availability: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """The coach's hours ``{"timezone", "days": [0–6, Monday = 0], "start": "HH:MM", "end": "HH:MM"}``;
    ``None``: always available (see :mod:`app.accounts.availability`)."""
    crisis_resources: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")
    """Lines of the crisis reply (helplines), for a client of any language; a client who wrote es/fr/de/pt also reads
    the built-in lines for that language after them (:data:`app.handoff.crisis.LANGUAGE_DEFAULT_RESOURCES`); empty:
    the built-in lines alone (:func:`app.handoff.crisis.resources_for`)."""
    crisis_resources_by_language: Mapped[dict[str, list[str]]] = mapped_column(JSONB, default=dict, server_default="{}")
    """Lines of the crisis reply per language the client wrote in (``{"es": [...], "de": [...]}``, keys
    :data:`app.accounts.handoff_settings.CRISIS_LANGUAGES`); for that language they are shown alone, instead of
    ``crisis_resources`` and the built-in lines (:func:`app.handoff.crisis.resources_for`)."""
    alert_webhook_url: Mapped[str | None] = mapped_column(String(500))
    """Handoff alerts are POSTed here as JSON, signed per Standard Webhooks (see :mod:`app.handoff.alerts`)."""
    alert_webhook_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    alert_email: Mapped[str | None] = mapped_column(String(320))
    """Handoff alerts are e-mailed here (through the server's SMTP settings): a confirmed address only
    (:mod:`app.accounts.alert_email`)."""
    alert_email_pending: Mapped[str | None] = mapped_column(String(320))
    """The alert address the coach set last and its owner has not confirmed yet (no alert goes there; alerts keep
    going to ``alert_email``); ``None`` when none waits."""
    style_profile: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    """The coach's style learned from interventions (:func:`app.learning.style.build_style_profile`)."""
    fine_tune_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    """Whether the readiness cron may start fine-tunes (needs an OpenAI endpoint and key)."""
    fine_tune_min_examples: Mapped[int] = mapped_column(Integer, default=50, server_default="50")
    """Readiness: at least this many training examples new since the last fine-tune."""
    fine_tune_min_days: Mapped[int] = mapped_column(Integer, default=7, server_default="7")
    """Readiness: at least this many days since the last fine-tune started."""
    fine_tune_base_model: Mapped[str] = mapped_column(
        String(200), default="gpt-4o-mini-2024-07-18", server_default="gpt-4o-mini-2024-07-18"
    )
    judge_model: Mapped[str | None] = mapped_column(String(200))
    """When set, the promotion gate also asks this model (the coach's endpoint) which reply is closer."""
    response_cache_ttl_seconds: Mapped[int] = mapped_column(Integer, default=86400, server_default="86400")
    """Lifetime of cached AI replies; 0 turns the response cache off."""
    cache_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Part of every response-cache key; bumped when the coach's documents change (invalidates the cache)."""
    widget_allowed_origins: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")
    """Origins (``scheme://host[:port]``) whose pages may frame the client widget (CSP ``frame-ancestors``)
    and call the widget's API from the browser (CORS); empty: none but this server."""
    widget_greeting: Mapped[str | None] = mapped_column(Text)
    """The widget's (and the Telegram bot's) first words to a client; ``None``: the default
    (:func:`app.accounts.widget_settings.greeting`)."""
    widget_suggestions: Mapped[list[str] | None] = mapped_column(JSONB)
    """Suggested first questions (at most five); ``None``: the defaults, ``[]``: none."""
    widget_avatar: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))
    """The widget's avatar as a PNG re-encoded on upload (at most 256×256 px); loaded only when served."""
    widget_avatar_sha: Mapped[str | None] = mapped_column(String(16))
    """First 16 hex digits of the avatar PNG's SHA-256 (its URL's version); ``None``: no avatar (initials)."""
    preview_client_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("clients.id", ondelete="SET NULL", use_alter=True)
    )
    """The client the coach chats as to try their clone (the onboarding checklist's preview widget)."""
    tone_settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    """The intensities clients may choose and the coach's tone modes (:mod:`app.accounts.tone`); ``{}``:
    the defaults."""


class CoachUser(TenantMixin, Base):
    """A person who logs into the dashboard for a coach. ``password_hash`` is an argon2id PHC string."""

    __tablename__ = "coach_users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))


class ApiKey(TenantMixin, Base):
    """A REST API key. Only ``sha256(key)`` is stored; ``prefix`` (first characters) identifies it in lists."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(100), default="default")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Client(TenantMixin, Base):
    """A coachee. The widget token authenticates the client's chat; stored hashed for look-up and
    Fernet-encrypted so the coach's dashboard can show the widget link again. Both are ``None`` while the
    token is revoked (no token works until the coach rotates it)."""

    __tablename__ = "clients"
    __table_args__ = (
        # the inbox's search (app.conversations.inbox: name ILIKE '%…%'), pg_trgm (migration 0027)
        Index("ix_clients_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
        # the coach's clients newest first, a page at a time (app.core.pagination, migration 0035)
        Index("ix_clients_coach_time", "coach_id", "created_at", "id"),
    )

    name: Mapped[str] = mapped_column(String(200))
    widget_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    widget_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    ai_disclosure_version: Mapped[str | None] = mapped_column(String(40))
    """The version of the widget's AI disclosure the client accepted (:mod:`app.accounts.disclosure`)."""
    ai_disclosure_accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class HandoffMode:
    """A coach's escalation mode: ``auto`` (the AI answers unless confidence is below the coach's threshold),
    ``draft`` (the AI drafts, the coach approves or edits before anything is sent), ``human_only``."""

    AUTO = "auto"
    DRAFT = "draft"
    HUMAN_ONLY = "human_only"
    ALL = (AUTO, DRAFT, HUMAN_ONLY)


class ClientTone(TenantMixin, Base):
    """A client's tone choice (:mod:`app.accounts.tone`): ``intensity`` 1 (ultra gentle) – 6 (blunt), ``None``
    for the coach's default, and the ``mode`` key (``"default"`` or one of the coach's modes, used only while
    its consent is valid)."""

    __tablename__ = "client_tones"

    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), unique=True)
    intensity: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(30), default="default", server_default="default")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ToneConsent(TenantMixin, Base):
    """One entry of the tone consent log (append-only): who (``client_id``), when (``at``), which ``mode``,
    the ``text_version`` and ``text`` of the consent prompt the client answered, the ``event``
    (``confirm_1``: the first of the two confirmations of the most intense mode; ``given``; ``withdrawn``)
    and, for ``given``, when it ``expires_at``."""

    __tablename__ = "tone_consents"

    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    mode: Mapped[str] = mapped_column(String(30))
    event: Mapped[str] = mapped_column(String(20))
    text_version: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
