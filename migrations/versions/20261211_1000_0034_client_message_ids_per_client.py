"""Client message ids are unique per client, not per coach: messages.client_id

A client's app (the widget, the Telegram adapter, a coach's own integration through the API) numbers its
messages; a message sent again with the same id is stored once. The ids were unique per coach, so two clients
of one coach whose apps number alike blocked each other (409), and a client could send, through the API, the id
another client's Telegram message would carry (``tg:<chat>:<message>``, both guessable) and have that message
refused. The key is now ``(client_id, client_message_id)``: ``client_id`` is the client who sent the message,
set on every client message that carries an id (backfilled from the conversation), and only on those.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-11 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_ID = sa.text("client_message_id IS NOT NULL")


def _unique_ids(owner: str) -> None:
    """The unique index of the client message ids per ``owner`` (``client_id``, or before, ``coach_id``)."""
    op.create_index(
        f"uq_messages_{owner.removesuffix('_id')}_client_message_id",
        "messages",
        [owner, "client_message_id"],
        unique=True,
        postgresql_where=WITH_ID,
    )


def upgrade() -> None:
    op.add_column("messages", sa.Column("client_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.execute(
        "UPDATE messages AS m SET client_id = c.client_id FROM conversations AS c"
        " WHERE c.id = m.conversation_id AND m.client_message_id IS NOT NULL"
    )
    op.create_check_constraint(
        "client_message_id_has_client", "messages", "(client_message_id IS NULL) = (client_id IS NULL)"
    )
    _unique_ids("client_id")
    op.drop_index("uq_messages_coach_client_message_id", table_name="messages", postgresql_where=WITH_ID)


def downgrade() -> None:
    _unique_ids("coach_id")
    op.drop_index("uq_messages_client_client_message_id", table_name="messages", postgresql_where=WITH_ID)
    op.drop_constraint("client_message_id_has_client", "messages", type_="check")
    op.drop_column("messages", "client_id")
