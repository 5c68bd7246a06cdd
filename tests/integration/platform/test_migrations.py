"""Schema: migrations reach head and match the models; the worker refuses an out-of-date schema."""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from sqlalchemy import make_url, text

from app.core.config import Settings
from app.core.runtime import Services
from app.db.engine import make_engine
from app.db.migrate import alembic_config, upgrade_head
from app.llm.registry import ProviderRegistry
from app.worker import build_worker


def test_upgrade_head_then_check_is_clean(services: Services) -> None:
    upgrade_head(services.migration_database_url)  # idempotent at head
    command.check(alembic_config(services.migration_database_url))  # raises if models and schema differ


async def test_vector_extension_is_pgvector_0_8_or_newer(services: Services) -> None:
    engine = make_engine(services.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            version = await conn.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
    finally:
        await engine.dispose()
    assert tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)


async def test_worker_refuses_to_start_on_an_out_of_date_schema(
    settings: Settings, services: Services, registry: ProviderRegistry
) -> None:
    name = f"stale_{uuid.uuid4().hex[:8]}"
    owner = make_engine(services.migration_database_url, pool_size=1)
    async with owner.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        stale_url = make_url(services.database_url).set(database=name).render_as_string(hide_password=False)
        worker = build_worker(settings, stale_url, services.redis_url, burst=True, registry=registry)
        with pytest.raises(RuntimeError, match="opencoach migrate"):
            await worker.main()
        await worker.close()
    finally:
        async with owner.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        await owner.dispose()
