"""``training_datasets.conversation_ids``: the conversations a dataset snapshot's examples came from

A snapshot lists example ids. A refresh of a conversation's training data (a new thumbs, a persona or window
change, a forget) deletes its examples and inserts them again with new ids, so the snapshot's ids of that
conversation no longer exist. An erasure or a forget looked the client's examples up by their current ids, found no
snapshot, and left the training file of a fine-tune that had trained on the client's words at the provider. The
snapshot now also lists its conversations, which do not change; erasures and forgets find the fine-tunes by them.
Snapshots already there get the conversations of their examples that still exist.

Revision ID: 0043
Revises: 0042
Create Date: 2026-12-20 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db.migrate import across_tenants

revision: str = "0043"
down_revision: str | None = "0042"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE training_datasets ADD COLUMN conversation_ids uuid[] NOT NULL DEFAULT '{}'")
    with across_tenants("training_datasets", "training_examples"):
        op.execute(
            """
            UPDATE training_datasets d SET conversation_ids = ARRAY(
                SELECT DISTINCT e.conversation_id FROM training_examples e
                WHERE e.id = ANY (d.example_ids) AND e.conversation_id IS NOT NULL
            )
            """
        )


def downgrade() -> None:
    op.execute("ALTER TABLE training_datasets DROP COLUMN conversation_ids")
