"""Faults, injected (issue 14): what the server does when the worker is killed, Redis hangs, or PostgreSQL
drops every connection. ``bench/chaos.py`` runs the same faults against whole processes and prints a table.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Retry
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app import worker
from app.container import Container
from app.core.config import Settings
from app.core.runtime import Services
from app.db import engine as engine_module
from app.db.engine import make_engine
from app.db.outbox import UNAVAILABLE, connect_redis
from app.rag.models import Chunk
from tests.conftest import Coach, upload
from tests.redis_process import RedisProcess

ROOT = Path(__file__).resolve().parents[3]


async def test_app_connections_carry_the_statement_and_lock_timeouts(container: Container) -> None:
    """Every connection of the app's pool has ``statement_timeout`` and ``lock_timeout`` (the defaults of
    ``DATABASE_STATEMENT_TIMEOUT_MS`` and ``DATABASE_LOCK_TIMEOUT_MS``), so no query waits for ever."""
    async with container.engine.connect() as conn:
        assert await conn.scalar(text("SHOW statement_timeout")) == "1min"
        assert await conn.scalar(text("SHOW lock_timeout")) == "10s"


async def test_a_statement_past_its_timeout_ends_with_an_error(services: Services) -> None:
    """A statement running past ``statement_timeout`` is cancelled by PostgreSQL, with an error, at once."""
    engine = make_engine(services.database_url, pool_size=1, statement_timeout_ms=300)
    try:
        started = time.monotonic()
        async with engine.connect() as conn:
            with pytest.raises(Exception, match="statement timeout"):
                await conn.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 3
    finally:
        await engine.dispose()


@asynccontextmanager
async def _every_connection_of_the_app_ended(container: Container, services: Services) -> AsyncIterator[None]:
    """What a PostgreSQL restart does to the pool: every server connection of the app's role ends (the role read
    from the app's URL: a pooled connection could be one a restart ended before). On exit the app's shared pool is
    emptied, so no connection ended here is handed to a later test inside the alive-bypass window."""
    role = make_url(services.database_url).username
    admin = make_engine(services.migration_database_url, pool_size=1)
    try:
        async with admin.connect() as conn:
            ended = await conn.scalar(
                text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = :role"),
                {"role": role},
            )
        assert ended and ended >= 1
    finally:
        await admin.dispose()
    try:
        yield
    finally:
        await container.engine.dispose()


async def test_the_pool_recovers_when_postgres_drops_every_connection(
    container: Container, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a PostgreSQL restart the next query gets a fresh connection (the pool's checkout ping, here with
    no alive-bypass window), with no restart of the app."""
    monkeypatch.setattr(engine_module, "ALIVE_BYPASS_S", 0.0)
    async with _every_connection_of_the_app_ended(container, services), container.engine.connect() as conn:
        assert await conn.scalar(text("SELECT 1")) == 1


