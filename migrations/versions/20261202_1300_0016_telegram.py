"""Telegram channel: telegram_bots, telegram_chats, telegram_invites, telegram_updates (tenant tables under RLS)
and telegram_polling_bots() for the poller

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("telegram_bots", "telegram_chats", "telegram_invites", "telegram_updates")


def _tenant_columns(table: str) -> list[sa.Column[object]]:
    return [
        sa.Column(
            "coach_id",
            sa.UUID(),
            sa.ForeignKey("coaches.id", ondelete="CASCADE", name=f"fk_{table}_coach_id_coaches"),
            nullable=False,
            index=True,
        ),
        sa.Column("id", sa.UUID(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "telegram_bots",
        sa.Column("bot_id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("token_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("webhook_secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("open_enrollment", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("poll_offset", sa.BigInteger(), server_default="0", nullable=False),
        *_tenant_columns("telegram_bots"),
        sa.UniqueConstraint("coach_id", name="uq_telegram_bots_coach_id"),
        sa.UniqueConstraint("bot_id", name="uq_telegram_bots_bot_id"),
    )
    op.create_table(
        "telegram_chats",
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "client_id",
            sa.UUID(),
            sa.ForeignKey("clients.id", ondelete="CASCADE", name="fk_telegram_chats_client_id_clients"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "conversation_id",
            sa.UUID(),
            sa.ForeignKey(
                "conversations.id", ondelete="SET NULL", name="fk_telegram_chats_conversation_id_conversations"
            ),
            nullable=True,
        ),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        *_tenant_columns("telegram_chats"),
        sa.UniqueConstraint("coach_id", "chat_id", name="uq_telegram_chats_coach_id"),
    )
    op.create_table(
        "telegram_invites",
        sa.Column(
            "client_id",
            sa.UUID(),
            sa.ForeignKey("clients.id", ondelete="CASCADE", name="fk_telegram_invites_client_id_clients"),
            nullable=False,
            index=True,
        ),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        *_tenant_columns("telegram_invites"),
        sa.UniqueConstraint("code_hash", name="uq_telegram_invites_code_hash"),
    )
    op.create_table(
        "telegram_updates",
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        *_tenant_columns("telegram_updates"),
        sa.UniqueConstraint("coach_id", "update_id", name="uq_telegram_updates_coach_id"),
    )
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            "USING (coach_id = app_current_coach_id()) WITH CHECK (coach_id = app_current_coach_id())"
        )
    # the poller runs before any tenant is known: it lists the polling bots through one SECURITY DEFINER
    # function with a read-only policy for the owner, like the idle-session sweep (0002)
    op.execute("CREATE POLICY telegram_poller ON telegram_bots FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        """
        CREATE FUNCTION telegram_polling_bots() RETURNS TABLE (coach_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT b.coach_id FROM telegram_bots b WHERE b.mode = 'polling' $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION telegram_polling_bots() FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION telegram_polling_bots() TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION telegram_polling_bots()")
    for table in reversed(TABLES):
        op.drop_table(table)
