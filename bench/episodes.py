"""Episodic embedding benchmark: the ``embed_messages`` job's cost per message, one job per reply against one job
per conversation and window (``EPISODE_EMBED_WINDOW_SECONDS``).

One coach gets ``--conversations`` conversations of ``--replies`` AI replies each, none embedded. Then the
replies are embedded through the production path, :meth:`app.memory.episodes.EpisodeService.embed_messages`
(what the worker's job runs), in two ways, each on the same messages (their episodes deleted in between) and
``--rounds`` times in turn:

- ``one job per reply``: the job of each reply, up to its own time (``EPISODE_EMBED_WINDOW_SECONDS=0``): one
  unit of work to read, one model call for one text and one to store, per reply;
- ``one job per window``: one job per conversation for all its replies (a window's job): one batch.

Rows: the way, messages embedded, CPU milliseconds per message of this process (the job's Python and the
ONNX Runtime threads of all-MiniLM-L6-v2) and of PostgreSQL, and wall milliseconds per message, summed over the
rounds. Run from the project root (about a minute on two cores)::

    .venv/bin/python bench/episodes.py
    .venv/bin/python bench/episodes.py --conversations 40 --replies 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from chat import CpuMeter
from harness import bench_app, print_table
from rich.table import Table
from sqlalchemy import delete

from app.accounts.models import Client
from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.db.engine import tenant_session
from app.memory.models import Episode

REPLIES = [
    "Take one small step today.",
    "What would make the long run easier to keep on a busy week?",
    "You said mornings are calmer: could the first ten minutes be yours?",
    "Notice what is in your control, and start there.",
    "That sounds like progress. What helped you keep at it?",
]
WAYS = ("one job per reply", "one job per window")


async def conversations(container: Container, coach_id: uuid.UUID, count: int, replies: int) -> list[list[Message]]:
    """``count`` conversations of one client, each of ``replies`` AI messages a minute apart, none embedded."""
    async with tenant_session(container.sessionmaker, coach_id) as session:
        client = Client(coach_id=coach_id, name="Bench Client")
        session.add(client)
        await session.flush()
        made = []
        for k in range(count):
            conversation = Conversation(coach_id=coach_id, client_id=client.id, channel="api")
            session.add(conversation)
            await session.flush()
            start = datetime.now(UTC) - timedelta(hours=1)
            messages = [
                Message(
                    coach_id=coach_id,
                    conversation_id=conversation.id,
                    sender_type=SenderType.AI,
                    text=f"{REPLIES[(k + i) % len(REPLIES)]} ({k}.{i})",
                    citations=[],
                    meta={},
                    created_at=start + timedelta(minutes=i),
                )
                for i in range(replies)
            ]
            session.add_all(messages)
            made.append(messages)
    return made


async def embed(container: Container, coach_id: uuid.UUID, made: list[list[Message]], way: str) -> None:
    """Embed every message of ``made`` the ``way`` named (one of :data:`WAYS`)."""
    for messages in made:
        conversation_id = messages[0].conversation_id
        if way == WAYS[0]:
            for message in messages:
                await container.episodes.embed_messages(coach_id, conversation_id, until=message.created_at)
        else:
            await container.episodes.embed_messages(coach_id, conversation_id)


async def measure(count: int, replies: int, rounds: int) -> dict[str, Any]:
    """CPU and wall milliseconds per message of each way, summed over ``rounds`` alternating rounds."""
    totals = {way: {"messages": 0, "cpu": 0.0, "postgres": 0.0, "wall": 0.0} for way in WAYS}
    async with bench_app() as (container, coach_id):
        made = await conversations(container, coach_id, count, replies)
        # this process stands in for the worker: only its own and PostgreSQL's readings are used
        meter = CpuMeter(container.settings.data_dir, os.getpid())
        for _ in range(rounds):
            for way in WAYS:
                async with tenant_session(container.sessionmaker, coach_id) as session:
                    await session.execute(delete(Episode))
                before, started = meter.read(), time.perf_counter()
                await embed(container, coach_id, made, way)
                after = meter.read()
                total = totals[way]
                total["messages"] += count * replies
                total["wall"] += time.perf_counter() - started
                total["cpu"] += after["bench process"] - before["bench process"]
                total["postgres"] += after["PostgreSQL"] - before["PostgreSQL"]
    return {
        way: {
            "messages": t["messages"],
            "cpu_ms_per_message": round(t["cpu"] * 1000 / t["messages"], 2),
            "postgres_ms_per_message": round(t["postgres"] * 1000 / t["messages"], 2),
            "wall_ms_per_message": round(t["wall"] * 1000 / t["messages"], 2),
        }
        for way, t in totals.items()
    }


def render(summary: dict[str, Any], replies: int) -> Table:
    table = Table(title=f"embed_messages, conversations of {replies} replies")
    for name in ("way", "messages", "CPU ms/message", "PostgreSQL ms/message", "wall ms/message"):
        table.add_column(name, justify="left" if name == "way" else "right")
    for way, row in summary.items():
        table.add_row(
            way,
            str(row["messages"]),
            f"{row['cpu_ms_per_message']:.2f}",
            f"{row['postgres_ms_per_message']:.2f}",
            f"{row['wall_ms_per_message']:.2f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20, help="conversations (default 20)")
    parser.add_argument("--replies", type=int, default=5, help="AI replies per conversation (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both ways, in turn (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    if min(args.conversations, args.replies, args.rounds) < 1:
        parser.error("--conversations, --replies and --rounds must be at least 1")
    summary = asyncio.run(measure(args.conversations, args.replies, args.rounds))
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(render(summary, args.replies))


if __name__ == "__main__":
    main()