async def test_a_restart_within_the_alive_bypass_window_fails_one_statement_and_the_pool_recovers(
    container: Container, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection back in the pool a moment ago is handed out unchecked (``ALIVE_BYPASS_S``, here long enough
    for a slow machine): when PostgreSQL restarted in that moment, its first statement fails with a disconnect
    error, and SQLAlchemy invalidates the pool, so the next statement works on a new connection."""
    engine = make_engine(services.database_url, pool_size=1)  # its one connection is the one handed out
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
        monkeypatch.setattr(engine_module, "ALIVE_BYPASS_S", 3600.0)
        async with _every_connection_of_the_app_ended(container, services):
            with pytest.raises(DBAPIError) as failed:
                async with engine.connect() as conn:
                    await conn.scalar(text("SELECT 1"))
            assert failed.value.connection_invalidated
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


MODEL = (worker.MEMORY_JOB_TRIES, worker.RETRY_DELAY_S)
STORE = (worker.STORE_JOB_TRIES, worker.STORE_RETRY_S)
JOBS = [
    (worker.summarize_session, "summaries", "summarize_session", (), MODEL),
    (worker.extract_insights, "insights", "extract_insights", (True,), MODEL),
    (worker.update_profile, "profiles", "update_profile", (), MODEL),
    (worker.embed_messages, "episodes", "embed_messages", (), MODEL),
    (worker.analyse_intervention, "interventions", "analyse", (), MODEL),
    (worker.start_fine_tune, "fine_tunes", "start", (), MODEL),
    (worker.evaluate_model, "model_versions", "evaluate", (), MODEL),
    (worker.answer_pending, "chat", "answer_pending", (), STORE),
    (worker.score_interventions, "interventions", "score_outcomes", (), STORE),
    (worker.rebuild_briefs, "handoffs", "rebuild_briefs", (), STORE),
    (worker.purge_erased_data, "rights", "purge", (), STORE),
]


@pytest.mark.parametrize(("job", "service", "method", "extra", "tries"), JOBS, ids=[j[0].__name__ for j in JOBS])
async def test_a_job_the_database_dropped_is_tried_again(
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
    job: Callable[..., Awaitable[str]],
    service: str,
    method: str,
    extra: tuple[Any, ...],
    tries: tuple[int, float],
) -> None:
    """A job whose database connection drops (a PostgreSQL restart) asks arq to run it again later, as a
    provider failure does: a plain error was its end (arq runs no job again after one, and these are queued
    once): a summary was marked ``failed`` for good, its profile update never queued, a handback's answer, a
    forget's brief rebuild or an erasure's purge never done. At the last try the error is its end."""
    ids = (str(uuid.uuid4()), str(uuid.uuid4()))
    last_try, delay_s = tries

    async def dropped(*args: Any, **kwargs: Any) -> str:
        raise DBAPIError("SELECT 1", {}, ConnectionResetError("reset"), connection_invalidated=True)

    monkeypatch.setattr(getattr(container, service), method, dropped)
    with pytest.raises(Retry) as retried:
        await job({"container": container, "job_try": 1}, *ids, *extra)
    assert retried.value.defer_score == delay_s * 1000
    with pytest.raises(DBAPIError):
        await job({"container": container, "job_try": last_try}, *ids, *extra)


async def test_a_telegram_delivery_the_database_dropped_is_tried_again() -> None:
    """``telegram_deliver`` is queued once, when Redis refused a stored message for the client's chat: a
    dropped database connection was its end, and the message never reached the chat."""

    class Dropping:
        async def deliver_stored(self, *args: Any) -> str:
            raise DBAPIError("SELECT 1", {}, ConnectionResetError("reset"), connection_invalidated=True)

    ids = (str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()))
    with pytest.raises(Retry) as retried:
        await worker.telegram_deliver({"telegram": Dropping(), "job_try": 1}, *ids)
    assert retried.value.defer_score == worker.STORE_RETRY_S * 1000
    with pytest.raises(DBAPIError):
        await worker.telegram_deliver({"telegram": Dropping(), "job_try": worker.STORE_JOB_TRIES}, *ids)


async def test_a_hung_redis_fails_within_the_socket_timeout(tmp_path: Path) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP) makes a command fail after
    ``REDIS_SOCKET_TIMEOUT_SECONDS`` (with a Redis-unavailable error the callers already handle), instead of
    holding the caller for ever."""
    server = RedisProcess(tmp_path / "hung-redis")
    server.start()
    redis = connect_redis(server.url, socket_timeout_s=1.0)
    try:
        assert await redis.ping()
        server.pause()
        started = time.monotonic()
        with pytest.raises(UNAVAILABLE):
            async with asyncio.timeout(10):  # the test's own bound; the client must give up well before
                await redis.get("anything")
        assert time.monotonic() - started < 3
    finally:
        server.resume()
        await redis.aclose()
        server.stop()


def _worker(settings: Settings, services: Services, log: Any) -> subprocess.Popen[bytes]:
    """``opencoach worker`` in a process of its own, on the test session's servers (its log to ``log``)."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=services.database_url,
        MIGRATION_DATABASE_URL=services.migration_database_url,
        REDIS_URL=services.redis_url,
        DATA_DIR=str(settings.data_dir),
        SECRET_KEY=settings.secret_key or "",
        WORKER_LEASE_SECONDS="3",
        WORKER_MAX_JOBS="4",
        PYTHONPATH=str(ROOT),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


@pytest.fixture
def worker_processes(
    settings: Settings, services: Services, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with (tmp_path / f"worker-{len(started)}.log").open("wb") as log:
            started.append(_worker(settings, services, log))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _document(http: httpx.AsyncClient, coach: Coach, document_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/v1/documents/{document_id}", headers=coach.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _until(check: Callable[[], Any], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"not within {seconds} s")


async def test_a_worker_killed_mid_ingestion_leaves_a_document_that_completes_after_a_restart(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Any],
    container: Container,
    worker_processes: Callable[[], subprocess.Popen[bytes]],
) -> None:
    """SIGKILL ``opencoach worker`` while it embeds a document: a restarted worker takes the job up again
    once its lease lapses (``WORKER_LEASE_SECONDS``, 3 s here, not arq's hour) and the document ends
    ``ready`` with each chunk stored once (the re-run resumes after the chunks the killed one committed)."""
    coach: Coach = await make_coach("Killed worker")
    body = "".join(f"Day {n}: walk for twenty minutes, then write down one thing that went well. " for n in range(2500))
    document_id = (await upload(http, coach, "plan.txt", body.encode()))["id"]
    first = worker_processes()

    async def embedding() -> bool:
        doc = await _document(http, coach, document_id)
        return doc["status"] == "processing" and doc["chunks"] > 0

    await _until(embedding, 180)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed = await _document(http, coach, document_id)
    assert killed["status"] == "processing"  # nobody is left to finish or fail it

    worker_processes()

    async def ready() -> dict[str, Any] | None:
        doc = await _document(http, coach, document_id)
        assert doc["status"] != "failed", doc
        return doc if doc["status"] == "ready" else None

    done = await _until(ready, 400)
    async with container.sessionmaker() as session:
        await session.execute(text("SELECT set_config('app.coach_id', :c, true)"), {"c": coach.coach_id})
        rows, ordinals = (
            await session.execute(
                select(func.count(), func.count(func.distinct(Chunk.ordinal))).where(
                    Chunk.document_id == uuid.UUID(document_id)
                )
            )
        ).one()
    assert rows == ordinals == done["chunks"] > killed["chunks"]
