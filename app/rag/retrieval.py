"""Hybrid retrieval over one coach's chunks: nearest embeddings (cosine) + PostgreSQL full-text, fused by
Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009: score = Σ 1 / (60 + rank)).

The vector arm is planned per tenant (:func:`nearest_chunks`): a coach above ``VECTOR_INDEX_MIN_CHUNKS``
has an HNSW index of its own (a partial index over ``embedding::halfvec``, :mod:`app.rag.vector_index`);
every other coach is searched exactly through the ``coach_id`` btree (a few thousand distances)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import ColumnElement, bindparam, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.llm.base import EMBEDDING_DIMENSIONS
from app.rag.models import Chunk, Document

RRF_K = 60
CANDIDATES_PER_K = 4
"""Each ranker contributes ``k × CANDIDATES_PER_K`` candidates to the fusion."""
HNSW_EF_SEARCH = 400
"""``hnsw.ef_search`` of a big tenant's index scan: the candidate list the graph search keeps (pgvector's
default is 40). Measured with ``bench/scale.py`` at 1M chunks on the biggest coach (150,488 chunks, 60
queries): recall@10 0.89 / 0.94 / 0.95 at 100 / 200 / 400, p50 +37 % from 100 to 400. That synthetic data is
hard for any graph index (isotropic noise: the 10th and 11th neighbours differ by 0.0006 in cosine)."""

_SEARCH_SETTINGS = text(
    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),"
    " set_config('hnsw.ef_search', :ef_search, true),"
    " set_config('plan_cache_mode', 'force_custom_plan', true),"
    " set_config('enable_sort', 'off', true)"
)
_PLANNER_DEFAULTS = text(
    "SELECT set_config(name, reset_val, true) FROM pg_settings WHERE name IN ('plan_cache_mode', 'enable_sort')"
)


def _halfvec_distance(query_embedding: list[float]) -> ColumnElement[float]:
    """Cosine distance (0..2) between ``chunks.embedding`` and ``query_embedding``, both cast to
    ``halfvec(EMBEDDING_DIMENSIONS)``: the very expression the per-tenant HNSW indexes are built on (an
    expression index serves only a query that orders by the same expression)."""
    half = HALFVEC(EMBEDDING_DIMENSIONS)
    distance: ColumnElement[float] = cast(Chunk.embedding, half).cosine_distance(
        bindparam("query_embedding", query_embedding, type_=half)
    )
    return distance


@dataclass(frozen=True)
class RetrievedChunk:
    """A retrieved passage. ``score`` is the cosine similarity (−1..1) of its embedding to the query;
    ``rrf`` the fused rank score that ordered it; ``page`` the first page it spans (1-based) or ``None``."""

    chunk_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    page: int | None
    text: str
    score: float
    rrf: float

    def citation(self) -> dict[str, object]:
        """The citation stored on an AI message: ``{document_id, title, page, chunk_id, score}``."""
        return {
            "document_id": str(self.document_id),
            "title": self.title,
            "page": self.page,
            "chunk_id": str(self.chunk_id),
            "score": round(self.score, 4),
        }


async def nearest_chunks(
    session: AsyncSession,
    coach_id: uuid.UUID,
    *,
    query_embedding: list[float],
    embedding_model: str,
    limit: int,
) -> list[uuid.UUID]:
    """Ids of the ``limit`` chunks of ``coach_id`` nearest to ``query_embedding`` (cosine on ``halfvec``),
    nearest first, only from documents embedded with ``embedding_model``.

    The plan depends on the tenant: its partial HNSW index when it has one (:mod:`app.rag.vector_index`),
    read with pgvector ≥ 0.8 iterative scans (``hnsw.iterative_scan = relaxed_order``; the materialised CTE
    re-sorts the relaxed order) and ``hnsw.ef_search = HNSW_EF_SEARCH``; otherwise an exact search through the
    ``coach_id`` btree. A partial index matches only a plan made for this ``coach_id``: asyncpg prepares
    statements, and PostgreSQL's generic plan of a prepared statement (chosen after five executions) would
    ignore the index, so ``plan_cache_mode = force_custom_plan`` holds for this one query. With
    ``ef_search = HNSW_EF_SEARCH`` the planner priced the index above an exact search for coaches of 2k–12k
    chunks (3 of 200 such queries used their index, at a p95 of 143 ms), so ``enable_sort = off`` for this
    query too: a coach with an index is read through it (no top-N sort), one without still gets the sort, its
    only plan. Both settings return to the session's values afterwards. Must run inside a tenant transaction
    (the settings are ``SET LOCAL``).
    """
    await session.execute(_SEARCH_SETTINGS, {"ef_search": str(HNSW_EF_SEARCH)})
    docs = select(Document.id).where(Document.coach_id == coach_id, Document.embedding_model == embedding_model)
    distance = _halfvec_distance(query_embedding)
    nearest = (
        select(Chunk.id.label("id"), distance.label("distance"))
        .where(Chunk.coach_id == coach_id, Chunk.document_id.in_(docs))
        .order_by(distance)
        .limit(limit)
        .cte("nearest")
        .prefix_with("MATERIALIZED")
    )
    ids = list((await session.execute(select(nearest.c.id).order_by(nearest.c.distance))).scalars())
    await session.execute(_PLANNER_DEFAULTS)
    return ids


async def retrieve(
    session: AsyncSession,
    coach_id: uuid.UUID,
    *,
    query: str,
    query_embedding: list[float],
    embedding_model: str,
    k: int,
) -> list[RetrievedChunk]:
    """Top-``k`` chunks of ``coach_id`` for ``query``, only from documents embedded with ``embedding_model``:
    :func:`nearest_chunks` and full-text matches, ``k × CANDIDATES_PER_K`` of each, fused by RRF. Must run
    inside a tenant transaction.
    """
    n = k * CANDIDATES_PER_K
    docs = select(Document.id).where(Document.coach_id == coach_id, Document.embedding_model == embedding_model)
    vector_ids = await nearest_chunks(
        session, coach_id, query_embedding=query_embedding, embedding_model=embedding_model, limit=n
    )

    tsquery = func.websearch_to_tsquery("english", query)
    lexical = (
        select(Chunk.id)
        .where(Chunk.coach_id == coach_id, Chunk.document_id.in_(docs), Chunk.tsv.op("@@")(tsquery))
        .order_by(func.ts_rank_cd(Chunk.tsv, tsquery).desc())
        .limit(n)
    )
    lexical_ids = list((await session.scalars(lexical)).all())

    fused: dict[uuid.UUID, float] = {}
    for ranking in (vector_ids, lexical_ids):
        for rank, chunk_id in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    top = sorted(fused, key=lambda cid: fused[cid], reverse=True)[:k]
    if not top:
        return []
    rows = await session.execute(
        select(
            Chunk.id,
            Chunk.document_id,
            Document.title,
            Chunk.page_start,
            Chunk.text,
            (1 - Chunk.embedding.cosine_distance(query_embedding)).label("similarity"),
        )
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.id.in_(top))
    )
    by_id = {
        r.id: RetrievedChunk(r.id, r.document_id, r.title, r.page_start, r.text, float(r.similarity), fused[r.id])
        for r in rows
    }
    return [by_id[cid] for cid in top if cid in by_id]
