"""coaches.alert_email_pending: a new alert e-mail address waits for its owner's confirmation

A coach's new ``alert_email`` is kept in ``alert_email_pending`` until the link e-mailed to it is opened
(``app.accounts.alert_email``); only then does it become ``alert_email``, the one address alerts go to. Every
address stored before this revision stays in ``alert_email``: it counts as confirmed, so no coach loses alerts.

Revision ID: 0060
Revises: 0059
Create Date: 2027-01-06 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0060"
down_revision: str | None = "0059"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("coaches", sa.Column("alert_email_pending", sa.String(length=320), nullable=True))


def downgrade() -> None:
    op.drop_column("coaches", "alert_email_pending")
