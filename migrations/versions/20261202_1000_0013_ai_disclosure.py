"""clients.ai_disclosure_version / ai_disclosure_accepted_at: the client's acceptance of the widget's AI disclosure

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Two nullable columns on ``clients`` (its row-level security policy covers them)."""
    op.add_column("clients", sa.Column("ai_disclosure_version", sa.String(length=40), nullable=True))
    op.add_column("clients", sa.Column("ai_disclosure_accepted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("clients", "ai_disclosure_accepted_at")
    op.drop_column("clients", "ai_disclosure_version")
