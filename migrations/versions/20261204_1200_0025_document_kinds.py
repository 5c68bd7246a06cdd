"""document kinds: chunks.locator, a transcript passage's start time cited instead of a page; documents.chunks_total,
the embedding stage's total

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """``locator`` (``"HH:MM:SS"``) for chunks of SRT/VTT transcripts (``NULL`` for every other document);
    ``chunks_total``, set once a document is chunked, so the embedding stage shows progress against it."""
    op.add_column("chunks", sa.Column("locator", sa.String(length=20), nullable=True))
    op.add_column("documents", sa.Column("chunks_total", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drops ``locator`` (transcript chunks are then cited by title alone) and ``chunks_total``."""
    op.drop_column("documents", "chunks_total")
    op.drop_column("chunks", "locator")
