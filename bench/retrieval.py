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
from pathlib import Path
from typing import Any

from harness import bench_app, console, print_table
from rich.table import Table

from app.evals.retrieval import (
    BeirSet,
    documents_of,
    ingest_corpus,
    load_beir,
    rank_queries,
    report,
    scores,
    scratch_coach,
    split_queries,
)
from app.rag.retrieval import FUSION, Fusion, fuse

KS = (10, 20, 40, 60, 100)
LEXICAL_WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tune the lexical arm and fusion on a BEIR corpus.")
    parser.add_argument("--beir", type=Path, required=True, help="BEIR directory")
    parser.add_argument("--split", default="dev", help="qrels/<split>.tsv")
    parser.add_argument("--seed", type=int, default=16, help="seed of the tuning/held-out query split")
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


async def measure(beir: BeirSet, seed: int) -> dict[str, Any]:
    async with bench_app() as (container, _):
        with console.status("Ingesting…") as status:
            coach_id = await scratch_coach(container)
            doc_of = await ingest_corpus(container, coach_id, beir, lambda t: status.update(t))
        with console.status("Ranking (BM25)…") as status:
            bm25, latencies = await rank_queries(container, coach_id, beir.queries, progress=status.update)
        with console.status("Ranking (ts_rank_cd)…") as status:
            tsr, _ = await rank_queries(
                container, coach_id, beir.queries, lexical_method="ts_rank_cd", progress=status.update
            )
    tuning, held_out = split_queries(sorted(beir.queries), seed)
    dense = {q: r.dense for q, r in bm25.items()}
    lexical = {"bm25": {q: r.lexical for q, r in bm25.items()}, "ts_rank_cd": {q: r.lexical for q, r in tsr.items()}}
    rows: dict[str, Any] = {"dense": scores({q: documents_of(dense[q], doc_of) for q in held_out}, beir.qrels)}
    for method, runs in lexical.items():
        rows[f"lexical {method}"] = scores({q: documents_of(runs[q], doc_of) for q in held_out}, beir.qrels)
        rows[f"fused {method}, RRF k=60"] = scores(
            fused_runs(_only(dense, held_out), _only(runs, held_out), Fusion(), doc_of), beir.qrels
        )
        fusion, tuned = tune(dense, runs, tuning, beir, doc_of)
        name = f"fused {method}, k={fusion.k} w_lex={fusion.lexical_weight} (tuning nDCG {tuned:.4f})"
        rows[name] = scores(fused_runs(_only(dense, held_out), _only(runs, held_out), fusion, doc_of), beir.qrels)
    production = report(beir, bm25, doc_of, latencies)
    return {"tuning_queries": len(tuning), "held_out_queries": len(held_out), "rows": rows, "production": production}


def main() -> None:
    args = parse_args()
    beir = load_beir(args.beir, args.split)
    result = asyncio.run(measure(beir, args.seed))
    table = Table(title=f"Held-out half ({result['held_out_queries']} queries; tuned on {result['tuning_queries']})")
    table.add_column("ranking")
    for column in ("ndcg@10", "recall@100", "mrr@10"):
        table.add_column(column, justify="right")
    for name, row in result["rows"].items():
        table.add_row(name, *(f"{row[c]:.4f}" for c in ("ndcg@10", "recall@100", "mrr@10")))
    print_table(table)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
