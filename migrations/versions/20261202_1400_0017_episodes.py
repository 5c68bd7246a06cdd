"""episodic memory: one recallable row per client or coach message (vector + full-text); RLS

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 15:00:00
"""

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "episodes",
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.vector.VECTOR(dim=384), nullable=False),
        sa.Column("embedding_model", sa.String(length=200), nullable=False),
        sa.Column("tsv", postgresql.TSVECTOR(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("coach_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_episodes_client_id_clients"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["coach_id"], ["coaches.id"], name=op.f("fk_episodes_coach_id_coaches"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_episodes_message_id_messages"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_episodes")),
        sa.UniqueConstraint("message_id", name=op.f("uq_episodes_message_id")),
    )
    op.create_index(op.f("ix_episodes_client_id"), "episodes", ["client_id"], unique=False)
    op.create_index(op.f("ix_episodes_coach_id"), "episodes", ["coach_id"], unique=False)
    # tenant isolation, as for every tenant-owned table (0001, 0002)
    op.execute("ALTER TABLE episodes ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE episodes FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY tenant_isolation ON episodes "
        "USING (coach_id = app_current_coach_id()) WITH CHECK (coach_id = app_current_coach_id())"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_episodes_coach_id"), table_name="episodes")
    op.drop_index(op.f("ix_episodes_client_id"), table_name="episodes")
    op.drop_table("episodes")
