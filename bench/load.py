"""Load benchmark: many widget WebSockets chatting at once against the deployment's process layout.

The processes are those of ``deploy/compose.yaml`` (:mod:`compose_file`: ``API_REPLICAS`` API processes,
``WORKER_REPLICAS`` workers, the file's settings such as ``WORKER_MAX_JOBS``), started on this machine on one
embedded PostgreSQL and one redis-server (:class:`chaos.Cluster`). Every coach's model is the instant
OpenAI-compatible stub of :func:`chaos.stub_model` on 127.0.0.1 (no delay), so the table measures the platform,
not a model. ``--sockets`` widget WebSockets (spread over ``--coaches`` coaches and round-robin over the API
processes) each send a message, wait for its ``done``, pause (exponential, mean ``sockets / rate`` seconds: an
offered load of ``--rate`` turns/s) and send the next, for ``--seconds``; then the turns in flight finish.
One coach's turns take at most ``TURN_CONCURRENCY_PER_COACH`` of a process's ``TURN_CONCURRENCY`` slots (half
by default): with the default 10 coaches every process has turns of many coaches and the cap costs nothing; a
run with ``--coaches 1`` measures that cap, unless the variable is set to ``TURN_CONCURRENCY``.

Printed: turns/s (answered turns in the timed window / its length), p50/p95/p99 turn latency (send → ``done``,
milliseconds), client messages sent / acknowledged / stored, replies received / stored (stored = rows in
PostgreSQL, read as the schema owner: lost = sent − stored), and the live-events check: the first coach's
dashboard event stream (``/dashboard/events``) is opened on the *last* API process and counts the ``message``
events of conversations whose sockets are on the *first* one (two per turn: the client's and the reply).
A socket that drops or is refused is reopened and its unacknowledged message sent again, as the widget does
(:func:`socket_client`); the error rows count each kind of ``error`` event and of socket end.

Run from the project root (the settings come from the environment, as for ``docker compose``)::

    .venv/bin/python bench/load.py                      # 1,000 sockets, 60 s, 200 turns/s offered
    .venv/bin/python bench/load.py --sockets 100 --seconds 30 --rate 50
    API_REPLICAS=3 WORKER_REPLICAS=1 .venv/bin/python bench/load.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
import websockets
from chaos import PASSWORD, Cluster, api_up, new_coach, stub, until
from compose_file import layout
from harness import BENCH_CHAT_RATE_LIMIT, console, percentile, print_table
from rich.table import Table

CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')
BENCH_ENV = {
    "AUTH_RATE_LIMIT_IP": "100000/minute",
    "AUTH_RATE_LIMIT_ACCOUNT": "100000/minute",
    "CHAT_RATE_LIMIT": BENCH_CHAT_RATE_LIMIT,
}
"""Sign-ups and log-ins all come from 127.0.0.1 here: the per-address limit would refuse them; a few sockets
offered a high rate send each client's messages faster than any person (the limit still counts them)."""
QUESTION = "I keep putting off my workout plan; how do I start again this week? ({n})"
RECONNECT_S = (0.5, 8.0)
"""First and longest pause before reopening a dropped socket (doubling in between), as ``static/chat.js`` does."""
RESEND_GRACE_S = 120.0
"""How long after the window a socket keeps reconnecting to deliver a message the server has not acknowledged."""
SOCKET_ERRORS = (websockets.ConnectionClosed, websockets.InvalidHandshake, OSError, TimeoutError)
"""What ends a socket (dropped, refused at the handshake, unreachable, no event for 120 s): the widget reopens it."""
LIVE_WAIT_S = 15.0
"""How long after the last turn the coach's live events may still arrive (a busy API process publishes late)."""


