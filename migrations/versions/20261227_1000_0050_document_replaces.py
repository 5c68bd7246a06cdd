"""documents.replaces_id: a document processed again replaces the original once it is ready

A document ingested before an extraction fix (text a style sheet hid, content controls, page labels) kept what
the old extraction made of it: nothing processed it again. A coach can now process a document again: a new
document of the same file, ``replaces_id`` naming the original, is ingested while the original still answers,
and the original (its chunks with it) is deleted in the transaction that marks the new one ready. The reference
stays (no foreign key): a draft citing the original still finds its text in the copy that replaced it. Deleting
the original while the copy is processed deletes the copy too.

Revision ID: 0050
Revises: 0049
Create Date: 2026-12-27 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0050"
down_revision: str | None = "0049"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("replaces_id", UUID(as_uuid=True), nullable=True))
    op.create_index("ix_documents_replaces_id", "documents", ["replaces_id"])


def downgrade() -> None:
    op.drop_index("ix_documents_replaces_id", table_name="documents")
    op.drop_column("documents", "replaces_id")
