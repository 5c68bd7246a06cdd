"""Profile lines learnt before their sources were recorded (migration 0042) get sources: every summarised session of
their client

0042 left such lines without sources, and a line without sources reads as the coach's own
(``app.memory.profile._coachs_own``): forgetting an insight or deleting every summary of the client never took it
out of the profile, the prompts or the handoff briefs (found by an upgrade from 0037 with real data). In a profile
the coach never edited (``coach_edited_at`` unset) every line without sources is a learnt one: each is attributed
to all of its client's summarised sessions, so it leaves once none of them tells anything any more (the one
session it came from is not known; it stays while any of them does). A profile the coach edited keeps its
unsourced lines as the coach's: a learnt line and the coach's own cannot be told apart there. Keys are
``lower(line)``, the app's ``str.casefold`` for all but a few letters (``ß``): such a line keeps no source, as
before.

Revision ID: 0063
Revises: 0062
Create Date: 2027-01-09 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db.migrate import across_tenants

revision: str = "0063"
down_revision: str | None = "0062"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LISTS = ("communication_preferences", "what_works", "what_doesnt_work", "sensitive_topics")
"""The profile's list fields (``app.memory.profile.PROFILE_LISTS``, written out: a migration does not import the
app)."""
SUMMARISED = """
    (SELECT client_id, jsonb_agg(id::text ORDER BY started_at, id) AS ids
     FROM chat_sessions WHERE status = 'summarized' GROUP BY client_id) AS s
"""
"""Each client's summarised sessions' ids, as ``entry_sessions`` holds them."""


def upgrade() -> None:
    # run by the deployment's schema owner (no superuser), an UPDATE under the row-level security these tables
    # force matched no row, silently: across_tenants lifts it for the change
    with across_tenants("client_profiles", "chat_sessions"):
        for name in LISTS:
            op.execute(
                f"""
                UPDATE client_profiles AS p
                SET entry_sessions = jsonb_set(
                    p.entry_sessions,
                    '{{{name}}}',
                    coalesce(p.entry_sessions -> '{name}', '{{}}'::jsonb) || (
                        SELECT coalesce(jsonb_object_agg(lower(line), s.ids), '{{}}'::jsonb)
                        FROM jsonb_array_elements_text(p.{name}) AS line
                        WHERE NOT coalesce(p.entry_sessions -> '{name}', '{{}}'::jsonb) ? lower(line)
                    )
                )
                FROM {SUMMARISED}
                WHERE s.client_id = p.client_id AND p.coach_edited_at IS NULL AND jsonb_typeof(p.{name}) = 'array'
                """
            )
        op.execute(
            f"""
            UPDATE client_profiles AS p
            SET entry_sessions = jsonb_set(
                p.entry_sessions,
                '{{tone}}',
                coalesce(p.entry_sessions -> 'tone', '{{}}'::jsonb) || jsonb_build_object(lower(p.tone), s.ids)
            )
            FROM {SUMMARISED}
            WHERE s.client_id = p.client_id AND p.coach_edited_at IS NULL AND p.tone <> ''
              AND NOT coalesce(p.entry_sessions -> 'tone', '{{}}'::jsonb) ? lower(p.tone)
            """
        )


def downgrade() -> None:
    """Nothing to undo that 0042's column does not hold: the sources added stay (they are sources)."""
