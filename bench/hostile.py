"""Hostile-file benchmark: each file of the generated corpus (``tests/hostile_files.py``) through the limited
extractor (:mod:`app.rag.isolation`) under the default limits (512 MB, 30 s of CPU plus 0.5 s a page).

Rows: file | size | wall s | child CPU s | outcome (the reason the coach sees). Child CPU is the reaped
children's user + system time measured around each extraction (the executor is shut down, so its one child
is reaped, before the next file).

Run from the project root::

    .venv/bin/python bench/hostile.py
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.config import Settings  # noqa: E402
from app.rag.extract import PDF, ExtractionError  # noqa: E402
from app.rag.isolation import ExtractionLimits, extract_isolated  # noqa: E402
from tests.hostile_files import CORPUS  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def main() -> None:
    """Extract every corpus file once and print the table."""
    limits = ExtractionLimits.from_settings(Settings(_env_file=None))
    table = Table(title=f"Hostile corpus, limits {limits.memory_mb} MB / {limits.cpu_seconds} s CPU")
    for column in ("file", "size", "wall s", "child CPU s", "outcome"):
        table.add_column(column, justify="left" if column in ("file", "outcome") else "right")
    for hostile in CORPUS:
        data = hostile.make()
        cpu, wall = _children_cpu(), time.perf_counter()
        try:
            extracted = await extract_isolated(data, PDF, limits)
            outcome = f"read: {len(extracted.pages)} pages (not failed!)"
        except ExtractionError as exc:
            outcome = f"failed: {exc}"
        table.add_row(
            hostile.name,
            f"{len(data):,}",
            f"{time.perf_counter() - wall:.1f}",
            f"{_children_cpu() - cpu:.1f}",
            outcome,
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    asyncio.run(main())
