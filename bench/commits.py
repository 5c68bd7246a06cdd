"""Commit benchmark: what a write transaction's commit costs with PostgreSQL's synchronous commit against its
asynchronous commit (``SET LOCAL synchronous_commit TO off``, :func:`app.db.engine.commit_asynchronously`).

Each way runs ``--transactions`` transactions of one small ``INSERT`` (``BEGIN``, ``SET LOCAL …``, ``INSERT``,
``COMMIT``; the ``SET LOCAL`` sends ``on`` or ``off``, so both ways send the same statements), alternating over
``--rounds`` rounds, on an embedded PostgreSQL started for the benchmark in a temporary directory (the same
server and settings ``opencoach serve`` starts). Rows: the way, wall milliseconds per transaction (p50, p95,
mean), CPU milliseconds per transaction of this process and of PostgreSQL, and the WAL ``fsync`` calls per
transaction that PostgreSQL's client backends made (``pg_stat_io``, object ``wal``). A synchronous commit waits
for its own ``fdatasync`` of the WAL; an asynchronous one leaves it to the WAL writer. Run from the project root
(under a minute on two cores)::

    .venv/bin/python bench/commits.py
    .venv/bin/python bench/commits.py --transactions 2000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from chat import CpuMeter
from cryptography.fernet import Fernet
from harness import WAL_FSYNCS, percentile, print_table
from rich.table import Table

from app.core.config import Settings
from app.core.runtime import start_services

WAYS = {"synchronous": "on", "asynchronous": "off"}


async def _fsyncs(conn: asyncpg.Connection) -> int:
    """The client backends' WAL fsyncs so far, this connection's pending statistics flushed first."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    return int(await conn.fetchval(WAL_FSYNCS))


async def _round(conn: asyncpg.Connection, setting: str, transactions: int) -> list[float]:
    """``transactions`` one-row transactions with ``synchronous_commit`` = ``setting``; wall ms of each."""
    walls = []
    for i in range(transactions):
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute(f"SET LOCAL synchronous_commit TO {setting}")
            await conn.execute("INSERT INTO bench_commit (body) VALUES ($1)", f"message {i}")
        walls.append((time.perf_counter() - started) * 1000)
    return walls


async def measure(transactions: int, rounds: int) -> dict[str, Any]:
    """Per way: wall ms per transaction (p50/p95/mean), CPU ms per transaction of this process and of
    PostgreSQL, WAL fsyncs per transaction; ``rounds`` alternating rounds of ``transactions`` each."""
    totals: dict[str, dict[str, Any]] = {way: {"walls": [], "cpu": 0.0, "pg": 0.0, "fsyncs": 0} for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="opencoach-commits-") as data_dir:
        settings = Settings(data_dir=Path(data_dir), secret_key=Fernet.generate_key().decode())
        services = await asyncio.to_thread(start_services, settings)
        try:
            conn = await asyncpg.connect(services.migration_database_url.replace("postgresql+asyncpg", "postgresql"))
            meter = CpuMeter(Path(data_dir), os.getpid())  # this process as the "worker" too: only two kinds read
            await conn.execute("CREATE TABLE bench_commit (id bigserial PRIMARY KEY, body text NOT NULL)")
            await _round(conn, "on", 50)  # warm up
            for _ in range(rounds):
                for way, setting in WAYS.items():
                    fsyncs, before = await _fsyncs(conn), meter.read()
                    totals[way]["walls"] += await _round(conn, setting, transactions)
                    after = meter.read()
                    totals[way]["cpu"] += after["bench process"] - before["bench process"]
                    totals[way]["pg"] += after["PostgreSQL"] - before["PostgreSQL"]
                    totals[way]["fsyncs"] += await _fsyncs(conn) - fsyncs
            await conn.close()
        finally:
            services.stop()
    runs = transactions * rounds
    return {
        way: {
            "wall_ms": {
                "p50": round(percentile(t["walls"], 50), 3),
                "p95": round(percentile(t["walls"], 95), 3),
                "mean": round(statistics.fmean(t["walls"]), 3),
            },
            "client_cpu_ms": round(t["cpu"] * 1000 / runs, 3),
            "postgres_cpu_ms": round(t["pg"] * 1000 / runs, 3),
            "wal_fsyncs": round(t["fsyncs"] / runs, 2),
        }
        for way, t in totals.items()
    }


def render(summary: dict[str, Any]) -> Table:
    table = Table(title="One-row write transaction: synchronous against asynchronous commit")
    for column in ("commit", "wall p50 ms", "wall p95 ms", "wall mean ms", "client CPU ms", "PostgreSQL CPU ms"):
        table.add_column(column, justify="left" if column == "commit" else "right")
    table.add_column("WAL fsyncs", justify="right")
    for way, row in summary.items():
        wall = row["wall_ms"]
        table.add_row(
            way,
            f"{wall['p50']:.3f}",
            f"{wall['p95']:.3f}",
            f"{wall['mean']:.3f}",
            f"{row['client_cpu_ms']:.3f}",
            f"{row['postgres_cpu_ms']:.3f}",
            f"{row['wal_fsyncs']:.2f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=500, help="transactions per way and round (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both ways, in turn (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    summary = asyncio.run(measure(args.transactions, args.rounds))
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(render(summary))


if __name__ == "__main__":
    main()
