"""widget_origin_listed(origin): whether any coach lists an origin in its widget_allowed_origins

A CORS preflight to the widget's API carries no widget token, so it cannot name the coach whose list the real
request is checked against (:func:`app.auth.check_widget_origin`); it was answered with the allow headers for
any origin. The preflight is now answered only for an origin some coach lists (the real request is still
checked against its own coach's list). The app's role reads every coach's list through this one SECURITY
DEFINER function (the owner reads ``coaches`` through its ``idle_sweep`` policy, 0002), which says yes or no
and nothing else.

Revision ID: 0056
Revises: 0055
Create Date: 2027-01-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0056"
down_revision: str | None = "0055"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION widget_origin_listed(p_origin text) RETURNS boolean
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT EXISTS (SELECT 1 FROM coaches WHERE widget_allowed_origins @> jsonb_build_array(p_origin)) $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION widget_origin_listed(text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION widget_origin_listed(text) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION widget_origin_listed(text)")
