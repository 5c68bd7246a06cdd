"""stranded_messages(): client messages stored and acknowledged but never answered

A widget message is stored and acknowledged before its turn runs in the web process; the widget then forgets it.
A web process that dies (a deploy, a crash, out of memory) between the two left the message unanswered for good,
a crisis in it unchecked. The worker's sweep finds such messages through this SECURITY DEFINER function (read by
the owner through the ``inbox_search`` policy of 0027 and the ``sla_sweep`` policy of 0004) and queues their
answer: the latest client message of its conversation, no coach message after it, no handoff active. A partial
index keeps the scan to the client messages nobody answered.

Revision ID: 0046
Revises: 0045
Create Date: 2026-12-23 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0046"
down_revision: str | None = "0045"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE INDEX ix_messages_unanswered ON messages (created_at)
        WHERE sender_type = 'client' AND answered_at IS NULL AND forgotten_at IS NULL
        """
    )
    op.execute(
        """
        CREATE FUNCTION stranded_messages(older_than_seconds integer, newer_than_seconds integer)
        RETURNS TABLE (coach_id uuid, message_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT m.coach_id, m.id FROM messages m
           WHERE m.sender_type = 'client' AND m.answered_at IS NULL AND m.forgotten_at IS NULL
             AND m.created_at < now() - make_interval(secs => older_than_seconds)
             AND m.created_at > now() - make_interval(secs => newer_than_seconds)
             -- the latest client message, and no coach message after it
             AND NOT EXISTS (
                 SELECT 1 FROM messages later
                 WHERE later.conversation_id = m.conversation_id AND later.created_at > m.created_at
                   AND later.sender_type IN ('client', 'human_coach'))
             -- the coach does not have the conversation
             AND NOT EXISTS (
                 SELECT 1 FROM handoffs h
                 WHERE h.conversation_id = m.conversation_id AND h.status IN ('open', 'claimed')) $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION stranded_messages(integer, integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION stranded_messages(integer, integer) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION stranded_messages(integer, integer)")
    op.execute("DROP INDEX ix_messages_unanswered")
