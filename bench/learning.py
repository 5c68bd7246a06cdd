"""Learning-loop benchmark: what the learning loop costs on the hot path and on the coach's pages.

On embedded PostgreSQL + pgvector and Redis, with the local models (SmolLM2 through llama.cpp, MiniLM):

- **chat turn, cache miss vs. hit**: ten first questions, each from a new client (a miss: the model runs),
  then the same ten from ten other new clients (the same prompt: a hit, no model call); wall clock of
  ``ChatService.turn``;
- **few-shot retrieval**: ``InterventionService.similar`` (pgvector cosine over the coach's analysed
  interventions) with 1,000 and 5,000 interventions, 50 queries each;
- **learning dashboard**: ``LearningDashboard.figures`` over 30 days with 2,000 and 10,000 rated replies
  (10 % thumbs-down, of which the latest 200 are embedded and clustered on the first view; later views with
  no new thumbs-down reuse the clusters from Redis);
- **training data export**: ``TrainingDataService.export`` of 5,000 SFT examples as JSONL.

The texts are ESConv turns (seeker message → supporter reply) from ``--esconv`` (default
``../shared/data/esconv/valid.jsonl``). Run from the project root (a few minutes on two cores)::

    .venv/bin/python bench/learning.py
    .venv/bin/python bench/learning.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import bench_app, console, percentile, print_table
from rich.table import Table
from sqlalchemy import insert

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.learning.models import ExampleKind, ExampleSource, Intervention, InterventionSource, Split, TrainingExample

ESCONV = Path(__file__).resolve().parents[2] / "shared" / "data" / "esconv" / "valid.jsonl"
QUESTIONS = (
    "How do I stop procrastinating in the morning?",
    "I feel anxious before every meeting. What can I do?",
    "How can I get back on track after a bad week?",
    "My partner and I keep arguing about chores.",
    "How do I ask my boss for a raise?",
    "I can't switch off from work in the evening.",
    "How do I build a habit of exercising?",
    "I feel lonely since I moved to a new city.",
    "How can I stop comparing myself to others?",
    "What should I do when I feel overwhelmed?",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Latency of the learning loop's parts.")
    parser.add_argument("--esconv", type=Path, default=ESCONV, help="ESConv JSON lines (default: shared valid set)")
    parser.add_argument("--max-tokens", type=int, default=64, help="reply length limit of the chat turns")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser.parse_args()


def esconv_pairs(path: Path) -> list[tuple[str, str, str]]:
    """``(seeker message, supporter reply, strategy)`` for every supporter turn that follows a seeker turn."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        dialog = json.loads(line)["dialog"]
        for before, turn in zip(dialog, dialog[1:], strict=False):
            if before["speaker"] == "usr" and turn["speaker"] == "sys":
                pairs.append((before["text"], turn["text"], turn.get("strategy", "Others")))
    return pairs


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "mean_ms": round(statistics.fmean(values), 1),
        "n": len(values),
    }


async def timed(make: Any) -> float:
    started = time.perf_counter()
    await make()
    return (time.perf_counter() - started) * 1000


async def chat_cache(container: Container, coach_id: uuid.UUID) -> dict[str, dict[str, float]]:
    async def ask(name: str, question: str) -> tuple[float, str]:
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            client, _ = await container.accounts.create_client(uow, name)
        started = time.perf_counter()
        items = [item async for item in container.chat.turn(coach_id, client.id, question)]
        return (time.perf_counter() - started) * 1000, items[-1].metadata.get("cache", "off")  # type: ignore[union-attr]

    with console.status("Loading the chat model (untimed warm-up turn)…"):
        await ask("warm-up", "Hello!")
    results: dict[str, list[float]] = {"miss": [], "hit": []}
    with console.status("Chat turns: cache misses then hits…"):
        for round_ in ("a", "b"):
            for i, question in enumerate(QUESTIONS):
                ms, outcome = await ask(f"{round_}{i}", question)
                results[outcome].append(ms)
    return {f"chat turn, cache {outcome}": stats(values) for outcome, values in results.items() if values}


