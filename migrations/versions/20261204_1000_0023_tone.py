"""tone: the coach's tone settings, each client's tone choice and the tone consent log; RLS

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04 10:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("client_tones", "tone_consents")


def _tenant_columns(table: str) -> list[sa.Column[Any] | sa.Constraint]:
    return [
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("coach_id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f(f"fk_{table}_client_id_clients"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["coach_id"], ["coaches.id"], name=op.f(f"fk_{table}_coach_id_coaches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    op.add_column(
        "coaches",
        sa.Column("tone_settings", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
    )
    op.create_table(
        "client_tones",
        *_tenant_columns("client_tones"),
        sa.Column("intensity", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=30), server_default="default", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("client_id", name=op.f("uq_client_tones_client_id")),
    )
    op.create_table(
        "tone_consents",
        *_tenant_columns("tone_consents"),
        sa.Column("mode", sa.String(length=30), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("text_version", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(op.f("ix_tone_consents_client_id"), "tone_consents", ["client_id"], unique=False)
    for table in TABLES:
        op.create_index(op.f(f"ix_{table}_coach_id"), table, ["coach_id"], unique=False)
        # tenant isolation, as for every tenant-owned table (0001, 0002, 0017)
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            "USING (coach_id = app_current_coach_id()) WITH CHECK (coach_id = app_current_coach_id())"
        )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_index(op.f(f"ix_{table}_coach_id"), table_name=table)
    op.drop_index(op.f("ix_tone_consents_client_id"), table_name="tone_consents")
    op.drop_table("tone_consents")
    op.drop_table("client_tones")
    op.drop_column("coaches", "tone_settings")
