"""Transactional outbox for background jobs (Richardson, *Microservices Patterns*, 2018, "Transactional
outbox"; polarsource/polar's enqueue-after-commit).

A service that needs follow-up work adds an :class:`OutboxJob` row in the same transaction as the change
that calls for it (the functions of :mod:`app.db.jobs` take the session). The row commits or rolls back
with that change. After the commit, the unit of work (:func:`app.db.engine.tenant_session`) hands the new
rows to :class:`AfterCommitRelay`, which sends them to arq and then deletes them; a row that could not be
sent (Redis down) stays, with ``attempts`` and ``last_error``, and the worker's relay cron (:func:`relay`)
sends it once Redis is back.

Delivery is at least once. Every row carries an arq ``_job_id``: arq refuses a job id that is queued, running
or whose result it still keeps (``keep_result``, an hour by default) and ``enqueue_job`` then returns
``None``, which counts as sent (the job is known to arq). A row sent twice (a crash between the send and the
delete's commit) therefore runs once while arq remembers it, and every job is idempotent for the rest.
Two crons never send one row at the same time: they lock rows ``FOR UPDATE SKIP LOCKED`` while they send
them, so crons in several processes each take the rows the others have not. The after-commit relay sends
only rows its own transaction just committed; a cron can send one of them again only in the moment before
the row's deletion, and arq then refuses the copy.

``outbox_jobs`` holds job names, ids and JSON arguments (ids, flags), no tenant content, and is read across
tenants by the relay: it is not under row-level security (like ``intervention_patterns``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import SerializationError, deserialize_job_raw
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError
from sqlalchemy import DateTime, Integer, String, Text, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.db.autocommit import autocommit_session
from app.db.base import Base, IdMixin

log = logging.getLogger(__name__)

RELAY_BATCH = 200
"""Rows sent per relay transaction."""
SEND_TIMEOUT_S = 2.0
"""Seconds one ``enqueue_job`` may take before Redis counts as unavailable (a hung server, a black-holed
network): bounds what a commit can wait for its relay."""
MAX_ERROR_CHARS = 300
MAX_JOB_ID_CHARS = 300
SCAN_BATCH = 500
"""Job payloads read per ``MGET`` by :func:`pending_job_args`."""

UNAVAILABLE = (RedisError, OSError, TimeoutError)
"""Errors meaning Redis (or a connection to it) is out of reach now: refused, dropped or timed out. The relay then
stops and leaves the rest for the next one; the live events, the response cache and the jobs handle it too."""


def connect_redis(redis_url: str, *, socket_timeout_s: float, queue: str = default_queue_name) -> ArqRedis:
    """An arq Redis client for ``redis_url`` whose commands and connection attempts give up after
    ``socket_timeout_s`` seconds (``TimeoutError``, one of :data:`UNAVAILABLE`): a hung or restarting Redis
    never blocks a caller for longer. ``queue`` is the queue ``enqueue_job`` uses by default. Connects on
    first use."""
    pool = ConnectionPool.from_url(redis_url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s)
    return ArqRedis(pool, default_queue_name=queue)


class OutboxJob(IdMixin, Base):
    """One job waiting to be sent to arq: ``name`` (an arq function), positional ``args`` (JSON), arq's
    ``_job_id`` for deduplication, the arq ``queue`` it goes to (``None``: arq's default queue), an optional
    ``defer_until`` (UTC), and the failed sends so far
    (``attempts``, ``last_error``)."""

    __tablename__ = "outbox_jobs"

    coach_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    name: Mapped[str] = mapped_column(String(60))
    args: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    job_id: Mapped[str] = mapped_column(String(300))
    queue: Mapped[str | None] = mapped_column(String(60))
    defer_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


PENDING_KEY = "outbox_pending"
"""``session.info`` key: the outbox rows added in the session's transaction."""


def add_job(
    session: AsyncSession,
    coach_id: uuid.UUID | None,
    name: str,
    *args: Any,
    job_id: str | None = None,
    defer_until: datetime | None = None,
    queue: str | None = None,
) -> OutboxJob:
    """Add a job to the session's transaction (sent after commit). ``args`` must be JSON values (strings,
    numbers, booleans, ``None``; lists and objects of them): jobs take ids, never ORM objects.
    ``job_id`` (at most 300 characters) defaults to one derived from the row, so the relay never queues the
    same row twice; ``defer_until`` must be timezone-aware; ``queue`` names the arq queue (``None``: the
    default one, which the main worker serves).

    Raises ``TypeError`` for an argument that is not JSON and ``ValueError`` for a naive ``defer_until`` or
    an over-long ``job_id``, at the call (not at the flush, far from the cause)."""
    try:
        payload = json.loads(json.dumps(list(args), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"job {name!r}: arguments must be JSON values (ids as strings): {exc}") from exc
    if defer_until is not None and defer_until.utcoffset() is None:
        raise ValueError(f"job {name!r}: defer_until must be timezone-aware")
    row_id = uuid.uuid4()
    job_id = job_id or f"{name}:outbox:{row_id}"
    if len(job_id) > MAX_JOB_ID_CHARS:
        raise ValueError(f"job {name!r}: job_id is longer than {MAX_JOB_ID_CHARS} characters")
    row = OutboxJob(
        id=row_id,
        coach_id=coach_id,
        name=name,
        args=payload,
        job_id=job_id,
        queue=queue,
        defer_until=defer_until,
        attempts=0,
    )
    session.add(row)
    session.info.setdefault(PENDING_KEY, []).append(row)
    return row


def pending_rows(session: AsyncSession) -> list[OutboxJob]:
    """The outbox rows this session's (committed) transaction added, in order; clears the list."""
    rows: list[OutboxJob] = session.info.pop(PENDING_KEY, [])
    return rows


async def _send(redis: ArqRedis, row: OutboxJob, now: datetime) -> None:
    """Enqueue one row. A ``defer_until`` already past is sent as "now": arq derives the job's expiry from
    it, and a time long past (a row kept through a long outage) would make that expiry negative."""
    defer = row.defer_until if row.defer_until is not None and row.defer_until > now else None
    async with asyncio.timeout(SEND_TIMEOUT_S):
        # None: arq already has this job id (queued, running, or its result kept): it is sent
        await redis.enqueue_job(row.name, *row.args, _job_id=row.job_id, _defer_until=defer, _queue_name=row.queue)


def _error(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:MAX_ERROR_CHARS]


@dataclass
class _Batch:
    """What one relay transaction did."""

    rows: int = 0
    sent: int = 0
    unavailable: str | None = None


async def _send_rows(
    redis: ArqRedis, rows: Sequence[OutboxJob]
) -> tuple[list[uuid.UUID], dict[uuid.UUID, str], str | None]:
    """Send ``rows`` in order: the ids sent, the failed ones with their error, and the Redis error that stopped
    the sending (``None``: Redis took every row it was asked). A Redis error stops it (every row not sent gets
    the error); any other error is the row's own (the next row is tried), so one bad row never holds back the
    rest."""
    done: list[uuid.UUID] = []
    failed: dict[uuid.UUID, str] = {}
    unavailable = None
    now = datetime.now(UTC)
    for index, row in enumerate(rows):
        try:
            await _send(redis, row, now)
        except UNAVAILABLE as exc:
            unavailable = _error(exc)
            failed |= {later.id: unavailable for later in rows[index:]}
            break
        except Exception as exc:  # this row's own problem (e.g. a function arq cannot serialise)
            log.exception("outbox job %s (%s) could not be sent", row.id, row.name)
            failed[row.id] = _error(exc)
            continue
        done.append(row.id)
    return done, failed, unavailable


async def _settle(session: AsyncSession, done: Sequence[uuid.UUID], failed: dict[uuid.UUID, str]) -> None:
    """Delete the rows ``done`` (sent) and give the ``failed`` ones ``attempts + 1`` and their ``last_error``."""
    if done:
        await session.execute(delete(OutboxJob).where(OutboxJob.id.in_(done)))
    for error in set(failed.values()):
        await session.execute(
            update(OutboxJob)
            .where(OutboxJob.id.in_([row_id for row_id, e in failed.items() if e == error]))
            .values(attempts=OutboxJob.attempts + 1, last_error=error)
        )


async def _relay_batch(session: AsyncSession, redis: ArqRedis, rows: Sequence[OutboxJob]) -> _Batch:
    """Send ``rows`` (locked by the caller) in order (:func:`_send_rows`); delete the sent ones and record the
    failures in ``session``'s transaction."""
    done, failed, unavailable = await _send_rows(redis, rows)
    await _settle(session, done, failed)
    return _Batch(rows=len(rows), sent=len(done), unavailable=unavailable)


class AfterCommitRelay:
    """The relay a unit of work runs after its commit (:func:`app.db.engine.run_after_commit`): it sends the
    rows that transaction added, straight from the session's objects, and deletes them later, in batches.

    Sending needs no transaction of its own: the rows were just committed, so no other relay can have sent
    them but the cron, and only in the moment before their deletion, in which case arq refuses the second
    copy (same job id; the module docstring). The deletion runs in a background task that takes every id
    sent meanwhile in one ``DELETE`` (up to :data:`RELAY_BATCH`), so concurrent commits share it, and the
    commit waits only for Redis. The ``DELETE`` is one statement: it runs in autocommit mode
    (:func:`~app.db.autocommit.autocommit_session`). An id whose deletion fails (the database went away) keeps
    its row: the cron sends it again, which arq refuses while it remembers the job, and every job is
    idempotent for the rest. A row that could not be sent gets ``attempts`` and ``last_error`` at once, in a
    transaction of its own, and waits for the cron.

    Before: the after-commit relay was :func:`relay` with the ids, a transaction that locked and read the rows
    back and deleted them: about 9 % of a chat turn's event-loop time (py-spy over ``bench/chat.py
    --instant``)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis) -> None:
        self._sessionmaker = sessionmaker
        self._redis = redis
        self._sent: list[uuid.UUID] = []
        self._deleting: asyncio.Task[None] | None = None

    async def __call__(self, rows: Sequence[OutboxJob]) -> int:
        """Send ``rows`` (committed, in the order they were added); returns how many were sent. Never raises
        but for cancellation: an error is recorded on the row, or logged."""
        done, failed, unavailable = await _send_rows(self._redis, rows)
        if unavailable is not None:
            log.warning("outbox relay after commit: Redis unavailable (%s); the relay cron sends the rest", unavailable)
        if failed:
            try:
                async with self._sessionmaker() as session, session.begin():
                    await _settle(session, (), failed)
            except Exception:
                log.exception("recording %d failed outbox sends failed; the rows wait for the relay cron", len(failed))
        if done:
            self._sent.extend(done)
            if self._deleting is None:
                self._deleting = asyncio.create_task(self._delete_sent())
        return len(done)

    async def _delete_sent(self) -> None:
        try:
            while self._sent:
                ids, self._sent = self._sent[:RELAY_BATCH], self._sent[RELAY_BATCH:]
                try:
                    async with autocommit_session(self._sessionmaker) as session:  # one statement
                        await _settle(session, ids, {})
                except Exception:
                    log.exception("deleting %d sent outbox rows failed; the relay cron sends them again", len(ids))
        finally:
            self._deleting = None

    async def drain(self) -> None:
        """Wait until every sent row is deleted (or its deletion failed): before the pool closes, and in tests
        that look at the outbox right after a commit."""
        while self._deleting is not None:
            await asyncio.shield(self._deleting)


async def relay(
    sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis, ids: Sequence[uuid.UUID] | None = None
) -> int:
    """The relay cron's pass: send outbox rows to arq and delete them, every row oldest first (or only the
    rows ``ids``). Returns how many were sent.

    Rows are locked ``FOR UPDATE SKIP LOCKED`` while they are sent, so concurrent relays (crons in several
    processes) never send a row twice at once; a row another relay holds is left to it. Redis unavailable
    stops the relay: the unsent rows of the batch get ``attempts + 1`` and ``last_error`` and stay for the
    next relay; the error is logged, never raised. Each ``enqueue_job`` may take :data:`SEND_TIMEOUT_S` at most.
    """
    sent = 0
    todo = list(dict.fromkeys(ids)) if ids is not None else None
    after: tuple[datetime, uuid.UUID] | None = None  # keyset cursor of the cron's pass (rows are seen once)
    while True:
        stmt = select(OutboxJob).order_by(OutboxJob.created_at, OutboxJob.id).limit(RELAY_BATCH)
        if todo is not None:
            if not todo:
                return sent
            stmt = stmt.where(OutboxJob.id.in_(todo[:RELAY_BATCH]))
            todo = todo[RELAY_BATCH:]
        elif after is not None:
            stmt = stmt.where(tuple_(OutboxJob.created_at, OutboxJob.id) > tuple_(*after))
        async with sessionmaker() as session, session.begin():
            rows = (await session.scalars(stmt.with_for_update(skip_locked=True))).all()
            batch = await _relay_batch(session, redis, rows)
        sent += batch.sent
        if batch.unavailable is not None:
            log.warning("outbox relay stopped after %d jobs, Redis unavailable: %s", sent, batch.unavailable)
            return sent
        if todo is None:
            if batch.rows < RELAY_BATCH:
                return sent
            after = (rows[-1].created_at, rows[-1].id)


async def pending_job_args(
    sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis, name: str
) -> set[tuple[Any, ...]]:
    """The positional arguments of every ``name`` job that may still run: its rows in the outbox, then its jobs
    in arq's default queue whose data arq still holds (queued, deferred, waiting for a retry, or running: arq
    keeps a job's id in its queue until the job ends). A job whose data expired (arq's ``expires_extra_ms``, a
    day by default, passed with no worker) is not counted: the worker that pops it drops it unrun. The outbox
    is read first, so a row sent and deleted between the two reads is found in arq's queue; all of it is read
    twice, so a job that queues its follow-up under a new id and ends (an ingestion deferred for its coach's
    slots) between one read of the queue and the read of its payloads is found in the other.

    Reads the whole queue (``ZRANGE``, then ``MGET`` of :data:`SCAN_BATCH` payloads at a time): for sweeps, not
    for a request's path. Raises one of :data:`UNAVAILABLE` when Redis is out of reach."""
    return await _pending_job_args(sessionmaker, redis, name) | await _pending_job_args(sessionmaker, redis, name)