@dataclass
class Tally:
    """What the clients saw. ``latencies_ms``: send → ``done`` of each turn answered inside the timed window;
    ``sent`` / ``acked`` / ``replied``: the ``client_message_id`` of each message sent, acknowledged and
    answered; ``errors``: ``error`` events by message and dropped sockets by exception; ``live``: the
    conversation id of each ``message`` event the coach received; ``watched``: conversation ids whose socket
    is on the first API process, ``watched_messages`` the messages stored in them (each turn's client message,
    and its reply when the turn sent one: a turn handed to a coach whose AI is paused sends none);
    ``unpublished``: live events of any coach that the API processes logged as not published
    (:func:`unpublished_events`)."""

    latencies_ms: list[float] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    replied: set[str] = field(default_factory=set)
    reply_ids: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    live: list[str] = field(default_factory=list)
    watched_messages: int = 0
    watched: set[str] = field(default_factory=set)
    unpublished: int = 0

    def live_events(self) -> int:
        """The coach's ``message`` events (``live``: their conversation ids) of the watched conversations."""
        return sum(1 for conversation in self.live if conversation in self.watched)

    def record(self, event: dict[str, Any], cid: str, sent_at: float, timed_until: float) -> bool:
        """Count one server event of the message ``cid`` (sent at ``sent_at``, ``time.monotonic()``); returns
        whether the turn is over (its ``done``, an ``error``, or an ``ack`` saying it is answered already)."""
        kind = event.get("type")
        if kind == "ack" and event.get("client_message_id") == cid:
            self.acked.add(cid)
            return event.get("answering") is False  # a message sent again after it was answered: no ``done``
        elif kind == "done":
            self.replied.add(cid)
            if event.get("message_id"):
                self.reply_ids.append(event["message_id"])
            now = time.monotonic()
            if now <= timed_until:
                self.latencies_ms.append((now - sent_at) * 1000)
            return True
        elif kind == "error":
            self.errors[f"error event: {event.get('message')}"] += 1
            return True
        return False

    def socket_ended(self, exc: BaseException) -> None:
        """Count a socket that ended with ``exc`` (by its exception's class)."""
        self.errors[f"socket ended: {type(exc).__name__}"] += 1


async def pause_until(seconds: float, stop_at: float) -> None:
    """Sleep ``seconds``, but not past ``stop_at`` (``time.monotonic()``): a socket's pause never outlasts the
    timed window."""
    await asyncio.sleep(max(0.0, min(seconds, stop_at - time.monotonic())))


@dataclass
class Pending:
    """The message a socket is waiting on: its ``client_message_id``, text and send time (``time.monotonic()``)."""

    cid: str
    text: str
    sent_at: float


@dataclass
class Widget:
    """What one widget keeps across reconnects: its ``conversation`` id and the ``pending`` message."""

    conversation: str | None = None
    pending: Pending | None = None


async def socket_client(url: str, token: str, tally: Tally, pause_s: float, stop_at: float, watch: bool) -> None:
    """One widget on ``url``: message, wait for ``done``, pause ~``pause_s`` (exponential), until ``stop_at``.

    Like the widget (``static/chat.js``), a dropped or refused socket is reopened after a doubling pause
    (:data:`RECONNECT_S`), and a message not yet acknowledged is sent again with the same id (the server
    stores it once), up to :data:`RESEND_GRACE_S` after the window; a message acknowledged but not answered
    when its socket dropped is not waited for again (the widget reads its reply over HTTP)."""
    widget = Widget()
    delay = RECONNECT_S[0]
    first = True
    while True:
        try:
            async with websockets.connect(
                f"{url.replace('http://', 'ws://')}/ws/chat?token={token}", open_timeout=60
            ) as ws:
                delay = RECONNECT_S[0]
                if first:
                    first = False
                    await pause_until(random.uniform(0, pause_s), stop_at)
                await _chat(ws, tally, widget, pause_s, stop_at, watch)
                return
        except SOCKET_ERRORS as exc:
            tally.socket_ended(exc)
            if widget.pending is not None and widget.pending.cid in tally.acked:
                widget.pending = None
            now = time.monotonic()
            if (widget.pending is None and now >= stop_at) or now >= stop_at + RESEND_GRACE_S:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])


async def _chat(ws: Any, tally: Tally, widget: Widget, pause_s: float, stop_at: float, watch: bool) -> None:
    """The turns of one open socket (``widget``: kept across reconnects); returns once the window is over and
    nothing is pending."""
    while True:
        pending = widget.pending
        if pending is None:
            if time.monotonic() >= stop_at:
                return
            pending = Pending(uuid.uuid4().hex, QUESTION.format(n=len(tally.sent)), time.monotonic())
            widget.pending = pending
            tally.sent.append(pending.cid)
        body = {"text": pending.text, "client_message_id": pending.cid}
        await ws.send(json.dumps(body | ({"conversation_id": widget.conversation} if widget.conversation else {})))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 120))
            widget.conversation = event.get("conversation_id") or widget.conversation
            if tally.record(event, pending.cid, pending.sent_at, stop_at):
                break
        widget.pending = None
        if watch and widget.conversation:
            tally.watched.add(widget.conversation)
            tally.watched_messages += 2 if event.get("type") == "done" and event.get("message_id") else 1
        await pause_until(random.expovariate(1 / pause_s), stop_at)


