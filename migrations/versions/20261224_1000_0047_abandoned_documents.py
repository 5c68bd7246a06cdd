"""abandoned_documents(): documents left ``queued`` after their ingestion started and arq gave it up

An ingestion cancelled before its deadline (its worker shutting down) puts the document back to ``queued`` for
arq's next try. After its last try arq runs the job no more, and the document stayed ``queued`` for good, the
chunks it had committed answering questions. The worker's sweep finds such documents through this SECURITY
DEFINER function (read by the owner through the ``stalled_sweep`` policy of 0012) and fails them with the
reason.

Revision ID: 0047
Revises: 0046
Create Date: 2026-12-24 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0047"
down_revision: str | None = "0046"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION abandoned_documents(older_than_seconds integer)
        RETURNS TABLE (coach_id uuid, document_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT d.coach_id, d.id FROM documents d
           WHERE d.status = 'queued' AND d.started_at < now() - make_interval(secs => older_than_seconds) $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION abandoned_documents(integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION abandoned_documents(integer) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION abandoned_documents(integer)")