async def _pending_job_args(
    sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis, name: str
) -> set[tuple[Any, ...]]:
    async with sessionmaker() as session:
        found = {tuple(args) for args in (await session.scalars(select(OutboxJob.args).where(OutboxJob.name == name)))}
    ids: list[bytes] = await redis.zrange(redis.default_queue_name, 0, -1)
    for start in range(0, len(ids), SCAN_BATCH):
        keys = [job_key_prefix.encode() + job_id for job_id in ids[start : start + SCAN_BATCH]]
        for payload in await redis.mget(keys):
            if payload is None:
                continue
            try:
                function, args, *_ = deserialize_job_raw(payload)
            except SerializationError:
                continue
            if function == name:
                found.add(tuple(args))
    return found


@dataclass(frozen=True)
class OutboxHealth:
    """The outbox at one moment: ``waiting`` rows, the ``oldest`` row's creation time and age in seconds,
    how many rows have ``failing`` sends, and the ``last_error`` of the most recently created failing row."""

    waiting: int
    oldest: datetime | None
    oldest_age_s: float | None
    failing: int
    last_error: str | None

    def line(self) -> str:
        """One log line: ``outbox: 0 jobs waiting`` or ``outbox: 3 jobs waiting, oldest 42 s, 3 failing
        (last error: ConnectionError: …)``."""
        if not self.waiting:
            return "outbox: 0 jobs waiting"
        text = f"outbox: {self.waiting} jobs waiting, oldest {self.oldest_age_s or 0:.0f} s"
        if self.failing:
            text += f", {self.failing} failing (last error: {self.last_error})"
        return text


async def health(sessionmaker: async_sessionmaker[AsyncSession]) -> OutboxHealth:
    """How many jobs wait in the outbox, since when, and whether sending them fails."""
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(
                    func.count(),
                    func.min(OutboxJob.created_at),
                    func.count().filter(OutboxJob.attempts > 0),
                    func.now(),
                )
            )
        ).one()
        last_error = await session.scalar(
            select(OutboxJob.last_error)
            .where(OutboxJob.last_error.is_not(None))
            .order_by(OutboxJob.created_at.desc())
            .limit(1)
        )
    waiting, oldest, failing, now = row
    age = (now - oldest).total_seconds() if oldest is not None else None
    return OutboxHealth(int(waiting), oldest, age, int(failing), last_error)


async def waiting(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """How many jobs wait in the outbox (for health checks and tests)."""
    return (await health(sessionmaker)).waiting
