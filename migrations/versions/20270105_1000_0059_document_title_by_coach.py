"""documents.title_by_coach, chunks.heading: a coach-given document title, and each chunk's own section heading

A coach renames a document (``PATCH /api/v1/documents/{id}``): ``title_by_coach`` keeps that title over the one a
"Process again" finds in the file, and each chunk's ``heading`` (``''``: none; NULL for chunks stored before this
revision, whose heading is read back from their header) lets its contextual header be rebuilt with the new title
(``app.rag.headers``).

Revision ID: 0059
Revises: 0058
Create Date: 2027-01-05 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0059"
down_revision: str | None = "0058"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("title_by_coach", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("chunks", sa.Column("heading", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("chunks", "heading")
    op.drop_column("documents", "title_by_coach")
