"""``opencoach serve`` on embedded defaults: it comes up, serves, and Ctrl-C stops every process it started;
every command that starts embedded servers stops them on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from app import cli
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.core.config import Settings
from app.core.pagination import PageRequest
from app.core.runtime import Services, start_services
from app.db.migrate import head_revision
from app.rag.service import DocumentService


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_serve_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not come up in 120 s"
            time.sleep(0.5)
        signup = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/signup",
            json={"coach_name": "CLI", "email": "cli@example.com", "password": "long enough"},
            timeout=30,
        )
        assert signup.status_code == 201
        children = psutil.Process(proc.pid).children(recursive=True)
        [worker] = [c for c in children if "worker" in " ".join(c.cmdline())]  # a worker runs alongside
        # behind the web process for the CPU: its jobs must not make a live reply time out
        assert worker.nice() == min(19, psutil.Process(proc.pid).nice() + cli.WORKER_NICENESS)
        assert _processes_using(tmp_path), "embedded PostgreSQL runs in the data dir"
        redis_dir = tmp_path / "redis"  # its append-only file holds client text and session ids
        assert stat.S_IMODE(redis_dir.stat().st_mode) == 0o700, "the Redis files are the owner's only"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        time.sleep(1)
        assert [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
        assert _processes_using(tmp_path) == [], "PostgreSQL and Redis are stopped"
    finally:
        if proc.poll() is None:
            proc.kill()


LOCOMO = Path(__file__).resolve().parents[4] / "shared" / "data" / "locomo" / "locomo_dev.json"
"""The LoCoMo dev file ``eval memory`` reads (any valid file would do: the run is interrupted)."""


def _embedded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL")}


def _cli(args: list[str], data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """``opencoach ARGS --data-dir DATA_DIR`` on embedded servers, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args, "--data-dir", str(data_dir)],
            env=_embedded_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _servers(proc: subprocess.Popen[bytes], data_dir: Path) -> list[psutil.Process]:
    """The processes a command started: its children (redis-server, a worker) and the embedded PostgreSQL
    (started through pg_ctl, so no longer its child; found by its data directory)."""
    found = {p.pid: p for p in _processes_using(data_dir)}
    with contextlib.suppress(psutil.NoSuchProcess):
        found.update({p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)})
    return list(found.values())


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    return alive


