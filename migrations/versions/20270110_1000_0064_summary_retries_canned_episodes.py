"""Failed session summaries are tried again; canned messages are no longer episodes

1. ``chat_sessions.summary_failures`` / ``summary_retry_at`` and ``failed_summaries_due(max_rows)``: a summary whose
   job failed (the coach's model endpoint down, or its answers refused by the summary check) stayed ``failed`` for
   good, so that session was never summarised and its facts never reached the L2/L3 memory, even after the model
   was fixed (found by a run as a client remembered over many sessions). The worker's sweep
   (``app.memory.summaries.SummaryService.retry_failed``) now queues it again after an exponential back-off, a
   bounded number of times. It runs before any tenant is known, so it finds the due ones through one SECURITY
   DEFINER function, reading a partial index of the failed sessions under the owner's read-only policy of 0002
   (``idle_sweep``). The sessions already ``failed`` count one failed job and are due at once.
2. The product's canned messages (a handoff notice, the crisis reply, an SLA holding message, the crisis
   acknowledgement, a failed reply's apology, the honesty statement, the injection check's safe reply: any of the
   ``metadata`` keys ``app.conversations.metadata.PRODUCT_TEXT_KEYS``) were stored as episodes and recalled into
   prompts as "[you, <date>] I'm passing this to …": they tell nothing about the client. Their episodes are deleted
   (the ``embed_messages`` job no longer writes them; the downgrade leaves them deleted: they are no memory).

Revision ID: 0064
Revises: 0063
Create Date: 2027-01-10 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.core.runtime import APP_ROLE
from app.db.migrate import across_tenants

revision: str = "0064"
down_revision: str | None = "0063"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRODUCT_TEXT_KEYS = ("notice", "crisis", "error", "partial_reply", "honesty", "injection")
"""``app.conversations.metadata.PRODUCT_TEXT_KEYS`` as of this revision (written out: a migration does not follow
later changes of the app)."""


def upgrade() -> None:
    op.add_column("chat_sessions", sa.Column("summary_failures", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("chat_sessions", sa.Column("summary_retry_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "CREATE INDEX ix_chat_sessions_summary_retry ON chat_sessions (summary_retry_at) WHERE status = 'failed'"
    )
    op.execute(
        """
        CREATE FUNCTION failed_summaries_due(max_rows integer) RETURNS TABLE (coach_id uuid, session_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT s.coach_id, s.id FROM chat_sessions s
           WHERE s.status = 'failed' AND s.summary_retry_at <= now()
           ORDER BY s.summary_retry_at, s.id LIMIT max_rows $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION failed_summaries_due(integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION failed_summaries_due(integer) TO {APP_ROLE}")
    keys = ", ".join(f"'{key}'" for key in PRODUCT_TEXT_KEYS)
    with across_tenants("chat_sessions", "episodes", "messages"):
        op.execute("UPDATE chat_sessions SET summary_failures = 1, summary_retry_at = now() WHERE status = 'failed'")
        op.execute(f"DELETE FROM episodes e USING messages m WHERE m.id = e.message_id AND m.metadata ?| array[{keys}]")


def downgrade() -> None:
    op.execute("DROP FUNCTION failed_summaries_due(integer)")
    op.execute("DROP INDEX ix_chat_sessions_summary_retry")
    op.drop_column("chat_sessions", "summary_retry_at")
    op.drop_column("chat_sessions", "summary_failures")
