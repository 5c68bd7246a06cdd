"""overdue_handoffs(): also a claimed handoff whose client waits past the SLA for the coach's reply

The SLA's holding message went only to clients of an open handoff. A coach who took the conversation over and
then left it (a closed tab, a meeting) left the client's next messages unanswered for good: the AI is paused
while the coach has the conversation, and nothing told the client anything. A claimed handoff is now overdue
too once a client message written after the takeover waits, with no coach message after it, longer than the
coach's ``handoff_sla_minutes``; it gets one holding message, as an open one does.

Revision ID: 0048
Revises: 0047
Create Date: 2026-12-25 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0048"
down_revision: str | None = "0047"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
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
    )


def downgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION overdue_handoffs() RETURNS TABLE (coach_id uuid, handoff_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT h.coach_id, h.id FROM handoffs h JOIN coaches c ON c.id = h.coach_id
           WHERE h.status = 'open' AND h.sla_notified_at IS NULL
             AND h.created_at < now() - make_interval(mins => c.handoff_sla_minutes) $$
        """
    )
