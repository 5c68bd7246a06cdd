"""Lexical benchmark: the BM25 arm of retrieval for coaches of very different sizes.

One coach per ``--sizes`` entry (default 150,000, 40,000, 5,000 and 1,000 chunks: the biggest is the biggest
tenant of ``bench/scale.py``'s million chunks) gets documents of 250 chunks. A chunk is 4 to 8 sentences drawn
(seeded) from the SciFact abstracts of ``../shared/data/scifact``, so each one is distinct and the words follow a
real scientific vocabulary; its length is its cl100k token count, its vector a constant (the dense arm is
``bench/scale.py``'s). Chunks are inserted as ingestion does, in statements of many rows, so the triggers of
migration 0028 keep the term statistics as they go; the load's wall time includes them.

Then the first ``--queries`` SciFact claims are ranked for every coach through the production path,
``app.rag.retrieval.lexical_ranking`` (top ``--n``; the chat turn asks for 40), in a tenant transaction as the
unprivileged app role, twice: within the production postings budget (``BM25_CANDIDATES``: only the chunks
holding the rarest query words are scored) and unbounded (every chunk holding a query word: exact BM25). Rows:
the coach's size, p50/p95 milliseconds of each, the mean share of the unbounded top ``--n`` in the production
one, and how many claims got the very same ranking both ways. Run from the project root (the default
load takes about seven minutes on two cores; ``--dir`` keeps the data for another run)::

    .venv/bin/python bench/lexical.py
    .venv/bin/python bench/lexical.py --sizes 20000,1000 --queries 50
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from harness import console, percentile, print_table, run_in_data_dir
from rich.table import Table
from sqlalchemy import insert, text

from app.accounts.models import Coach
from app.core.config import Settings
from app.core.runtime import start_services
from app.db.engine import make_engine, make_sessionmaker, tenant_session
from app.db.migrate import upgrade_head
from app.llm.base import EMBEDDING_DIMENSIONS
from app.rag import retrieval
from app.rag.chunking import count_tokens
from app.rag.models import Document, DocumentStatus

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
DOC_CHUNKS = 250
INSERT_ROWS = 5000
MODEL = "bench-minilm-384"
WARMUP = 5
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_INSERT_CHUNKS = text(
    """
    INSERT INTO chunks (id, coach_id, document_id, ordinal, text, header, heading, token_count, embedding)
    SELECT gen_random_uuid(), :coach_id, d, o, t, '', '', n, CAST(:vector AS vector)
    FROM unnest(CAST(:documents AS uuid[]), CAST(:ordinals AS int[]), CAST(:texts AS text[]), CAST(:tokens AS int[]))
        AS r(d, o, t, n)
    """
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="BM25 retrieval latency by coach size (see the module).")
    parser.add_argument(
        "--sizes", default="150000,40000,5000,1000", help="chunks of each coach (default 150000,40000,5000,1000)"
    )
    parser.add_argument("--queries", type=int, default=100, help="SciFact claims ranked per coach (default 100)")
    parser.add_argument("--n", type=int, default=40, help="chunks ranked per query (default 40, as a chat turn)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--dir", type=Path, help="data directory for PostgreSQL (default: a temporary one)")
    args = parser.parse_args()
    try:
        args.sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes must be comma-separated chunk counts")
    if not args.sizes or min(args.sizes) < 1 or args.queries < 1 or args.n < 1:
        parser.error("--sizes, --queries and --n must be positive")
    return args


def sentences() -> list[str]:
    """Every sentence of the SciFact abstracts."""
    with (SCIFACT / "corpus.jsonl").open() as corpus:
        return [s for line in corpus for s in _SENTENCE.split(json.loads(line)["text"]) if len(s) > 20]


def chunk_texts(pool: list[str], count: int, rng: random.Random) -> Iterator[str]:
    """``count`` chunks of 4–8 sentences of ``pool``."""
    for _ in range(count):
        yield " ".join(rng.choices(pool, k=rng.randint(4, 8)))


async def load(owner_url: str, sizes: list[int], seed: int) -> tuple[list[uuid.UUID], float]:
    """Coaches of ``sizes`` chunks, documents of ``DOC_CHUNKS``; returns the coach ids and seconds taken."""
    started = time.perf_counter()
    pool, rng = sentences(), random.Random(seed)
    vector = [1.0] + [0.0] * (EMBEDDING_DIMENSIONS - 1)
    coach_ids = [uuid.uuid4() for _ in sizes]
    engine = make_engine(owner_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Coach), [{"id": c, "name": f"Coach {n}"} for n, c in enumerate(coach_ids)])
        for coach_id, size in zip(coach_ids, sizes, strict=True):
            documents = [uuid.uuid4() for _ in range(0, size, DOC_CHUNKS)]
            async with engine.begin() as conn:
                await conn.execute(insert(Document), [_document_row(coach_id, d) for d in documents])
            texts = chunk_texts(pool, size, rng)
            for first in range(0, size, INSERT_ROWS):
                rows = range(first, min(first + INSERT_ROWS, size))
                batch = [next(texts) for _ in rows]
                async with engine.begin() as conn:
                    await conn.execute(
                        _INSERT_CHUNKS,
                        {
                            "coach_id": coach_id,
                            "documents": [documents[r // DOC_CHUNKS] for r in rows],
                            "ordinals": [r % DOC_CHUNKS for r in rows],
                            "texts": batch,
                            "tokens": [count_tokens(t) for t in batch],
                            "vector": vector,
                        },
                    )
                console.log(f"coach of {size:,}: {rows.stop:,} chunks")
        async with engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    return coach_ids, time.perf_counter() - started


def _document_row(coach_id: uuid.UUID, document_id: uuid.UUID) -> dict[str, Any]:
    return {
        "id": document_id,
        "coach_id": coach_id,
        "title": "Abstracts",
        "filename": "abstracts.txt",
        "content_type": "text/plain",
        "size_bytes": 0,
        "sha256": hashlib.sha256(document_id.bytes).hexdigest(),  # one file per document, as uploads are
        "original": b"",
        "status": DocumentStatus.READY,
        "pages_done": 0,
        "embedding_model": MODEL,
    }


async def measure(app_url: str, coach_id: uuid.UUID, claims: list[str], n: int) -> dict[str, Any]:
    """Rank every claim for ``coach_id`` within the production budget and unbounded (:data:`WARMUP` untimed
    first): p50/p95 milliseconds of each, the mean share of the unbounded top ``n`` that the production one
    holds, and how many rankings are the very same."""
    engine = make_engine(app_url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    production = retrieval.BM25_CANDIDATES
    times: dict[str, list[float]] = {"production": [], "unbounded": []}
    overlaps: list[float] = []
    identical = 0
    try:
        for number, claim in enumerate(claims[:WARMUP] + claims):
            rankings = {}
            for way, budget in (("production", production), ("unbounded", sys.maxsize)):
                retrieval.BM25_CANDIDATES = budget
                async with tenant_session(sessionmaker, coach_id) as session:
                    started = time.perf_counter()
                    rankings[way] = await retrieval.lexical_ranking(session, coach_id, claim, MODEL, n)
                    elapsed = (time.perf_counter() - started) * 1000
                if number >= WARMUP:
                    times[way].append(elapsed)
            if number >= WARMUP:
                unbounded = rankings["unbounded"]
                identical += rankings["production"] == unbounded
                overlaps.append(len(set(rankings["production"]) & set(unbounded)) / max(len(unbounded), 1))
    finally:
        retrieval.BM25_CANDIDATES = production
        await engine.dispose()
    return {way: {"p50": percentile(values, 50), "p95": percentile(values, 95)} for way, values in times.items()} | {
        "overlap": statistics.fmean(overlaps),
        "identical": identical,
    }


async def run(args: argparse.Namespace, data_dir: Path) -> None:
    """Load (unless ``data_dir`` holds an earlier load) and measure; prints the table to stdout."""
    settings = Settings(data_dir=data_dir, secret_key=Fernet.generate_key().decode(), redis_url="redis://127.0.0.1:9")
    services = await asyncio.to_thread(start_services, settings)
    try:
        await asyncio.to_thread(upgrade_head, services.migration_database_url)
        owner = make_engine(services.migration_database_url, pool_size=1)
        try:
            async with owner.connect() as conn:
                sizes_now = dict(
                    (await conn.execute(text("SELECT coach_id, count(*) FROM chunks GROUP BY coach_id"))).all()
                )
        finally:
            await owner.dispose()
        load_s: float | None = None
        if sorted(sizes_now.values()) != sorted(args.sizes):
            if sizes_now:
                raise SystemExit(f"{data_dir} holds coaches of other sizes: use another --dir")
            coach_ids, load_s = await load(services.migration_database_url, args.sizes, args.seed)
        else:
            coach_ids = [next(c for c, s in sizes_now.items() if s == size) for size in args.sizes]
        with (SCIFACT / "queries.jsonl").open() as queries:
            claims = [json.loads(line)["text"] for line in queries][: args.queries]
        results = []
        for coach_id, size in zip(coach_ids, args.sizes, strict=True):
            with console.status(f"Ranking for the coach of {size:,} chunks…"):
                results.append((size, await measure(services.database_url, coach_id, claims, args.n)))
        _report(args, results, load_s)
    finally:
        services.stop()


def _report(args: argparse.Namespace, results: list[tuple[int, dict[str, Any]]], load_s: float | None) -> None:
    table = Table(
        title=f"BM25 top-{args.n} of {args.queries} SciFact claims per coach; budget "
        f"{retrieval.BM25_CANDIDATES:,} postings" + (f"; load {load_s:.0f} s" if load_s is not None else "")
    )
    for column in (
        "coach chunks",
        "p50 ms",
        "p95 ms",
        f"overlap@{args.n} with unbounded",
        "same ranking",
        "unbounded p50 ms",
        "unbounded p95 ms",
    ):
        table.add_column(column, justify="right")
    for size, row in results:
        table.add_row(
            f"{size:,}",
            f"{row['production']['p50']:.1f}",
            f"{row['production']['p95']:.1f}",
            f"{row['overlap']:.3f}",
            f"{row['identical']}/{args.queries}",
            f"{row['unbounded']['p50']:.1f}",
            f"{row['unbounded']['p95']:.1f}",
        )
    print_table(table)


def main() -> None:
    args = parse_args()
    run_in_data_dir(run, args, args.dir, "opencoach-lexical-")


if __name__ == "__main__":
    sys.exit(main())
