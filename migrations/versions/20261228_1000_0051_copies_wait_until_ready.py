"""A document's copy being processed again is not retrieved until it is ready

While a document is processed again (``replaces_id``, 0050), the original keeps answering; the copy's chunks,
committed a batch at a time, were retrieved beside it: a changed passage took two of the k slots, and BM25
counted the file twice. ``dense_ranking`` (0029) and ``bm25_ranking`` (0030) now leave out a document that
replaces another until it is ready (a first ingestion still answers from its committed chunks while it runs).

Revision ID: 0051
Revises: 0050
Create Date: 2026-12-28 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.db.migrate import revision_module

revision: str = "0051"
down_revision: str | None = "0050"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DENSE_FILTER = "d.status <> ''failed'')"
_DENSE_WAITING = "d.status <> ''failed'' AND (d.replaces_id IS NULL OR d.status = ''ready''))"
_BM25_FILTER = "status <> 'failed'),"
_BM25_WAITING = "status <> 'failed' AND (replaces_id IS NULL OR status = 'ready')),"


def _functions(waiting: bool) -> list[str]:
    """0029's and 0030's functions as ``CREATE OR REPLACE`` statements, the copies left out when ``waiting``."""
    dense, bm25 = revision_module("0029")._FUNCTION, revision_module("0030")._RANKING
    assert dense.count(_DENSE_FILTER) == 1 and bm25.count(_BM25_FILTER) == 1
    if waiting:
        dense, bm25 = dense.replace(_DENSE_FILTER, _DENSE_WAITING), bm25.replace(_BM25_FILTER, _BM25_WAITING)
    return [sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1) for sql in (dense, bm25)]


def upgrade() -> None:
    for statement in _functions(waiting=True):
        op.execute(statement)


def downgrade() -> None:
    for statement in _functions(waiting=False):
        op.execute(statement)
