"""Hybrid retrieval over one coach's chunks: nearest embeddings (cosine) + PostgreSQL full-text scored by
BM25, fused by weighted Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009: score = Σ wᵢ / (k + rankᵢ)),
with near-duplicate chunks collapsed.

The vector arm is planned per tenant (:func:`nearest_chunks`): a coach above ``VECTOR_INDEX_MIN_CHUNKS``
has an HNSW index of its own (a partial index over ``embedding::halfvec``, :mod:`app.rag.vector_index`);
every other coach is searched exactly through the ``coach_id`` btree (a few thousand distances).

The lexical arm was measured on SciFact (``bench/retrieval.py``): ``ts_rank_cd`` over ``websearch_to_tsquery``
needs every query word in a chunk and finds nothing for most long questions; BM25 over the same ``tsvector``
(any query word, Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and Beyond",
k1 = 1.2, b = 0.75, idf = ln(1 + (N − df + 0.5)/(df + 0.5)) as in Lucene) scored best and is the default.
Its collection statistics are kept by triggers as chunks are written (migration 0028), and a big coach's
ranking scores only the chunks holding its rarest query words (:data:`_BM25`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Select, bindparam, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.vectors import BinaryHalfVec
from app.llm.base import EMBEDDING_DIMENSIONS, ProviderError
from app.llm.rerank import HttpReranker
from app.rag.chunking import cited_locator
from app.rag.models import Chunk, Document, DocumentStatus
from app.rag.resemblance import shingles

log = logging.getLogger(__name__)

CANDIDATES_PER_K = 4
"""Each ranker contributes ``k × CANDIDATES_PER_K`` candidates to the fusion."""
HNSW_EF_SEARCH = 400
"""``hnsw.ef_search`` of a big tenant's index scan: the candidate list the graph search keeps (pgvector's
default is 40). Measured with ``bench/scale.py`` at 1M chunks on the biggest coach (150,488 chunks, 60
queries): recall@10 0.89 / 0.94 / 0.95 at 100 / 200 / 400, p50 +37 % from 100 to 400. That synthetic data is
hard for any graph index (isotropic noise: the 10th and 11th neighbours differ by 0.0006 in cosine)."""

_DENSE = text("SELECT chunk_id FROM dense_ranking(:coach_id, :query, :model, :n, :ef_search)").bindparams(
    bindparam("query", type_=BinaryHalfVec(EMBEDDING_DIMENSIONS))
)
"""The dense arm in one round trip (migration 0029): the search's settings last for the function's call."""


BM25_K1 = 1.2
BM25_B = 0.75
NEAR_DUPLICATE_JACCARD = 0.8
"""Two chunks whose word-trigram sets overlap this much (Jaccard) say the same thing: the lower one is dropped."""

LexicalMethod = Literal["bm25", "ts_rank_cd"]


@dataclass(frozen=True)
class Fusion:
    """Weighted RRF: a chunk scores ``dense_weight / (k + dense rank) + lexical_weight / (k + lexical rank)``."""

    k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0


FUSION = Fusion(k=40, lexical_weight=0.75)
"""The production fusion, tuned by nDCG@10 on a seeded half (seed 16) of the SciFact dev queries
(``bench/retrieval.py``; grid k ∈ {1 … 100} × lexical weight ∈ {0.25 … 4}): 0.802 on that half, 0.841 on the
held-out half (plain RRF k = 60: 0.841), on the 2,208 abstracts and 408 fully judged queries a partial ingestion
reached. Dense alone 0.789, BM25 alone 0.793 on the held-out half."""


@dataclass(frozen=True)
class Rankings:
    """Chunk ids best first: the dense arm, the lexical arm and their fusion; ``similarity`` holds each dense
    candidate's cosine similarity."""

    dense: list[uuid.UUID]
    lexical: list[uuid.UUID]
    fused: list[uuid.UUID]
    fused_scores: dict[uuid.UUID, float]


@dataclass(frozen=True)
class RetrievedChunk:
    """A retrieved passage. ``score`` is the cosine similarity (−1..1) of its embedding to the query;
    ``rrf`` the fused rank score that ordered it; ``page`` the first page it spans (1-based) or ``None``;
    ``locator`` what is cited instead of the page (:func:`~app.rag.chunking.cited_locator`): a transcript
    passage's start time (``"HH:MM:SS"``), a PDF page's own label (``"p. xv"``), the pages a passage spans across
    a page break (``"pp. 42–43"`` by their labels, ``"pp. 52–53"`` by their numbers), or ``None``.
    ``text`` is the chunk as written: its contextual header is never part of it."""

    chunk_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    page: int | None
    text: str
    score: float
    rrf: float
    locator: str | None = None

    def citation(self) -> dict[str, object]:
        """The citation stored on an AI message: ``{document_id, title, page, chunk_id, score}``, plus
        ``locator`` when the passage has one (a transcript's time, a PDF page's label, the pages it spans)."""
        cited: dict[str, object] = {
            "document_id": str(self.document_id),
            "title": self.title,
            "page": self.page,
            "chunk_id": str(self.chunk_id),
            "score": round(self.score, 4),
        }
        if self.locator:
            cited["locator"] = self.locator
        return cited


