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

``--instant`` measures the turn's own cost instead, as a new user would meet it: the coach's model is an
instant OpenAI-compatible stub served by this benchmark on 127.0.0.1 (the whole reply in one response),
*Meditations* is ingested, the response cache is off, ``opencoach worker`` runs in its own process (the turn's
follow-up jobs compete for the same cores; the turns start once it has started and has no job left from
before), and every turn is a ``POST /api/v1/chat`` to the real app served on loopback, on uvloop as
``opencoach serve`` runs it (uvicorn's ``loop="auto"``). Rows are the stages of
:class:`app.chat.turn.timing.Stages` read from the turn's own ``turn stages`` log line (top-level stages add
up to the turn; a dotted one is part of the stage before its dot), then ``outside the model`` (the turn's
stages without ``generate.model``), the same over the turns the model answered only (some questions find too
little support in the book and go to the coach after retrieval, and the coach then has the conversation: its
later turns skip the model) and ``end to end`` (the HTTP request as the client sees it). The lines under the
table count each kind of turn, the SQL statements each turn's request sent, the WAL fsyncs per timed turn (the
synchronous commits that waited for the disk, the worker's jobs' too: :data:`harness.WAL_FSYNCS`), the CPU time
per timed turn of each kind of process (:class:`CpuMeter`; read once the worker has run every job the turns
queued, the episodic embedding deferred to the end of its window too), with the host's steal over the timed
turns, and the garbage collector's pauses of the served app's process during the timed turns
(:class:`GcPauses`): on a shared host the latencies swing with the steal, the CPU times much less::

    .venv/bin/python bench/chat.py --instant --turns 200
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvloop
from arq.connections import ArqRedis
from arq.constants import default_queue_name, health_check_key_suffix, in_progress_key_prefix
from litestar import Litestar, post
from litestar.response import Stream
from rich.table import Table
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # the tests' OpenAI wire format (tests/ is not an installed package)

from harness import STATS_REPORT_S, WAL_FSYNCS, bench_app, console, ingest_pdf, percentile, print_table  # noqa: E402

from app.accounts.unit_of_work import unit_of_work  # noqa: E402
from app.asgi import create_app  # noqa: E402
from app.chat.turn import TurnResult  # noqa: E402
from app.container import Container  # noqa: E402
from app.core.runtime import serve_in_background  # noqa: E402
from app.db.jobs import EMBED_SETTLE_S  # noqa: E402
from tests.openai_wire import openai_sse  # noqa: E402

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
INSTANT_REPLY = ["Take", " one", " small", " step", " today", "."]
OUTSIDE_MODEL = "outside the model"
ANSWERED = "outside the model, model's turns"
"""The same, over the turns the model answered only: the other turns (handed to the coach on low retrieval
support, or not sent to the model because the coach has the conversation) skip stages and cost less."""
END_TO_END = "end to end (HTTP)"
SETTLED_S = 2.0
"""How long the worker must stay idle before the timed turns start (its start-up is not part of a turn)."""
MODEL_STAGE = "generate.model"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="p50/p95 of each stage of the chat turn.")
    parser.add_argument("--turns", type=int, default=50, help="timed turns (default 50)")
    parser.add_argument("--max-tokens", type=int, default=128, help="reply length limit (default 128)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument(
        "--instant", action="store_true", help="the turn's own cost: instant stub model, POST /api/v1/chat, worker"
    )
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


