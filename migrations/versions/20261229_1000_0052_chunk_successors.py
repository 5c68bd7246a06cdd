"""chunk_successors: a citation of a document processed again opens the passage of the copy that replaced it

A document processed again (0050) is deleted, with its chunks, when its copy is ready; replies and drafts cite
chunks by id, so their passages were gone (404), and a draft citing the original two replacements back was
refused as if the coach had deleted it. Each chunk of the original now gets a row naming the copy's chunk that
holds its text (the same text, or the most similar one nearby), written in the transaction that deletes the
original; rows that named the original's chunks (earlier replacements) are moved to the copy's, and a row goes
with the chunk it names (a copy the coach deletes takes its passages with it). Citations stay as written: they
are resolved through this table when read, so a reply stored after the replacement (its turn retrieved from the
original) resolves too.

Revision ID: 0052
Revises: 0051
Create Date: 2026-12-29 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0052"
down_revision: str | None = "0051"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chunk_successors",
        sa.Column("chunk_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("coach_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("document_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("successor_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["coach_id"], ["coaches.id"], name=op.f("fk_chunk_successors_coach_id_coaches"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["successor_id"], ["chunks.id"], name=op.f("fk_chunk_successors_successor_id_chunks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("chunk_id", name=op.f("pk_chunk_successors")),
    )
    op.create_index("ix_chunk_successors_successor_id", "chunk_successors", ["successor_id"])
    op.create_index("ix_chunk_successors_coach_id_document_id", "chunk_successors", ["coach_id", "document_id"])
    op.execute("ALTER TABLE chunk_successors ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE chunk_successors FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY tenant_isolation ON chunk_successors "
        "USING (coach_id = app_current_coach_id()) WITH CHECK (coach_id = app_current_coach_id())"
    )


def downgrade() -> None:
    op.drop_table("chunk_successors")
