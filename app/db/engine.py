"""Async engine and sessions. Every unit of work runs in one transaction scoped to one tenant."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.db.autocommit import AUTOCOMMIT
from app.db.outbox import OutboxJob, pending_rows
from app.db.vectors import register_vector_codecs

log = logging.getLogger(__name__)


def make_engine(
    url: str, *, pool_size: int = 10, statement_timeout_ms: int = 0, lock_timeout_ms: int = 0
) -> AsyncEngine:
    """Create the asyncpg engine for ``url`` (``postgresql+asyncpg://…``). Every connection is scoped to the
    tenant of the unit of work that checks it out, or to none, and checked by that same round trip
    (:func:`_scope_on_checkout`: connections a PostgreSQL restart closed are replaced, not handed out), and
    gets PostgreSQL's ``statement_timeout`` and ``lock_timeout`` in milliseconds (0: none) as server settings,
    so a statement ends with an error (``QueryCanceledError``/``LockNotAvailableError``) instead of waiting
    for ever."""
    server_settings = {"statement_timeout": str(statement_timeout_ms), "lock_timeout": str(lock_timeout_ms)}
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=10,
        connect_args={"server_settings": server_settings},
    )
    event.listen(engine.sync_engine, "checkout", _scope_on_checkout)
    event.listen(engine.sync_engine, "checkin", _note_checkin)
    return engine


_VECTOR_CODECS = "pgvector_codecs"
"""Key in a pooled connection's ``info`` (kept for the life of the DBAPI connection): its codecs are registered."""

_SCOPE, _CHECKED_IN = "tenant_scope", "checked_in_at"
"""Keys in a pooled connection's ``info``: the ``app.coach_id`` its last checkout set (absent while unknown), and
when it was last returned to the pool (``time.monotonic()``, seconds)."""

ALIVE_BYPASS_S = 0.5
"""A connection returned to the pool less than this many seconds ago, and already scoped to the tenant it is checked
out for, is handed out without the checkout's round trip (HikariCP's ``aliveBypassWindowMs``, 500 ms by default):
it was working a moment ago. A chat turn checks out about seven connections within a few milliseconds."""

_TENANT: ContextVar[uuid.UUID | None] = ContextVar("opencoach_tenant", default=None)
"""The coach a unit of work (:func:`tenant_session`) is checking out its connection for, during that checkout."""


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    """Pool ``checkin`` event: note when the connection came back (:data:`ALIVE_BYPASS_S`)."""
    record.info[_CHECKED_IN] = time.monotonic()


def _scope_on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Scope the connection being checked out, for as long as it is out, to the tenant of the unit of work that
    checks it out (:data:`_TENANT`), or to no tenant (then row-level security shows no tenant's rows):
    ``SELECT set_config('app.coach_id', '<coach id or empty>', false)`` in the simple query protocol.

    The same round trip is the pessimistic disconnect check (SQLAlchemy's "Disconnect Handling – Pessimistic",
    in a ``checkout`` pool event): if it fails, whatever the error (a terminated backend can leave asyncpg with
    ``InternalClientError``), it is logged and ``DisconnectionError`` raised: the pool discards the connection
    and checks out another (a new one when needed, whose own connect error then reaches the caller).

    Before, the check was a ``SELECT 1`` and every transaction then set its tenant with its own statement
    (``set_config(…, true)``): two round trips per unit of work where one does, six tenant units of work per
    chat turn. A session-level setting is safe because every checkout sets it again and nothing uses a pooled
    connection without checking it out: the tenant a connection holds in the pool is never used.
    SQLAlchemy's own ``pool_pre_ping`` on asyncpg takes three round trips (``BEGIN``, ``;`` as a prepared
    statement, ``ROLLBACK``); the simple query protocol prepares nothing and needs no transaction
    (sqlalchemy#10226). The coach id is a ``uuid.UUID``, so the literal holds only
    hex digits and hyphens.

    The round trip is left out (:data:`ALIVE_BYPASS_S`) for a connection that came back to the pool a moment ago
    already scoped to this tenant. Should PostgreSQL restart within that moment, the connection's first statement
    fails with a disconnect error instead (the caller's unit of work rolls back and raises), and SQLAlchemy then
    invalidates the whole pool, so the statements after it get new connections.

    A connection's first checkout also gives it pgvector's binary codecs (:func:`register_vector_codecs`), which
    the vector columns' types (:class:`~app.db.vectors.BinaryVector`) need; until the ``vector`` type exists
    (before the first migration), every checkout tries again."""
    tenant = _TENANT.get()
    scope = str(tenant) if isinstance(tenant, uuid.UUID) else ""
    info = record.info
    recent = time.monotonic() - info.get(_CHECKED_IN, -math.inf) < ALIVE_BYPASS_S
    if recent and info.get(_SCOPE) == scope and info.get(_VECTOR_CODECS):
        return
    info.pop(_SCOPE, None)  # unknown until the round trip succeeds

    async def check_out(connection: Any) -> None:
        if not record.info.get(_VECTOR_CODECS):
            record.info[_VECTOR_CODECS] = await register_vector_codecs(connection)
        await connection.execute(f"SELECT set_config('app.coach_id', '{scope}', false)")

    try:
        dbapi_connection.run_async(check_out)
        info[_SCOPE] = scope
    except Exception as exc:  # closed socket, terminated backend (57P01), asyncpg's protocol state after either, …
        log.warning("a pooled connection failed its checkout ping (%r); it is replaced", exc)
        raise DisconnectionError(f"connection failed its checkout ping: {exc!r}") from exc


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory; objects stay usable after commit (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)


AfterCommit = Callable[[], Awaitable[None]]
Relay = Callable[[list[OutboxJob]], Awaitable[int]]
RELAY_KEY = "outbox_relay"
"""``session.info`` key (set on the sessionmaker by the container): sends a committed transaction's outbox rows
(:class:`app.db.outbox.AfterCommitRelay`)."""
AFTER_COMMIT_KEY = "after_commit"


def after_commit(session: AsyncSession, hook: AfterCommit) -> None:
    """Run ``hook`` once the session's transaction has committed (not at all on rollback). Hooks run in
    order, after the outbox relay; a failing hook is logged, never raised: the change is already stored.
    Hooks are best-effort (a crash right after the commit skips them): work that must happen goes through
    the outbox (:mod:`app.db.jobs`) instead."""
    session.info.setdefault(AFTER_COMMIT_KEY, []).append(hook)


def discard_after_commit(session: AsyncSession) -> None:
    """Forget the outbox rows and hooks of a transaction that rolled back (its rows are gone with it)."""
    pending_rows(session)
    session.info.pop(AFTER_COMMIT_KEY, None)


async def commit_asynchronously(session: AsyncSession) -> None:
    """Let ``session``'s transaction commit without waiting for its WAL to reach the disk: PostgreSQL's
    asynchronous commit (``SET LOCAL synchronous_commit TO off``, PostgreSQL manual, "Asynchronous Commit"), for
    this transaction only. The commit then returns without waiting for an ``fdatasync`` of the WAL
    (``bench/commits.py`` on this project's 2-core test machine: a one-row commit 0.77 against 0.50 ms p50 on a
    quiet disk, 3.2 against 0.16 ms while other processes wrote to it).

    Only for a transaction whose writes may be lost in a crash and are written again when the work is done again
    (derived data, an idempotent step): the WAL writer flushes it within three ``wal_writer_delay`` (600 ms by
    default), and the next synchronous commit of any session flushes it with its own (the WAL is one sequence),
    so a crash loses it only inside that window. Never for what a client or coach was told is stored."""
    await session.execute(text("SET LOCAL synchronous_commit TO off"))


async def run_after_commit(session: AsyncSession) -> None:
    """Relay the outbox rows the committed transaction added, then run its :func:`after_commit` hooks.
    Never raises (but for cancellation): a relay that fails leaves the rows to the worker's relay cron."""
    rows = pending_rows(session)
    relay: Relay | None = session.info.get(RELAY_KEY)
    if rows and relay is not None:
        try:
            await relay(rows)
        except Exception:  # a bug: the relay records its own errors; the rows wait for the cron
            log.exception("relaying %d outbox jobs after commit failed; the relay cron will send them", len(rows))
    for hook in session.info.pop(AFTER_COMMIT_KEY, []):
        try:
            await hook()
        except Exception:
            log.exception("after-commit hook %r failed", hook)


@asynccontextmanager
async def tenant_session(
    sessionmaker: async_sessionmaker[AsyncSession], coach_id: uuid.UUID, *, autocommit: bool = False
) -> AsyncIterator[AsyncSession]:
    """The unit of work of one tenant: open a session, begin a transaction on a connection scoped to
    ``coach_id`` (:func:`_scoped_connection`), commit on success (then relay its outbox jobs and run its
    :func:`after_commit` hooks), roll back on error.

    ``autocommit=True`` is for a unit that only reads and needs no snapshot shared by its statements: the
    connection is in PostgreSQL's autocommit mode (SQLAlchemy's ``AUTOCOMMIT`` isolation level), so each
    statement is a transaction of its own and the unit sends no ``BEGIN`` and no ``COMMIT`` (two round trips
    fewer). It is still scoped to ``coach_id``: the scope is set at checkout, not per transaction. A write in
    such a unit would commit at once, alone: write in a unit without ``autocommit``."""
    async with sessionmaker() as session:
        try:
            async with session.begin():
                await _scoped_connection(session, coach_id, autocommit=autocommit)
                yield session
        except BaseException:
            discard_after_commit(session)
            raise
        await run_after_commit(session)


async def _scoped_connection(session: AsyncSession, coach_id: uuid.UUID, *, autocommit: bool) -> None:
    """Check out ``session``'s connection for its transaction now (in autocommit mode if ``autocommit``), scoped
    to ``coach_id`` by the checkout itself (:func:`_scope_on_checkout` reads :data:`_TENANT`, set for this call
    only: no other session of the task is scoped by it). Raises ``ValueError`` when ``coach_id`` is not a UUID,
    and ``RuntimeError`` when the session's engine was not made by :func:`make_engine` (its connections would
    carry no tenant)."""
    scoped = _TENANT.set(uuid.UUID(str(coach_id)))
    try:
        connection = await session.connection(execution_options=AUTOCOMMIT if autocommit else None)
    finally:
        _TENANT.reset(scoped)
    if not event.contains(connection.engine.sync_engine, "checkout", _scope_on_checkout):
        raise RuntimeError("a tenant unit of work needs an engine made by app.db.engine.make_engine")


_OWNED_OBJECTS = text(
    """
    SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY (current_schemas(false)) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND pg_has_role(current_user, c.relowner, 'USAGE')
    UNION ALL
    SELECT n.nspname || '.' || p.proname || '()' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = ANY (current_schemas(false)) AND pg_has_role(current_user, p.proowner, 'USAGE')
    ORDER BY 1
    """
)
"""Tables, views and functions on the app's search path that the connected role owns or holds the owner's
privileges of (``pg_has_role(…, 'USAGE')``: the owner itself or a role that inherits from it)."""


async def assert_unprivileged(engine: AsyncEngine) -> None:
    """Refuse to run as a role that would bypass row-level security, or see past it.

    Raises ``RuntimeError`` naming ``DATABASE_URL`` if the connected role is a superuser or has BYPASSRLS, or
    if it owns (or inherits the owner's privileges of) any table, view or function on its search path: the
    owner's read-all policies (``TO CURRENT_USER USING (true)``, meant for the SECURITY DEFINER credential
    look-ups and sweeps) would then apply to every query of the app, and an owner can switch RLS off.
    """
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
        owned = [] if row.rolsuper else list((await conn.scalars(_OWNED_OBJECTS)).all())
    if row.rolsuper or row.rolbypassrls:
        raise RuntimeError(
            f"DATABASE_URL connects as {row.rolname!r}, which bypasses row-level security; "
            "use a role that is neither SUPERUSER nor BYPASSRLS (set MIGRATION_DATABASE_URL for the owner)."
        )
    if owned:
        shown = ", ".join(owned[:3]) + (f" and {len(owned) - 3} more" if len(owned) > 3 else "")
        raise RuntimeError(
            f"DATABASE_URL connects as {row.rolname!r}, which owns {shown}: the owner's policies would let "
            "every query of the app read across tenants. Point DATABASE_URL at a separate login role that owns "
            "nothing (a member of opencoach_app) and MIGRATION_DATABASE_URL at the owner, which runs the "
            "migrations (MIGRATION_DATABASE_URL defaults to DATABASE_URL: set both)."
        )
