"""stranded_messages(): a message whose turn never ran in a conversation the coach has is screened once

A client message stored and acknowledged while a handoff was active, whose turn never ran (the web process died,
or was stopped in a deploy, in between), was skipped by the sweep for good: a crisis in it got no crisis reply and
no urgent alert. Its turn would only have screened it (the AI is paused; a crisis still gets the protocol). The
function now also returns such a message while it is newer than ``in_handoff_newer_than_seconds``: the worker
queues its turn once, which runs the crisis protocol if it calls for it and otherwise stores nothing.

Revision ID: 0055
Revises: 0054
Create Date: 2027-01-01 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0055"
down_revision: str | None = "0054"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LATEST_UNANSWERED = """
           WHERE m.sender_type = 'client' AND m.answered_at IS NULL AND m.forgotten_at IS NULL
             AND m.created_at < now() - make_interval(secs => older_than_seconds)
             AND m.created_at > now() - make_interval(secs => newer_than_seconds)
             -- the latest client message, and no coach message after it
             AND NOT EXISTS (
                 SELECT 1 FROM messages later
                 WHERE later.conversation_id = m.conversation_id AND later.created_at > m.created_at
                   AND later.sender_type IN ('client', 'human_coach'))"""


def upgrade() -> None:
    op.execute("DROP FUNCTION stranded_messages(integer, integer)")
    op.execute(
        f"""
        CREATE FUNCTION stranded_messages(
            older_than_seconds integer, newer_than_seconds integer, in_handoff_newer_than_seconds integer
        )
        RETURNS TABLE (coach_id uuid, message_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT m.coach_id, m.id FROM messages m {_LATEST_UNANSWERED}
             -- the coach has the conversation: only while the message is new enough to be screened once
             AND (m.created_at > now() - make_interval(secs => in_handoff_newer_than_seconds) OR NOT EXISTS (
                 SELECT 1 FROM handoffs h
                 WHERE h.conversation_id = m.conversation_id AND h.status IN ('open', 'claimed'))) $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION stranded_messages(integer, integer, integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION stranded_messages(integer, integer, integer) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION stranded_messages(integer, integer, integer)")
    op.execute(
        f"""
        CREATE FUNCTION stranded_messages(older_than_seconds integer, newer_than_seconds integer)
        RETURNS TABLE (coach_id uuid, message_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT m.coach_id, m.id FROM messages m {_LATEST_UNANSWERED}
             -- the coach does not have the conversation
             AND NOT EXISTS (
                 SELECT 1 FROM handoffs h
                 WHERE h.conversation_id = m.conversation_id AND h.status IN ('open', 'claimed')) $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION stranded_messages(integer, integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION stranded_messages(integer, integer) TO {APP_ROLE}")
