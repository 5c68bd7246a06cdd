"""Telegram benchmark: from a webhook update received to the first ``sendMessage`` / ``editMessageText``.

The real app is served on loopback with embedded PostgreSQL + pgvector and Redis; ``TELEGRAM_API_URL`` points
at the tests' fake Bot API server (tests/telegram_fake.py, a real HTTP server recording each call with its
time) and the coach's model is an instant OpenAI-compatible stub on loopback (the whole reply in one
streamed response, no delay), so what is measured is the channel plus the turn's own cost: the webhook
request (secret check, ``update_id`` recorded), the background task, ``receive``, retrieval with the local
embedder, the stub's stream and the first Bot API call that shows text. One client writes ``--updates``
messages one after the other (each waits for its answer), after an untimed warm-up.

Run from the project root::

    .venv/bin/python bench/telegram_webhook.py
    .venv/bin/python bench/telegram_webhook.py --updates 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from harness import bench_app, console, percentile, print_table
from litestar import Litestar, post
from litestar.response import Stream
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fake Bot API and OpenAI wire format

from app.accounts.unit_of_work import unit_of_work  # noqa: E402
from app.asgi import create_app  # noqa: E402
from app.container import Container  # noqa: E402
from app.core.runtime import serve_in_background  # noqa: E402
from tests.openai_wire import openai_sse  # noqa: E402
from tests.stub_dns import LOOPBACK_HOOKS  # noqa: E402
from tests.telegram_fake import FakeBotApi, fake_bot_api, recorded  # noqa: E402

REPLY = ["Take", " one", " small", " step", " today", "."]
TOKEN = "987654321:AAHbenchmarkTokenForTheFakeBotApi000"
CHAT_ID = 4242


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="p50/p95 of webhook update → first message shown.")
    parser.add_argument("--updates", type=int, default=50, help="timed updates (default 50)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    if args.updates < 1:
        parser.error("--updates must be at least 1")
    return args


@asynccontextmanager
async def instant_model() -> AsyncIterator[str]:
    """An OpenAI-compatible endpoint on loopback streaming :data:`REPLY` at once; yields its base URL."""

    @post("/v1/chat/completions", status_code=200)
    async def completions() -> Stream:
        return Stream(iter([openai_sse(REPLY, (50, len(REPLY)))]), media_type="text/event-stream")

    async with serve_in_background(Litestar([completions])) as url:
        yield f"{url}/v1"


async def configure(container: Container, coach_id: uuid.UUID, model_url: str) -> None:
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        coach = await container.accounts.update_settings(
            uow,
            llm_provider="openai",
            llm_model="stub",
            llm_base_url=model_url,
            llm_api_key="sk-bench",
            confidence_threshold=0.0,
        )
        coach.response_cache_ttl_seconds = 0  # every update runs the whole turn


async def _until(done: Any, fake: FakeBotApi, limit_s: float = 30.0) -> None:
    """Poll the fake server's record until ``done()``; ``RuntimeError`` with the last calls after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not done():  # noqa: ASYNC110 - polls the fake server's record
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer; last calls: {[(c.method, c.params) for c in fake.calls[-3:]]}")
        await asyncio.sleep(0.001)


STAGES = ("webhook_200", "typing", "first_text")
"""Milliseconds from posting the update to: the webhook's 200 (secret checked, update recorded), the first
``sendChatAction`` (the message is stored, the turn starts) and the first text shown (the measured total)."""


async def one_update(http: httpx.AsyncClient, fake: FakeBotApi, hook: str, secret: str, text: str) -> dict[str, float]:
    """Post one update; milliseconds from the post to each of :data:`STAGES`."""
    seen = len(fake.sent_to(CHAT_ID))
    update = recorded("text_message", update_id=time.time_ns() // 1000, chat_id=CHAT_ID, text=text)
    started = time.monotonic()
    response = await http.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret})
    answered = time.monotonic()
    response.raise_for_status()
    await _until(lambda: len(fake.sent_to(CHAT_ID)) > seen, fake)
    first = fake.sent_to(CHAT_ID)[seen].at
    typing = [c.at for c in fake.of("sendChatAction") if c.at >= started and int(c.params["chat_id"]) == CHAT_ID]
    # the answer is complete (its keyboard is shown) before the next update
    await _until(lambda: any(c.params.get("reply_markup") for c in fake.sent_to(CHAT_ID)[seen:]), fake)
    marks = (answered, typing[0] if typing else first, first)
    return {stage: (at - started) * 1000 for stage, at in zip(STAGES, marks, strict=True)}


async def measure(updates: int) -> list[dict[str, float]]:
    async with (
        instant_model() as model_url,
        fake_bot_api() as fake,
        bench_app(outbound_allow="127.0.0.1") as (container, coach_id),
    ):
        fake.url = fake.url.replace(LOOPBACK_HOOKS, "127.0.0.1")
        fake.add_bot(TOKEN, 987654321, "bench_bot")
        await configure(container, coach_id, model_url)
        settings = container.settings.model_copy(update={"telegram_api_url": fake.url})
        app = create_app(settings, container.database_url, container.redis_url, registry=container.registry)
        async with serve_in_background(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
            channel: Any = app.state.telegram
            await channel.service.connect(coach_id, TOKEN, True)
            secret = fake.of("setWebhook")[-1].params["secret_token"]
            hook = f"/api/v1/telegram/webhook/{coach_id}"
            await one_update(http, fake, hook, secret, "Hello")  # enrols the client (untimed)
            await one_update(http, fake, hook, secret, "Warm up")
            timings = []
            with console.status(f"{updates} updates…"):
                for i in range(updates):
                    timings.append(await one_update(http, fake, hook, secret, f"How do I keep going? ({i})"))
            await channel.drain()
            return timings


def main() -> None:
    args = parse_args()
    rows = asyncio.run(measure(args.updates))
    timings = [row["first_text"] for row in rows]
    result: dict[str, Any] = {
        "updates": len(timings),
        "p50_ms": percentile(timings, 50),
        "p95_ms": percentile(timings, 95),
        "max_ms": max(timings),
        "stages": {
            stage: {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95)}
            for stage in STAGES
            if (values := [row[stage] for row in rows])
        },
    }
    if args.json:
        print(json.dumps(result))
        return
    table = Table(title=f"Telegram: webhook update → first sendMessage/edit ({len(timings)} updates, instant model)")
    for column in ("from the post to", "p50 ms", "p95 ms"):
        table.add_column(column, justify="right")
    for stage, values in result["stages"].items():
        table.add_row(stage, f"{values['p50_ms']:.1f}", f"{values['p95_ms']:.1f}")
    print_table(table)


if __name__ == "__main__":
    main()
