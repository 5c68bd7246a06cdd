"""Document retrieval on a BEIR-layout corpus (Thakur et al., NeurIPS 2021 Datasets, "BEIR: A Heterogeneous
Benchmark for Zero-shot Evaluation of Information Retrieval Models").

A BEIR directory holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and
``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``; header line). Every corpus entry becomes one
document of a scratch coach (its title as the document title, its text as a ``.txt`` file) and goes through the
real ingestion pipeline (:meth:`app.rag.service.DocumentService.ingest`: normalise, chunk, contextual headers,
embed, store). Each query with judgments is embedded by the coach's embedder and ranked by the production
path (:func:`app.rag.retrieval.rank`): the dense arm, the lexical arm and their fusion; a document ranks where
its best chunk ranks. Scores are the BEIR/trec_eval ones: nDCG@10 (gain = judgment score, discount
log2(rank + 1)), recall@100 (share of relevant documents in the top 100) and MRR@10 (1 / rank of the first
relevant document in the top 10, else 0), averaged over queries. Latency is the production retrieval of one
query (:func:`app.rag.retrieval.retrieve` with ``RETRIEVAL_TOP_K``, the query's embedding included), p50/p95 in ms.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.core.errors import EvalDataError
from app.rag.models import Chunk, Document, DocumentStatus
from app.rag.retrieval import FUSION, Fusion, LexicalMethod, Rankings, rank, retrieve

ARMS = ("dense", "lexical", "fused")
CANDIDATES = 200
"""Chunks per arm for scoring: enough for 100 distinct documents when a document has a few chunks."""
INGEST_CONCURRENCY = 4
ProgressHook = Callable[[str], None]


@dataclass(frozen=True)
class BeirSet:
    """A BEIR split: ``corpus`` maps document id → (title, text); ``queries`` query id → text (only queries
    with judgments); ``qrels`` query id → {document id: graded relevance > 0}."""

    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise EvalDataError(f"{path} not found (a BEIR directory holds corpus.jsonl, queries.jsonl and qrels/)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or "_id" not in row:
            raise EvalDataError(f"{path}:{number}: expected an object with an _id")
        rows.append(row)
    return rows


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise EvalDataError(f"{path} not found (--split picks qrels/<split>.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if number == 1 and parts[0] == "query-id":
            continue
        if not line.strip():
            continue
        if len(parts) != 3 or not parts[2].strip().lstrip("-").isdigit():
            raise EvalDataError(f"{path}:{number}: expected query-id<TAB>corpus-id<TAB>score")
        if int(parts[2]) > 0:
            qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = int(parts[2])
    return qrels


def load_beir(directory: Path, split: str = "dev") -> BeirSet:
    """Read a BEIR directory. Raises ``EvalDataError`` for a missing file, a malformed line, or judgments that
    name no known query or document."""
    corpus = {
        str(r["_id"]): (str(r.get("title") or ""), str(r.get("text") or "")) for r in _jsonl(directory / "corpus.jsonl")
    }
    all_queries = {str(r["_id"]): str(r.get("text") or "") for r in _jsonl(directory / "queries.jsonl")}
    qrels = {
        qid: {doc: score for doc, score in judged.items() if doc in corpus}
        for qid, judged in _qrels(directory / "qrels" / f"{split}.tsv").items()
        if qid in all_queries
    }
    qrels = {qid: judged for qid, judged in qrels.items() if judged}
    if not qrels:
        raise EvalDataError(f"qrels/{split}.tsv judges no query of queries.jsonl against corpus.jsonl")
    return BeirSet(corpus, {qid: all_queries[qid] for qid in qrels}, qrels)


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain and log2(rank + 1) discount (trec_eval's ``ndcg_cut``)."""
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:k]))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    """Share of the relevant documents among the top ``k``."""
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (0 when none)."""
    return next((1.0 / (i + 1) for i, doc in enumerate(ranked[:k]) if doc in relevant), 0.0)


def scores(runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """``{"ndcg@10", "recall@100", "mrr@10"}`` averaged over the queries of ``runs`` (query id → ranked ids)."""
    n = len(runs) or 1
    return {
        "ndcg@10": round(sum(ndcg_at(r, qrels[q]) for q, r in runs.items()) / n, 4),
        "recall@100": round(sum(recall_at(r, qrels[q]) for q, r in runs.items()) / n, 4),
        "mrr@10": round(sum(mrr_at(r, qrels[q]) for q, r in runs.items()) / n, 4),
    }


def documents_of(chunk_ids: Sequence[uuid.UUID], doc_of: Mapping[uuid.UUID, str]) -> list[str]:
    """Chunk ranking → document ranking: each document where its best chunk ranks."""
    return list(dict.fromkeys(doc_of[c] for c in chunk_ids if c in doc_of))


def split_queries(query_ids: Sequence[str], seed: int = 16, share: float = 0.5) -> tuple[list[str], list[str]]:
    """A seeded split of ``query_ids`` into (tuning, held-out): tuning takes the queries whose
    sha256(seed:id) falls in the first ``share`` (stable across runs and orderings)."""

    def bucket(qid: str) -> float:
        return int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    tuning = [q for q in query_ids if bucket(q) < share]
    return tuning, [q for q in query_ids if bucket(q) >= share]


@dataclass(frozen=True)
class SupportAnchors:
    """Anchors of :func:`app.handoff.signals.retrieval_support` fitted on best-passage cosines: ``low`` = median
    of the queries whose answer is not in the material, ``high`` = median of those whose answer is; ``auc`` =
    P(answerable cosine > unanswerable cosine), ties count half (Mann–Whitney U / (n₁n₂))."""

    low: float
    high: float
    auc: float

    def separation(self, answerable: Sequence[float], unanswerable: Sequence[float]) -> dict[str, float]:
        """Share of ``answerable`` cosines at or above the midpoint of the anchors (support ≥ 0.5) and of
        ``unanswerable`` ones below it."""
        mid = (self.low + self.high) / 2
        return {
            "answerable_supported": round(float(np.mean(np.asarray(answerable) >= mid)), 3),
            "unanswerable_unsupported": round(float(np.mean(np.asarray(unanswerable) < mid)), 3),
        }


def support_anchors(answerable: Sequence[float], unanswerable: Sequence[float]) -> SupportAnchors:
    """Fit :class:`SupportAnchors` on best-passage cosines of answerable and unanswerable queries. Raises
    ``EvalDataError`` when either list is empty."""
    if not answerable or not unanswerable:
        raise EvalDataError("support anchors need answerable and unanswerable queries")
    a, u = np.asarray(answerable, dtype=float), np.asarray(unanswerable, dtype=float)
    auc = float((a[:, None] > u[None, :]).mean() + 0.5 * (a[:, None] == u[None, :]).mean())
    return SupportAnchors(round(float(np.median(u)), 3), round(float(np.median(a)), 3), round(auc, 3))


async def scratch_coach(container: Container) -> uuid.UUID:
    """Sign up a throw-away evaluation coach; returns its id."""
    signup = await container.accounts.signup(
        "BEIR evaluation", f"beir-{uuid.uuid4().hex[:12]}@eval.opencoach.local", uuid.uuid4().hex
    )
    return signup.coach_id


async def ingest_corpus(
    container: Container, coach_id: uuid.UUID, beir: BeirSet, progress: ProgressHook | None = None
) -> dict[uuid.UUID, str]:
    """Ingest every corpus entry as a document of ``coach_id``. Returns chunk id → corpus id.
    Raises ``EvalDataError`` when a document fails ingestion."""
    corpus_of: dict[uuid.UUID, str] = {}
    rows: list[dict[str, Any]] = []
    for doc_id, (title, body) in beir.corpus.items():
        data = (body or title or doc_id).encode()
        row_id = uuid.uuid4()
        corpus_of[row_id] = doc_id
        rows.append(
            {
                "id": row_id,
                "coach_id": coach_id,
                "title": (title or doc_id)[:300],
                "filename": f"beir-{len(rows)}.txt",
                "content_type": "text/plain",
                "size_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "original": data,
                "status": DocumentStatus.QUEUED,
                "pages_done": 0,
                "chunks": 0,
            }
        )
    gate = asyncio.Semaphore(INGEST_CONCURRENCY)
    done = 0

    async def one(row: dict[str, Any]) -> None:
        nonlocal done
        async with gate:
            # stored just before it is ingested: a document left queued with no job for long is one the worker's
            # sweep queues again (app.rag.service.DocumentService.requeue_lost)
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                await uow.session.execute(insert(Document), [row])
            await container.documents.ingest(coach_id, row["id"], trusted=True)
        done += 1
        if progress and done % 50 == 0:
            progress(f"ingested {done}/{len(rows)} documents")

    await asyncio.gather(*(one(row) for row in rows))
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        failed = (
            await uow.session.execute(
                select(Document.id, Document.error).where(Document.status != DocumentStatus.READY)
            )
        ).all()
        if failed:
            raise EvalDataError(f"{len(failed)} corpus documents failed ingestion (first: {failed[0].error})")
        chunks = (await uow.session.execute(select(Chunk.id, Chunk.document_id))).all()
    return {c.id: corpus_of[c.document_id] for c in chunks}


async def rank_queries(
    container: Container,
    coach_id: uuid.UUID,
    queries: Mapping[str, str],
    *,
    lexical_method: LexicalMethod = "bm25",
    fusion: Fusion = FUSION,
    progress: ProgressHook | None = None,
    timed: int | None = None,
) -> tuple[dict[str, Rankings], list[float]]:
    """Every query's :class:`Rankings` (``CANDIDATES`` per arm) and the production retrieval latency, ms, of
    each (of the first ``timed`` queries only, when given)."""
    rankings: dict[str, Rankings] = {}
    latencies: list[float] = []
    top_k = container.settings.retrieval_top_k
    for number, (qid, query) in enumerate(queries.items(), start=1):
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            embedder = await container.registry.embedder_for(await uow.coach())
            started = time.perf_counter()
            [vector] = await embedder.embed([query])
            if timed is None or number <= timed:
                await retrieve(
                    uow.session, coach_id, query=query, query_embedding=vector, embedding_model=embedder.model, k=top_k
                )
                latencies.append((time.perf_counter() - started) * 1000)
            rankings[qid] = await rank(
                uow.session,
                coach_id,
                query=query,
                query_embedding=vector,
                embedding_model=embedder.model,
                n=CANDIDATES,
                fusion=fusion,
                lexical_method=lexical_method,
            )
        if progress and number % 25 == 0:
            progress(f"ranked {number}/{len(queries)} queries")
    return rankings, latencies


def report(
    beir: BeirSet, rankings: Mapping[str, Rankings], doc_of: Mapping[uuid.UUID, str], latencies: Sequence[float]
) -> dict[str, Any]:
    """The ``--json`` object: ``{"queries", "dense"|"lexical"|"fused": {"ndcg@10", "recall@100", "mrr@10"},
    "latency_ms": {"p50", "p95"}}``."""
    result: dict[str, Any] = {"queries": len(rankings)}
    for arm in ARMS:
        runs = {qid: documents_of(getattr(r, arm), doc_of) for qid, r in rankings.items()}
        result[arm] = scores(runs, beir.qrels)
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (0.0, 0.0)
    result["latency_ms"] = {"p50": round(float(p50), 1), "p95": round(float(p95), 1)}
    return result


async def evaluate(
    container: Container, beir: BeirSet, *, keep: bool = False, progress: ProgressHook | None = None
) -> dict[str, Any]:
    """Ingest ``beir``'s corpus into a scratch coach, rank every judged query, score (module docstring). The
    coach is deleted afterwards unless ``keep``."""
    coach_id = await scratch_coach(container)
    try:
        doc_of = await ingest_corpus(container, coach_id, beir, progress)
        rankings, latencies = await rank_queries(container, coach_id, beir.queries, progress=progress)
        return report(beir, rankings, doc_of, latencies)
    finally:
        if not keep:
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                await container.accounts.delete_coach(uow)
