"""The app refuses to start when its database role owns the schema (issue 12): the owner's read-all policies
(``TO CURRENT_USER USING (true)``) would otherwise apply to every query of the app."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import create_app
from app.container import Container
from app.core.config import Settings
from app.core.runtime import APP_ROLE, Services
from app.db.engine import assert_unprivileged, make_engine
from app.db.migrate import upgrade_head
from app.llm.registry import ProviderRegistry


@dataclass
class OwnedDatabase:
    """A second database whose schema was migrated by ``owner``, a LOGIN role that is no superuser (as in
    production), plus the URLs of that owner and of the app role on it."""

    owner_url: str
    app_url: str


async def _superuser(services: Services, statements: list[str]) -> None:
    engine = make_engine(services.migration_database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _url(services: Services, user: str, database: str) -> str:
    return make_url(services.migration_database_url).set(username=user, database=database).render_as_string(False)


@pytest.fixture(scope="module")
async def owned_database(services: Services) -> AsyncIterator[OwnedDatabase]:
    """README set-up with ``MIGRATION_DATABASE_URL`` left to default to ``DATABASE_URL``: one non-superuser
    role runs the migrations (so it owns every table and function) and then connects as the app."""
    name = f"owned_{uuid.uuid4().hex[:8]}"
    await _superuser(
        services,
        [
            f"CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE",
            f"CREATE DATABASE {name} OWNER {name}",
        ],
    )
    admin = _url(services, make_url(services.migration_database_url).username or "postgres", name)
    engine = make_engine(admin, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))  # needs a superuser
    finally:
        await engine.dispose()
    owner_url = _url(services, name, name)
    await asyncio.to_thread(upgrade_head, owner_url)
    try:
        yield OwnedDatabase(owner_url, _url(services, APP_ROLE, name))
    finally:
        await _superuser(services, [f"DROP DATABASE {name} WITH (FORCE)", f"DROP ROLE {name}"])


async def _refusal(engine: AsyncEngine) -> str:
    try:
        with pytest.raises(RuntimeError) as caught:
            await assert_unprivileged(engine)
    finally:
        await engine.dispose()
    return str(caught.value)


async def test_the_schema_owner_as_database_url_is_refused_naming_the_settings(
    settings: Settings, services: Services, owned_database: OwnedDatabase, registry: ProviderRegistry
) -> None:
    message = await _refusal(make_engine(owned_database.owner_url, pool_size=1))
    assert "DATABASE_URL" in message and "MIGRATION_DATABASE_URL" in message
    assert "which owns public.abandoned_documents(), public.alembic_version" in message  # names what it owns
    with pytest.raises(RuntimeError, match="MIGRATION_DATABASE_URL"):
        await Container.create(settings, owned_database.owner_url, services.redis_url, registry=registry)
    app = create_app(settings, owned_database.owner_url, services.redis_url, registry=registry)
    with pytest.raises(ExceptionGroup) as caught:  # the web app's start-up fails
        async with AsyncTestClient(app):
            pass
    assert caught.group_contains(RuntimeError, match="MIGRATION_DATABASE_URL", depth=None)


async def test_the_app_role_on_the_same_database_is_accepted(owned_database: OwnedDatabase) -> None:
    engine = make_engine(owned_database.app_url, pool_size=1)
    try:
        await assert_unprivileged(engine)  # raises if refused
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM coaches")) == 0  # it works as the app
    finally:
        await engine.dispose()


async def test_a_role_inheriting_from_the_owner_or_owning_one_function_is_refused(
    services: Services, owned_database: OwnedDatabase
) -> None:
    owner = make_url(owned_database.owner_url).username
    member, lone = f"member_{uuid.uuid4().hex[:8]}", f"lone_{uuid.uuid4().hex[:8]}"
    database = make_url(owned_database.owner_url).database or ""
    await _superuser(
        services,
        [
            f"CREATE ROLE {member} LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE {APP_ROLE}, {owner}",
            f"CREATE ROLE {lone} LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE {APP_ROLE}",
        ],
    )
    admin = make_engine(_url(services, make_url(services.migration_database_url).username or "", database))
    try:
        async with admin.begin() as conn:
            await conn.execute(text("CREATE FUNCTION lone_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'"))
            await conn.execute(text(f"ALTER FUNCTION lone_fn() OWNER TO {lone}"))
        assert "public.alembic_version" in await _refusal(make_engine(_url(services, member, database), pool_size=1))
        assert "public.lone_fn()" in await _refusal(make_engine(_url(services, lone, database), pool_size=1))
    finally:
        async with admin.begin() as conn:
            await conn.execute(text("DROP FUNCTION lone_fn()"))
        await admin.dispose()
        await _superuser(services, [f"DROP ROLE {member}", f"DROP ROLE {lone}"])
