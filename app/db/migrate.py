"""Programmatic Alembic: apply migrations and check that a database is at head."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str) -> Config:
    """Alembic config for this project's ``migrations/`` pointed at ``url`` (the schema owner's URL)."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


@contextlib.contextmanager
def across_tenants(*tables: str) -> Iterator[None]:
    """For a migration's data change over every tenant's rows of ``tables``: their row-level security is not
    forced inside the block (then forced again, in the migration's transaction). Tenant tables force it on
    their owner too, whose only policies outside a tenant read (the sweeps' look-ups), so run by a schema owner
    that is neither superuser nor BYPASSRLS (``deploy/postgres-init.sh``) an ``UPDATE`` matched no row and
    changed nothing, silently. Call only from a migration (Alembic's ``op``)."""
    for table in tables:
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    yield
    for table in tables:
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def revision_module(revision: str) -> ModuleType:
    """The module of migration ``revision`` (``"0028"``), for a later migration that changes what it made (a
    revision file's name is not an importable module name). Raises ``StopIteration`` for an unknown revision."""
    path = next((PROJECT_ROOT / "migrations" / "versions").glob(f"*_{revision}_*.py"))
    spec = importlib.util.spec_from_file_location(f"migration_{revision}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade_head(url: str) -> None:
    """Apply every pending migration (``alembic upgrade head``). Blocking; call from a thread in async code."""
    command.upgrade(alembic_config(url), "head")


def head_revision() -> str:
    """The newest revision id in ``migrations/versions``."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    if head is None:
        raise RuntimeError("migrations/versions holds no revision")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or ``None`` for an empty database."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def assert_schema_owner(engine: AsyncEngine) -> None:
    """Raise ``RuntimeError`` unless ``engine``'s role owns the schema (the ``coaches`` table), or is a member of
    the role that does: only the owner may list every coach (its read-all policies); the app role, under row-level
    security, sees none, and a command run with it would do nothing and say it succeeded."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT current_user, pg_get_userbyid(relowner), pg_has_role(relowner, 'USAGE') FROM pg_class "
                    "WHERE oid = to_regclass('coaches')"
                )
            )
        ).one_or_none()
    if row is None or not row[2]:
        owner = f" ({row[1]})" if row is not None else ""
        user = row[0] if row is not None else "this role"
        raise RuntimeError(
            f"{user} is not the schema's owner{owner}: set MIGRATION_DATABASE_URL to the owner's URL (the role that "
            "runs `opencoach migrate`)"
        )


async def assert_schema_current(engine: AsyncEngine) -> None:
    """Raise ``RuntimeError`` unless the database is at the head revision (workers refuse stale schemas)."""
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise RuntimeError(
            f"database schema is at {current or 'no revision'}, code expects {head}: run `opencoach migrate`"
        )
