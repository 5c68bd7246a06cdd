"""documents.pages_searchable: pages whose chunks are committed (searchable) while a document is processed

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("pages_searchable", sa.Integer(), server_default="0", nullable=False))
    op.execute("UPDATE documents SET pages_searchable = coalesce(pages, 0) WHERE status = 'ready'")


def downgrade() -> None:
    op.drop_column("documents", "pages_searchable")
