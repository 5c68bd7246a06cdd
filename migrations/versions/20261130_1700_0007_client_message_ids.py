"""messages.client_message_id (idempotent client messages) and messages.answered_at

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("client_message_id", sa.String(length=64), nullable=True))
    op.add_column("messages", sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "uq_messages_coach_client_message_id",
        "messages",
        ["coach_id", "client_message_id"],
        unique=True,
        postgresql_where=sa.text("client_message_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_messages_coach_client_message_id", table_name="messages")
    op.drop_column("messages", "answered_at")
    op.drop_column("messages", "client_message_id")
