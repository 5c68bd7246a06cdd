"""contextual chunk headers: chunks.header, and the full-text vector over header + text

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TSV_WITH_HEADER = "to_tsvector('english', header || ' ' || text)"
TSV_TEXT_ONLY = "to_tsvector('english', text)"


def _replace_tsv(expression: str) -> None:
    """A generated column's expression cannot be altered: drop it (and its GIN index) and add it back."""
    op.drop_index("ix_chunks_tsv", table_name="chunks", postgresql_using="gin")
    op.drop_column("chunks", "tsv")
    op.add_column(
        "chunks",
        sa.Column("tsv", postgresql.TSVECTOR(), sa.Computed(expression, persisted=True), nullable=False),
    )
    op.create_index("ix_chunks_tsv", "chunks", ["tsv"], unique=False, postgresql_using="gin")


def upgrade() -> None:
    """``header`` (document title and section heading) is searched and embedded with the chunk but never shown;
    existing chunks get an empty header until their document is ingested again."""
    op.add_column("chunks", sa.Column("header", sa.Text(), server_default="", nullable=False))
    _replace_tsv(TSV_WITH_HEADER)


def downgrade() -> None:
    """Back to the text-only full-text vector."""
    _replace_tsv(TSV_TEXT_ONLY)
    op.drop_column("chunks", "header")
