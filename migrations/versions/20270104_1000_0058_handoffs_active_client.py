"""handoffs: partial index on the client's active handoffs

While a client has an active crisis handoff, each of their messages goes to that handoff's conversation
(``app.chat.turn.intake._conversation_for``), so every message stored looks up the client's active handoffs.

Revision ID: 0058
Revises: 0057
Create Date: 2027-01-04 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0058"
down_revision: str | None = "0057"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_handoffs_active_client",
        "handoffs",
        ["client_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('open', 'claimed')"),
    )


def downgrade() -> None:
    op.drop_index("ix_handoffs_active_client", table_name="handoffs")
