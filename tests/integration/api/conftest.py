"""The app's routes and OpenAPI schema, read without connecting to anything, for tests over every operation, and
a snapshot of a coach's rows, for tests that nothing changed."""

from __future__ import annotations

from functools import cache
from typing import Any

from cryptography.fernet import Fernet
from litestar import Litestar
from sqlalchemy import text

import app.container  # noqa: F401 - every model, so Base.metadata knows every table
from app.asgi import create_app
from app.core.config import Settings
from app.core.runtime import Services
from app.db.base import Base
from app.db.engine import make_engine

METHODS = ("get", "put", "post", "patch", "delete")


@cache
def placeholder_app() -> Litestar:
    """The app built with placeholder URLs (building it opens no connection), to read its routes and schema."""
    settings = Settings(secret_key=Fernet.generate_key().decode())
    return create_app(settings, "postgresql+asyncpg://unused@/unused", "redis://127.0.0.1:1/0")


@cache
def api_spec() -> dict[str, Any]:
    """``/schema/openapi.json`` of :func:`placeholder_app`."""
    return placeholder_app().openapi_schema.to_schema()


def api_operations() -> list[str]:
    """``"METHOD /path"`` of every operation in the schema, in schema order."""
    paths = api_spec()["paths"]
    return [f"{method.upper()} {path}" for path, item in paths.items() for method in item if method in METHODS]


async def coach_rows(services: Services, coach_id: str) -> dict[str, list[str]]:
    """Every row of the coach in every table with ``coach_id`` (and its ``coaches`` row) as sorted JSON texts,
    read as the owner; an API key's ``last_used_at`` is left out (every request with the key may stamp it)."""
    owner = make_engine(services.migration_database_url, pool_size=1)
    found: dict[str, list[str]] = {}
    try:
        async with owner.connect() as conn:
            for table in Base.metadata.sorted_tables:
                column = "id" if table.name == "coaches" else "coach_id" if "coach_id" in table.c else None
                if column is None:
                    continue
                rows = await conn.scalars(
                    text(
                        f"SELECT (to_jsonb(t) - 'last_used_at')::text FROM {table.name} t WHERE {column} = :cid "
                        "ORDER BY 1"
                    ),
                    {"cid": coach_id},
                )
                found[table.name] = list(rows)
    finally:
        await owner.dispose()
    return found
