"""The Telegram channel's tables: a coach's bot, the chats bound to clients, one-time invite codes and the
update ids already processed. All are tenant tables (``coach_id``, row-level security)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantMixin


class TelegramBot(TenantMixin, Base):
    """A coach's connected bot (one per coach; a bot serves one coach): its Bot API ``bot_id`` and
    ``username``, the token and the webhook secret (SecretBox tokens), the update ``mode``
    (``webhook``/``polling``), whether strangers may enrol (``open_enrollment``) and the polling offset."""

    __tablename__ = "telegram_bots"
    __table_args__ = (UniqueConstraint("coach_id"), UniqueConstraint("bot_id"))

    bot_id: Mapped[int] = mapped_column(BigInteger)
    username: Mapped[str] = mapped_column(String(64))
    token_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    webhook_secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    mode: Mapped[str] = mapped_column(String(10))
    open_enrollment: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    poll_offset: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class TelegramChat(TenantMixin, Base):
    """A private Telegram chat bound to a client; ``active`` false once the client blocked the bot (403), and
    ``conversation_id`` the conversation it continues."""

    __tablename__ = "telegram_chats"
    __table_args__ = (UniqueConstraint("coach_id", "chat_id"),)

    chat_id: Mapped[int] = mapped_column(BigInteger)
    client_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="SET NULL")
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")


class TelegramInvite(TenantMixin, Base):
    """A one-time invite code for a client (``/start <code>``), stored as its SHA-256 ``code_hash``."""

    __tablename__ = "telegram_invites"

    client_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TelegramUpdate(TenantMixin, Base):
    """An ``update_id`` the coach's bot received (Telegram re-sends on errors and timeouts): a second copy is
    never processed once the first was. The update's JSON (``payload``) is kept until it has been processed
    (``done_at``); ``claimed_at`` is when a process last took it, so an update whose process died is taken
    again (a re-send, or the worker's recovery sweep) once the claim is old; ``attempts`` counts the attempts
    that failed (:meth:`~app.channels.telegram.service.UpdateLedger.failed`); ``sent`` is what its processing
    sent to the chat so far (:class:`~app.channels.telegram.service.Sent`), kept until it is done."""

    __tablename__ = "telegram_updates"
    __table_args__ = (
        UniqueConstraint("coach_id", "update_id"),
        Index("ix_telegram_updates_pending", "claimed_at", postgresql_where=text("done_at IS NULL")),
    )

    update_id: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    sent: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
