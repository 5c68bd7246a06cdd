"""unheaded_documents(): the documents whose chunks were stored before chunks.heading (0059), for their backfill

The worker's ``backfill_headings`` cron (hourly and at start-up) queues the ``reheader_document`` job of each such
document (``app.rag.headers.queue_heading_backfill``), which records every chunk's heading and gives it the header
of its document's title. It runs before any tenant is known, so it finds them through one SECURITY DEFINER function
with a read-only policy for the owner, like the stalled-document sweep (0012); a partial index holds only the chunks
still without a heading, so once they are all done each run reads an empty index.

Revision ID: 0061
Revises: 0060
Create Date: 2027-01-07 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0061"
down_revision: str | None = "0060"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_chunks_heading_missing ON chunks (coach_id, document_id) WHERE heading IS NULL")
    op.execute("CREATE POLICY heading_backfill ON chunks FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        """
        CREATE FUNCTION unheaded_documents() RETURNS TABLE (coach_id uuid, document_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT DISTINCT c.coach_id, c.document_id FROM chunks c WHERE c.heading IS NULL $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION unheaded_documents() FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION unheaded_documents() TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION unheaded_documents()")
    op.execute("DROP POLICY heading_backfill ON chunks")
    op.execute("DROP INDEX ix_chunks_heading_missing")
