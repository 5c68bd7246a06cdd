"""episode_bm25(): the episodic lexical arm reads only the episodes holding a query word

Each chat turn's memory recall scores BM25 over the client's episodes (:mod:`app.memory.episodes`). It read every
episode of the client on every turn, twice (the collection statistics, then each episode's query lexemes), in
rows made wide by their inline 384-d vectors: linear in the client's history, 98–123 ms p50 of recall at 20,000
episodes (``bench/recall.py``), a client writing daily for five years.

- ``episodes.dl``: the document length BM25 uses (distinct lexemes, at least 1), a stored generated column, and
  ``ix_episodes_client_lengths`` on ``(client_id, embedding_model)`` carrying ``coach_id``, ``message_id`` and
  ``dl``: the statistics (N, average length) become an index-only scan of narrow entries.
- ``ix_episodes_terms``: a GIN index of each episode's lexemes (``tsvector_to_array(tsv)``), so the scored
  episodes are found as those whose lexemes overlap the query's (``&&``), not by reading every one.
- ``episode_bm25(...)``: the arm itself, a SECURITY DEFINER function as ``inbox_search`` (0027) and for the same
  reason: under row-level security PostgreSQL applies a condition through an index only when its operator is
  LEAKPROOF, and ``&&`` is not; run as the owner, whose read-all policy on episodes (``episode_bm25``, here) and
  messages (0027) leaves no policy condition before it, the function filters by ``app_current_coach_id()``
  itself. It returns the current tenant's message ids and scores only; the app role may only execute it.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-14 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from app.core.runtime import APP_ROLE

revision: str = "0037"
down_revision: str | None = "0036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "episode_bm25(uuid, text, text, uuid[], double precision, double precision, integer)"


def upgrade() -> None:
    op.execute("ALTER TABLE episodes ADD COLUMN dl integer GENERATED ALWAYS AS (greatest(length(tsv), 1)) STORED")
    op.execute(
        "CREATE INDEX ix_episodes_client_lengths ON episodes (client_id, embedding_model) "
        "INCLUDE (coach_id, message_id, dl)"
    )
    op.execute("CREATE INDEX ix_episodes_terms ON episodes USING gin (tsvector_to_array(tsv))")
    op.execute("CREATE POLICY episode_bm25 ON episodes FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        """
        CREATE FUNCTION episode_bm25(
            p_client_id uuid, p_model text, p_query text, p_exclude uuid[], p_k1 float8, p_b float8, p_limit integer
        ) RETURNS TABLE (message_id uuid, score float8)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS
        $$
        WITH q AS (SELECT tsvector_to_array(to_tsvector('english', p_query)) AS lexemes),
        remembered AS NOT MATERIALIZED (
            SELECT e.message_id, e.dl, e.tsv
            FROM episodes e
            WHERE e.coach_id = app_current_coach_id() AND e.client_id = p_client_id AND e.embedding_model = p_model
              AND NOT EXISTS (SELECT FROM messages f WHERE f.id = e.message_id AND f.forgotten_at IS NOT NULL)
              AND NOT (e.message_id = ANY(p_exclude))
        ),
        stats AS (SELECT count(*)::float8 AS n, greatest(avg(r.dl), 1)::float8 AS avgdl FROM remembered r),
        hits AS (
            SELECT r.message_id, r.dl, t.lexeme, coalesce(array_length(t.positions, 1), 1) AS tf
            FROM remembered r
            CROSS JOIN LATERAL unnest(ts_filter(setweight(r.tsv, 'A', (SELECT lexemes FROM q)), '{a}'))
                AS t(lexeme, positions, weights)
            WHERE tsvector_to_array(r.tsv) && (SELECT lexemes FROM q)
        ),
        df AS (SELECT lexeme, count(*)::float8 AS df FROM hits GROUP BY lexeme)
        SELECT h.message_id,
               sum(ln(1 + (s.n - df.df + 0.5) / (df.df + 0.5))
                   * h.tf * (p_k1 + 1) / (h.tf + p_k1 * (1 - p_b + p_b * h.dl / s.avgdl))) AS score
        FROM hits h JOIN df USING (lexeme) CROSS JOIN stats s
        GROUP BY h.message_id ORDER BY score DESC, h.message_id LIMIT p_limit
        $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute("DROP POLICY episode_bm25 ON episodes")
    op.execute("DROP INDEX ix_episodes_terms")
    op.execute("DROP INDEX ix_episodes_client_lengths")
    op.execute("ALTER TABLE episodes DROP COLUMN dl")
