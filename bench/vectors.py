"""Vector parameter benchmark: a 384-d query vector sent to PostgreSQL as pgvector's text against its binary
format (``app.db.vectors.BinaryVector``).

Each way runs the same statement ``--statements`` times, alternating over ``--rounds`` rounds, on the
benchmark's embedded PostgreSQL (no table: only the parameter's trip and its cast are measured):

- ``text``: pgvector's own SQLAlchemy type, which formats the list as ``[0.0123…,…]`` (each float's ``repr``),
  on an engine without pgvector's asyncpg codecs (the app's engines before this change); PostgreSQL parses it;
- ``binary``: :class:`~app.db.vectors.BinaryVector` on the app's engine (``make_engine``: pgvector's binary
  codecs), 4 bytes a dimension.

Rows: the way, bytes of one vector parameter, and per statement the CPU milliseconds of this process (the
bind's encoding, SQLAlchemy and asyncpg) and of PostgreSQL, and wall milliseconds, summed over the rounds.
Run from the project root (about a minute on two cores)::

    .venv/bin/python bench/vectors.py
    .venv/bin/python bench/vectors.py --statements 5000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import numpy as np
from chat import CpuMeter
from harness import bench_app, print_table
from pgvector import Vector
from pgvector.sqlalchemy import VECTOR
from rich.table import Table
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import UserDefinedType

from app.db.engine import make_engine
from app.db.vectors import BinaryVector
from app.llm.base import EMBEDDING_DIMENSIONS

WAYS = ("text", "binary")


def _statement(vector_type: UserDefinedType[Any]) -> Any:
    return text("SELECT vector_dims(CAST(:v AS vector))").bindparams(bindparam("v", type_=vector_type))


async def _run(engine: AsyncEngine, statement: Any, vectors: list[list[float]]) -> None:
    async with engine.connect() as conn:
        for vector in vectors:
            assert await conn.scalar(statement, {"v": vector}) == EMBEDDING_DIMENSIONS


async def measure(statements: int, rounds: int) -> dict[str, Any]:
    """CPU and wall milliseconds per statement of each way, summed over ``rounds`` alternating rounds."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((statements, EMBEDDING_DIMENSIONS)).astype(np.float32).tolist()
    totals = {way: {"statements": 0, "cpu": 0.0, "postgres": 0.0, "wall": 0.0} for way in WAYS}
    async with bench_app() as (container, _coach_id):
        url, dimensions = container.database_url, EMBEDDING_DIMENSIONS
        ways = {
            "text": (create_async_engine(url, pool_size=1), _statement(VECTOR(dimensions))),
            "binary": (make_engine(url, pool_size=1), _statement(BinaryVector(dimensions))),
        }
        try:
            for engine, statement in ways.values():  # connect, register codecs, prepare: not timed
                await _run(engine, statement, vectors[:5])
            meter = CpuMeter(container.settings.data_dir, os.getpid())
            for _ in range(rounds):
                for way, (engine, statement) in ways.items():
                    before, started = meter.read(), time.perf_counter()
                    await _run(engine, statement, vectors)
                    wall, after = time.perf_counter() - started, meter.read()
                    total = totals[way]
                    total["statements"] += statements
                    total["cpu"] += after["bench process"] - before["bench process"]
                    total["postgres"] += after["PostgreSQL"] - before["PostgreSQL"]
                    total["wall"] += wall
        finally:
            for engine, _ in ways.values():
                await engine.dispose()
    sizes = {"text": len(Vector(vectors[0]).to_text()), "binary": len(Vector(vectors[0]).to_binary())}
    return {
        way: {
            "statements": total["statements"],
            "bytes_per_vector": sizes[way],
            "cpu_ms_per_statement": round(total["cpu"] * 1000 / total["statements"], 3),
            "postgres_ms_per_statement": round(total["postgres"] * 1000 / total["statements"], 3),
            "wall_ms_per_statement": round(total["wall"] * 1000 / total["statements"], 3),
        }
        for way, total in totals.items()
    }


def render(summary: dict[str, Any]) -> Table:
    """The summary as a table: one row per way."""
    table = Table(title=f"A {EMBEDDING_DIMENSIONS}-d vector parameter, per statement")
    for column in ("way", "statements", "bytes a vector", "CPU ms (this process)", "PostgreSQL CPU ms", "wall ms"):
        table.add_column(column, justify="left" if column == "way" else "right")
    for way, row in summary.items():
        table.add_row(
            way,
            f"{row['statements']:,}",
            f"{row['bytes_per_vector']:,}",
            f"{row['cpu_ms_per_statement']:.3f}",
            f"{row['postgres_ms_per_statement']:.3f}",
            f"{row['wall_ms_per_statement']:.3f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=2000, help="statements per way and round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both ways, in turn (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    if min(args.statements, args.rounds) < 1:
        parser.error("--statements and --rounds must be at least 1")
    summary = asyncio.run(measure(args.statements, args.rounds))
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(render(summary))


if __name__ == "__main__":
    main()
