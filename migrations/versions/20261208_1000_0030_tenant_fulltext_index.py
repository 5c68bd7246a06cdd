"""The lexical arm's indexes per tenant: GIN over ``(coach_id, tsv)``, term statistics from their index alone

``bm25_ranking()`` (migration 0028) spent most of its time in three places (``EXPLAIN (ANALYZE, BUFFERS)`` of
its body, warm cache, ``bench/lexical.py``'s coaches of 150,000, 40,000, 5,000 and 1,000 chunks among 196,000):

- **The full-text index held every coach's postings.** ``ix_chunks_tsv`` on ``tsv`` alone returned each
  candidate word's chunks of all coaches, which the heap scan then dropped by ``coach_id``: 58,715 index rows
  for a coach of 5,000 chunks whose query matched 1,563 (23 ms). So 0028 tested a coach of at most ``scan``
  chunks one by one instead. Now ``ix_chunks_coach_id_tsv`` is a GIN index over ``(coach_id, tsv)``
  (``btree_gin`` gives ``uuid`` its GIN operator class; a trusted extension, which the database owner may
  create): GIN intersects the coach's entry with the words' posting lists, skipping through the longer ones,
  so only the coach's matching chunks reach the heap, whatever the other tenants hold (2 ms for the same
  query). That makes the one-by-one branch slower than the index for every size measured (a coach of 1,000
  chunks: 8 ms through the index, 18 ms testing each chunk), so ``bm25_ranking`` loses it and its ``p_scan``
  parameter. A GIN index over several columns also serves a condition on ``tsv`` alone, which nothing here
  asks without the coach.
- **Each query word's document frequency was read several times.** The ``frequencies`` CTE was inlined, so
  its correlated sum ran once for every reference to ``df`` (5 × 12 words; 30 ms for the biggest coach). It
  is now materialised, and stays a sum per word (``LATERAL``): a join of the query's words with
  ``document_terms`` grouped by word was planned, for a coach just ingested (no statistics yet), as a scan
  of all the coach's terms (2.5 ms instead of 0.2 for *Meditations*).
- **That join read one heap page per row** (5,695 pages for the biggest coach's 12 words).
  ``ix_document_terms_coach_id_term`` now ``INCLUDE``s ``document_id`` and ``df``, so it is an index-only
  scan (5 ms in all).

The scoring is unchanged: BM25 (Robertson & Zaragoza 2009; Lucene's idf) over the chunks holding the rarest
query words within ``p_budget`` postings (Moffat & Zobel's "continue" strategy), as 0028 describes; it stays a
SECURITY DEFINER function filtering by ``app_current_coach_id()`` for the reason 0028 gives.

Both indexes are built in the migration's transaction, so writes to ``chunks`` and ``document_terms`` wait for
them (11 s and 8 s for 196,000 chunks here).

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE
from app.db.migrate import revision_module

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = "bm25_ranking(text, text, integer, float8, float8, float8)"
_RANKING = """
    CREATE FUNCTION bm25_ranking(p_query text, p_model text, p_n integer, p_k1 float8, p_b float8, p_budget float8)
    RETURNS TABLE (chunk_id uuid) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    WITH docs AS (SELECT id, indexed_chunks, indexed_tokens FROM documents
                  WHERE coach_id = app_current_coach_id() AND embedding_model = p_model AND status <> 'failed'),
    collection AS (SELECT coalesce(sum(indexed_chunks), 0)::float8 AS n,
                          greatest(coalesce(sum(indexed_tokens), 0)::float8 / greatest(sum(indexed_chunks), 1), 1)
                              AS avgdl
                   FROM docs),
    params AS (SELECT CAST(p_k1 AS float8) AS k1, CAST(p_b AS float8) AS b),
    words AS (SELECT DISTINCT t.word FROM unnest(to_tsvector('english', p_query)) AS t(word, positions, weights)),
    frequencies AS MATERIALIZED (
        SELECT w.word, f.df FROM words w
        CROSS JOIN LATERAL (SELECT sum(dt.df)::float8 AS df FROM document_terms dt
                            WHERE dt.coach_id = app_current_coach_id() AND dt.term = w.word
                              AND dt.document_id IN (SELECT id FROM docs)) f
        WHERE f.df > 0
    ),
    terms AS MATERIALIZED (
        SELECT f.word, ln(1 + (c.n - f.df + 0.5) / (f.df + 0.5)) AS idf,
               sum(f.df) OVER (ORDER BY f.df, f.word) AS postings, row_number() OVER (ORDER BY f.df, f.word) AS rarity
        FROM frequencies f CROSS JOIN collection c
    ),
    candidates AS (SELECT string_agg(quote_literal(word), ' | ')::tsquery AS q FROM terms
                   WHERE postings <= p_budget OR rarity = 1),
    matched AS MATERIALIZED (
        SELECT ch.id, ch.token_count, ch.tsv FROM chunks ch
        WHERE ch.coach_id = app_current_coach_id() AND ch.tsv @@ (SELECT q FROM candidates)
          AND ch.document_id IN (SELECT id FROM docs)
    ),
    hits AS MATERIALIZED (
        SELECT m.id, m.token_count, t.word, coalesce(array_length(t.positions, 1), 1) AS tf
        FROM matched m
        CROSS JOIN LATERAL unnest(ts_filter(setweight(m.tsv, 'A', (SELECT array_agg(word) FROM terms)), '{a}'))
            AS t(word, positions, weights)
    )
    SELECT h.id AS chunk_id FROM hits h JOIN terms t USING (word) CROSS JOIN params p CROSS JOIN collection c
    GROUP BY h.id
    ORDER BY sum(t.idf * h.tf * (p.k1 + 1) / (h.tf + p.k1 * (1 - p.b + p.b * h.token_count / c.avgdl))) DESC, h.id
    LIMIT p_n
    $$
"""
"""The top ``p_n`` of the current tenant's chunks for ``p_query`` by BM25, best first (see the module)."""


def _document_terms_index(include: str) -> None:
    op.execute("DROP INDEX ix_document_terms_coach_id_term")
    op.execute(f"CREATE INDEX ix_document_terms_coach_id_term ON document_terms (coach_id, term) {include}")


def _grant(signature: str) -> None:
    op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute("CREATE INDEX ix_chunks_coach_id_tsv ON chunks USING gin (coach_id, tsv)")
    op.execute("DROP INDEX ix_chunks_tsv")
    _document_terms_index("INCLUDE (document_id, df)")
    op.execute(f"DROP FUNCTION {revision_module('0028').SIGNATURE}")
    op.execute(_RANKING)
    _grant(_SIGNATURE)


def downgrade() -> None:
    """Back to 0028's indexes and function (``btree_gin`` stays: other objects may use it)."""
    before = revision_module("0028")
    op.execute(f"DROP FUNCTION {_SIGNATURE}")
    op.execute(before.RANKING)
    _grant(before.SIGNATURE)
    _document_terms_index("")
    op.execute("CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)")
    op.execute("DROP INDEX ix_chunks_coach_id_tsv")