async def seed_conversations(container: Container, coach_id: uuid.UUID, n: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        session = uow.session
        client, _ = await container.accounts.create_client(uow, f"Seed {uuid.uuid4().hex[:6]}")
        ids = [uuid.uuid4() for _ in range(n)]
        await session.execute(
            insert(Conversation),
            [{"id": i, "coach_id": coach_id, "client_id": client.id, "channel": "widget"} for i in ids],
        )
    return client.id, ids


async def few_shot(
    container: Container, coach_id: uuid.UUID, pairs: list[tuple[str, str, str]], vectors: list[list[float]]
) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    embedder = container.registry.local_embedder()
    queries = await embedder.embed([seeker for seeker, _, _ in pairs[-50:]])
    seeded = 0
    for target in (1000, 5000):
        client_id, conversations = await seed_conversations(container, coach_id, 50)
        now = datetime.now(UTC)
        batch = []
        messages = []
        for i in range(seeded, target):
            seeker, reply, strategy = pairs[i % len(pairs)]
            message_id = uuid.uuid4()
            conversation = conversations[i % len(conversations)]
            messages.append(
                {
                    "id": message_id,
                    "coach_id": coach_id,
                    "conversation_id": conversation,
                    "sender_type": SenderType.HUMAN_COACH,
                    "text": reply,
                    "citations": [],
                    "meta": {},
                }
            )
            batch.append(
                {
                    "coach_id": coach_id,
                    "conversation_id": conversation,
                    "client_id": client_id,
                    "message_id": message_id,
                    "source": InterventionSource.TAKEOVER,
                    "text": reply,
                    "client_text": seeker,
                    "context": [],
                    "memory": {},
                    "embedding": vectors[i % len(vectors)],
                    "embedding_model": embedder.model,
                    "strategy": strategy,
                    "analysis": {"strategy": strategy},
                    "analysed_at": now,
                    "outcome": {},
                    "pattern_counted": False,
                }
            )
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            session = uow.session
            await session.execute(insert(Message), messages)
            await session.execute(insert(Intervention), batch)
        seeded = target
        samples = []
        for query in queries:

            async def search(query: list[float] = query) -> None:
                async with unit_of_work(container.sessionmaker, coach_id) as uow:
                    session = uow.session
                    await container.interventions.similar(session, coach_id, query, embedder.model)

            samples.append(await timed(search))
        rows[f"few-shot retrieval, {target:,} interventions"] = stats(samples)
    return rows


async def dashboard(
    container: Container, coach_id: uuid.UUID, pairs: list[tuple[str, str, str]]
) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    rng = random.Random(5)
    seeded = 0
    for target in (2000, 10000):
        client_id, conversations = await seed_conversations(container, coach_id, 100)
        now = datetime.now(UTC)
        messages = []
        for i in range(seeded, target):
            seeker, reply, _ = pairs[i % len(pairs)]
            at = now - timedelta(days=rng.uniform(0, 29))
            conversation = conversations[i % len(conversations)]
            helpful = rng.random() >= 0.1
            feedback = {"helpful": helpful, "rating": None, "text": None, "at": at.isoformat()}
            common = {"coach_id": coach_id, "conversation_id": conversation, "citations": []}
            messages.append(common | {"sender_type": SenderType.CLIENT, "text": seeker, "meta": {}, "created_at": at})
            messages.append(
                common
                | {
                    "sender_type": SenderType.AI,
                    "text": reply,
                    "meta": {"mode": "auto", "feedback": feedback},
                    "created_at": at + timedelta(seconds=5),
                }
            )
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            session = uow.session
            await session.execute(insert(Message), messages)
        seeded = target

        async def figures() -> object:
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                return await container.learning_dashboard.figures(uow, days=30)

        samples = [await timed(figures) for _ in range(6)]
        rows[f"learning dashboard, {target:,} rated replies, first view"] = stats(samples[:1])
        rows[f"learning dashboard, {target:,} rated replies, again"] = stats(samples[1:])
    return rows


async def export(container: Container, coach_id: uuid.UUID, pairs: list[tuple[str, str, str]]) -> dict[str, Any]:
    client_id, conversations = await seed_conversations(container, coach_id, 100)
    messages, examples = [], []
    for i in range(5000):
        seeker, reply, _ = pairs[i % len(pairs)]
        message_id = uuid.uuid4()
        conversation = conversations[i % len(conversations)]
        messages.append(
            {
                "id": message_id,
                "coach_id": coach_id,
                "conversation_id": conversation,
                "sender_type": SenderType.AI,
                "text": reply,
                "citations": [],
                "meta": {},
            }
        )
        examples.append(
            {
                "coach_id": coach_id,
                "conversation_id": conversation,
                "kind": ExampleKind.SFT,
                "source": ExampleSource.THUMBS_UP,
                "message_id": message_id,
                "prompt": [{"role": "system", "content": "You are a coach."}, {"role": "user", "content": seeker}],
                "chosen": reply,
                "quality": 0.9,
                "split": Split.TRAIN,
                "content_hash": f"{i:064d}",
            }
        )
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        session = uow.session
        await session.execute(insert(Message), messages)
        await session.execute(insert(TrainingExample), examples)

    async def export() -> list[str]:
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            return await container.training.export(uow, kind=ExampleKind.SFT, split="all")

    samples = [await timed(export) for _ in range(5)]
    return {"training export, 5,000 SFT examples (JSONL)": stats(samples)}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    pairs = esconv_pairs(args.esconv)
    async with bench_app(llm_max_tokens=args.max_tokens) as (container, coach_id):
        results = await chat_cache(container, coach_id)
        with console.status(f"Embedding {len(pairs):,} ESConv client turns…"):
            vectors = await container.registry.local_embedder().embed([seeker for seeker, _, _ in pairs])
        with console.status("Few-shot retrieval…"):
            results |= await few_shot(container, coach_id, pairs, vectors)
        with console.status("Learning dashboard…"):
            results |= await dashboard(container, coach_id, pairs)
        with console.status("Training data export…"):
            results |= await export(container, coach_id, pairs)
    return results


def render(results: dict[str, dict[str, float]]) -> Table:
    table = Table(title="Learning loop latency")
    table.add_column("operation")
    for name in ("n", "p50 ms", "p95 ms", "mean ms"):
        table.add_column(name, justify="right")
    for name, row in results.items():
        table.add_row(name, str(row["n"]), f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}", f"{row['mean_ms']:.1f}")
    return table


async def main() -> None:
    args = parse_args()
    if not args.esconv.is_file():
        raise SystemExit(f"error: {args.esconv} is not a file (pass --esconv PATH to ESConv JSON lines)")
    results = await measure(args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(render(results))


if __name__ == "__main__":
    asyncio.run(main())
