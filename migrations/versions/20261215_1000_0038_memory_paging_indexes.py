"""Indexes in the order a client's memory is read: sessions by client, start and id; active insights by rank

A client's ended sessions are listed newest first a page at a time (the memory APIs, the dashboard's client page,
the widget's memory page) and the handoff brief reads the newest summarised one. With an index on ``client_id``
alone PostgreSQL fetched every session of the client and sorted them: a cost that grows with a client who chats
daily for years (2,000 sessions, ``bench/pages.py``). ``(client_id, started_at, id)`` answers both as a backward
range scan in the keyset order (:mod:`app.core.pagination`) and still serves the lookups by ``client_id`` alone
(the cascade from ``clients``), so it replaces that index.

The handoff brief and an intervention's context read a client's top active insights (by importance, then
recency: :meth:`app.memory.controls.MemoryControls.digest`); a partial index on the active ones in that order
reads just those instead of sorting every insight of the client.

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-15 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0038"
down_revision: str | None = "0037"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_chat_sessions_client_time", "chat_sessions", ["client_id", "started_at", "id"])
    op.drop_index("ix_chat_sessions_client_id", table_name="chat_sessions")
    op.create_index(
        "ix_insights_client_active_rank",
        "insights",
        ["client_id", sa.text("importance DESC"), sa.text("last_seen_at DESC")],
        postgresql_where=sa.text("status = 'active'"),
    )


def downgrade() -> None:
    op.drop_index("ix_insights_client_active_rank", table_name="insights")
    op.create_index("ix_chat_sessions_client_id", "chat_sessions", ["client_id"])
    op.drop_index("ix_chat_sessions_client_time", table_name="chat_sessions")
