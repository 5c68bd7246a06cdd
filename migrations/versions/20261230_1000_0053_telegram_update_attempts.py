"""telegram_updates.attempts: an update whose processing failed is tried again, a few times

An update whose processing raised (the database or Redis out of reach, a pool exhausted, a bug) was marked done
and its payload dropped, so a client's message that failed before it was stored was lost: Telegram had its
200 and does not send it again, and the worker's sweep skips done updates. A failed attempt is now counted and
leaves the update taken, for the sweep to process again once its claim is old; the last allowed attempt marks it
done (``app.channels.telegram.service.MAX_ATTEMPTS``) so an update that always fails does not loop.

Revision ID: 0053
Revises: 0052
Create Date: 2026-12-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0053"
down_revision: str | None = "0052"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("telegram_updates", sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("telegram_updates", "attempts")
