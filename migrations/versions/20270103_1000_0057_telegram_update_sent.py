"""telegram_updates.sent: what processing an update has sent to its chat, so processing it again sends nothing twice

An update processed again (its process died, or it failed and the worker's sweep took it again) repeated what its
first processing had sent: the /start welcome a second time, a second streamed message below the first one's
fragment, and a reply stored but not yet shown was never shown (the message was answered). ``sent`` records, as
each goes out, the one-off texts sent, the streamed message's id, the stored reply and how many of its parts the
chat shows (``app.channels.telegram.service.Sent``).

Revision ID: 0057
Revises: 0056
Create Date: 2027-01-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0057"
down_revision: str | None = "0056"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "telegram_updates",
        sa.Column("sent", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("telegram_updates", "sent")