def source_label(title: str, page: int | None, locator: str | None = None) -> str:
    """Where a passage is, as cited to people and the model: ``"Title, 00:12:31"`` for a transcript,
    ``"Title, p. xv"`` for a PDF page with its own label, ``"Title, pp. 42–43"`` for a passage across a page break
    (its ``locator``: :func:`~app.rag.chunking.cited_locator`), ``"Title, p. 12"`` for a paged document, else the
    title. A citation stored before passages were cited by every page they span names its first page alone, and is
    shown so. ``static/chat.js`` (``sourceLabel``) and ``templates/partials/message.html`` label alike."""
    if locator:
        return f"{title}, {locator}"
    return f"{title}, p. {page}" if page else title


BM25_CANDIDATES = 2000
"""The postings budget of a BM25 ranking: the chunks scored are those holding the rarest query words, as many
words as their document frequencies fit in this budget (always the rarest one). Measured with
``bench/lexical.py``."""


def _dense_settings() -> dict[str, int]:
    """``dense_ranking``'s search settings, bound by :data:`_DENSE` and :data:`_PASSAGES`."""
    return {"ef_search": HNSW_EF_SEARCH}


def _bm25_settings() -> dict[str, float]:
    """``bm25_ranking``'s parameters, bound by :data:`_BM25` and :data:`_PASSAGES` (read at each call:
    ``bench/lexical.py`` and a test change ``BM25_CANDIDATES``)."""
    return {"k1": BM25_K1, "b": BM25_B, "budget": float(BM25_CANDIDATES)}


_BM25 = text("SELECT chunk_id FROM bm25_ranking(:text, :model, :n, :k1, :b, :budget)")
"""BM25 over the coach's searchable chunks: ``bm25_ranking`` of migrations 0028 (the method) and 0030 (its
indexes per tenant). It never reads the coach's whole collection (the statement before it read every chunk of
the coach for the collection statistics, and under row-level security could not use the full-text index: 15 s
at the median for a coach of 150,000 chunks in ``bench/lexical.py``), and it finds the matching chunks through
``ix_chunks_coach_id_tsv``, which holds each coach's postings apart."""


def _searchable_documents(coach_id: uuid.UUID, embedding_model: str) -> Select[uuid.UUID]:
    """Ids of the coach's documents embedded with ``embedding_model`` that did not fail: a document still
    ``processing`` contributes the chunks committed so far (:mod:`app.rag.pipeline`), but for a copy being
    processed again (``replaces_id``: the original answers until it is ready); a failed one's chunks are kept
    for a re-run but not retrieved. The SQL functions ``dense_ranking`` and ``bm25_ranking`` filter the same way
    (migration 0051)."""
    return select(Document.id).where(
        Document.coach_id == coach_id,
        Document.embedding_model == embedding_model,
        Document.status != DocumentStatus.FAILED,
        or_(Document.replaces_id.is_(None), Document.status == DocumentStatus.READY),
    )


async def nearest_chunks(
    session: AsyncSession,
    coach_id: uuid.UUID,
    *,
    query_embedding: list[float],
    embedding_model: str,
    limit: int,
) -> list[uuid.UUID]:
    """Ids of the ``limit`` chunks of ``coach_id`` nearest to ``query_embedding`` (cosine on ``halfvec``),
    nearest first, only from documents embedded with ``embedding_model`` that did not fail (as
    :func:`_searchable_documents`).

    The plan depends on the tenant: its partial HNSW index when it has one (:mod:`app.rag.vector_index`),
    read with pgvector ≥ 0.8 iterative scans (``hnsw.iterative_scan = relaxed_order``; a materialised CTE
    re-sorts the relaxed order) and ``hnsw.ef_search = HNSW_EF_SEARCH``; otherwise an exact search through the
    ``coach_id`` btree. One statement, ``dense_ranking()`` (migration 0029), sets them and plans the query for
    this coach (a dynamic command, planned on every call): a partial index matches only a plan made for its
    ``coach_id`` (PostgreSQL's generic plan of a prepared statement would ignore it), and with ``ef_search =
    HNSW_EF_SEARCH`` the planner priced the index above an exact search for coaches of 2k–12k chunks (3 of 200
    such queries used their index, at a p95 of 143 ms), so the function also turns ``enable_sort`` off: a coach
    with an index is read through it (no top-N sort), one without still gets the sort, its only plan. The
    settings are the function's own (``SET`` clauses): the rest of the transaction plans as before. Must run
    inside a tenant transaction (row-level security: another tenant's ``coach_id`` finds nothing).
    """
    params = {
        "coach_id": coach_id,
        "query": query_embedding,
        "model": embedding_model,
        "n": limit,
        **_dense_settings(),
    }
    return list((await session.execute(_DENSE, params)).scalars())


