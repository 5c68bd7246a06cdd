"""Hybrid retrieval over one coach's chunks: pgvector HNSW (cosine) + PostgreSQL full-text, fused by
Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009: score = Σ 1 / (60 + rank))."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.rag.models import Chunk, Document, DocumentStatus

RRF_K = 60
CANDIDATES_PER_K = 4
"""Each ranker contributes ``k × CANDIDATES_PER_K`` candidates to the fusion."""


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


async def retrieve(
    session: AsyncSession,
    coach_id: uuid.UUID,
    *,
    query: str,
    query_embedding: list[float],
    embedding_model: str,
    k: int,
) -> list[RetrievedChunk]:
    """Top-``k`` chunks of ``coach_id`` for ``query``, only from documents embedded with ``embedding_model``
    that did not fail: a document still ``processing`` contributes the chunks committed so far.

    The vector arm uses pgvector ≥ 0.8 iterative index scans (``hnsw.iterative_scan = relaxed_order``) so a
    filtered HNSW scan keeps going until it has enough rows of this tenant; the materialised CTE re-sorts
    the relaxed order. Must run inside a tenant transaction (``SET LOCAL`` scopes to it).
    """
    n = k * CANDIDATES_PER_K
    await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    docs = select(Document.id).where(
        Document.coach_id == coach_id,
        Document.embedding_model == embedding_model,
        Document.status != DocumentStatus.FAILED,
    )
    distance = Chunk.embedding.cosine_distance(query_embedding)
    nearest = (
        select(Chunk.id.label("id"), distance.label("distance"))
        .where(Chunk.coach_id == coach_id, Chunk.document_id.in_(docs))
        .order_by(distance)
        .limit(n)
        .cte("nearest")
        .prefix_with("MATERIALIZED")
    )
    vector_ids = list((await session.execute(select(nearest.c.id).order_by(nearest.c.distance))).scalars())

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
            (1 - distance).label("similarity"),
        )
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.id.in_(top))
    )
    by_id = {
        r.id: RetrievedChunk(r.id, r.document_id, r.title, r.page_start, r.text, float(r.similarity), fused[r.id])
        for r in rows
    }
    return [by_id[cid] for cid in top if cid in by_id]
