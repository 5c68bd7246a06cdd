"""DATABASE_URL / MIGRATION_DATABASE_URL as managed providers hand them out: ``postgres://`` and ``postgresql://``
get SQLAlchemy's asyncpg driver and libpq's ``sslmode`` becomes asyncpg's ``ssl``; any other URL is refused naming
the setting (it was an ``ImportError`` traceback at the first connection)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings


@pytest.mark.parametrize(
    ("given", "used"),
    [
        (
            "postgres://app:s%40cret@db.example.test:5432/coach",
            "postgresql+asyncpg://app:s%40cret@db.example.test:5432/coach",
        ),
        (
            "postgresql://app@db.example.test/coach?sslmode=require",
            "postgresql+asyncpg://app@db.example.test/coach?ssl=require",
        ),
        (
            "postgresql+asyncpg://app@127.0.0.1:5432/coach?ssl=require",
            "postgresql+asyncpg://app@127.0.0.1:5432/coach?ssl=require",
        ),
    ],
)
@pytest.mark.parametrize("field", ["database_url", "migration_database_url"])
def test_a_postgresql_url_is_used_with_asyncpg(tmp_path: Path, field: str, given: str, used: str) -> None:
    settings = Settings.model_validate({"data_dir": tmp_path, field: given})
    assert getattr(settings, field) == used


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("mysql://app@db.example.test/coach", "must be a PostgreSQL URL used with asyncpg"),
        ("postgresql+psycopg://app@db.example.test/coach", "not postgresql\\+psycopg://"),
        ("db.example.test:5432", "is not a URL"),
    ],
)
def test_another_url_is_refused_naming_the_setting(tmp_path: Path, given: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=f"DATABASE_URL (.|\n)*{reason}"):
        Settings(data_dir=tmp_path, database_url=given)
