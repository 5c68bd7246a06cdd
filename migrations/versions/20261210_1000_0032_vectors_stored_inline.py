"""Embeddings stored inline in their rows (``STORAGE PLAIN``), and rows up to half a page kept whole

pgvector's ``vector`` type has ``EXTERNAL`` storage: when a row is over PostgreSQL's TOAST threshold (about 2 kB),
its biggest out-of-line-able value moves to the table's TOAST relation. A 384-d vector is 1,544 bytes, so a
chunk (its text and ``tsv`` beside it) or an episode of a paragraph-long message crosses the threshold, and the
vector is the value that moves. Every exact distance then fetches it back through the TOAST index: measured here
on 2,000 episodes of one client, about 8 ms of the 9 ms a cosine pass took (11,214 buffer reads instead of 513),
and the client's dense recall took 20 ms where 9 ms do with the vectors inline. That cost is paid on every chat
turn (episodic recall, the exact passages ranking of a coach below the HNSW threshold) and grows with the
client's history.

``SET STORAGE PLAIN`` keeps the vector in the row (what pgvector's ANN-Benchmarks module does for its
tables; a 384-d vector always fits a page). Alone, it moves the problem: a chunk's ``tsv`` and text then go out
instead, and the lexical arm reads the ``tsv`` of every matching chunk. So the tables also get
``toast_tuple_target = 4080``: PostgreSQL compresses or moves values out only when a row is over half a page
(2 rows per page), not over a quarter. Measured on *Meditations* (364 chunks, about 3.1 kB each): the turn's
passages (``app.rag.retrieval.retrieve``, 70 queries) took p50 12.9 ms with every vector out of line, 9.7 ms with
the vectors inline and the ``tsv`` out, 8.8 ms with both inline.

Existing rows keep their out-of-line values until rewritten, so each table is rewritten once
(``ALTER COLUMN … TYPE … USING``, a same-type cast through ``real[]``: exact for ``float4``, and a rewrite that
rebuilds the table's indexes, HNSW included, without firing the row triggers of ``chunks``).

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VECTOR_TABLES = ("chunks", "episodes", "insights", "chat_sessions", "interventions")
"""The tables whose ``embedding vector(384)`` column this migration keeps inline."""

TOAST_TUPLE_TARGET = 4080
"""Bytes: half of an 8 kB page less its headers (PostgreSQL's default is 2032, a quarter)."""

_DIMENSIONS = 384
_REWRITE = f"ALTER COLUMN embedding TYPE vector({_DIMENSIONS}) USING embedding::real[]::vector({_DIMENSIONS})"


def upgrade() -> None:
    for table in VECTOR_TABLES:
        op.execute(f"ALTER TABLE {table} SET (toast_tuple_target = {TOAST_TUPLE_TARGET})")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE PLAIN, {_REWRITE}")


def downgrade() -> None:
    for table in VECTOR_TABLES:
        op.execute(f"ALTER TABLE {table} RESET (toast_tuple_target)")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE EXTERNAL, {_REWRITE}")
