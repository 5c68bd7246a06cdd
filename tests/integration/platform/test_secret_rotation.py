"""``opencoach rotate-secret``: every stored secret re-encrypted under the new SECRET_KEY, per coach, with clear
errors. The session's database is shared, so each test that rotates rotates back before it ends."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import select

import app.container  # noqa: F401 - every model, so Base.metadata knows every table
from app.core.config import Settings
from app.core.runtime import Services
from app.core.security import SecretBox
from app.db.base import Base
from app.db.engine import make_engine
from app.db.rotation import encrypted_columns
from tests.conftest import Coach, make_client

Secrets = dict[tuple[str, str, uuid.UUID], bytes]


def rotate_cli(
    services: Services, tmp_path: Path, key: str, old: str = "", *, only_owner: bool = False
) -> subprocess.CompletedProcess[str]:
    """``opencoach rotate-secret`` against the test run's PostgreSQL and Redis with these keys; ``only_owner``
    gives it the schema owner's URL alone, as a Kubernetes Job would."""
    urls = {"MIGRATION_DATABASE_URL": services.migration_database_url}
    if not only_owner:
        urls |= {"DATABASE_URL": services.database_url, "REDIS_URL": services.redis_url}
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL")},
        **urls,
        "SECRET_KEY": key,
        "SECRET_KEY_OLD": old,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "rotate-secret", "--data-dir", str(tmp_path / "d")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def stored_secrets(services: Services, coach_ids: list[str]) -> Secrets:
    """Every non-null ``*_encrypted`` value of these coaches, by (table, column, row id), read as the owner."""
    found: Secrets = {}
    owner = make_engine(services.migration_database_url, pool_size=1)
    try:
        async with owner.connect() as conn:
            for table, columns in encrypted_columns(Base.metadata).items():
                scope = table.c.coach_id if "coach_id" in table.c else table.c.id
                rows = await conn.execute(
                    select(table.c.id, *columns).where(scope.in_([uuid.UUID(c) for c in coach_ids]))
                )
                for row in rows:
                    for column in columns:
                        if row._mapping[column] is not None:
                            found[(table.name, column.name, row.id)] = row._mapping[column]
    finally:
        await owner.dispose()
    return found


async def coach_with_every_secret(http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]) -> Coach:
    """A coach with an LLM API key, a webhook secret and two clients' widget tokens."""
    coach = await make_coach("Rotation")
    response = await http.patch(
        "/api/v1/settings",
        headers=coach.headers,
        json={
            "llm_provider": "openai",
            "llm_base_url": "https://llm.example.test/v1",
            "llm_model": "gpt-4o-mini",
            "llm_api_key": "sk-rotation-test-1234",
            "alert_webhook_url": "https://hooks.example.com/rotation",
        },
    )
    assert response.status_code == 200, response.text
    await make_client(http, coach, "One")
    await make_client(http, coach, "Two")
    return coach


def test_every_encrypted_column_is_found() -> None:
    names = {f"{t.name}.{c.name}" for t, cols in encrypted_columns(Base.metadata).items() for c in cols}
    assert {
        "coaches.llm_api_key_encrypted",
        "coaches.embedding_api_key_encrypted",
        "coaches.alert_webhook_secret_encrypted",
        "clients.widget_token_encrypted",
    } <= names


async def test_rotate_secret_re_encrypts_every_stored_secret_per_coach(
    settings: Settings,
    services: Services,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    tmp_path: Path,
) -> None:
    first = await coach_with_every_secret(http, make_coach)
    second = await coach_with_every_secret(http, make_coach)
    ids = [first.coach_id, second.coach_id]
    before = await stored_secrets(services, ids)
    assert len(before) == 2 * (1 + 1 + 2)  # per coach: API key, webhook secret, two widget tokens
    old_key, new_key = settings.secret_key or "", Fernet.generate_key().decode()
    old_box, new_box = SecretBox(old_key), SecretBox(new_key)
    plain = {where: old_box.decrypt(token) for where, token in before.items()}
    try:
        proc = rotate_cli(services, tmp_path, new_key, old_key)
        assert proc.returncode == 0, proc.stderr
        assert f"{first.coach_id[:8]}" in proc.stdout and f"{second.coach_id[:8]}" in proc.stdout
        assert "secrets of" in proc.stdout and "re-encrypted under SECRET_KEY" in proc.stdout
        after = await stored_secrets(services, ids)
        assert after.keys() == before.keys()
        assert {where: new_box.decrypt(token) for where, token in after.items()} == plain
        for token in after.values():
            assert Fernet(new_key.encode()).decrypt(token)  # the new key alone opens each one
    finally:  # as a Kubernetes Job would run it: it starts no embedded server (it did, and rotated those)
        back = rotate_cli(services, tmp_path, old_key, new_key, only_owner=True)
    assert back.returncode == 0, back.stderr
    assert not (tmp_path / "d").exists(), "no embedded server was set up"
    restored = await stored_secrets(services, ids)
    assert {where: old_box.decrypt(token) for where, token in restored.items()} == plain
    settings_now = await http.get("/api/v1/settings", headers=first.headers)
    assert settings_now.status_code == 200 and settings_now.json()["llm_api_key_hint"] == "sk-…1234"


async def test_rotate_secret_with_a_key_that_opens_nothing_changes_nothing_and_says_so(
    services: Services, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], tmp_path: Path
) -> None:
    coach = await coach_with_every_secret(http, make_coach)
    before = await stored_secrets(services, [coach.coach_id])
    proc = rotate_cli(services, tmp_path, Fernet.generate_key().decode())  # the old key forgotten
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "open with neither SECRET_KEY nor SECRET_KEY_OLD" in proc.stderr
    assert "add the key they were made with to SECRET_KEY_OLD" in proc.stderr
    assert await stored_secrets(services, [coach.coach_id]) == before


def test_rotate_secret_with_a_malformed_key_names_the_setting(services: Services, tmp_path: Path) -> None:
    proc = rotate_cli(services, tmp_path, Fernet.generate_key().decode(), "not-a-fernet-key")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "SECRET_KEY_OLD" in proc.stderr and "not a Fernet key" in proc.stderr
