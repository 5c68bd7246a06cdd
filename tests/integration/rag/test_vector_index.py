"""Big tenants: the worker's job gives a coach its own partial HNSW index at ``VECTOR_INDEX_MIN_CHUNKS`` and
drops it below half of that; retrieval uses that index (also once asyncpg's prepared statement would go
generic) and returns only the tenant's own rows, with the index and without it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.accounts.models import Coach
from app.container import Container
from app.core.runtime import Services
from app.db.engine import make_engine, tenant_session
from app.rag.models import Chunk, Document, DocumentStatus
from app.rag.retrieval import nearest_chunks
from app.rag.vector_index import index_name, sync_vector_indexes

MODEL = "test-vector-index"
MIN_CHUNKS = 40
NO_INDEXES = 10**9
"""A threshold no coach reaches: a sync with it drops every partial index (cleanup)."""


@pytest.fixture
async def owner(services: Services) -> AsyncIterator[AsyncEngine]:
    """The schema owner (only it may create indexes); every partial index is dropped at the end."""
    engine = make_engine(services.migration_database_url, pool_size=1)
    yield engine
    await sync_vector_indexes(engine, min_chunks=NO_INDEXES)
    await engine.dispose()


def _vectors(seed: int, count: int, centre: np.ndarray) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    vectors = centre + rng.standard_normal((count, centre.size)) * 0.05
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()


async def _coach_with_chunks(owner: AsyncEngine, count: int, centre: np.ndarray, seed: int) -> uuid.UUID:
    """A coach with one ready document of ``count`` chunks near ``centre`` (written as the owner)."""
    coach_id, doc_id = uuid.uuid4(), uuid.uuid4()
    async with owner.begin() as conn:
        await conn.execute(insert(Coach).values(id=coach_id, name="Vector Index Coach"))
        await conn.execute(
            insert(Document).values(
                id=doc_id, coach_id=coach_id, title="t", filename="t.txt", content_type="text/plain", size_bytes=0,
                sha256="0" * 64, original=b"", status=DocumentStatus.READY, chunks=count, embedding_model=MODEL,
            )
        )  # fmt: skip
        rows = [
            {"coach_id": coach_id, "document_id": doc_id, "ordinal": i, "text": f"passage {i}", "token_count": 2,
             "embedding": vector}
            for i, vector in enumerate(_vectors(seed, count, centre))
        ]  # fmt: skip
        await conn.execute(insert(Chunk), rows)
    return coach_id


async def _shrink(owner: AsyncEngine, coach_id: uuid.UUID, keep: int) -> None:
    async with owner.begin() as conn:
        keep_ids = select(Chunk.id).where(Chunk.coach_id == coach_id).order_by(Chunk.ordinal).limit(keep)
        await conn.execute(delete(Chunk).where(Chunk.coach_id == coach_id, Chunk.id.not_in(keep_ids)))
        await conn.execute(update(Document).where(Document.coach_id == coach_id).values(chunks=keep))


async def _index_valid(owner: AsyncEngine, coach_id: uuid.UUID) -> bool | None:
    """``True``/``False`` when the coach's partial index exists (valid or not), ``None`` when it does not."""
    async with owner.connect() as conn:
        return await conn.scalar(
            text("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :n"),
            {"n": index_name(coach_id)},
        )


