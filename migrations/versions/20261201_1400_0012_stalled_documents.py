"""stalled_documents(): the sweep that fails documents a killed worker left processing

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The worker's sweep runs before any tenant is known, so it finds its candidates through one SECURITY
    DEFINER function with a read-only policy for the owner, like the idle-session sweep (0002)."""
    op.execute("CREATE POLICY stalled_sweep ON documents FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        """
        CREATE FUNCTION stalled_documents(older_than_seconds integer)
        RETURNS TABLE (coach_id uuid, document_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT d.coach_id, d.id FROM documents d
           WHERE d.status = 'processing' AND d.started_at < now() - make_interval(secs => older_than_seconds) $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION stalled_documents(integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION stalled_documents(integer) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION stalled_documents(integer)")
    op.execute("DROP POLICY stalled_sweep ON documents")
