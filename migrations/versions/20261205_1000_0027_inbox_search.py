"""inbox search: pg_trgm, trigram GIN indexes on clients.name and messages.text, inbox_search()

The inbox's search (``app.conversations.inbox``) matches ``name ILIKE '%q%'`` and ``text ILIKE '%q%'``, which
no b-tree serves; a ``gin_trgm_ops`` index does (patterns of three characters or more). Under row-level
security, though, PostgreSQL uses an index for a condition of the query only when its operator is LEAKPROOF
(the policy is checked first), and ILIKE is not: the app role's own ``ILIKE`` reads every message of the
coach. So the search runs in ``inbox_search(pattern)``, a SECURITY DEFINER function owned by the migrating
role like the credential look-ups and sweeps of 0001/0002/0004: the owner's read-all policy on messages
(``inbox_search``; clients has ``credential_lookup``) leaves no policy condition before the ILIKE, and the
function filters by ``app_current_coach_id()`` itself. It returns conversation ids of the current tenant only;
the app role may only execute it.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")  # a trusted extension: the database owner may create it
    op.create_index(
        "ix_clients_name_trgm", "clients", ["name"], postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}
    )
    op.create_index(
        "ix_messages_text_trgm", "messages", ["text"], postgresql_using="gin", postgresql_ops={"text": "gin_trgm_ops"}
    )
    op.execute("CREATE POLICY inbox_search ON messages FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        r"""
        CREATE FUNCTION inbox_search(p_pattern text) RETURNS TABLE (conversation_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$ SELECT m.conversation_id FROM messages m
           WHERE m.coach_id = app_current_coach_id() AND m.text ILIKE p_pattern ESCAPE '\'
           UNION
           SELECT c.id FROM clients k JOIN conversations c ON c.client_id = k.id
           WHERE k.coach_id = app_current_coach_id() AND c.coach_id = app_current_coach_id()
             AND k.name ILIKE p_pattern ESCAPE '\' $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION inbox_search(text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION inbox_search(text) TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION inbox_search(text)")
    op.execute("DROP POLICY inbox_search ON messages")
    op.drop_index("ix_messages_text_trgm", table_name="messages", postgresql_using="gin")
    op.drop_index("ix_clients_name_trgm", table_name="clients", postgresql_using="gin")
    # pg_trgm stays: other objects may use it, and dropping an extension is the operator's call
