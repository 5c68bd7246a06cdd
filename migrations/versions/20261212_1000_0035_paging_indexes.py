"""Indexes in the order lists are paged in: messages by conversation, time and id; clients by coach, time and id

A conversation's messages are read newest first a page at a time (the widget's and the dashboard's transcripts,
``GET /api/v1/widget/conversations/{id}/history``) and, every chat turn, its last messages before the client's
(:mod:`app.chat.turn.intake`). With an index on ``conversation_id`` alone PostgreSQL fetched every message of the
conversation and sorted them: fine for a short chat, a cost that grows with a client who writes daily for a
year. ``(conversation_id, created_at, id)`` answers both as a backward range scan that stops at the page's end,
in the keyset order (:mod:`app.core.pagination`), and still serves the lookups by ``conversation_id`` alone, so
it replaces that index.

A coach's clients are listed newest first a page at a time (``GET /api/v1/clients``, the Clients page): with
only ``coach_id`` indexed, every page sorted all the coach's clients (72 ms a page at 100,000 clients,
``bench/pages.py``); ``(coach_id, created_at, id)`` reads a page off the index. ``ix_clients_coach_id`` stays:
every tenant table has its ``coach_id`` index (``app.db.base.TenantMixin``).

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-12 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0035"
down_revision: str | None = "0034"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_conversation_time", "messages", ["conversation_id", "created_at", "id"])
    op.drop_index("ix_messages_conversation_id", table_name="messages")
    op.create_index("ix_clients_coach_time", "clients", ["coach_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_clients_coach_time", table_name="clients")
    op.create_index("ix_messages_conversation_id", "messages", ["conversation_id"])
    op.drop_index("ix_messages_conversation_time", table_name="messages")
