"""Async engine and sessions. Every unit of work runs in one transaction scoped to one tenant."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """Create the asyncpg engine for ``url`` (``postgresql+asyncpg://…``)."""
    return create_async_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory; objects stay usable after commit (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def set_tenant(session: AsyncSession, coach_id: uuid.UUID) -> None:
    """Scope the current transaction to ``coach_id``: ``SET LOCAL app.coach_id`` (via ``set_config(…, true)``),
    which the row-level security policies of every tenant-owned table compare against."""
    await session.execute(text("SELECT set_config('app.coach_id', :cid, true)"), {"cid": str(coach_id)})


@asynccontextmanager
async def tenant_session(
    sessionmaker: async_sessionmaker[AsyncSession], coach_id: uuid.UUID
) -> AsyncIterator[AsyncSession]:
    """Open a session, begin a transaction scoped to ``coach_id``, commit on success, roll back on error."""
    async with sessionmaker() as session, session.begin():
        await set_tenant(session, coach_id)
        yield session


async def assert_unprivileged(engine: AsyncEngine) -> None:
    """Refuse to run as a role that would bypass row-level security.

    Raises ``RuntimeError`` if the connected role is a superuser or has BYPASSRLS.
    """
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
    if row.rolsuper or row.rolbypassrls:
        raise RuntimeError(
            f"DATABASE_URL connects as {row.rolname!r}, which bypasses row-level security; "
            "use a role that is neither SUPERUSER nor BYPASSRLS (set MIGRATION_DATABASE_URL for the owner)."
        )
