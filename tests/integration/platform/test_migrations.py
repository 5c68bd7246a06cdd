"""Schema: migrations reach head and match the models; the worker and ``telegram poll`` refuse an out-of-date
schema."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import insert, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.accounts.models import Coach
from app.core.config import Settings
from app.core.runtime import Services
from app.db.engine import make_engine
from app.db.migrate import alembic_config, head_revision, upgrade_head
from app.llm.registry import ProviderRegistry
from app.rag.models import Chunk, Document, DocumentStatus
from app.worker import build_worker

VECTOR_TABLES = ("chunks", "episodes", "insights", "chat_sessions", "interventions")


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


@contextlib.asynccontextmanager
async def _never_migrated(services: Services) -> AsyncIterator[tuple[str, str]]:
    """A new, empty database beside the test one (no revision): its app and owner URLs, dropped on exit."""
    name = f"stale_{uuid.uuid4().hex[:8]}"
    owner = make_engine(services.migration_database_url, pool_size=1)
    async with owner.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        app_url, owner_url = (
            make_url(url).set(database=name).render_as_string(hide_password=False)
            for url in (services.database_url, services.migration_database_url)
        )
        yield app_url, owner_url
    finally:
        async with owner.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        await owner.dispose()


@contextlib.asynccontextmanager
async def owned_database(services: Services, prefix: str) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A new, empty database owned by a new role that is neither superuser nor BYPASSRLS, as the deployment's schema
    owner is (``deploy/postgres-init.sh``), with the pgvector extension (which only a superuser makes): the owner's
    URL, for migrations, and a superuser's engine in that database, for seeding and reading every tenant's rows past
    row-level security. Both are dropped on exit. A data migration run by such an owner without
    :func:`app.db.migrate.across_tenants` matches no row, silently, as CI's superuser never shows."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    superuser = make_engine(services.migration_database_url, pool_size=1)
    async with superuser.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"CREATE ROLE {name} LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS PASSWORD '{name}'"))
        await conn.execute(text(f"CREATE DATABASE {name} OWNER {name}"))
    as_superuser = make_url(services.migration_database_url).set(database=name)
    in_database = make_engine(as_superuser.render_as_string(hide_password=False), pool_size=1)
    try:
        async with in_database.begin() as conn:
            await conn.execute(text("CREATE EXTENSION vector"))
        yield as_superuser.set(username=name, password=name).render_as_string(hide_password=False), in_database
    finally:
        await in_database.dispose()
        async with superuser.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
            await conn.execute(text(f"DROP ROLE {name}"))
        await superuser.dispose()


async def test_worker_refuses_to_start_on_an_out_of_date_schema(
    settings: Settings, services: Services, registry: ProviderRegistry
) -> None:
    async with _never_migrated(services) as (stale_url, _):
        worker = build_worker(settings, stale_url, services.redis_url, burst=True, registry=registry)
        with pytest.raises(RuntimeError, match="opencoach migrate"):
            await worker.main()
        await worker.close()


async def test_telegram_poll_refuses_to_start_on_an_out_of_date_schema(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    """``opencoach telegram poll`` on a never-migrated database started, then logged a traceback every few seconds
    (function telegram_bots_in_mode does not exist): it refuses to start as the worker does, exit 1."""
    async with _never_migrated(services) as (stale_url, stale_owner_url):
        env = {
            **os.environ,
            "DATABASE_URL": stale_url,
            "MIGRATION_DATABASE_URL": stale_owner_url,
            "REDIS_URL": services.redis_url,
            "DATA_DIR": str(tmp_path),
            "SECRET_KEY": settings.secret_key or "",
            "COLUMNS": "250",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "telegram", "poll", env=env, stdout=PIPE, stderr=STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
        finally:
            if proc.returncode is None:  # still polling: the refusal never came
                proc.kill()
                await proc.wait()
    output = out.decode()
    assert proc.returncode == 1, output
    expected = f"database schema is at no revision, code expects {head_revision()}: run `opencoach migrate`"
    assert f"telegram poll not started: {expected}" in output, output
    assert "Traceback" not in output and "polling Telegram bots" not in output, output


async def test_chunks_keep_their_embeddings_and_rows_up_to_half_a_page_whole(services: Services) -> None:
    """Migration 0032: a chunk of about 3 kB stays whole in its row (nothing in the TOAST table); a bigger one
    moves its text out, never its vector (which every exact distance would otherwise fetch back through the
    TOAST index). The text is barely compressible, so compression alone cannot fit the rows."""
    coach_id, doc_id = uuid.uuid4(), uuid.uuid4()
    rng = np.random.default_rng(32)
    texts = [" ".join(f"w{n}" for n in rng.integers(0, 10**9, words)) for words in (60, 800)]  # ~0.7 and ~9 kB
    vectors = rng.standard_normal((2, 384))
    owner = make_engine(services.migration_database_url, pool_size=1)
    try:
        async with owner.begin() as conn:
            await conn.execute(insert(Coach).values(id=coach_id, name="Inline Vectors Coach"))
            await conn.execute(
                insert(Document).values(
                    id=doc_id, coach_id=coach_id, title="t", filename="t.txt", content_type="text/plain",
                    size_bytes=0, sha256="0" * 64, original=b"", status=DocumentStatus.READY, chunks=2,
                    embedding_model="test-inline",
                )
            )  # fmt: skip
            await conn.execute(
                insert(Chunk),
                [
                    {"coach_id": coach_id, "document_id": doc_id, "ordinal": i, "text": body, "token_count": 1,
                     "embedding": (vector / np.linalg.norm(vector)).tolist()}
                    for i, (body, vector) in enumerate(zip(texts, vectors, strict=True))
                ],
            )  # fmt: skip
            stored = (
                await conn.execute(
                    select(
                        text("pg_column_toast_chunk_id(chunks.text) IS NOT NULL"),
                        text("pg_column_toast_chunk_id(chunks.tsv) IS NOT NULL"),
                        text("pg_column_toast_chunk_id(chunks.embedding) IS NOT NULL"),
                    )
                    .where(Chunk.document_id == doc_id)
                    .order_by(Chunk.ordinal)
                )
            ).all()
            tables = (
                await conn.execute(
                    text(
                        "SELECT c.relname, a.attstorage::text, c.reloptions FROM pg_class c "
                        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'embedding' "
                        "WHERE c.relname = ANY(:tables)"
                    ),
                    {"tables": list(VECTOR_TABLES)},
                )
            ).all()
            await conn.execute(text("DELETE FROM coaches WHERE id = :id"), {"id": coach_id})
    finally:
        await owner.dispose()
    # (text, tsv, vector) out of line: the ~3 kB row is whole; the ~9 kB one moves its text and its tsv (800
    # distinct words) out, never its vector
    assert [tuple(row) for row in stored] == [(False, False, False), (True, True, False)]
    assert sorted(tables) == sorted((table, "p", ["toast_tuple_target=4080"]) for table in VECTOR_TABLES)


async def test_every_migration_runs_as_a_schema_owner_that_is_no_superuser(services: Services) -> None:
    """``opencoach migrate`` as the deployment's schema owner (``deploy/postgres-init.sh``: the database's owner,
    neither superuser nor BYPASSRLS; the superuser only made the pgvector extension), as CI's superuser never
    does: every migration applies, and a data migration changes the rows of every tenant under the row-level
    security its tables force on their owner (0041 gives a MiniLM tombstone its vector; an ``UPDATE`` run
    without :func:`app.db.migrate.across_tenants` matched no row there, silently)."""
    coach_id, client_id = uuid.uuid4(), uuid.uuid4()
    async with owned_database(services, "owned") as (as_owner, in_database):
        await asyncio.to_thread(command.upgrade, alembic_config(as_owner), "0040")
        async with in_database.begin() as conn:  # a tenant's forgotten insight, as 0040 stored it
            await _insert_at(conn, "coaches", {"id": coach_id, "name": "Owned Coach"})
            await _insert_at(conn, "clients", {"id": client_id, "coach_id": coach_id, "name": "Owned Client"})
            await _insert_at(
                conn,
                "insights",
                {"coach_id": coach_id, "client_id": client_id, "status": "deleted",
                 "embedding_model": "all-MiniLM-L6-v2"},
                embedding="array_fill(0.05::real, ARRAY[384])::vector",
            )  # fmt: skip
        await asyncio.to_thread(upgrade_head, as_owner)
        async with in_database.connect() as conn:
            tombstones = await conn.scalar(text("SELECT count(tombstone_embedding) FROM insights"))
    assert tombstones == 1


async def test_alert_emails_stored_before_confirmation_existed_stay_confirmed(services: Services) -> None:
    """Migration 0060: an ``alert_email`` set before addresses were confirmed counts as confirmed (alerts keep going
    there, nothing waits for a link), so no coach loses alerts with the upgrade."""
    coach_id = uuid.uuid4()
    async with owned_database(services, "alerts") as (as_owner, in_database):
        await asyncio.to_thread(command.upgrade, alembic_config(as_owner), "0059")
        async with in_database.begin() as conn:
            await _insert_at(conn, "coaches", {"id": coach_id, "name": "Old Coach", "alert_email": "me@example.com"})
        await asyncio.to_thread(upgrade_head, as_owner)
        async with in_database.connect() as conn:
            row = (await conn.execute(text("SELECT alert_email, alert_email_pending FROM coaches"))).one()
    assert tuple(row) == ("me@example.com", None)


@pytest.mark.parametrize("seeded_at", ["0062", "0063"])
async def test_profile_lines_learnt_before_their_sources_were_recorded_get_their_clients_sessions(
    services: Services, seeded_at: str
) -> None:
    """Migration 0063: a profile line learnt before 0042 had no sources, so it read as the coach's own and no forget
    or summary deletion ever took it out (found by an upgrade from 0037 with real data). In a profile the coach never
    edited, each unsourced line (and the tone) now names every summarised session of its client; sourced lines keep
    theirs, and a profile the coach edited is left as it was; run by a schema owner that is no superuser, as
    deployed (it changed no row there before it ran :func:`~app.db.migrate.across_tenants`). Seeded after 0063, as a
    database that ran 0063 before that fix holds them, migration 0065 does 0063's work."""
    coach_id, learnt, edited = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first, second, deleted, later = (uuid.uuid4() for _ in range(4))
    async with owned_database(services, "profiles") as (as_owner, in_database):
        await asyncio.to_thread(command.upgrade, alembic_config(as_owner), seeded_at)
        async with in_database.begin() as conn:
            await _insert_at(conn, "coaches", {"id": coach_id, "name": "Old Coach"})
            for client_id in (learnt, edited):
                await _insert_at(conn, "clients", {"id": client_id, "coach_id": coach_id, "name": "Carol"})
                await _insert_at(conn, "conversations", {"id": client_id, "coach_id": coach_id, "client_id": client_id})
            for session_id, status, day in (
                (first, "summarized", 1),
                (second, "summarized", 2),
                (deleted, "deleted", 3),
            ):
                values = {"id": session_id, "coach_id": coach_id, "client_id": learnt, "conversation_id": learnt}
                await _insert_at(
                    conn, "chat_sessions", values | {"status": status}, started_at=f"now() - interval '{10 - day} days'"
                )
            sourced = json.dumps({"what_works": {"walks": [str(later)]}})
            await _insert_at(
                conn,
                "client_profiles",
                {"coach_id": coach_id, "client_id": learnt, "tone": "Warm"},
                what_works='\'["Short plans", "Walks"]\'::jsonb',
                sensitive_topics="'[\"Her father\"]'::jsonb",
                communication_preferences="'[]'::jsonb",
                what_doesnt_work="'[]'::jsonb",
                entry_sessions=f"'{sourced}'::jsonb",
            )
            await _insert_at(
                conn,
                "client_profiles",
                {"coach_id": coach_id, "client_id": edited, "tone": ""},
                what_works="'[\"A line of the coach\"]'::jsonb",
                coach_edited_at="now()",
            )
        await asyncio.to_thread(upgrade_head, as_owner)
        async with in_database.connect() as conn:
            rows = dict((await conn.execute(text("SELECT client_id, entry_sessions FROM client_profiles"))).all())
    both = [str(first), str(second)]
    assert rows[learnt] == {
        "what_works": {"walks": [str(later)], "short plans": both},
        "sensitive_topics": {"her father": both},
        "communication_preferences": {},
        "what_doesnt_work": {},
        "tone": {"warm": both},
    }
    assert rows[edited] == {}


_FILLERS = {"text": "''", "character varying": "''", "integer": "0", "smallint": "0", "double precision": "0",
            "boolean": "false", "jsonb": "'{}'", "timestamp with time zone": "now()", "uuid": "gen_random_uuid()",
            "ARRAY": "'{}'"}  # fmt: skip


async def _insert_at(conn: AsyncConnection, table: str, values: dict[str, object], **expressions: str) -> None:
    """Insert a row into ``table`` as the schema of the moment has it: ``values`` bound, ``expressions`` as SQL,
    every other column that must be set and has no default given a neutral value of its type."""
    required = await conn.execute(
        text(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = :table"
            " AND is_nullable = 'NO' AND column_default IS NULL"
        ),
        {"table": table},
    )
    given = {name: f":{name}" for name in values} | expressions
    filled = {name: _FILLERS[kind] for name, kind in required.all() if name not in given}
    columns = given | filled
    insert_row = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(columns.values())})"
    await conn.execute(text(insert_row), values)
