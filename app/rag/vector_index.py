"""One HNSW index per big tenant: a partial index on ``chunks`` for each coach with many chunks.

Why: one HNSW graph over every tenant's chunks serves a tenant-filtered query badly. A big tenant's
neighbours are found only after the scan has walked through other tenants' vectors (measured on 200k chunks:
183–200 ms p95 and recall@10 0.90 for the biggest tenant), and a small tenant pays an iterative scan for a
handful of rows. So a coach with at least ``min_chunks`` chunks (``VECTOR_INDEX_MIN_CHUNKS``) gets a graph
of its own, ``CREATE INDEX … USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops) WHERE coach_id = …``
(half-precision halves the index; pgvector ≥ 0.7), and every other coach is searched exactly through the
``coach_id`` btree (at 1M chunks, 2,000 exact distances took about as long as the biggest coach's index
scan, ``bench/scale.py``). Row-level security is untouched: the index only changes how the tenant's own rows are found.

:func:`sync_vector_indexes` creates the missing indexes and drops those of coaches that fell below half the
threshold (hysteresis, so a coach near the line is not rebuilt each run), ``CONCURRENTLY`` so ingestion and
retrieval go on meanwhile. It runs as the schema owner (only the owner may create an index), under an
advisory lock so that two workers never build the same index; the worker runs it every ten minutes.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.llm.base import EMBEDDING_DIMENSIONS

log = logging.getLogger(__name__)

INDEX_PREFIX = "ix_chunks_hnsw_"
"""Name of a coach's partial index: this prefix and the coach id's 32 hex digits (47 characters < 63)."""
HNSW_WITH = "m = 16, ef_construction = 64"
"""pgvector's defaults (Malkov & Yashunin 2018, HNSW: ``m`` links per node, ``ef_construction`` candidates)."""
_LOCK_KEY = 0x6F63_7678  # "ocvx": one index sweep at a time across every worker

_COACH_SIZES = text("SELECT coach_id, sum(chunks)::bigint FROM documents GROUP BY coach_id")
"""Chunks per coach from ``documents.chunks`` (read by the owner through the ``stalled_sweep`` policy, 0012)."""
_INDEXES = text(
    """
    SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = 'chunks'::regclass AND starts_with(c.relname, :prefix)
    """
)


def index_name(coach_id: uuid.UUID) -> str:
    """The name of ``coach_id``'s partial HNSW index, e.g. ``ix_chunks_hnsw_3f2a…`` (47 characters)."""
    return f"{INDEX_PREFIX}{coach_id.hex}"


def _create_sql(coach_id: uuid.UUID) -> str:
    # coach_id is a uuid.UUID: its str() is 36 hex digits and dashes, safe to inline (DDL takes no parameters)
    return (
        f"CREATE INDEX CONCURRENTLY {index_name(coach_id)} ON chunks USING hnsw "
        f"((embedding::halfvec({EMBEDDING_DIMENSIONS})) halfvec_cosine_ops) WITH ({HNSW_WITH}) "
        f"WHERE coach_id = '{coach_id}'::uuid"
    )


@dataclass
class IndexChanges:
    """What one :func:`sync_vector_indexes` run did: coach ids whose index was ``created`` / ``dropped``,
    and ``build_seconds`` (wall time of each creation, by coach id). ``skipped`` is true when another run
    held the lock."""

    created: list[uuid.UUID] = field(default_factory=list)
    dropped: list[uuid.UUID] = field(default_factory=list)
    build_seconds: dict[uuid.UUID, float] = field(default_factory=dict)
    skipped: bool = False


async def _plan(conn: AsyncConnection, min_chunks: int) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """``(to_create, to_drop)``: coaches at or above ``min_chunks`` without a valid index; indexes of coaches
    below ``min_chunks // 2`` (or gone), and invalid ones (a ``CONCURRENTLY`` build that was interrupted)."""
    sizes = {row[0]: int(row[1] or 0) for row in await conn.execute(_COACH_SIZES)}
    indexes = {
        uuid.UUID(hex=name.removeprefix(INDEX_PREFIX)): valid
        for name, valid in await conn.execute(_INDEXES, {"prefix": INDEX_PREFIX})
    }
    to_drop = [c for c, valid in indexes.items() if not valid or sizes.get(c, 0) < min_chunks // 2]
    to_create = [c for c, n in sizes.items() if n >= min_chunks and (c in to_drop or c not in indexes)]
    return sorted(to_create), sorted(to_drop)


async def sync_vector_indexes(owner: AsyncEngine, *, min_chunks: int) -> IndexChanges:
    """Bring the partial HNSW indexes in line with the coaches' sizes (see the module); returns what changed.

    ``owner`` must connect as the owner of ``chunks`` (``MIGRATION_DATABASE_URL``). Each ``CREATE`` / ``DROP
    INDEX CONCURRENTLY`` runs outside a transaction and reads the whole ``chunks`` table twice; at 1M chunks
    the biggest coach's (150k) took 132 s, all 64 indexes 761 s on two busy cores. Raises
    ``sqlalchemy.exc.DBAPIError`` when the database refuses (e.g. not the owner).
    """
    changes = IndexChanges()
    async with owner.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if not await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": _LOCK_KEY}):
            changes.skipped = True
            return changes
        try:
            to_create, to_drop = await _plan(conn, min_chunks)
            for coach_id in to_drop:
                await conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {index_name(coach_id)}"))
                changes.dropped.append(coach_id)
            for coach_id in to_create:
                started = time.perf_counter()
                await conn.execute(text(_create_sql(coach_id)))
                changes.build_seconds[coach_id] = time.perf_counter() - started
                changes.created.append(coach_id)
                log.info("vector index for coach %s built in %.1f s", coach_id, changes.build_seconds[coach_id])
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
    return changes