async def watch_coach(base: str, email: str, tally: Tally, ready: asyncio.Event) -> None:
    """Log in as the coach on ``base`` and collect its ``message`` events until cancelled."""
    async with httpx.AsyncClient(base_url=base, timeout=None) as browser:
        token = CSRF.search((await browser.get("/login")).text)
        assert token, "the login page has no CSRF field"
        await browser.post("/login", data={"email": email, "password": PASSWORD, "_csrf_token": token.group(1)})
        async with browser.stream("GET", "/dashboard/events") as stream:
            ready.set()
            async for line in stream.aiter_lines():
                if line.startswith("data:") and '"message"' in line:
                    event = json.loads(line[5:])
                    if event.get("type") == "message":
                        tally.live.append(str(event.get("conversation_id")))


async def warm_up(urls: list[str], token: str) -> None:
    """One REST turn on each API process, so that no timed turn pays for loading the embedder. Raises
    ``httpx.HTTPStatusError`` when a turn fails."""
    async with httpx.AsyncClient(timeout=300) as http:
        for url in urls:
            response = await http.post(
                f"{url}/api/v1/chat", headers={"Authorization": f"Bearer {token}"}, json={"text": "Warm-up."}
            )
            response.raise_for_status()


async def stored(cluster: Cluster, tally: Tally) -> tuple[int, int]:
    """(client messages, replies) of this run stored in PostgreSQL."""
    messages = await cluster.scalar("SELECT count(*) FROM messages WHERE client_message_id = ANY(:ids)", ids=tally.sent)
    replies = await cluster.scalar(
        "SELECT count(*) FROM messages WHERE id = ANY(CAST(:ids AS uuid[]))", ids=tally.reply_ids
    )
    return int(messages), int(replies)


