"""unstarted_documents(): documents still ``queued`` and never started, for the sweep that finds lost jobs

A document's ingestion job can be lost before any worker starts it: arq drops a job whose data expired (a day
without a worker: arq's ``expires_extra_ms``) unrun, and a Redis restarted without persistence forgets its
queue. Such a document stayed ``queued`` for good. The worker's sweep finds the candidates through this
SECURITY DEFINER function (read by the owner through the ``stalled_sweep`` policy of 0012), checks that no job
of theirs waits in the outbox or in arq, and queues their ingestion again.

Revision ID: 0049
Revises: 0048
Create Date: 2026-12-26 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0049"
down_revision: str | None = "0048"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION unstarted_documents(older_than_seconds integer)
        RETURNS TABLE (coach_id uuid, document_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT d.coach_id, d.id FROM documents d
           WHERE d.status = 'queued' AND d.started_at IS NULL
             AND d.created_at < now() - make_interval(secs => older_than_seconds) $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION unstarted_documents(integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION unstarted_documents(integer) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION unstarted_documents(integer)")
