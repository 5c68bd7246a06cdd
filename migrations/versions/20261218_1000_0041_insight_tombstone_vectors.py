"""``insights.tombstone_embedding``: a forgotten insight's text in the offline model's vector space

A forgotten insight keeps no text, only its vector, which stops the same fact from being extracted again. That
vector was made by the coach's embedder of the day, and a coach who switches embedders has every vector made
again from its text (``reembed_coach``): not a tombstone's, whose text is gone. Compared only with insights of
its own model, a tombstone then stopped nothing and a forgotten fact could be learnt again. A tombstone now also
holds the text embedded by all-MiniLM-L6-v2, which every install runs offline whatever the coach's embedder;
extraction compares new insights with it in that space. The tombstones already there get it where their vector
was MiniLM's; the others (made by an OpenAI-compatible model) keep the comparison within their own model.

Revision ID: 0041
Revises: 0040
Create Date: 2026-12-18 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db.migrate import across_tenants

revision: str = "0041"
down_revision: str | None = "0040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE insights ADD COLUMN tombstone_embedding vector(384)")
    with across_tenants("insights"):
        op.execute(
            "UPDATE insights SET tombstone_embedding = embedding"
            " WHERE status = 'deleted' AND embedding_model = 'all-MiniLM-L6-v2'"
        )


def downgrade() -> None:
    op.execute("ALTER TABLE insights DROP COLUMN tombstone_embedding")
