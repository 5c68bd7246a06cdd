"""inbox search: pg_trgm and trigram GIN indexes on clients.name and messages.text

The inbox's search (``app.conversations.inbox``) matches ``name ILIKE '%q%'`` and ``text ILIKE '%q%'``, which
no b-tree serves; a ``gin_trgm_ops`` index does (for patterns of three characters or more).

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "ix_clients_name_trgm", "clients", ["name"], postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}
    )
    op.create_index(
        "ix_messages_text_trgm", "messages", ["text"], postgresql_using="gin", postgresql_ops={"text": "gin_trgm_ops"}
    )


def downgrade() -> None:
    op.drop_index("ix_messages_text_trgm", table_name="messages", postgresql_using="gin")
    op.drop_index("ix_clients_name_trgm", table_name="clients", postgresql_using="gin")
    # pg_trgm stays: other objects may use it, and dropping an extension is the operator's call
