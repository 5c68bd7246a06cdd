"""``client_profiles.entry_sessions``: which summarised sessions each learnt profile line came from

The ``update_profile`` job appends what a summarised session shows to the L4 profile's lists. When the client
forgets an insight, its session is summarised again without the forgotten messages, but the lines the job had
learnt from them stayed in the profile. Each learnt line now records its sessions (``{list: {line casefolded:
[session ids]}}``); forgetting removes the session from its lines, and a line no session supports any more
leaves the profile (the new summary's job adds back what the session still shows). Lines from before this
migration, and the coach's own, have no sessions and stay.

Revision ID: 0042
Revises: 0041
Create Date: 2026-12-19 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0042"
down_revision: str | None = "0041"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE client_profiles ADD COLUMN entry_sessions jsonb NOT NULL DEFAULT '{}'::jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE client_profiles DROP COLUMN entry_sessions")
