"""Episodes' vectors as ``halfvec(384)``, read by an index-only scan in the client's dense recall

Every chat turn ranks *all* the client's remembered episodes by exact cosine distance (the dense arm of
:data:`app.memory.episodes._ARMS`): a cost that grows with the client's history. Reading each episode's row was
the cost, not the distances: the row holds the 1,544-byte ``vector(384)`` inline (migration 0032) beside the
message's ``tsv``, and the rows of one client lie scattered over the table. Measured on one client of 20,000
episodes (``bench/recall.py``'s data), the dense arm alone took p50 29 ms.

Now the column is ``halfvec(384)`` (pgvector's 2-byte floats: 776 bytes a vector; the ranking of MiniLM's unit
vectors is unchanged to the 40th result on that data: same ids, same order), and a B-tree index on
``(client_id, embedding_model)`` carries ``coach_id``, ``message_id``, ``at`` and the vector, so the arm reads
one client's narrow index entries in one range (an index-only scan) instead of its rows: p50 13 ms on the same
data. The vectors stay inline (``STORAGE PLAIN``, as 0032 set for ``vector``). The index on ``client_id`` alone
goes: both ``(client_id, embedding_model)`` indexes serve its lookups (the cascade from ``clients``).

The type change rewrites the table once (``ALTER COLUMN … TYPE``, holding an exclusive lock meanwhile): plan the
upgrade of a large deployment accordingly. The downgrade casts back to ``vector(384)`` (the halved precision
stays: about three significant digits a dimension).

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-16 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0039"
down_revision: str | None = "0038"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DIMENSIONS = 384


def upgrade() -> None:
    op.execute(
        f"ALTER TABLE episodes ALTER COLUMN embedding TYPE halfvec({_DIMENSIONS}) "
        f"USING embedding::halfvec({_DIMENSIONS})"
    )
    op.execute("ALTER TABLE episodes ALTER COLUMN embedding SET STORAGE PLAIN")
    op.create_index(
        "ix_episodes_client_vectors",
        "episodes",
        ["client_id", "embedding_model"],
        postgresql_include=["coach_id", "message_id", "at", "embedding"],
    )
    op.drop_index("ix_episodes_client_id", table_name="episodes")


def downgrade() -> None:
    op.create_index("ix_episodes_client_id", "episodes", ["client_id"])
    op.drop_index("ix_episodes_client_vectors", table_name="episodes")
    op.execute(
        f"ALTER TABLE episodes ALTER COLUMN embedding TYPE vector({_DIMENSIONS}) USING embedding::vector({_DIMENSIONS})"
    )
    op.execute("ALTER TABLE episodes ALTER COLUMN embedding SET STORAGE PLAIN")
