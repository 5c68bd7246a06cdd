"""Chat benchmark: latency of the real chat turn, stage by stage, over many turns.

*Meditations* is ingested for one coach, who gets one client; then ``ChatService.turn`` runs ``--turns``
times in this process, on embedded PostgreSQL + pgvector and Redis, with the local models (SmolLM2 through
llama.cpp, all-MiniLM-L6-v2). Ten coaching questions are asked in turn and a new conversation starts every
five turns, so the history in the prompt grows as in real use. One untimed turn first loads both models.

Rows, from the turn's own metadata (milliseconds):

- retrieval: embedding the question and the hybrid pgvector + full-text search;
- prompt assembly: fitting persona, passages and history into the token budget;
- first token: from the start of generation to the first streamed delta (prompt processing included);
- generation: from the start of generation to the last delta;
- persistence: storing the reply with its citations;
- total latency: the turn's ``latency_ms``, retrieval through generation (no persistence);
- wall clock: the whole ``turn()`` call as a caller sees it, both persistence steps included.

The line under the table gives the model and the generation rate: completion tokens / generation seconds.

Run from the project root (the default 50 turns take a few minutes on two cores)::

    .venv/bin/python bench/chat.py
    .venv/bin/python bench/chat.py --turns 20 --max-tokens 64 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from harness import bench_app, console, ingest_pdf, percentile, print_table
from rich.table import Table

from app.accounts.unit_of_work import unit_of_work
from app.chat.turn import TurnResult
from app.container import Container

MEDITATIONS = Path(__file__).resolve().parents[1] / "demo" / "meditations-marcus-aurelius.pdf"
QUESTIONS = (
    "How should I deal with people who annoy me?",
    "I procrastinate every morning, what can I do?",
    "My boss criticised my work in front of the whole team. How do I stay calm?",
    "I keep worrying about things I cannot control. How do I stop?",
    "How can I start my day with more focus and less distraction?",
    "I feel my work doesn't matter. How can I find meaning in it?",
    "I failed an important exam. How do I handle the setback without giving up?",
    "I lose my temper with my kids too quickly. Any advice?",
    "How can I stop comparing myself to people who seem more successful?",
    "I am afraid of getting old and dying. How should I think about it?",
)
TURNS_PER_CONVERSATION = 5
STAGES = {
    "retrieval": "retrieval_ms",
    "prompt assembly": "prompt_ms",
    "first token": "first_token_ms",
    "generation": "generation_ms",
    "persistence": "persist_ms",
    "total latency": "latency_ms",
}
WALL_CLOCK = "wall clock"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="p50/p95 of each stage of the chat turn.")
    parser.add_argument("--turns", type=int, default=50, help="timed turns (default 50)")
    parser.add_argument("--max-tokens", type=int, default=128, help="reply length limit (default 128)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    return args


async def run_turn(
    container: Container, coach_id: uuid.UUID, client_id: uuid.UUID, question: str, conversation_id: uuid.UUID | None
) -> tuple[TurnResult, float]:
    """One turn, streamed to the end; returns its ``TurnResult`` and the wall-clock milliseconds."""
    started = time.perf_counter()
    items = [item async for item in container.chat.turn(coach_id, client_id, question, conversation_id=conversation_id)]
    wall_ms = (time.perf_counter() - started) * 1000
    result = items[-1]
    if not isinstance(result, TurnResult):
        raise RuntimeError("the chat turn did not end with a TurnResult")
    return result, wall_ms


async def measure(turns: int, max_tokens: int) -> dict[str, Any]:
    """Run the warm-up turn and ``turns`` timed turns; returns the summary."""
    samples: dict[str, list[float]] = {stage: [] for stage in [*STAGES, WALL_CLOCK]}
    completion_tokens = 0
    generation_seconds = 0.0
    failed = 0
    async with bench_app(llm_max_tokens=max_tokens) as (container, coach_id):
        with console.status(f"Ingesting {MEDITATIONS.name}…"):
            await ingest_pdf(container, coach_id, MEDITATIONS)
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            client, _ = await container.accounts.create_client(uow, "Bench")
            # every turn runs the model: questions repeat in new conversations, which the response cache
            # would answer (bench/learning.py measures the cache)
            (await uow.coach()).response_cache_ttl_seconds = 0
        with console.status("Loading the chat model (untimed warm-up turn)…"):
            warm_up, _ = await run_turn(container, coach_id, client.id, QUESTIONS[0], None)
        conversation_id: uuid.UUID | None = None
        with console.status("Chatting…") as status:
            for i in range(turns):
                status.update(f"Turn {i + 1}/{turns}…")
                if i % TURNS_PER_CONVERSATION == 0:
                    conversation_id = None
                question = QUESTIONS[i % len(QUESTIONS)]
                result, wall_ms = await run_turn(container, coach_id, client.id, question, conversation_id)
                conversation_id = result.conversation_id
                metadata = result.metadata
                if "error" in metadata:
                    failed += 1
                for stage, key in STAGES.items():
                    if key in metadata:
                        samples[stage].append(metadata[key])
                samples[WALL_CLOCK].append(wall_ms)
                if "completion_tokens" in metadata and "generation_ms" in metadata:
                    completion_tokens += metadata["completion_tokens"]
                    generation_seconds += metadata["generation_ms"] / 1000
    return {
        "provider": warm_up.metadata["provider"],
        "model": warm_up.metadata["model"],
        "turns": turns,
        "max_tokens": max_tokens,
        "failed_turns": failed,
        "completion_tokens": completion_tokens,
        "tokens_per_second": round(completion_tokens / generation_seconds, 2) if generation_seconds else None,
        "stages": {
            stage: {
                "p50_ms": round(percentile(values, 50), 1),
                "p95_ms": round(percentile(values, 95), 1),
                "mean_ms": round(statistics.fmean(values), 1),
            }
            for stage, values in samples.items()
            if values
        },
    }


def render(summary: dict[str, Any]) -> Table:
    table = Table(title=f"Chat turn latency over {summary['turns']} turns")
    table.add_column("stage")
    for name in ("p50 ms", "p95 ms", "mean ms"):
        table.add_column(name, justify="right")
    for stage, stats in summary["stages"].items():
        table.add_row(stage, f"{stats['p50_ms']:.1f}", f"{stats['p95_ms']:.1f}", f"{stats['mean_ms']:.1f}")
    return table


def describe(summary: dict[str, Any]) -> str:
    rate = summary["tokens_per_second"]
    line = (
        f"model {summary['model']} ({summary['provider']}), {summary['turns']} turns, "
        f"max_tokens {summary['max_tokens']}, {summary['completion_tokens']} completion tokens"
    )
    if rate is not None:
        line += f", {rate:.1f} tokens/s of generation (completion tokens / generation seconds)"
    if summary["failed_turns"]:
        line += f", {summary['failed_turns']} turns failed (the apology was sent; the error is logged on stderr)"
    return line


async def main() -> None:
    args = parse_args()
    summary = await measure(args.turns, args.max_tokens)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(render(summary))
        print(describe(summary))


if __name__ == "__main__":
    asyncio.run(main())
