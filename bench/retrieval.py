"""Retrieval tuning on a BEIR corpus: the lexical arm (``ts_rank_cd`` vs BM25) and the fusion weights.

The corpus is ingested once through the real pipeline (:func:`app.evals.retrieval.ingest_corpus`); every judged
query is ranked by the dense arm and by both lexical methods. The judged queries are split by a seeded hash
(:func:`app.evals.retrieval.split_queries`, 50/50): weighted-RRF parameters (``k``, lexical weight; dense
weight 1) are chosen by nDCG@10 on the tuning half only, and every row is reported on the held-out half.
The last line prints the production path's scores on all judged queries (the ``opencoach eval retrieval``
object). SciFact here has one judged split (BEIR's train queries), hence the split of its queries.

    .venv/bin/python bench/retrieval.py --beir ../shared/data/scifact
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from harness import attached_app, bench_app, console, print_table
from rich.table import Table
from sqlalchemy import select

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.evals.retrieval import (
    CANDIDATES,
    BeirSet,
    documents_of,
    ingest_corpus,
    load_beir,
    rank_queries,
    scores,
    scratch_coach,
    split_queries,
    support_anchors,
)
from app.llm.local import MiniLMEmbedder
from app.rag.models import Chunk, Document, DocumentStatus
from app.rag.retrieval import CANDIDATES_PER_K, FUSION, Fusion, fuse

KS = (1, 3, 5, 10, 20, 40, 60, 100)
LEXICAL_WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tune the lexical arm and fusion on a BEIR corpus.")
    parser.add_argument("--beir", type=Path, required=True, help="BEIR directory")
    parser.add_argument("--split", default="dev", help="qrels/<split>.tsv")
    parser.add_argument("--seed", type=int, default=16, help="seed of the tuning/held-out query split")
    parser.add_argument(
        "--attach", type=Path, help="data dir of an interrupted run (its PostgreSQL still holds the ingested part)"
    )
    parser.add_argument("--coach-id", help="with --attach: the scratch coach's id")
    parser.add_argument("--header-off", action="store_true", help="also rank by text-only chunk embeddings")
    parser.add_argument(
        "--cache",
        type=Path,
        help="directory for the ingested corpus's rankings and vectors: written by the first run, reused by the "
        "next ones (no second ingestion)",
    )
    return parser.parse_args()


def fused_runs(dense: dict[str, list[Any]], lexical: dict[str, list[Any]], fusion: Fusion, doc_of: Any) -> dict:
    runs = {}
    for qid in dense:
        s = fuse(dense[qid], lexical[qid], fusion)
        runs[qid] = documents_of(sorted(s, key=lambda c: s[c], reverse=True), doc_of)
    return runs


def tune(dense: dict, lexical: dict, qids: list[str], beir: BeirSet, doc_of: Any) -> tuple[Fusion, float]:
    best: tuple[Fusion, float] = (FUSION, -1.0)
    for k, weight in itertools.product(KS, LEXICAL_WEIGHTS):
        fusion = Fusion(k=k, dense_weight=1.0, lexical_weight=weight)
        ndcg = scores(fused_runs(_only(dense, qids), _only(lexical, qids), fusion, doc_of), beir.qrels)["ndcg@10"]
        if ndcg > best[1]:
            best = (fusion, ndcg)
    return best


def _only(runs: dict, qids: list[str]) -> dict:
    return {q: runs[q] for q in qids}


async def collect(beir: BeirSet) -> dict[str, Any]:
    """Ingest once, then :func:`ranked`."""
    async with bench_app() as (container, _):
        with console.status("Ingesting…") as status:
            coach_id = await scratch_coach(container)
            doc_of = await ingest_corpus(container, coach_id, beir, lambda t: status.update(t))
        return await ranked(container, coach_id, beir, doc_of)


async def collect_attached(beir: BeirSet, data_dir: Path, coach_id: uuid.UUID) -> dict[str, Any]:
    """:func:`ranked` over the part of the corpus an interrupted run left ingested in ``data_dir``: the ready
    documents (``beir-<index>.txt``, index into ``corpus.jsonl``) and the queries whose judged documents are all
    among them. Fewer distractors than the whole corpus: scores run higher than on the full set."""
    async with attached_app(data_dir) as container:
        order = list(beir.corpus)
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            ready = (
                await uow.session.execute(
                    select(Chunk.id, Document.filename)
                    .join(Document, Document.id == Chunk.document_id)
                    .where(Document.status == DocumentStatus.READY)
                )
            ).all()
        doc_of = {r.id: order[int(r.filename.removeprefix("beir-").removesuffix(".txt"))] for r in ready}
        present = set(doc_of.values())
        qids = [q for q in beir.queries if set(beir.qrels[q]) <= present]
        console.print(f"{len(present)} documents ingested; {len(qids)} of {len(beir.queries)} queries fully judged")
        subset = BeirSet({d: beir.corpus[d] for d in present}, {q: beir.queries[q] for q in qids}, beir.qrels)
        return await ranked(container, coach_id, subset, doc_of, with_ts_rank_cd=False, timed=100)


async def ranked(
    container: Container,
    coach_id: uuid.UUID,
    beir: BeirSet,
    doc_of: dict[uuid.UUID, str],
    *,
    with_ts_rank_cd: bool = True,
    timed: int | None = None,
) -> dict[str, Any]:
    """Rank every judged query by both lexical methods; the chunks (header, text, vector) and the query vectors
    come along so the analysis can run again from the cache."""
    with console.status("Ranking (BM25)…") as status:
        bm25, latencies = await rank_queries(container, coach_id, beir.queries, progress=status.update, timed=timed)
    tsr = bm25
    if with_ts_rank_cd:
        with console.status("Ranking (ts_rank_cd)…") as status:
            tsr, _ = await rank_queries(
                container, coach_id, beir.queries, lexical_method="ts_rank_cd", progress=status.update, timed=0
            )
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        rows = (
            await uow.session.execute(
                select(Chunk.id, Chunk.header, Chunk.text, Chunk.embedding).where(Chunk.id.in_(list(doc_of)))
            )
        ).all()
    query_vectors = await container.registry.local_embedder().embed(list(beir.queries.values()))
    return {
        "doc_of": {str(c): d for c, d in doc_of.items()},
        "dense": {q: [str(c) for c in r.dense] for q, r in bm25.items()},
        "bm25": {q: [str(c) for c in r.lexical] for q, r in bm25.items()},
        "ts_rank_cd": {q: [str(c) for c in r.lexical] for q, r in tsr.items()} if with_ts_rank_cd else None,
        "latencies": latencies,
        "corpus_documents": len(set(doc_of.values())),
        "chunks": {str(r.id): [r.header, r.text] for r in rows},
        "chunk_ids": [str(r.id) for r in rows],
        "chunk_vectors": np.array([r.embedding for r in rows], dtype=np.float32),
        "query_ids": list(beir.queries),
        "query_vectors": np.array(query_vectors, dtype=np.float32),
    }


def load_or_collect(beir: BeirSet, args: argparse.Namespace) -> dict[str, Any]:
    """The collected runs, from ``--cache`` when it holds them (``runs.json`` + ``vectors.npz``), else from the
    ``--attach`` directory, else from a fresh ingestion."""
    cache: Path | None = args.cache
    if cache is not None and (cache / "runs.json").is_file():
        data: dict[str, Any] = json.loads((cache / "runs.json").read_text())
        vectors = np.load(cache / "vectors.npz")
        return {**data, "chunk_vectors": vectors["chunks"], "query_vectors": vectors["queries"]}
    if args.attach:
        data = asyncio.run(collect_attached(beir, args.attach, uuid.UUID(args.coach_id)))
    else:
        data = asyncio.run(collect(beir))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / "vectors.npz", chunks=data["chunk_vectors"], queries=data["query_vectors"])
        plain = {k: v for k, v in data.items() if k not in ("chunk_vectors", "query_vectors")}
        (cache / "runs.json").write_text(json.dumps(plain))
    return data


def text_only_dense(data: dict[str, Any], cache: Path | None) -> dict[str, list[str]]:
    """The dense arm without contextual headers: every chunk's text embedded alone (cached as
    ``text_vectors.npy``), exact cosine top ``CANDIDATES``."""
    path = cache / "text_vectors.npy" if cache is not None else None
    if path is not None and path.is_file():
        vectors = np.load(path)
    else:
        with console.status("Embedding chunk texts without headers…"):
            texts = [data["chunks"][c][1] for c in data["chunk_ids"]]
            vectors = np.array(MiniLMEmbedder().encode(texts), dtype=np.float32)
        if path is not None:
            np.save(path, vectors)
    return _top(data, data["query_vectors"] @ vectors.T)


def _top(data: dict[str, Any], similarity: np.ndarray) -> dict[str, list[str]]:
    ids = data["chunk_ids"]
    order = np.argsort(-similarity, axis=1)[:, :CANDIDATES]
    return {q: [ids[i] for i in order[n]] for n, q in enumerate(data["query_ids"])}


def support_samples(
    data: dict[str, Any], beir: BeirSet, qids: list[str], lexical: dict[str, list[str]], fusion: Fusion
) -> tuple[list[float], list[float]]:
    """Best cosine among the passages production would hand the model (``RETRIEVAL_TOP_K`` = 5 of the fusion of
    ``5 × CANDIDATES_PER_K`` per arm) for each query: (answerable: the whole corpus; unanswerable: the same
    query with its relevant documents' chunks removed, i.e. the material does not hold the answer)."""
    position = {c: i for i, c in enumerate(data["chunk_ids"])}
    row = {q: n for n, q in enumerate(data["query_ids"])}
    answerable, unanswerable = [], []
    n = 5 * CANDIDATES_PER_K
    for q in qids:
        cos = data["chunk_vectors"] @ data["query_vectors"][row[q]]
        relevant = beir.qrels[q]
        for out, drop in ((answerable, set()), (unanswerable, set(relevant))):
            dense = [c for c in data["dense"][q] if data["doc_of"][c] not in drop][:n]
            lex = [c for c in lexical[q] if data["doc_of"][c] not in drop][:n]
            fused = fuse(dense, lex, fusion)
            top = sorted(fused, key=lambda c: fused[c], reverse=True)[:5]
            out.append(max(float(cos[position[c]]) for c in top))
    return answerable, unanswerable


def measure(beir: BeirSet, data: dict[str, Any], seed: int, cache: Path | None, header_off: bool) -> dict[str, Any]:
    """Every (dense variant, lexical method) pair: its arms and its fusion tuned on the tuning half, scored on the
    held-out half and on all queries; then the support anchors from the tuning half at the chosen fusion."""
    doc_of = data["doc_of"]
    everyone = sorted(data["query_ids"])
    tuning, held_out = split_queries(everyone, seed)
    denses = {"header": data["dense"]}
    if header_off:
        denses["no header"] = text_only_dense(data, cache)
    rows: dict[str, Any] = {}
    best: tuple[float, str, Fusion] = (-1.0, "", FUSION)

    def row(name: str, runs: dict[str, list[str]], fused: Fusion | None = None, lex: Any = None) -> None:
        rows[name] = {
            part: scores(
                fused_runs(_only(runs, qs), _only(lex, qs), fused, doc_of)
                if fused
                else {q: documents_of(runs[q], doc_of) for q in qs},
                beir.qrels,
            )
            for part, qs in (("held_out", held_out), ("all", everyone))
        }

    for variant, dense in denses.items():
        row(f"dense ({variant})", dense)
        for method in ("bm25", "ts_rank_cd"):
            lexical = data[method]
            if lexical is None:
                continue
            if variant == "header":
                row(f"lexical {method}", lexical)
            row(f"fused {method} + dense ({variant}), RRF k=60", dense, Fusion(), lexical)
            fusion, tuned = tune(dense, lexical, tuning, beir, doc_of)
            name = (
                f"fused {method} + dense ({variant}), k={fusion.k} w_lex={fusion.lexical_weight} (tuning {tuned:.4f})"
            )
            row(name, dense, fusion, lexical)
            if tuned > best[0] and variant == "header":
                best = (tuned, method, fusion)
    _, method, fusion = best
    ans, unans = support_samples(data, beir, tuning, data[method], fusion)
    anchors = support_anchors(ans, unans)
    ans_h, unans_h = support_samples(data, beir, held_out, data[method], fusion)
    held = asdict(support_anchors(ans_h, unans_h)) | anchors.separation(ans_h, unans_h)
    latencies = data["latencies"]
    p50, p95 = np.percentile(latencies, [50, 95])
    return {
        "corpus_documents": data.get("corpus_documents", len(beir.corpus)),
        "tuning_queries": len(tuning),
        "held_out_queries": len(held_out),
        "rows": rows,
        "chosen": {"lexical": method, "k": fusion.k, "lexical_weight": fusion.lexical_weight},
        "support_anchors_tuning": asdict(anchors) | anchors.separation(ans, unans),
        "support_held_out": held,
        "latency_ms": {"p50": round(float(p50), 1), "p95": round(float(p95), 1)},
    }


def main() -> None:
    args = parse_args()
    beir = load_beir(args.beir, args.split)
    result = measure(beir, load_or_collect(beir, args), args.seed, args.cache, args.header_off)
    table = Table(title=f"Held-out half ({result['held_out_queries']} queries; tuned on {result['tuning_queries']})")
    table.add_column("ranking")
    for column in ("ndcg@10", "recall@100", "mrr@10"):
        table.add_column(column, justify="right")
    for name, row in result["rows"].items():
        table.add_row(name, *(f"{row['held_out'][c]:.4f}" for c in ("ndcg@10", "recall@100", "mrr@10")))
    print_table(table)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
