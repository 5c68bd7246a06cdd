"""Handoff benchmark: how fast a client's crisis message reaches the coach's dashboard and the client's reply.

The real app runs on uvicorn in this process (embedded PostgreSQL + pgvector and Redis, live events over
Redis pub/sub). A coach is logged into the dashboard through the real log-in form and listens to the
dashboard's live stream (``GET /dashboard/events``, server-sent events). For each of ``--messages`` crisis
messages a client opens the widget's WebSocket (``/ws/chat``), sends the message in a new conversation and
waits for the reply. The messages are real posts: the first posts of the C-SSRS dev set's users that the
risk detector sends to the crisis protocol (trimmed to the chat's 4,000-character limit).

Rows (milliseconds, from the moment the client's message is sent):

- safe reply, first text: the first reply text the widget receives (the crisis reply, sent without the model);
- safe reply, done: the widget's ``done`` event (the reply and the handoff stored);
- coach alert: the ``alert`` event for that conversation on the coach's dashboard stream.

Run from the project root (50 messages take well under a minute)::

    .venv/bin/python bench/handoff.py
    .venv/bin/python bench/handoff.py --messages 20 --cssrs ../shared/data/crisis/cssrs_dev.csv --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from harness import bench_app, console, percentile, print_table
from rich.table import Table

from app.accounts.unit_of_work import unit_of_work
from app.asgi import create_app
from app.chat.turn.intake import MAX_MESSAGE_CHARS
from app.core.runtime import serve_in_background
from app.evals.crisis import load_cssrs
from app.handoff.crisis import needs_crisis_protocol
from app.handoff.risk import RiskDetector

CSSRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "crisis" / "cssrs_dev.csv"
POSITIVE = ("Ideation", "Behavior", "Attempt")
CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


def crisis_messages(path: Path, count: int) -> list[str]:
    """Up to ``count`` posts from positive users that the detector sends to the crisis protocol."""
    detector = RiskDetector()
    found: list[str] = []
    for user in load_cssrs(path).users:
        if user.label not in POSITIVE:
            continue
        for post in user.posts:
            text = post.strip()[:MAX_MESSAGE_CHARS]
            if text and needs_crisis_protocol(detector.assess(text)):
                found.append(text)
                break
        if len(found) == count:
            break
    if not found:
        raise SystemExit(f"error: no crisis posts found in {path}")
    return found


async def _listen(
    http: httpx.AsyncClient, alerts: dict[str, float], ready: asyncio.Event, arrived: asyncio.Event
) -> None:
    """Read the dashboard's event stream: set ``ready`` on its ``ready`` event, record when each
    conversation's ``alert`` arrives (and set ``arrived``)."""
    async with http.stream("GET", "/dashboard/events", timeout=None) as response:
        response.raise_for_status()
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
                if event == "ready":  # sent once the stream's subscription is live
                    ready.set()
            elif line.startswith("data:") and event == "alert":
                alerts[json.loads(line.removeprefix("data:"))["conversation_id"]] = time.perf_counter()
                arrived.set()


async def _turn(base_url: str, token: str, text: str) -> tuple[float, float, float, str]:
    """One widget turn in a new conversation: (sent at, first text at, done at, conversation id)."""
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={token}"
    async with websockets.connect(url, max_size=None) as ws:
        sent = time.perf_counter()
        await ws.send(json.dumps({"text": text}))
        first = 0.0
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "token" and not first:
                first = time.perf_counter()
            elif event["type"] == "done":
                done = time.perf_counter()
                if not event["metadata"].get("crisis"):
                    raise RuntimeError(f"expected the crisis reply, got: {event['reply'][:80]!r}")
                return sent, first or done, done, event["conversation_id"]
            elif event["type"] == "error":
                raise RuntimeError(event["message"])


async def run(messages: list[str]) -> dict[str, Any]:
    """Serve the app, log the coach in, send every message; returns the latencies in milliseconds."""
    async with bench_app() as (container, coach_id):
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            _, token = await container.accounts.create_client(uow, "Bench Client")
        app = create_app(container.settings, container.database_url, container.redis_url, registry=container.registry)
        async with serve_in_background(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            csrf = CSRF.search((await http.get("/login")).text)
            if csrf is None:
                raise RuntimeError("the log-in page has no CSRF field")
            login = await http.post(
                "/login",
                data={"email": "bench@example.com", "password": "bench-password", "_csrf_token": csrf.group(1)},
            )
            if login.status_code not in (302, 303):
                raise RuntimeError(f"log-in failed with HTTP {login.status_code}")
            alerts: dict[str, float] = {}
            ready = asyncio.Event()
            arrived = asyncio.Event()
            listener = asyncio.create_task(_listen(http, alerts, ready, arrived))
            await asyncio.wait_for(ready.wait(), 10)
            rows: list[tuple[float, float, float]] = []
            with console.status("Sending crisis messages…") as status:
                for i, text in enumerate(messages, 1):
                    status.update(f"Crisis message {i}/{len(messages)}…")
                    sent, first, done, conversation_id = await _turn(base_url, token, text)
                    async with asyncio.timeout(10):
                        while True:
                            arrived.clear()
                            if conversation_id in alerts:
                                break
                            await arrived.wait()
                    rows.append(((first - sent) * 1000, (done - sent) * 1000, (alerts[conversation_id] - sent) * 1000))
            listener.cancel()
    return {
        "messages": len(rows),
        "safe_reply_first_ms": [r[0] for r in rows],
        "safe_reply_done_ms": [r[1] for r in rows],
        "coach_alert_ms": [r[2] for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50, help="crisis messages to send (default 50)")
    parser.add_argument("--cssrs", type=Path, default=CSSRS, help="C-SSRS file the messages come from")
    parser.add_argument("--json", action="store_true", help="print the percentiles as JSON")
    args = parser.parse_args()
    result = asyncio.run(run(crisis_messages(args.cssrs, args.messages)))
    summary = {
        name: {"p50": round(statistics.median(values), 1), "p95": round(percentile(values, 95), 1)}
        for name, values in result.items()
        if isinstance(values, list)
    }
    if args.json:
        print(json.dumps({"messages": result["messages"], **summary}))
        return
    table = Table(title=f"Crisis message → coach alert and safe reply ({result['messages']} messages, ms)")
    table.add_column("from the client's message to", style="bold")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    labels = {
        "safe_reply_first_ms": "safe reply, first text (widget)",
        "safe_reply_done_ms": "safe reply, done (widget)",
        "coach_alert_ms": "coach alert (dashboard stream)",
    }
    for key, label in labels.items():
        table.add_row(label, f"{summary[key]['p50']:.1f}", f"{summary[key]['p95']:.1f}")
    print_table(table)


if __name__ == "__main__":
    main()
