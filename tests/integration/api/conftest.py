"""The OpenAPI schema of the app, read without connecting to anything, for tests over every operation."""

from __future__ import annotations

from functools import cache
from typing import Any

from cryptography.fernet import Fernet

from app.asgi import create_app
from app.core.config import Settings

METHODS = ("get", "put", "post", "patch", "delete")


@cache
def api_spec() -> dict[str, Any]:
    """``/schema/openapi.json`` of an app built with placeholder URLs (building it opens no connection)."""
    settings = Settings(secret_key=Fernet.generate_key().decode())
    app = create_app(settings, "postgresql+asyncpg://unused@/unused", "redis://127.0.0.1:1/0")
    return app.openapi_schema.to_schema()


def api_operations() -> list[str]:
    """``"METHOD /path"`` of every operation in the schema, in schema order."""
    paths = api_spec()["paths"]
    return [f"{method.upper()} {path}" for path, item in paths.items() for method in item if method in METHODS]
