"""A conversation's ``last_message_at`` follows its messages in PostgreSQL: a trigger on ``messages``

Every stored message moved its conversation's ``last_message_at`` (the inbox's order) with an ``UPDATE`` of
its own, sent by :func:`app.memory.messages.store_message` after the message's ``INSERT``: one round trip
more for each message, two per chat turn (the client's message and the reply). Now an ``AFTER INSERT``
statement-level trigger (a transition table, as 0028's ``chunks_added``) sets it to the newest
``created_at`` among the inserted rows of each conversation, in the same statement's work: no round trip,
and every path that inserts messages (the chat turn, the coach's takeover, an evaluation's bulk insert)
moves the conversation the same way.

The function is not ``SECURITY DEFINER``: the ``UPDATE`` runs as the inserting role, under its row-level
security, so it only ever reaches the tenant's own conversation (the message's).

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
    CREATE FUNCTION messages_added() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
    BEGIN
        UPDATE conversations c SET last_message_at = m.at
        FROM (SELECT conversation_id, max(created_at) AS at FROM new_rows GROUP BY conversation_id) m
        WHERE c.id = m.conversation_id;
        RETURN NULL;
    END $$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)
    op.execute(
        "CREATE TRIGGER messages_added AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION messages_added()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER messages_added ON messages")
    op.execute("DROP FUNCTION messages_added()")
