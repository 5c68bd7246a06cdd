"""outbox_jobs.queue: the arq queue a job goes to (handoff alerts have their own)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ALERTS_QUEUE = "opencoach:queue:alerts"


def upgrade() -> None:
    """NULL is arq's default queue; alerts still waiting in the outbox move to the alerts queue."""
    op.add_column("outbox_jobs", sa.Column("queue", sa.String(60), nullable=True))
    op.execute(f"UPDATE outbox_jobs SET queue = '{ALERTS_QUEUE}' WHERE name = 'deliver_alert'")


def downgrade() -> None:
    op.drop_column("outbox_jobs", "queue")
