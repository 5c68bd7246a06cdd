"""client_search(): the Clients page's name search reads the trigram index

The coach's client list filters by ``name ILIKE '%q%'`` (``GET /api/v1/clients``'s and the Clients page's
search). Migration 0027 indexed ``clients.name`` with ``gin_trgm_ops`` for the inbox, but the app role's own
ILIKE cannot use it: under row-level security PostgreSQL applies a query's condition through an index only when
its operator is LEAKPROOF (the tenant policy is checked first), and ILIKE is not. The search read every client
of the coach (138 ms at 100,000 clients, ``bench/pages.py``). ``client_search(pattern)`` runs the ILIKE the way
``inbox_search`` does: SECURITY DEFINER, owned by the migrating role, whose read-all policy on clients
(``credential_lookup``, 0001) leaves no policy condition before the ILIKE, filtering by
``app_current_coach_id()`` itself. It returns the current tenant's client ids only; the app role may only
execute it.

Unlike ``inbox_search`` it returns a page, not every match: ``(pattern, newest_first, after_at, after_id,
limit)`` in the keyset order of ``app.core.pagination`` (``(created_at, id)`` after the position, ``limit`` rows;
``NULL`` position: from the top, ``NULL`` limit: every row). A name fragment that most clients share ("lient" of
100,000 "client N") is then found by reading ``ix_clients_coach_time`` newest first until the page is full, and a
rare one through the trigram index: the planner chooses per call, with the pattern's value (``plan_cache_mode =
force_custom_plan``: a generic plan would not know how selective the pattern is). Returning every match of a
common fragment for the app to page took 505 ms at 100,000 clients.

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-13 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0036"
down_revision: str | None = "0035"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        r"""
        CREATE FUNCTION client_search(
            p_pattern text, p_newest_first boolean, p_after_at timestamptz, p_after_id uuid, p_limit integer
        ) RETURNS TABLE (client_id uuid)
        LANGUAGE plpgsql STABLE SECURITY DEFINER
        SET search_path = public SET plan_cache_mode = force_custom_plan AS
        $$ BEGIN
           IF p_newest_first THEN
               RETURN QUERY SELECT k.id FROM clients k
               WHERE k.coach_id = app_current_coach_id() AND k.name ILIKE p_pattern ESCAPE '\'
                 AND (p_after_at IS NULL OR (k.created_at, k.id) < (p_after_at, p_after_id))
               ORDER BY k.created_at DESC, k.id DESC LIMIT p_limit;
           ELSE
               RETURN QUERY SELECT k.id FROM clients k
               WHERE k.coach_id = app_current_coach_id() AND k.name ILIKE p_pattern ESCAPE '\'
                 AND (p_after_at IS NULL OR (k.created_at, k.id) > (p_after_at, p_after_id))
               ORDER BY k.created_at, k.id LIMIT p_limit;
           END IF;
        END $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION client_search(text, boolean, timestamptz, uuid, integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION client_search(text, boolean, timestamptz, uuid, integer) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION client_search(text, boolean, timestamptz, uuid, integer)")
