"""per-coach embedding model: the requested embedder beside the one in use, and the re-embedding job's progress

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("coaches", sa.Column("embedding_requested_provider", sa.String(length=20), nullable=True))
    op.add_column("coaches", sa.Column("embedding_requested_model", sa.String(length=200), nullable=True))
    op.add_column("coaches", sa.Column("embedding_requested_base_url", sa.String(length=500), nullable=True))
    op.add_column("coaches", sa.Column("embedding_requested_api_key_encrypted", sa.LargeBinary(), nullable=True))
    op.add_column("coaches", sa.Column("embedding_request_id", sa.Uuid(), nullable=True))
    op.add_column("coaches", sa.Column("embedding_job_status", sa.String(length=20), nullable=True))
    op.add_column("coaches", sa.Column("embedding_job_done", sa.Integer(), server_default="0", nullable=False))
    op.add_column("coaches", sa.Column("embedding_job_total", sa.Integer(), server_default="0", nullable=False))
    op.add_column("coaches", sa.Column("embedding_job_error", sa.Text(), nullable=True))


def downgrade() -> None:
    for column in (
        "embedding_job_error",
        "embedding_job_total",
        "embedding_job_done",
        "embedding_job_status",
        "embedding_request_id",
        "embedding_requested_api_key_encrypted",
        "embedding_requested_base_url",
        "embedding_requested_model",
        "embedding_requested_provider",
    ):
        op.drop_column("coaches", column)
