"""coaches.model_failures / model_failing_since / model_failure: the chat model's failures since its last reply,
which the dashboard shows the coach on every page (a refused key or a used-up quota reached only the clients, as
apologies)

Revision ID: 0062
Revises: 0061
Create Date: 2027-01-08 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0062"
down_revision: str | None = "0061"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("coaches", sa.Column("model_failures", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("coaches", sa.Column("model_failing_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("coaches", sa.Column("model_failure", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("coaches", "model_failure")
    op.drop_column("coaches", "model_failing_since")
    op.drop_column("coaches", "model_failures")
