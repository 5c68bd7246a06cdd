"""messages.forgotten_at (forgotten insight sources); intervention_pattern_coaches (k-anonymous cross-coach
patterns) with RLS and intervention_pattern_coach_counts()

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=True))
    # messages an insight deleted before this revision came from are forgotten now (the owner reads across
    # tenants only while row-level security is not forced on the tables it reads and writes)
    _unforced("messages", "insights", "interventions")
    op.execute(
        """
        UPDATE messages SET forgotten_at = now()
        WHERE id IN (SELECT unnest(source_message_ids) FROM insights WHERE status = 'deleted')
        """
    )
    op.create_table(
        "intervention_pattern_coaches",
        sa.Column("strategy", sa.String(length=40), nullable=False),
        sa.Column("situation", sa.String(length=20), nullable=False),
        sa.Column("coach_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["coach_id"],
            ["coaches.id"],
            name=op.f("fk_intervention_pattern_coaches_coach_id_coaches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intervention_pattern_coaches")),
        sa.UniqueConstraint("coach_id", "strategy", "situation", name=op.f("uq_intervention_pattern_coaches_coach_id")),
    )
    op.create_index(
        op.f("ix_intervention_pattern_coaches_coach_id"), "intervention_pattern_coaches", ["coach_id"], unique=False
    )
    # coaches who already counted in a cell: one row each, from their analysed interventions
    op.execute(
        """
        INSERT INTO intervention_pattern_coaches (id, coach_id, strategy, situation)
        SELECT DISTINCT ON (coach_id, strategy, analysis->>'client_mood')
               gen_random_uuid(), coach_id, strategy, analysis->>'client_mood'
        FROM interventions
        WHERE pattern_counted AND strategy IS NOT NULL AND analysis ? 'client_mood'
        """
    )
    _forced("messages", "insights", "interventions")
    _row_level_security()


def _unforced(*tables: str) -> None:
    for table in tables:
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")


def _forced(*tables: str) -> None:
    for table in tables:
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def _row_level_security() -> None:
    """Tenant isolation as in 0005. The dashboard needs each cell's number of distinct coaches across tenants:
    one ``SECURITY DEFINER`` function returns counts only (no coach ids), like the sweeps' functions."""
    op.execute("ALTER TABLE intervention_pattern_coaches ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE intervention_pattern_coaches FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY tenant_isolation ON intervention_pattern_coaches "
        "USING (coach_id = app_current_coach_id()) WITH CHECK (coach_id = app_current_coach_id())"
    )
    op.execute("CREATE POLICY pattern_counts ON intervention_pattern_coaches FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        """
        CREATE FUNCTION intervention_pattern_coach_counts()
        RETURNS TABLE (strategy varchar, situation varchar, coaches bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT p.strategy, p.situation, count(DISTINCT p.coach_id)
           FROM intervention_pattern_coaches p GROUP BY p.strategy, p.situation $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION intervention_pattern_coach_counts() FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION intervention_pattern_coach_counts() TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION intervention_pattern_coach_counts()")
    op.drop_index(op.f("ix_intervention_pattern_coaches_coach_id"), table_name="intervention_pattern_coaches")
    op.drop_table("intervention_pattern_coaches")
    op.drop_column("messages", "forgotten_at")
