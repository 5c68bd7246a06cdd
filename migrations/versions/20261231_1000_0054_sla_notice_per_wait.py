"""overdue_handoffs(): a claimed handoff gets a holding message for each wait, not one ever

A handoff's ``sla_notified_at``, set by its first holding message, kept it out of the function for good. A
claimed handoff whose client had a holding message once (the handoff waited while open, or the coach left the
conversation once before) never got another: the client's later messages waited for the coach unanswered and
unacknowledged. A claimed handoff is now overdue again when a client message written after the last holding
message waits past the SLA with no coach message after it. An open handoff still gets one.

Revision ID: 0054
Revises: 0053
Create Date: 2026-12-31 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0054"
down_revision: str | None = "0053"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = """
        CREATE OR REPLACE FUNCTION overdue_handoffs() RETURNS TABLE (coach_id uuid, handoff_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT h.coach_id, h.id FROM handoffs h JOIN coaches c ON c.id = h.coach_id
           WHERE h.sla_notified_at IS NULL AND (
               (h.status = 'open' AND h.created_at < now() - make_interval(mins => c.handoff_sla_minutes))
               OR (h.status = 'claimed' AND EXISTS (
                   SELECT 1 FROM messages m
                   WHERE m.conversation_id = h.conversation_id AND m.sender_type = 'client'
                     AND m.answered_at IS NULL AND m.created_at > h.claimed_at
                     AND m.created_at < now() - make_interval(mins => c.handoff_sla_minutes)
                     AND NOT EXISTS (
                         SELECT 1 FROM messages later
                         WHERE later.conversation_id = m.conversation_id AND later.created_at > m.created_at
                           AND later.sender_type = 'human_coach')))) $$
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION overdue_handoffs() RETURNS TABLE (coach_id uuid, handoff_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT h.coach_id, h.id FROM handoffs h JOIN coaches c ON c.id = h.coach_id
           WHERE (h.status = 'open' AND h.sla_notified_at IS NULL
                  AND h.created_at < now() - make_interval(mins => c.handoff_sla_minutes))
              OR (h.status = 'claimed' AND EXISTS (
                   SELECT 1 FROM messages m
                   WHERE m.conversation_id = h.conversation_id AND m.sender_type = 'client'
                     AND m.answered_at IS NULL AND m.created_at > h.claimed_at
                     AND (h.sla_notified_at IS NULL OR m.created_at > h.sla_notified_at)
                     AND m.created_at < now() - make_interval(mins => c.handoff_sla_minutes)
                     AND NOT EXISTS (
                         SELECT 1 FROM messages later
                         WHERE later.conversation_id = m.conversation_id AND later.created_at > m.created_at
                           AND later.sender_type = 'human_coach'))) $$
        """
    )


def downgrade() -> None:
    op.execute(_BEFORE)
