"""dense_ranking(): the dense arm's nearest-chunk search in one statement, its planner settings local to it

``app.rag.retrieval.nearest_chunks`` needs three settings for its one query: pgvector's iterative scan
(``hnsw.iterative_scan = relaxed_order``) and candidate list (``hnsw.ef_search``) and ``enable_sort = off`` (so
that a coach with its own partial HNSW index is read through it); and it needs a plan made for the coach's own
id (a partial index matches only a plan that knows ``coach_id``; asyncpg prepares statements, and PostgreSQL's
generic plan would ignore it, hence ``plan_cache_mode = force_custom_plan`` until now). That took three round
trips: one ``set_config`` statement that also read the two planner settings' earlier values, the query, and one
that put them back for the rest of the transaction.

``dense_ranking(coach, query, model, n, ef_search)`` does it in one. It is a PL/pgSQL function with ``SET`` clauses
for the three settings: a ``set_config(…, true)`` inside a function that has a ``SET`` clause for the same
setting lasts until the function returns (PostgreSQL, CREATE FUNCTION, "SET"), so the caller's values come
back by themselves, also on error. The query runs through ``EXECUTE`` with the coach's id as a literal: PL/pgSQL
plans a dynamic command each time it runs and caches no plan, so every call is planned for its coach and the
coach's partial index (``app.rag.vector_index``) can match, whatever ``plan_cache_mode`` says. The function runs
as its caller (SECURITY INVOKER, the default): row-level security applies as before (another tenant's
``coach`` finds nothing).

It returns the ``n`` chunks of ``coach`` nearest to ``query`` (cosine distance on ``halfvec(384)``, the
expression of the partial indexes), nearest first, from the tenant's documents embedded with ``model`` that did
not fail.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = "dense_ranking(uuid, halfvec, text, integer, integer)"
_FUNCTION = """
    CREATE FUNCTION dense_ranking(p_coach uuid, p_query halfvec, p_model text, p_n integer, p_ef_search integer)
    RETURNS TABLE (chunk_id uuid) LANGUAGE plpgsql STABLE
    SET hnsw.iterative_scan = 'off' SET hnsw.ef_search = 40 SET enable_sort = on
    SET search_path = public AS $$
    BEGIN
        PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true),
                set_config('hnsw.ef_search', p_ef_search::text, true),
                set_config('enable_sort', 'off', true);
        RETURN QUERY EXECUTE format(
            'WITH nearest AS MATERIALIZED (
                 SELECT c.id, (c.embedding::halfvec(384)) <=> $1 AS distance
                 FROM chunks c
                 WHERE c.coach_id = %1$L AND c.document_id IN (
                     SELECT d.id FROM documents d
                     WHERE d.coach_id = %1$L AND d.embedding_model = $2 AND d.status <> ''failed'')
                 ORDER BY 2 LIMIT $3)
             SELECT id FROM nearest ORDER BY distance',
            p_coach)
        USING p_query, p_model, p_n;
    END $$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {_SIGNATURE}")