def _wait_until(proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 180
    while not ready():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in 180 s: {log.read_text()[-3000:]}"
        time.sleep(0.3)


def _cmdline(process: psutil.Process) -> str:
    """``process``'s command line, or ``""`` once it has exited (a short-lived ``psql`` of the start-up can exit
    between being listed and being read)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return " ".join(process.cmdline())
    return ""


def _both_servers_up(proc: subprocess.Popen[bytes], data_dir: Path) -> Callable[[], bool]:
    def up() -> bool:
        names = " ".join(_cmdline(p) for p in _alive(_servers(proc, data_dir)))
        return "postgres" in names and "redis-server" in names

    return up


def _http_up(port: int) -> Callable[[], bool]:
    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return up


@pytest.fixture(scope="module")
def migrated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose embedded database is at the schema head (``opencoach migrate`` run to the end,
    which stops its servers when done)."""
    data_dir = tmp_path_factory.mktemp("cli-data")
    log = data_dir.parent / f"{data_dir.name}-migrate.log"
    proc = _cli(["migrate"], data_dir, log)
    assert proc.wait(300) == 0, log.read_text()
    assert _processes_using(data_dir) == []
    return data_dir


def _schema(data_dir: Path) -> tuple[int, str | None]:
    """(tables in the public schema, Alembic revision or ``None``) of the embedded database in ``data_dir``, its
    servers started for the look and stopped after."""
    services = start_services(
        Settings(data_dir=data_dir, database_url=None, migration_database_url=None, redis_url=None)
    )

    async def look() -> tuple[int, str | None]:
        conn = await asyncpg.connect(services.migration_database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            stamped = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
            return tables, await conn.fetchval("SELECT version_num FROM alembic_version") if stamped else None
        finally:
            await conn.close()

    try:
        return asyncio.run(look())
    finally:
        services.stop()


COMMANDS = ["migrate", "worker", "eval memory", "serve", "demo"]
"""Every long-running ``opencoach`` command that starts embedded servers (eval crisis/learning and the train
commands start none; ``rotate-secret`` and ``documents reprocess`` start them through the same ``_start`` and
are over in seconds)."""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_signal_stops_every_server_a_command_started(
    command: str, signum: signal.Signals, migrated_dir: Path, tmp_path: Path
) -> None:
    # migrate runs on a fresh directory (on a migrated one it would be done before the signal)
    data_dir = tmp_path / "data" if command == "migrate" else migrated_dir
    log = tmp_path / "out.log"
    port = _free_port()
    args = {
        "migrate": ["migrate"],
        "worker": ["worker"],
        "eval memory": ["eval", "memory", "--locomo", str(LOCOMO), "--conversations", "1", "--sessions", "2"],
        "serve": ["serve", "--port", str(port)],
        "demo": ["demo", "--port", str(port)],
    }[command]
    proc = _cli(args, data_dir, log)
    try:
        _wait_until(proc, log, _both_servers_up(proc, data_dir), "embedded PostgreSQL and Redis")
        if command == "worker":
            _wait_until(proc, log, lambda: "Starting worker" in log.read_text(), "running worker")
        elif command in ("serve", "demo"):
            _wait_until(proc, log, _http_up(port), "HTTP")
        elif command == "migrate":  # into the migrations, which run inside asyncio.run on asyncpg
            # (a fast machine may finish them all between two looks: then the signal comes too late, the
            # command exits 0 and the schema must be at head)
            _wait_until(proc, log, lambda: proc.poll() is not None or "Running upgrade" in log.read_text(), "migrating")
        elif command == "eval memory":
            time.sleep(3)  # into the evaluation (migrating, loading the models)
        started = _servers(proc, data_dir)

        proc.send_signal(signum)
        code = proc.wait(120)
        assert code in (0, 130), f"ended by the signal itself ({code}), skipping its cleanup: {log.read_text()[-2000:]}"
        time.sleep(1)
        assert _alive(started) == [], f"{command}: servers left running after {signum.name}"
        assert _processes_using(data_dir) == []
        if command == "migrate":  # all pending migrations run in one transaction: none of them, or all
            tables, revision = _schema(data_dir)
            assert revision in (None, head_revision()), f"left half-migrated at {revision}"
            assert (tables == 0) == (revision is None), f"{tables} tables at revision {revision}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for leftover in _alive(_servers(proc, data_dir)):
            leftover.kill()


INTERRUPTED_IN_EXEC = """
import contextlib
import sys
from app import cli

def interrupted(args):
    exec("raise KeyboardInterrupt")  # as when Ctrl-C lands while dataclasses builds a method from text

def interrupted_and_caught(args):  # as telegram poll does
    with contextlib.suppress(KeyboardInterrupt):
        interrupted(args)
    return 0

cli.cmd_migrate = {command}
sys.exit(cli.main(["migrate"]))
"""


@pytest.mark.parametrize(("command", "status"), [("interrupted", 130), ("interrupted_and_caught", 0)])
def test_an_interrupt_that_landed_in_exec_leaves_the_command_its_exit_status(
    command: str, status: int, tmp_path: Path
) -> None:
    # run with -m, like the signal tests: CPython's exit by SIGINT after an "uncaught" KeyboardInterrupt
    # applies to a module run that way (a script's SystemExit ends the process before it is looked at)
    (tmp_path / "interrupted_cli.py").write_text(INTERRUPTED_IN_EXEC.format(command=command))
    env = {**_embedded_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[3])])}
    done = subprocess.run([sys.executable, "-m", "interrupted_cli"], env=env, capture_output=True, timeout=120)
    assert done.returncode == status, done.stderr.decode()[-2000:]


SIGTERM_IN_EVENT_LOOP = """
import asyncio
import time
from app.core.config import Settings
from app.core.runtime import embedded_services

# both URLs given: embedded_services starts no server and connects to none
settings = Settings(database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none", redis_url="redis://127.0.0.1:9/0")

async def work():
    try:
        print("busy", flush=True)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # code between two awaits, like a driver parsing a reply
            pass
        print("busy work finished", flush=True)
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        print("cancelled at an await", flush=True)
        raise
    except KeyboardInterrupt:
        print("interrupted between two awaits", flush=True)
        raise

with embedded_services(settings):
    try:
        asyncio.run(work())
    except KeyboardInterrupt:
        print("KeyboardInterrupt after the task unwound", flush=True)
"""


def test_sigterm_inside_an_event_loop_cancels_the_main_task_as_ctrl_c_does() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_IN_EVENT_LOOP],
        env=_embedded_env(),
        cwd=Path(__file__).resolve().parents[3],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"busy\n"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()[-2000:]
    # not "interrupted between two awaits": the task's code runs on to its next await, where it is cancelled
    assert out.decode().splitlines() == [
        "busy work finished",
        "cancelled at an await",
        "KeyboardInterrupt after the task unwound",
    ]


def test_a_database_out_of_reach_is_one_error_line_not_a_traceback() -> None:
    """``opencoach migrate`` with DATABASE_URL at a loopback port nothing listens on: exit 1 and one ``error:``
    line naming the settings to check (it was a ``ConnectionRefusedError`` traceback)."""
    closed = f"127.0.0.1:{_free_port()}"
    env = {
        **_embedded_env(),
        "DATABASE_URL": f"postgresql+asyncpg://opencoach:wrong@{closed}/opencoach",
        "MIGRATION_DATABASE_URL": f"postgresql+asyncpg://opencoach:wrong@{closed}/opencoach",
        "REDIS_URL": f"redis://{closed}/0",
    }
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, capture_output=True, timeout=120)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, output
    assert "Traceback" not in output and "error:" in output and "DATABASE_URL" in output, output


