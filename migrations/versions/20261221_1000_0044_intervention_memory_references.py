"""``interventions.memory`` by reference: the ids of the insights memory held at the takeover, not their text

An intervention recorded what memory held about the client when the coach took over: the texts of the top
insights and the L4 profile lines, copied. Forgetting an insight (or the sessions a profile line came from)
removed the insight's text and the line everywhere else, but these copies kept them. Nothing read them. The
record now keeps the insights' ids (``insight_ids``, whose text goes with a forget) and whether the profile held
lines (``profile``). Rows already there keep the ids of the client's insights whose text is one of the copies
(a forgotten insight has no text left, so it matches nothing); the copies go.

Revision ID: 0044
Revises: 0043
Create Date: 2026-12-21 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db.migrate import across_tenants

revision: str = "0044"
down_revision: str | None = "0043"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with across_tenants("interventions", "insights"):
        op.execute(
            """
            UPDATE interventions v SET memory = jsonb_build_object(
                'insight_ids', COALESCE((
                    SELECT jsonb_agg(i.id::text ORDER BY i.importance DESC, i.id) FROM insights i
                    WHERE i.client_id = v.client_id AND i.text <> ''
                      AND i.text IN (SELECT jsonb_array_elements_text(COALESCE(v.memory -> 'insights', '[]')))
                ), '[]'::jsonb),
                'profile', COALESCE(jsonb_array_length(v.memory -> 'profile'), 0) > 0
            )
            WHERE v.memory ? 'insights' OR v.memory ? 'profile'
            """
        )


def downgrade() -> None:
    """The texts are not brought back (they may have been forgotten since): each record's ids stay."""
