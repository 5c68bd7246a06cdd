"""auth_api_key stamps api_keys.last_used_at (at most once a minute per key)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 13:00:00

The function still answers only unrevoked keys and is looked up on every request, so a revoked key fails at
once. The UPDATE runs as the table owner under FORCE ROW LEVEL SECURITY: the function sets ``app.coach_id`` to
the key's coach for the UPDATE and restores the caller's value afterwards (not with a ``SET app.coach_id``
clause on the function: only a superuser may attach a custom parameter to a function, and the schema owner
need not be one).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION auth_api_key(p_key_hash text) RETURNS uuid
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public AS
        $$
        DECLARE
          v_id uuid;
          v_coach uuid;
          v_used timestamptz;
          v_caller text := current_setting('app.coach_id', true);
        BEGIN
          SELECT id, coach_id, last_used_at INTO v_id, v_coach, v_used
            FROM api_keys WHERE key_hash = p_key_hash AND revoked_at IS NULL;
          IF v_id IS NULL THEN
            RETURN NULL;
          END IF;
          IF v_used IS NULL OR v_used < now() - interval '1 minute' THEN
            PERFORM set_config('app.coach_id', v_coach::text, true);
            UPDATE api_keys SET last_used_at = now() WHERE id = v_id;
            PERFORM set_config('app.coach_id', coalesce(v_caller, ''), true);
          END IF;
          RETURN v_coach;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION auth_api_key(p_key_hash text) RETURNS uuid
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT coach_id FROM api_keys WHERE key_hash = p_key_hash AND revoked_at IS NULL $$
        """
    )