async def test_the_demo_seed_remakes_a_deleted_demo_client_and_explains_a_changed_password(
    settings: Settings, services: Services, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make demo`` run again after the coach deleted "Demo Client" gives a new demo client's link (it crashed
    unpacking an empty client list, or printed another client's link); after the coach changed the demo
    password it stops with one clear error (it crashed with a sign-up conflict)."""

    async def no_book(*args: object, **kwargs: object) -> None:  # the book's ingestion is not this test's subject
        return None

    monkeypatch.setattr(DocumentService, "upload", no_book)
    _, first = await cli.seed_demo(settings, services)
    found = await container.accounts.login(cli.DEMO_EMAIL, cli.DEMO_PASSWORD)
    assert found is not None
    coach_id, user_id = found
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        [demo] = (await container.accounts.list_clients(uow, PageRequest())).items
        assert demo.name == cli.DEMO_CLIENT
        await container.accounts.create_client(uow, "Someone Else")
        await container.accounts.delete_client(uow, demo.id)
    _, second = await cli.seed_demo(settings, services)
    assert second != first and second.startswith("/w/ocw_")
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        names = sorted(c.name for c in (await container.accounts.list_clients(uow, PageRequest())).items)
    assert names == [cli.DEMO_CLIENT, "Someone Else"]

    await container.accounts.change_password(coach_id, user_id, cli.DEMO_PASSWORD, "a new password of mine")
    with pytest.raises(RuntimeError, match="has another password now"):
        await cli.seed_demo(settings, services)


def test_migrate_with_only_the_owners_url_starts_nothing(services: Services, tmp_path: Path) -> None:
    """``opencoach migrate`` given only MIGRATION_DATABASE_URL (the deploy guide's Kubernetes Job) migrates that
    database and starts no embedded server: it started an embedded PostgreSQL and Redis, and migrated those. The
    URL is written as managed providers hand it out, ``postgresql://`` without the driver (an ``ImportError``
    traceback before)."""
    data_dir = tmp_path / "data"
    as_given = services.migration_database_url.replace("postgresql+asyncpg://", "postgresql://")
    env = {**_embedded_env(), "MIGRATION_DATABASE_URL": as_given, "DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, capture_output=True, timeout=120)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0 and "schema is at head" in output, output
    assert not (data_dir / "pgdata").exists() and not data_dir.exists(), "no embedded server was set up"


def test_a_database_url_of_another_database_is_one_error_line_naming_it() -> None:
    env = {**_embedded_env(), "DATABASE_URL": "mysql://opencoach@db.example.test/opencoach"}
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, capture_output=True, timeout=120)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, output
    assert "Traceback" not in output and "error: DATABASE_URL" in output and "PostgreSQL URL" in output, output


ON_ONE_DATA_DIR = """
import sys
from app.core.config import Settings
from app.core.runtime import embedded_services

with embedded_services(Settings(data_dir=sys.argv[1], database_url=sys.argv[2])) as services:
    print(services.redis_url, flush=True)
    sys.stdin.readline()
"""


def test_commands_on_one_data_dir_share_its_redis_which_stops_with_the_last(services: Services, tmp_path: Path) -> None:
    """``opencoach serve --no-worker`` and ``opencoach worker`` in two terminals on one data directory (as the
    README's commands allow): both use one embedded Redis, which a Ctrl-C in the first terminal leaves running
    for the other, and which stops with the last. Each started a Redis of its own on the same files: the web
    process queued jobs the worker never saw. A record of the server left unreadable (a kill while it was being
    written) counts as none."""

    def start() -> tuple[subprocess.Popen[bytes], str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", ON_ONE_DATA_DIR, str(tmp_path), services.database_url],
            env=_embedded_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a terminal of its own: a Ctrl-C reaches its whole process group
        )
        assert proc.stdout is not None
        return proc, proc.stdout.readline().decode().strip()

    def answers(url: str) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0])), 2) as conn,
        ):
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
        return False

    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "server.json").write_text("")  # a record cut short by a kill: as if none
    first, url = start()
    second, again = start()
    try:
        assert url.startswith("redis://127.0.0.1:") and again == url, "one Redis for the data directory"
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in the first terminal
        first.wait(60)
        assert answers(url), "the other command still has its Redis"
        second.communicate(b"\n", timeout=60)
        assert second.returncode == 0
        assert not answers(url) and _processes_using(tmp_path) == [], "the last one stopped it"
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
        for leftover in _processes_using(tmp_path):
            leftover.kill()