async def run(cluster: Cluster, model_url: str, args: argparse.Namespace) -> tuple[Tally, float, tuple[int, int]]:
    """Sign up the coaches, open the sockets, chat for ``args.seconds``, let the last turns finish."""
    urls = [cluster.url(i) for i in range(len(cluster.apis))]
    tally = Tally()
    async with httpx.AsyncClient(base_url=urls[0], timeout=120) as http:
        for base in urls:
            if not await until(lambda base=base: api_up(http, base), 180):
                raise RuntimeError(f"the API at {base} did not start")
        emails = [f"load-{n}-{uuid.uuid4().hex[:8]}@example.com" for n in range(args.coaches)]
        share = [args.sockets // args.coaches + (n < args.sockets % args.coaches) for n in range(args.coaches)]
        with console.status(f"Signing up {args.coaches} coaches and {args.sockets} clients…"):
            coaches = await asyncio.gather(
                *(new_coach(http, model_url, k, e) for k, e in zip(share, emails, strict=True))
            )
    tokens = [(n, token) for n, (_, batch) in enumerate(coaches) for token in batch]
    with console.status("Warming up each API process (loads its embedder; untimed)…"):
        await warm_up(urls, tokens[0][1])
    ready = asyncio.Event()
    watcher = asyncio.create_task(watch_coach(urls[-1], emails[0], tally, ready))
    await asyncio.wait_for(ready.wait(), 60)
    pause = args.sockets / args.rate
    started = time.monotonic()
    stop_at = started + args.seconds
    with console.status(f"{args.sockets} sockets chatting for {args.seconds} s…"):
        results = await asyncio.gather(
            *(
                socket_client(urls[i % len(urls)], token, tally, pause, stop_at, coach == 0 and i % len(urls) == 0)
                for i, (coach, token) in enumerate(tokens)
            ),
            return_exceptions=True,
        )
    elapsed = time.monotonic() - started
    for result in results:
        if isinstance(result, BaseException):
            tally.socket_ended(result)

    async def all_live() -> bool:
        return tally.live_events() >= tally.watched_messages

    await until(all_live, LIVE_WAIT_S)  # the last live events
    watcher.cancel()
    return tally, min(elapsed, args.seconds), await stored(cluster, tally)


def render(
    args: argparse.Namespace, apis: int, workers: int, tally: Tally, window_s: float, counts: tuple[int, int]
) -> Table:
    """The result table."""
    table = Table(title=f"{args.sockets} widget sockets, {apis} API + {workers} worker processes, {args.seconds} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    lat = tally.latencies_ms or [float("nan")]
    table.add_row("turns/s (answered in the window)", f"{len(tally.latencies_ms) / window_s:.1f}")
    for q in (50, 95, 99):
        table.add_row(f"turn latency p{q} (ms)", f"{percentile(lat, q):.0f}")
    table.add_row("client messages sent / acked / stored", f"{len(tally.sent)} / {len(tally.acked)} / {counts[0]}")
    table.add_row("replies received / stored", f"{len(set(tally.reply_ids))} / {counts[1]}")
    table.add_row("reply ids received twice or more", str(len(tally.reply_ids) - len(set(tally.reply_ids))))
    table.add_row(
        "turns ended without a reply (handed to the coach)", str(len(tally.replied) - len(set(tally.reply_ids)))
    )
    table.add_row("lost (sent − stored)", str(len(tally.sent) - counts[0]))
    table.add_row("errors (error events, dropped sockets)", str(tally.errors.total()))
    for kind, count in tally.errors.most_common():
        table.add_row(f"  {kind[:80]}", str(count))
    table.add_row("live events on the other process / expected", f"{tally.live_events()} / {tally.watched_messages}")
    table.add_row("live events not published (all coaches, API logs)", str(tally.unpublished))
    return table


def stage_samples(logs: list[Path]) -> dict[str, list[float]]:
    """Milliseconds of each turn stage (:class:`app.chat.turn.timing.Stages`) from the API processes' ``turn
    stages {json}`` log lines, without each process's first turn (the untimed warm-up)."""
    samples: dict[str, list[float]] = {}
    for path in logs:
        lines = [line for line in path.read_text(errors="replace").splitlines() if "turn stages {" in line]
        for line in lines[1:]:
            for name, ms in json.loads(line[line.index("{") :])["stages"].items():
                samples.setdefault(name, []).append(float(ms))
    return samples


def unpublished_events(logs: list[Path]) -> int:
    """Live events the API processes dropped: their ``event not published`` warnings
    (:meth:`app.handoff.live.LiveEvents.publish` gives up after ``PUBLISH_TIMEOUT_S``, or when Redis is
    unreachable)."""
    return sum(path.read_text(errors="replace").count(" event not published, ") for path in logs)


def render_stages(samples: dict[str, list[float]]) -> Table:
    """Where a turn's server-side time goes: p50/p95 of each stage (a dotted stage is part of the one before
    its dot)."""
    table = Table(title="Turn stages inside the API processes (ms)")
    table.add_column("stage")
    for name in ("turns", "p50", "p95"):
        table.add_column(name, justify="right")
    for name, values in samples.items():
        table.add_row(name, str(len(values)), f"{percentile(values, 50):.1f}", f"{percentile(values, 95):.1f}")
    return table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Widget WebSockets chatting against the Compose layout.")
    parser.add_argument("--sockets", type=int, default=1000, help="open widget sockets (default 1000)")
    parser.add_argument("--seconds", type=float, default=60, help="timed window (default 60)")
    parser.add_argument("--rate", type=float, default=200, help="offered turns/s over all sockets (default 200)")
    parser.add_argument("--coaches", type=int, default=10, help="coaches the sockets are spread over (default 10)")
    args = parser.parse_args()
    if args.sockets < 1 or args.seconds <= 0 or args.rate <= 0 or not 1 <= args.coaches <= args.sockets:
        parser.error("--sockets ≥ 1, --seconds > 0, --rate > 0 and 1 ≤ --coaches ≤ --sockets")
    return args


async def main() -> None:
    args = parse_args()
    plan = layout(os.environ)
    with tempfile.TemporaryDirectory(prefix="opencoach-load-") as data_dir, stub(0.0) as model_url:
        logs = Path(data_dir) / "logs"
        logs.mkdir()
        with console.status(f"Starting PostgreSQL, Redis, {plan.apis} API and {plan.workers} worker processes…"):
            cluster = await asyncio.to_thread(
                Cluster, Path(data_dir), plan.apis, plan.workers, plan.env | BENCH_ENV, logs
            )
        try:
            tally, window, counts = await run(cluster, model_url, args)
        finally:
            await cluster.close()
        api_logs = sorted(logs.glob("serve-*.log"))
        stages = stage_samples(api_logs)
        tally.unpublished = unpublished_events(api_logs)
    print_table(render(args, plan.apis, plan.workers, tally, window, counts))
    print_table(render_stages(stages))


if __name__ == "__main__":
    uvloop.run(main())  # the sockets and the stub model on libuv, like the API and worker processes they load