class StageLog(logging.Handler):
    """Collects the ``stages`` of every ``turn stages {json}`` line the chat pipeline logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.turns: list[dict[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "turn stages %s":
            self.turns.append(json.loads(record.args[0])["stages"])  # type: ignore[index]


@asynccontextmanager
async def instant_model() -> AsyncIterator[str]:
    """An OpenAI-compatible endpoint on loopback streaming :data:`INSTANT_REPLY` at once; yields its base URL."""

    @post("/v1/chat/completions", status_code=200)
    async def completions() -> Stream:
        return Stream(iter([openai_sse(INSTANT_REPLY, (50, len(INSTANT_REPLY)))]), media_type="text/event-stream")

    async with serve_in_background(Litestar([completions])) as url:
        yield f"{url}/v1"


@asynccontextmanager
async def worker(container: Container) -> AsyncIterator[asyncio.subprocess.Process]:
    """``opencoach worker`` in its own process on the benchmark's servers, stopped on exit; yields it."""
    settings = container.settings
    env = dict(os.environ) | {
        "DATABASE_URL": container.database_url,
        "REDIS_URL": container.redis_url,
        "DATA_DIR": str(settings.data_dir),
        "SECRET_KEY": settings.secret_key or "",
        "OUTBOUND_ALLOW": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "worker",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await worker_settled(container.redis, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()


class StatementCount:
    """Counts the SQL statements this process sends to PostgreSQL while entered (``async with``): every
    SQLAlchemy engine's ``before_cursor_execute`` event, so the served app's engine too. A count that, unlike
    the timings, does not depend on how busy the machine is."""

    def __init__(self) -> None:
        self.count = 0

    def _sent(self, *_: Any) -> None:
        self.count += 1

    async def __aenter__(self) -> StatementCount:
        event.listen(Engine, "before_cursor_execute", self._sent)
        return self

    async def __aexit__(self, *_: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._sent)


class GcPauses:
    """The pauses of Python's cyclic garbage collector in this process (the served app's) between
    :meth:`start` and :meth:`stop`, per generation: how many collections, their total and their longest
    milliseconds, from :data:`gc.callbacks`. A full (generation 2) collection stops every turn the process
    is serving."""

    def __init__(self) -> None:
        self.by_generation = {generation: [0, 0.0, 0.0] for generation in range(3)}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._started) * 1000
        stats = self.by_generation[info["generation"]]
        stats[0] += 1
        stats[1] += ms
        stats[2] = max(stats[2], ms)

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{"gen0"|"gen1"|"gen2": {"collections", "total_ms", "max_ms"}}``."""
        return {
            f"gen{generation}": {"collections": n, "total_ms": round(total, 1), "max_ms": round(longest, 1)}
            for generation, (n, total, longest) in self.by_generation.items()
        }


class CpuMeter:
    """CPU time (user + system) each kind of process has used, and the host's steal, read from ``/proc``
    through psutil. Unlike the latencies, a difference of two readings hardly depends on how busy the machine
    is: it is the work done, not the wait for a core. Kinds: this benchmark's process (the served app, the HTTP
    client and the stub model), the worker (``worker_pid``), PostgreSQL (the postmaster in ``data_dir/pgdata``,
    its backends and its exited children) and Redis (this process's ``redis-server`` child)."""

    def __init__(self, data_dir: Path, worker_pid: int) -> None:
        self._bench = psutil.Process()
        self._worker = psutil.Process(worker_pid)
        postmaster_pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        self._postgres = psutil.Process(postmaster_pid)
        self._redis = [child for child in self._bench.children() if "redis" in child.name()]

    @staticmethod
    def _own(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return times.user + times.system

    def read(self) -> dict[str, float]:
        """Seconds used so far per kind, and ``steal``: seconds the host gave this machine's cores to others."""
        postgres = self._postgres.cpu_times()
        return {
            "bench process": self._own(self._bench),
            "worker": self._own(self._worker),
            "PostgreSQL": postgres.user
            + postgres.system
            + postgres.children_user
            + postgres.children_system
            + sum(self._own(child) for child in self._postgres.children(recursive=True)),
            "Redis": sum(self._own(proc) for proc in self._redis),
            "steal": psutil.cpu_times().steal,
        }


async def worker_settled(
    redis: ArqRedis, proc: asyncio.subprocess.Process, timeout_s: float = 300, *, deferred: bool = False
) -> None:
    """Wait until the worker polls its queue (arq's health-check key is written) with no job due or running
    for :data:`SETTLED_S`: its start-up, its model loads and the jobs queued before it started (the upload's
    ingest job, already done in this process) are then behind it, not inside the timed turns. With
    ``deferred``, jobs deferred to later count too: it waits until they have come due and run (the turns'
    episodic embedding, deferred to the end of its window). Raises ``RuntimeError`` when the worker exits or
    is still busy after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"the worker exited with code {proc.returncode}")
        busy = (
            not await redis.exists(default_queue_name + health_check_key_suffix)
            # due jobs (crons are queued when due), or with ``deferred`` every queued job
            or await redis.zcount(default_queue_name, "-inf", "+inf" if deferred else time.time() * 1000)
            # a cron's claim outlives its run (arq's keep_cronjob_progress): only other jobs count as running
            or [key for key in await redis.keys(in_progress_key_prefix + "*") if b":cron:" not in key]
        )
        now = time.monotonic()
        quiet_since = None if busy else (quiet_since or now)
        if quiet_since is not None and now - quiet_since >= SETTLED_S:
            return
        if now > deadline:
            raise RuntimeError(f"the worker was still busy after {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


async def wal_fsyncs(container: Container) -> int:
    """PostgreSQL's client backends' WAL fsyncs so far (:data:`harness.WAL_FSYNCS`)."""
    async with container.engine.connect() as conn:
        return int(await conn.scalar(text(WAL_FSYNCS)) or 0)


async def instant_coach(container: Container, coach_id: uuid.UUID, model_url: str) -> str:
    """Point the coach at the stub model, cache off; returns a new client's widget token."""
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await container.accounts.update_settings(
            uow,
            llm_provider="openai",
            llm_model="stub",
            llm_base_url=model_url,
            llm_api_key="sk-bench",
        )
        (await uow.coach()).response_cache_ttl_seconds = 0
        _, token = await container.accounts.create_client(uow, "Bench")
    return token


async def measure_instant(turns: int) -> dict[str, Any]:
    """``turns`` timed ``POST /api/v1/chat`` turns (after 5 untimed ones); per-stage and end-to-end summary."""
    stage_log = StageLog()
    logging.getLogger("app.chat.turn.pipeline").addHandler(stage_log)
    logging.getLogger("app.chat.turn.pipeline").setLevel(logging.INFO)
    end_to_end: list[float] = []
    per_turn: list[int] = []
    statements = StatementCount()
    pauses = GcPauses()
    async with instant_model() as model_url, bench_app(outbound_allow="127.0.0.1") as (container, coach_id):
        with console.status(f"Ingesting {MEDITATIONS.name}…"):
            await ingest_pdf(container, coach_id, MEDITATIONS)
        token = await instant_coach(container, coach_id, model_url)
        app = create_app(container.settings, container.database_url, container.redis_url, registry=container.registry)
        auth = {"Authorization": f"Bearer {token}"}
        async with (
            worker(container) as worker_proc,
            statements,
            serve_in_background(app) as url,
            httpx.AsyncClient(base_url=url, timeout=60) as http,
        ):
            conversation_id: str | None = None
            cpu = CpuMeter(container.settings.data_dir, worker_proc.pid)
            with console.status("Chatting…") as status:
                for i in range(-5, turns):
                    if i == 0:
                        await asyncio.sleep(STATS_REPORT_S)  # every backend's earlier WAL fsyncs reported
                        fsyncs_before = await wal_fsyncs(container)
                        cpu_before = cpu.read()
                        pauses.start()
                    status.update(f"Turn {i + 1}/{turns}…")
                    if i % TURNS_PER_CONVERSATION == 0:
                        conversation_id = None
                    body = {"text": QUESTIONS[i % len(QUESTIONS)], "conversation_id": conversation_id}
                    started, sent = time.perf_counter(), statements.count
                    response = await http.post("/api/v1/chat", headers=auth, json=body)
                    elapsed = (time.perf_counter() - started) * 1000
                    response.raise_for_status()
                    conversation_id = response.json()["conversation_id"]
                    if i >= 0:
                        end_to_end.append(elapsed)
                        per_turn.append(statements.count - sent)
            pauses.stop()
            at_last_turn = cpu.read()
            with console.status("Waiting for the jobs the turns queued (the deferred ones too)…"):
                window_s = container.settings.episode_embed_window_seconds
                await worker_settled(container.redis, worker_proc, window_s + EMBED_SETTLE_S + 300, deferred=True)
            # the processes' CPU with their jobs' work; the host's steal over the timed turns only
            cpu_after = cpu.read() | {"steal": at_last_turn["steal"]}
            await asyncio.sleep(STATS_REPORT_S)
            fsyncs = await wal_fsyncs(container) - fsyncs_before
    timed = stage_log.turns[-turns:]
    samples: dict[str, list[float]] = {}
    kinds: dict[str, int] = {}
    for stages in timed:
        for name, ms in stages.items():
            samples.setdefault(name, []).append(ms)
        top = sum(ms for name, ms in stages.items() if "." not in name)
        samples.setdefault(OUTSIDE_MODEL, []).append(top - stages.get(MODEL_STAGE, 0.0))
        if MODEL_STAGE in stages:
            samples.setdefault(ANSWERED, []).append(top - stages[MODEL_STAGE])
        kind = "model" if MODEL_STAGE in stages else "handed off after retrieval" if "gather" in stages else "no model"
        kinds[kind] = kinds.get(kind, 0) + 1
    samples[END_TO_END] = end_to_end
    cpu_ms = {kind: (cpu_after[kind] - cpu_before[kind]) * 1000 / turns for kind in cpu_after}
    cpu_ms["all"] = sum(ms for kind, ms in cpu_ms.items() if kind != "steal")
    return {
        "turns": turns,
        "turn_kinds": kinds,
        "cpu_ms_per_turn": {kind: round(ms, 1) for kind, ms in cpu_ms.items()},
        "wal_fsyncs_per_turn": round(fsyncs / turns, 2),
        "gc_pauses": pauses.summary(),
        "sql_statements_per_turn": {
            "p50": percentile([float(n) for n in per_turn], 50),
            "min": min(per_turn),
            "max": max(per_turn),
        },
        "stages": {
            name: {
                "p50_ms": round(percentile(values, 50), 1),
                "p95_ms": round(percentile(values, 95), 1),
                "mean_ms": round(statistics.fmean(values), 1),
            }
            for name, values in samples.items()
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
    if args.instant:
        summary = await measure_instant(args.turns)
    else:
        summary = await measure(args.turns, args.max_tokens)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(render(summary))
        if args.instant:
            kinds = summary["turn_kinds"]
            print(
                f"Turns: {kinds.get('model', 0)} answered by the model, {kinds.get('handed off after retrieval', 0)}"
                f" handed to the coach after retrieval (low support), {kinds.get('no model', 0)} not sent to the model"
                " (the coach has the conversation, or a crisis)"
            )
            sql = summary["sql_statements_per_turn"]
            print(
                f"SQL statements per turn in the API process (the worker's jobs not counted): median {sql['p50']:.0f},"
                f" min {sql['min']}, max {sql['max']}"
            )
            print(
                f"WAL fsyncs per timed turn (synchronous commits that waited for the disk; the worker's jobs' too):"
                f" {summary['wal_fsyncs_per_turn']:.2f}"
            )
            cpu = summary["cpu_ms_per_turn"]
            print(
                "CPU ms per timed turn: "
                + ", ".join(f"{kind} {ms:.1f}" for kind, ms in cpu.items() if kind != "steal")
                + f"; the host stole {cpu['steal']:.1f} ms of this machine's CPU per turn meanwhile"
            )
            print(
                "Garbage collector's pauses of the served app's process over the timed turns: "
                + ", ".join(
                    f"{generation} {p['collections']} collections, {p['total_ms']:.1f} ms in all,"
                    f" longest {p['max_ms']:.1f}"
                    for generation, p in summary["gc_pauses"].items()
                )
            )
        else:
            print(describe(summary))


if __name__ == "__main__":
    uvloop.run(main())  # the served app's event loop is the one ``opencoach serve`` gets from uvicorn