async def lexical_ranking(
    session: AsyncSession,
    coach_id: uuid.UUID,
    query: str,
    embedding_model: str,
    n: int,
    method: LexicalMethod = "bm25",
) -> list[uuid.UUID]:
    """The ``n`` best chunks for ``query`` by full text (header and text, English stemming and stop words).

    ``bm25`` (default): any query word matches; BM25 with the coach's own term statistics (document frequency
    over the coach's chunks, length = cl100k tokens), scoring the chunks that hold the rarest query words within
    a budget of ``BM25_CANDIDATES`` postings (:data:`_BM25`); it ranks the session's tenant, which must be
    ``coach_id``. ``ts_rank_cd``: PostgreSQL's cover density over ``websearch_to_tsquery`` (every word must
    match), kept for comparison."""
    if method == "bm25":
        params = {"text": query, "model": embedding_model, "n": n, **_bm25_settings()}
        return list((await session.execute(_BM25, params)).scalars())
    docs = _searchable_documents(coach_id, embedding_model)
    tsquery = func.websearch_to_tsquery("english", query)
    lexical = (
        select(Chunk.id)
        .where(Chunk.coach_id == coach_id, Chunk.document_id.in_(docs), Chunk.tsv.op("@@")(tsquery))
        .order_by(func.ts_rank_cd(Chunk.tsv, tsquery).desc())
        .limit(n)
    )
    return list((await session.scalars(lexical)).all())


