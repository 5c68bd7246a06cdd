"""telegram_updates keep the update until it is processed (payload, claimed_at, done_at) and
telegram_stale_updates() lists the unprocessed ones across tenants for the worker's recovery sweep

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.core.runtime import APP_ROLE

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("telegram_updates", sa.Column("payload", postgresql.JSONB(), nullable=True))
    op.add_column(
        "telegram_updates",
        sa.Column("claimed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.add_column("telegram_updates", sa.Column("done_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE telegram_updates SET done_at = created_at")  # recorded before: processed then
    op.create_index(
        "ix_telegram_updates_pending", "telegram_updates", ["claimed_at"], postgresql_where=sa.text("done_at IS NULL")
    )
    # the worker's sweep runs before any tenant is known: one SECURITY DEFINER function with a read-only policy
    # for the owner, like the poller's (0016) and the idle-session sweep's (0002)
    op.execute("CREATE POLICY telegram_recovery ON telegram_updates FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        """
        CREATE FUNCTION telegram_stale_updates(lease_seconds double precision)
        RETURNS TABLE (coach_id uuid, update_id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT u.coach_id, u.update_id FROM telegram_updates u
           WHERE u.done_at IS NULL AND u.claimed_at < now() - make_interval(secs => lease_seconds)
           ORDER BY u.claimed_at LIMIT 500 $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION telegram_stale_updates(double precision) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION telegram_stale_updates(double precision) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION telegram_stale_updates(double precision)")
    op.execute("DROP POLICY telegram_recovery ON telegram_updates")
    op.drop_index("ix_telegram_updates_pending", table_name="telegram_updates")
    for column in ("done_at", "claimed_at", "payload"):
        op.drop_column("telegram_updates", column)
