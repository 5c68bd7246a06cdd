"""``telegram_bots_in_mode(mode)`` in place of ``telegram_polling_bots()``

The poller lists the bots in ``polling`` mode; starting up, the web app now also lists the bots saved in the
*other* mode than the install's (a bot connected for polling on a laptop demo whose ``PUBLIC_URL`` has since
become https, or the reverse), to move them to the install's mode
(:meth:`app.channels.telegram.service.TelegramService.align_modes`). Both read across tenants, before any tenant
is known, through this one SECURITY DEFINER function (the read-only owner policy of 0016 stays).

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-17 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0040"
down_revision: str | None = "0039"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION telegram_bots_in_mode(wanted text) RETURNS TABLE (coach_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT b.coach_id FROM telegram_bots b WHERE b.mode = wanted $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION telegram_bots_in_mode(text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION telegram_bots_in_mode(text) TO {APP_ROLE}")
    op.execute("DROP FUNCTION telegram_polling_bots()")


def downgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION telegram_polling_bots() RETURNS TABLE (coach_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT b.coach_id FROM telegram_bots b WHERE b.mode = 'polling' $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION telegram_polling_bots() FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION telegram_polling_bots() TO {APP_ROLE}")
    op.execute("DROP FUNCTION telegram_bots_in_mode(text)")
