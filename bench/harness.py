"""Set-up shared by the benchmarks: the real embedded servers, schema, container and one signed-up coach, and
the timing and table helpers.

Not a benchmark itself; the benchmarks import it.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.core.config import Settings
from app.core.runtime import start_services
from app.db.migrate import upgrade_head
from app.rag.chunking import encoding
from app.rag.pipeline import IngestTimings

console = Console(stderr=True)
"""Progress goes to stderr so stdout holds only the table (or the JSON)."""


BENCH_CHAT_RATE_LIMIT = "1000000/minute"
"""``CHAT_RATE_LIMIT`` of :func:`bench_app`: a benchmark sends one client's messages back to back, faster than
any person does; the limit is still counted in Redis for every message (its cost is in the timings) but never
refuses one."""

WAL_FSYNCS = "SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal' AND backend_type = 'client backend'"
"""The WAL ``fsync`` calls PostgreSQL's client backends made so far (``pg_stat_io``, PostgreSQL 16+): one per
synchronous commit that found its WAL not yet on disk. A backend reports its counts at the end of a transaction
at most once a second, and when idle after :data:`STATS_REPORT_S`."""
STATS_REPORT_S = 11.0
"""Seconds after which every idle backend has reported its statistics (PostgreSQL's ``PGSTAT_IDLE_INTERVAL``
is 10 s)."""


@asynccontextmanager
async def bench_app(**settings: Any) -> AsyncIterator[tuple[Container, uuid.UUID]]:
    """Start PostgreSQL and Redis in a temporary data dir, migrate, build the container and sign up a coach.

    ``settings`` are extra ``Settings`` fields (``chat_rate_limit`` is :data:`BENCH_CHAT_RATE_LIMIT` unless
    given). The embedder and the chunker's tokenizer are loaded before
    this yields, so no timed stage pays for loading them. Everything is stopped and deleted on exit.
    """
    with tempfile.TemporaryDirectory(prefix="opencoach-bench-") as data_dir:
        settings.setdefault("chat_rate_limit", BENCH_CHAT_RATE_LIMIT)
        config = Settings(data_dir=Path(data_dir), secret_key=Fernet.generate_key().decode(), **settings)
        with console.status("Starting PostgreSQL and Redis…"):
            services = await asyncio.to_thread(start_services, config)
        try:
            with console.status("Applying migrations…"):
                await asyncio.to_thread(upgrade_head, services.migration_database_url)
            container = await Container.create(config, services.database_url, services.redis_url)
            try:
                signup = await container.accounts.signup("Bench Coach", "bench@example.com", "bench-password")
                with console.status("Loading the embedder…"):
                    await container.registry.local_embedder().embed(["warm up"])
                    encoding()
                yield container, signup.coach_id
            finally:
                await container.close()
        finally:
            services.stop()


@asynccontextmanager
async def attached_app(data_dir: Path) -> AsyncIterator[Container]:
    """The container over the PostgreSQL an interrupted benchmark left running (or stopped) in ``data_dir``
    (its ``pgdata``); a fresh Redis. Nothing is migrated or signed up; the servers are stopped on exit."""
    config = Settings(data_dir=data_dir, secret_key=Fernet.generate_key().decode())
    services = await asyncio.to_thread(start_services, config)
    try:
        container = await Container.create(config, services.database_url, services.redis_url)
        try:
            await container.registry.local_embedder().embed(["warm up"])
            yield container
        finally:
            await container.close()
    finally:
        services.stop()


async def ingest_pdf(container: Container, coach_id: uuid.UUID, path: Path) -> IngestTimings:
    """Upload ``path`` and run the ingestion pipeline in this process (the arq job's body, called directly).

    Raises ``RuntimeError`` with the document's error when ingestion fails.
    """
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        document = await container.documents.upload(uow, path.name, "application/pdf", path.read_bytes())
    timings = await container.documents.ingest(coach_id, document.id)
    if timings is None:
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            failed = await container.documents.get(uow, document.id)
        raise RuntimeError(f"ingesting {path.name} failed: {failed.error}")
    return timings


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100), interpolating linearly between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def print_table(table: Table) -> None:
    """Print ``table`` to stdout at its natural width at least: when stdout is not a terminal rich assumes
    80 columns and would cut the cells short."""
    stdout = Console()
    natural = stdout.measure(table, options=stdout.options.update_width(sys.maxsize)).maximum
    stdout.width = max(stdout.width, natural)
    stdout.print(table)


def run_in_data_dir(
    run: Callable[[Any, Path], Coroutine[Any, Any, None]], args: Any, directory: Path | None, prefix: str
) -> None:
    """``asyncio.run(run(args, directory))``, or in a temporary directory (named ``prefix…``, deleted after)
    when ``directory`` is ``None``."""
    if directory is not None:
        asyncio.run(run(args, directory))
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        asyncio.run(run(args, Path(data_dir)))


async def analysed(
    container: Container, coach_id: uuid.UUID, tables: tuple[str, ...], since: datetime, timeout_s: float = 300
) -> None:
    """Wait until PostgreSQL's autovacuum has analysed ``tables`` after ``since`` (the app's role does not own
    them, so it cannot ``ANALYZE`` them itself): the planner then knows how many rows they hold, as it would in
    production a minute after a bulk load. Raises ``RuntimeError`` after ``timeout_s``."""
    query = text("SELECT count(*) FROM pg_stat_user_tables WHERE relname = ANY(:tables) AND last_autoanalyze > :since")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            if await uow.session.scalar(query, {"tables": list(tables), "since": since}) == len(tables):
                return
        await asyncio.sleep(2)
    raise RuntimeError(f"autovacuum did not analyse {', '.join(tables)} within {timeout_s:.0f} s")


async def timed(runs: int, call: Callable[[], Awaitable[int]]) -> dict[str, float]:
    """p50/p95 milliseconds of ``runs`` calls (after one untimed), and the rows the last one returned."""
    await call()
    samples, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = await call()
        samples.append((time.perf_counter() - started) * 1000)
    return {"rows": rows, "p50": percentile(samples, 50), "p95": percentile(samples, 95)}
