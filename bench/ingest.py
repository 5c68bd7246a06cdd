"""Ingestion benchmark: how long each stage of the real pipeline takes per book.

For every PDF in the books directory the book is uploaded and ``DocumentService.ingest`` (the body of the
arq job) is called directly, in this process, on embedded PostgreSQL + pgvector and Redis started in a
temporary directory. One row per book: pages, extracted characters, chunks, seconds until the first chunk
was searchable (committed) and until every chunk was, chunks per second over that time, then the seconds
of each stage (extract = pypdf in the isolated reader, wall time, overlapping the rest; chunk =
normalisation and token-based chunking; embed = all-MiniLM-L6-v2 on the CPU; store = the per-batch
commits; chunk, embed and store summed over batches). The embedder and the tokenizer are loaded before
the first book, so no row pays for loading them. All books go to the same coach, in file-name order.

Run from the project root (Self-Help, 321 pages, takes a few minutes on two cores)::

    .venv/bin/python bench/ingest.py
    .venv/bin/python bench/ingest.py --books path/to/pdfs --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

# The top level imports only the standard library: the isolated reader's ``spawn`` child re-imports this
# module (as ``__mp_main__``) before it reads, and importing the app here (3.5 s, 500 MB) would delay every
# book's first pages by what no worker pays (``opencoach worker``'s child imports ``app.cli``: 0.5 s).

DEFAULT_BOOKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "books"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time each ingestion stage for every PDF in a directory.")
    parser.add_argument(
        "--books", type=Path, default=DEFAULT_BOOKS, help=f"directory of PDFs (default {DEFAULT_BOOKS})"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    return parser.parse_args()


async def measure(books: list[Path]) -> list[dict[str, Any]]:
    """Ingest every book with the real pipeline; one result row per book."""
    from harness import bench_app, console, ingest_pdf

    from app.rag.pipeline import STAGES

    rows = []
    async with bench_app() as (container, coach_id):
        for path in books:
            with console.status(f"Ingesting {path.name}…"):
                timings = await ingest_pdf(container, coach_id, path)
            seconds = {stage: round(timings.seconds[stage], 3) for stage in STAGES}
            rows.append(
                {
                    "book": path.stem,
                    "pages": timings.pages,
                    "characters": timings.characters,
                    "chunks": timings.chunks,
                    "first_searchable": round(timings.first_searchable or 0.0, 2),
                    "searchable": round(timings.searchable or 0.0, 2),
                    "seconds": seconds,
                    "chunks_per_second": round(timings.chunks / (timings.searchable or 1.0), 2),
                }
            )
    return rows


def render(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    from app.rag.pipeline import STAGES

    table = Table(title="Ingestion (seconds)")
    table.add_column("book")
    for name in ("pages", "characters", "chunks", "first searchable", "fully searchable", "chunks/s", *STAGES):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(
            row["book"],
            str(row["pages"]),
            f"{row['characters']:,}",
            str(row["chunks"]),
            f"{row['first_searchable']:.2f}",
            f"{row['searchable']:.2f}",
            f"{row['chunks_per_second']:.1f}",
            *(f"{row['seconds'][stage]:.2f}" for stage in STAGES),
        )
    return table


async def main() -> None:
    args = parse_args()
    books = sorted(args.books.glob("*.pdf"))
    if not books:
        raise SystemExit(f"no PDF in {args.books}")
    rows = await measure(books)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from harness import print_table

        print_table(render(rows))


if __name__ == "__main__":
    asyncio.run(main())
