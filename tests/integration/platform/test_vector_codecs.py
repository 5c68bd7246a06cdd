"""Vectors go to PostgreSQL in pgvector's binary format (``app.db.vectors``): what asyncpg is handed for a vector
parameter is the list itself, not pgvector's text, and what is read back is the float32 value; a connection
checked out before the ``vector`` type exists gets the codecs on a later checkout, once it does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import bindparam, event, insert, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.accounts.models import Coach
from app.core.runtime import Services
from app.db.engine import make_engine
from app.db.vectors import BinaryVector
from app.rag.models import Chunk, Document, DocumentStatus

DIMENSIONS = 384


@pytest.fixture
async def owner(services: Services) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(services.migration_database_url, pool_size=1)
    yield engine
    await engine.dispose()


async def test_a_vector_is_bound_as_a_list_and_read_back_as_its_float32_value(owner: AsyncEngine) -> None:
    coach_id, doc_id, chunk_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    vector = np.random.default_rng(7).standard_normal(DIMENSIONS).tolist()  # float64: not exact in float32
    bound: list[Any] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.startswith("INSERT INTO chunks"):
            bound.extend(parameters)

    event.listen(owner.sync_engine, "before_cursor_execute", capture)
    async with owner.begin() as conn:
        await conn.execute(insert(Coach).values(id=coach_id, name="Binary Vectors Coach"))
        await conn.execute(
            insert(Document).values(
                id=doc_id, coach_id=coach_id, title="t", filename="t.txt", content_type="text/plain",
                size_bytes=0, sha256="0" * 64, original=b"", status=DocumentStatus.READY, chunks=1,
                embedding_model="test-binary",
            )
        )  # fmt: skip
        await conn.execute(
            insert(Chunk).values(
                id=chunk_id, coach_id=coach_id, document_id=doc_id, ordinal=0, text="t", token_count=1,
                embedding=vector,
            )
        )  # fmt: skip
    event.remove(owner.sync_engine, "before_cursor_execute", capture)
    try:
        assert vector in bound  # handed to asyncpg as it is, not as pgvector's text "[…]"
        assert not any(isinstance(p, str) and p.startswith("[") for p in bound)
        async with owner.connect() as conn:
            stored = await conn.scalar(select(Chunk.embedding).where(Chunk.id == chunk_id))
            as_text = await conn.scalar(text("SELECT embedding::text FROM chunks WHERE id = :id"), {"id": chunk_id})
        assert isinstance(stored, list)
        assert stored == np.asarray(vector, dtype=np.float32).tolist()
        assert stored != vector
        assert [float(v) for v in as_text[1:-1].split(",")] == pytest.approx(stored, rel=1e-6)
    finally:
        async with owner.begin() as conn:
            await conn.execute(text("DELETE FROM coaches WHERE id = :id"), {"id": coach_id})


async def test_a_connection_from_before_the_extension_gets_the_codecs_once_it_exists(
    services: Services, owner: AsyncEngine
) -> None:
    name = f"novector_{uuid.uuid4().hex[:8]}"
    async with owner.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(services.migration_database_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url, pool_size=1)
    vector = BinaryVector(3)
    query = text("SELECT CAST(:v AS vector) AS v").bindparams(bindparam("v", type_=vector)).columns(v=vector)
    try:
        async with engine.connect() as conn:  # checked out with no vector type: no codec, no error
            backend = await conn.scalar(text("SELECT pg_backend_pid()"))
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("CREATE EXTENSION vector"))
        async with engine.connect() as conn:  # the same pooled connection, checked out again
            assert await conn.scalar(text("SELECT pg_backend_pid()")) == backend
            assert await conn.scalar(query, {"v": [0.5, -1.0, 2.0]}) == [0.5, -1.0, 2.0]
    finally:
        await engine.dispose()
        async with owner.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