def rrf_fuse(rankings: Sequence[Sequence[uuid.UUID]], weights: Sequence[float], k: int) -> dict[uuid.UUID, float]:
    """Weighted Reciprocal Rank Fusion: ``{id: Σ weight / (k + rank)}`` over the rankings (best first,
    rank 1-based); an id missing from a ranking gets nothing from it."""
    fused: dict[uuid.UUID, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item_id in enumerate(ranking, start=1):
            fused[item_id] = fused.get(item_id, 0.0) + weight / (k + rank)
    return fused


def fuse(dense: Sequence[uuid.UUID], lexical: Sequence[uuid.UUID], fusion: Fusion = FUSION) -> dict[uuid.UUID, float]:
    """Weighted RRF scores (:func:`rrf_fuse`) of every chunk in either ranking, with ``fusion``'s weights and k."""
    return rrf_fuse([dense, lexical], [fusion.dense_weight, fusion.lexical_weight], fusion.k)


async def rank(
    session: AsyncSession,
    coach_id: uuid.UUID,
    *,
    query: str,
    query_embedding: Sequence[float],
    embedding_model: str,
    n: int,
    fusion: Fusion = FUSION,
    lexical_method: LexicalMethod = "bm25",
) -> Rankings:
    """Both arms (``n`` candidates each) and their fusion, best first: the production ranking before near
    duplicates are collapsed (:func:`retrieve`), and what ``opencoach eval retrieval`` scores."""
    dense = await nearest_chunks(
        session, coach_id, query_embedding=list(query_embedding), embedding_model=embedding_model, limit=n
    )
    lexical = await lexical_ranking(session, coach_id, query, embedding_model, n, lexical_method)
    scores = fuse(dense, lexical, fusion)
    return Rankings(dense, lexical, sorted(scores, key=lambda cid: scores[cid], reverse=True), scores)


def collapse_near_duplicates(
    texts: Sequence[str], threshold: float = NEAR_DUPLICATE_JACCARD, *, limit: int | None = None
) -> list[int]:
    """Indexes of ``texts`` (best first) to keep: a text whose word-trigram set (:func:`~app.rag.resemblance.
    shingles`) has Jaccard similarity (resemblance) ≥ ``threshold`` with an earlier kept one is dropped (a handful
    of passages per query). With a
    ``limit``, stops once that many are kept: the texts after them are never compared (nor split into
    trigrams, the costly part)."""
    kept: list[int] = []
    seen: list[set[tuple[str, ...]]] = []
    for index, passage in enumerate(texts):
        if limit is not None and len(kept) >= limit:
            break
        own = shingles(passage)
        if any(len(own & other) >= threshold * len(own | other) for other in seen):
            continue
        kept.append(index)
        seen.append(own)
    return kept


_PASSAGES = text(
    f"""
    WITH dense AS (
        SELECT d.chunk_id, d.rank
        FROM dense_ranking(:coach_id, CAST(:query AS halfvec({EMBEDDING_DIMENSIONS})), :model, :n, :ef_search)
            WITH ORDINALITY AS d(chunk_id, rank)),
    lexical AS (
        SELECT l.chunk_id, l.rank
        FROM bm25_ranking(:text, :model, :n, :k1, :b, :budget) WITH ORDINALITY AS l(chunk_id, rank)),
    fused AS (
        SELECT chunk_id,
               coalesce(CAST(:dense_weight AS float8) / (:rrf_k + dense.rank), 0)
                   + coalesce(CAST(:lexical_weight AS float8) / (:rrf_k + lexical.rank), 0) AS rrf,
               coalesce(dense.rank, :n + lexical.rank) AS arrival
        FROM dense FULL JOIN lexical USING (chunk_id)
        ORDER BY rrf DESC, arrival
        LIMIT :top)
    SELECT c.id, c.document_id, d.title, c.page_start, c.page_end, c.locator, c.text,
           1 - (c.embedding <=> :query) AS similarity, f.rrf
    FROM fused f JOIN chunks c ON c.id = f.chunk_id JOIN documents d ON d.id = c.document_id
    ORDER BY f.rrf DESC, f.arrival
    """
).bindparams(bindparam("query", type_=Chunk.embedding.type))
"""The turn's passages in one round trip: both arms (``dense_ranking`` and ``bm25_ranking``, as
:func:`nearest_chunks` and :func:`lexical_ranking` call them, their ranks by ``WITH ORDINALITY``), their
weighted RRF (:func:`fuse`'s arithmetic in ``float8``, in the same order, so the same scores), the best ``top``
and their rows. Ties keep :func:`rank`'s order (Python's stable sort over the dense candidates, then the
lexical ones): ``arrival``. Before, the arms and the rows were three statements, one after the other."""


async def retrieve(
    session: AsyncSession,
    coach_id: uuid.UUID,
    *,
    query: str,
    query_embedding: list[float],
    embedding_model: str,
    k: int,
    for_reranking: bool = False,
) -> list[RetrievedChunk]:
    """Top-``k`` chunks of ``coach_id`` for ``query``, only from documents embedded with ``embedding_model``:
    ranked as :func:`rank` ranks them, with ``k × CANDIDATES_PER_K`` candidates per arm and :data:`FUSION`, in
    one statement (:data:`_PASSAGES`), then near duplicates collapsed (:func:`collapse_near_duplicates`, over
    the best ``2k``). ``for_reranking``: every chunk kept of the best ``2k``, for :func:`rerank` (after the
    transaction: its HTTP call holds no database connection). Must run inside a tenant transaction."""
    n = k * CANDIDATES_PER_K
    params = {
        "coach_id": coach_id,
        "query": query_embedding,
        "model": embedding_model,
        "n": n,
        "text": query,
        **_dense_settings(),
        **_bm25_settings(),
        "dense_weight": FUSION.dense_weight,
        "lexical_weight": FUSION.lexical_weight,
        "rrf_k": FUSION.k,
        "top": 2 * k,
    }
    rows = await session.execute(_PASSAGES, params)
    ordered = [
        RetrievedChunk(
            r.id,
            r.document_id,
            r.title,
            r.page_start,
            r.text,
            float(r.similarity),
            r.rrf,
            cited_locator(r.page_start, r.page_end, r.locator),
        )
        for r in rows
    ]
    # the reranker reorders every passage kept; without one, the first k kept are the answer
    kept = [ordered[i] for i in collapse_near_duplicates([c.text for c in ordered], limit=None if for_reranking else k)]
    return kept


async def rerank(reranker: HttpReranker, query: str, passages: list[RetrievedChunk], k: int) -> list[RetrievedChunk]:
    """The best ``k`` of ``passages`` (:func:`retrieve`'s, ``for_reranking``) by the reranker's scores, best first
    (stable); in the fused order when the reranker fails (logged)."""
    try:
        scores = await reranker.scores(query, [p.text for p in passages])
    except ProviderError as exc:
        log.warning("%s; keeping the fused order", exc)
        return passages[:k]
    order = sorted(range(len(passages)), key=lambda i: -scores[i])
    return [passages[i] for i in order][:k]
