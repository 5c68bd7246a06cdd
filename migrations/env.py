"""Alembic environment (async). URL: ``config.attributes["url"]`` (set by ``app.db.migrate``), else
``MIGRATION_DATABASE_URL`` / ``DATABASE_URL`` from the environment."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# every domain's models meet here, so autogenerate and `alembic check` see the whole schema
import app.accounts.models
import app.channels.telegram.models
import app.conversations.handoffs
import app.conversations.models
import app.db.outbox
import app.learning.models
import app.memory.models
import app.rag.models  # noqa: F401
from app.core.config import get_settings
from app.db.base import Base
from app.rag.vector_index import INDEX_PREFIX

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return str(url)
    settings = get_settings()
    url = settings.migration_database_url or settings.database_url
    if not url:
        raise SystemExit("Set MIGRATION_DATABASE_URL or DATABASE_URL (or run `opencoach migrate`).")
    return url


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # alembic_version belongs to alembic itself; the big coaches' partial HNSW indexes to the worker
    # (app.rag.vector_index), so autogenerate never proposes dropping them
    if type_ == "index" and reflected and (name or "").startswith(INDEX_PREFIX):
        return False
    return not (type_ == "table" and name == "alembic_version")


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include_object,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    existing = config.attributes.get("connection")
    if existing is not None:
        _run(existing)
    else:
        asyncio.run(_run_async())
