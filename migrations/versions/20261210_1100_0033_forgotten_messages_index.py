"""A partial index of the forgotten messages, for episodic recall's anti-join

Episodic recall (:mod:`app.memory.episodes`) leaves forgotten messages out. It joined every episode of the client
to its message to read ``forgotten_at``: one index probe per episode (about 3 µs each, 6 ms of a 2,000-episode
client's every turn in the lexical arm), or a hash of all the coach's messages in the dense arm. Forgotten
messages are few, so recall now asks the opposite question, ``NOT EXISTS`` a forgotten message with the
episode's id, which PostgreSQL answers from this small partial index (an anti-join against a handful of rows)
and reads the candidates' messages only for the rows it returns.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-10 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_forgotten", "messages", ["id"], unique=False, postgresql_where=sa.text("forgotten_at IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_messages_forgotten", table_name="messages", postgresql_where=sa.text("forgotten_at IS NOT NULL"))
