"""Style profiles keep only key phrases the coach said to at least two clients

The style profile goes into every client's system prompt. Its "typical phrases" were the most frequent key
phrases of the coach's takeover messages, so a client's name or a person they spoke of, echoed by the coach,
reached every other client's prompt. Profiles are now built with phrases said to two clients or more
(``app.learning.style.MIN_PHRASE_CLIENTS``), but a stored profile kept its phrases until the coach's next analysed
intervention recomputed it. This drops from every stored profile the phrases no two clients' analysed
interventions share; the next recomputation fills the list up again.

Revision ID: 0045
Revises: 0044
Create Date: 2026-12-22 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db.migrate import across_tenants

revision: str = "0045"
down_revision: str | None = "0044"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with across_tenants("coaches", "interventions"):
        op.execute(
            """
            UPDATE coaches c SET style_profile = jsonb_set(c.style_profile, '{key_phrases}', COALESCE((
                SELECT jsonb_agg(kept.phrase ORDER BY kept.position) FROM (
                    SELECT listed.phrase, listed.position
                    FROM jsonb_array_elements_text(c.style_profile -> 'key_phrases') WITH ORDINALITY
                        AS listed(phrase, position)
                    WHERE (
                        SELECT count(DISTINCT i.client_id) FROM interventions i
                        WHERE i.coach_id = c.id AND i.analysed_at IS NOT NULL AND i.strategy IS NOT NULL
                          AND i.analysis -> 'key_phrases' ? listed.phrase
                    ) >= 2
                ) kept
            ), '[]'::jsonb))
            WHERE jsonb_typeof(c.style_profile -> 'key_phrases') = 'array'
            """
        )


def downgrade() -> None:
    """The dropped phrases are not brought back (the next recomputation finds the ones still due)."""
