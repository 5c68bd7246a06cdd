"""Memory recall as a client's history grows: the cost of the chat turn's episodic recall against the number of
messages the client has.

Every client and coach message becomes an episode (:mod:`app.memory.episodes`), and each chat turn recalls the
client's best ones by both arms, exact cosine and BM25, over *all* the client's episodes
(:func:`app.memory.retrieval.context_for`, the turn's ``gather.memory`` stage). This benchmark gives one client
``--sizes`` episodes in turn (default 100, 1,000, 5,000, 20,000: 20,000 is a client writing ten messages a day
for five years and more), bulk-inserted: the texts are ESConv's utterances (``../shared/data/esconv``) in turn,
so each has a real English ``tsvector``, a message a minute apart, half the client's, half the replies; the
vectors are random unit vectors (384-d: the cost of a distance does not depend on its values). After PostgreSQL's
autovacuum has analysed the tables, ``context_for`` runs ``--runs`` times per size in a unit of work of its own,
with the MiniLM embedding of one of ten coaching questions in turn (embedded before the timing).

Rows: episodes, p50/p95 milliseconds of the whole recall (profile, both episodic arms, insights, summaries) and of
the episodic arms' one statement alone (:func:`app.memory.episodes.episode_arms`). Run from the project root
(about five minutes on two cores)::

    .venv/bin/python bench/recall.py
    .venv/bin/python bench/recall.py --sizes 100 2000 --runs 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from harness import analysed, bench_app, console, print_table, timed
from rich.table import Table
from sqlalchemy import text

from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.evals.learning import load_esconv
from app.memory.episodes import episode_arms
from app.memory.retrieval import CANDIDATES, context_for

BENCH = Path(__file__).resolve().parent

ESCONV = BENCH.parent.parent / "shared" / "data" / "esconv"
T0 = datetime(2021, 1, 1, tzinfo=UTC)
QUESTIONS = [
    "How do I stop procrastinating on my thesis?",
    "I keep arguing with my sister about our parents.",
    "What did we say about my sleep last month?",
    "I feel anxious before every team meeting.",
    "How can I be kinder to myself when I fail?",
    "My new job is overwhelming, where do I start?",
    "When did I first mention running again?",
    "I want to save money but I keep spending.",
    "How do I tell my partner I need more space?",
    "What was my goal for this year?",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100, 1_000, 5_000, 20_000], help="the client's episodes, in turn"
    )
    parser.add_argument("--runs", type=int, default=30, help="timed recalls per size (default 30)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    return parser.parse_args()


def utterances() -> list[str]:
    """Every ESConv utterance of the validation file, in order."""
    return [turn["text"] for dialogue in load_esconv(ESCONV) for turn in dialogue["dialog"] if turn["text"].strip()]


async def grow(
    container: Container, coach_id: uuid.UUID, client_id: uuid.UUID, texts: list[str], start: int, end: int
) -> None:
    """Give the client messages ``start``…``end - 1`` (a minute apart, client and AI in turn) and their episodes
    (random unit vectors, the texts' ``tsvector``), in batches of 2,000 in one conversation."""
    model = (await container.registry.query_embedder(await coach_of(container, coach_id))).model
    rng = np.random.default_rng(start)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        conversation = await uow.session.scalar(
            text(
                "INSERT INTO conversations (id, coach_id, client_id, channel) VALUES (gen_random_uuid(), :coach, "
                ":client, 'widget') RETURNING id"
            ),
            {"coach": coach_id, "client": client_id},
        )
    for first in range(start, end, 2_000):
        batch = range(first, min(first + 2_000, end))
        vectors = rng.standard_normal((len(batch), 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [
            {
                "id": uuid.uuid4(),
                "sender": "client" if i % 2 == 0 else "ai",
                "text": texts[i % len(texts)],
                "at": T0 + timedelta(minutes=i),
                "vector": vector.tolist(),
            }
            for i, vector in zip(batch, vectors, strict=True)
        ]
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            params = {"coach": coach_id, "client": client_id, "conversation": conversation, "model": model}
            await uow.session.execute(
                text(
                    "INSERT INTO messages (id, coach_id, conversation_id, sender_type, text, citations, metadata, "
                    "created_at) VALUES (:id, :coach, :conversation, :sender, :text, '[]', '{}', :at)"
                ),
                [params | row for row in rows],
            )
            await uow.session.execute(
                text(
                    "INSERT INTO episodes (id, coach_id, client_id, message_id, at, embedding, embedding_model, tsv) "
                    "VALUES (gen_random_uuid(), :coach, :client, :id, :at, CAST(:vector AS vector), :model, "
                    "to_tsvector('english', :text))"
                ),
                [params | row for row in rows],
            )


async def coach_of(container: Container, coach_id: uuid.UUID) -> Coach:
    """The coach's row (its embedding settings pick the query embedder)."""
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        return await uow.coach()


async def measure(sizes: list[int], runs: int) -> list[dict[str, float]]:
    """One row per size: ``episodes``, then the p50/p95 of ``recall`` and of ``arms``."""
    texts = utterances()
    results: list[dict[str, float]] = []
    async with bench_app() as (container, coach_id):
        coach = await coach_of(container, coach_id)
        embedder = await container.registry.query_embedder(coach)
        queries = itertools.cycle(zip(QUESTIONS, await embedder.embed(QUESTIONS), strict=True))
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            client, _ = await container.accounts.create_client(uow, "Long talker")
            client_id = client.id

        async def whole() -> int:
            query, vector = next(queries)
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                recalled = await context_for(
                    uow.session,
                    await uow.coach(),
                    client_id,
                    query=query,
                    query_embedding=vector,
                    embedding_model=embedder.model,
                    exclude_session_id=None,
                )
            return len(recalled.items)

        async def arms() -> int:
            query, vector = next(queries)
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                found = await episode_arms(
                    uow.session, coach_id, client_id, query, vector, embedding_model=embedder.model, limit=CANDIDATES
                )
            return len(found.dense) + len(found.lexical)

        stored = 0
        for size in sorted(sizes):
            with console.status(f"Storing {size:,} episodes, waiting for autovacuum…"):
                since = datetime.now(UTC)
                await grow(container, coach_id, client_id, texts, stored, size)
                stored = size
                await analysed(container, coach_id, ("messages", "episodes"), since)
            with console.status(f"Timing recall over {size:,} episodes…"):
                recall, statement = await timed(runs, whole), await timed(runs, arms)
            results.append(
                {
                    "episodes": size,
                    "recall_p50": recall["p50"],
                    "recall_p95": recall["p95"],
                    "arms_p50": statement["p50"],
                    "arms_p95": statement["p95"],
                }
            )
    return results


def main() -> None:
    args = parse_args()
    results = asyncio.run(measure(args.sizes, args.runs))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    table = Table(title=f"Memory recall over one client's history ({args.runs} runs a size)")
    for column in ("episodes", "recall p50 ms", "recall p95 ms", "episodic arms p50 ms", "episodic arms p95 ms"):
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(
            f"{row['episodes']:,}",
            *(f"{row[key]:.1f}" for key in ("recall_p50", "recall_p95", "arms_p50", "arms_p95")),
        )
    print_table(table)


if __name__ == "__main__":
    main()