async def test_a_coach_gets_its_own_index_at_the_threshold_and_loses_it_below_half(owner: AsyncEngine) -> None:
    centre = np.ones(384)
    big = await _coach_with_chunks(owner, MIN_CHUNKS, centre, seed=1)
    small = await _coach_with_chunks(owner, MIN_CHUNKS - 1, centre, seed=2)

    changes = await sync_vector_indexes(owner, min_chunks=MIN_CHUNKS)
    assert big in changes.created and small not in changes.created
    assert await _index_valid(owner, big) is True
    assert await _index_valid(owner, small) is None
    assert (await sync_vector_indexes(owner, min_chunks=MIN_CHUNKS)).created == [], "nothing to do the second time"

    await _shrink(owner, big, MIN_CHUNKS // 2)  # at half the threshold: kept (no rebuild for a coach near the line)
    assert big not in (await sync_vector_indexes(owner, min_chunks=MIN_CHUNKS)).dropped
    assert await _index_valid(owner, big) is True

    await _shrink(owner, big, MIN_CHUNKS // 2 - 1)
    assert big in (await sync_vector_indexes(owner, min_chunks=MIN_CHUNKS)).dropped
    assert await _index_valid(owner, big) is None


async def test_an_interrupted_build_is_dropped_and_built_again(owner: AsyncEngine) -> None:
    coach_id = await _coach_with_chunks(owner, MIN_CHUNKS, np.ones(384), seed=3)
    await sync_vector_indexes(owner, min_chunks=MIN_CHUNKS)
    async with owner.begin() as conn:  # what a CREATE INDEX CONCURRENTLY killed half-way leaves behind
        await conn.execute(
            text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = CAST(:n AS regclass)"),
            {"n": index_name(coach_id)},
        )
    changes = await sync_vector_indexes(owner, min_chunks=MIN_CHUNKS)
    assert coach_id in changes.dropped and coach_id in changes.created
    assert await _index_valid(owner, coach_id) is True


async def _index_scans(container: Container, coach_id: uuid.UUID, query: list[float], times: int) -> list[int]:
    """Run :func:`nearest_chunks` ``times`` on one connection: the index scans of the coach's own index that
    each run made (pgvector's iterative scan may restart a scan, so one run can count more than one)."""
    scans = [0]
    async with tenant_session(container.sessionmaker, coach_id) as session:
        for _ in range(times):
            await nearest_chunks(session, coach_id, query_embedding=query, embedding_model=MODEL, limit=5)
            total = await session.scalar(
                text("SELECT pg_stat_get_xact_numscans(CAST(:n AS regclass))"), {"n": index_name(coach_id)}
            )
            scans.append(int(total) - sum(scans))
    return scans[1:]


async def test_retrieval_returns_only_the_tenants_rows_with_and_without_its_index(
    owner: AsyncEngine, container: Container
) -> None:
    centre = np.zeros(384)
    centre[0] = 1.0
    big = await _coach_with_chunks(owner, MIN_CHUNKS, centre, seed=4)
    neighbour = await _coach_with_chunks(owner, 8, centre, seed=5)  # nearer the query than any of big's rows
    query = _vectors(6, 1, centre)[0]
    async with owner.connect() as conn:
        own = {
            coach: set((await conn.execute(select(Chunk.id).where(Chunk.coach_id == coach))).scalars())
            for coach in (big, neighbour)
        }

    async def nearest(tenant: uuid.UUID, coach_id: uuid.UUID) -> list[uuid.UUID]:
        async with tenant_session(container.sessionmaker, tenant) as session:
            return await nearest_chunks(session, coach_id, query_embedding=query, embedding_model=MODEL, limit=10)

    for indexed in (False, True):
        if indexed:
            assert big in (await sync_vector_indexes(owner, min_chunks=MIN_CHUNKS)).created
        assert set(await nearest(big, big)) <= own[big] and len(await nearest(big, big)) == 10
        assert set(await nearest(neighbour, neighbour)) == own[neighbour]
        assert await nearest(neighbour, big) == [], "row-level security hides the other tenant, index or not"
        assert await nearest(big, neighbour) == []

    # asyncpg prepares statements; after five runs PostgreSQL may switch to a generic plan, which cannot use
    # a partial index: every run must still scan the coach's own index
    scans = await _index_scans(container, big, query, times=8)
    assert all(scans), scans


@pytest.mark.parametrize(
    "before", [{}, {"enable_sort": "off", "plan_cache_mode": "force_generic_plan"}], ids=["defaults", "set before"]
)
async def test_planner_settings_return_to_their_values_before_the_vector_query(
    owner: AsyncEngine, container: Container, before: dict[str, str]
) -> None:
    """The rest of the turn plans as before: both planner settings get back the values they had before
    ``nearest_chunks`` (the defaults, or what the transaction had set itself)."""
    coach_id = await _coach_with_chunks(owner, 5, np.ones(384), seed=7)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        for name, value in before.items():
            await session.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
        await nearest_chunks(session, coach_id, query_embedding=[1.0] * 384, embedding_model=MODEL, limit=3)
        after = {
            name: await session.scalar(text(f"SELECT current_setting('{name}')"))
            for name in ("enable_sort", "plan_cache_mode")
        }
    assert after == ({"enable_sort": "on", "plan_cache_mode": "auto"} | before)
