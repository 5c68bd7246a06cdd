"""coaches: the widget's greeting, suggested first questions and avatar; the coach's preview client

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("coaches", sa.Column("widget_greeting", sa.Text(), nullable=True))
    op.add_column("coaches", sa.Column("widget_suggestions", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("coaches", sa.Column("widget_avatar", sa.LargeBinary(), nullable=True))
    op.add_column("coaches", sa.Column("widget_avatar_sha", sa.String(length=16), nullable=True))
    op.add_column("coaches", sa.Column("preview_client_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_coaches_preview_client_id_clients"),
        "coaches",
        "clients",
        ["preview_client_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_coaches_preview_client_id_clients"), "coaches", type_="foreignkey")
    op.drop_column("coaches", "preview_client_id")
    op.drop_column("coaches", "widget_avatar_sha")
    op.drop_column("coaches", "widget_avatar")
    op.drop_column("coaches", "widget_suggestions")
    op.drop_column("coaches", "widget_greeting")
