"""Transactional outbox for background jobs (Richardson, *Microservices Patterns*, 2018, "Transactional
outbox"; polarsource/polar's enqueue-after-commit).

A service that needs follow-up work adds an :class:`OutboxJob` row in the same transaction as the change
that calls for it (the functions of :mod:`app.db.jobs` take the session). The row commits or rolls back
with that change. After the commit, the unit of work (:func:`app.db.engine.tenant_session`) hands the new
rows to :func:`relay`, which sends them to arq and deletes them; a row that could not be sent (Redis down)
stays and is sent by the worker's relay cron once Redis is back. arq sees every job at least once and
deduplicates by ``_job_id`` (every row has one), so a row sent twice (a crash between send and delete)
still runs once while arq keeps its result.

``outbox_jobs`` holds job names and ids only, no tenant content, and is read across tenants by the relay:
it is not under row-level security (like ``intervention_patterns``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import DateTime, Integer, String, Text, delete, func, select, update
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin

log = logging.getLogger(__name__)

RELAY_BATCH = 200
"""Rows sent per relay transaction."""
MAX_ERROR_CHARS = 300


class OutboxJob(IdMixin, Base):
    """One job waiting to be sent to arq: ``name`` (an arq function), positional ``args`` (JSON: strings,
    numbers, booleans), arq's ``_job_id`` for deduplication, and an optional ``defer_until``."""

    __tablename__ = "outbox_jobs"

    coach_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    name: Mapped[str] = mapped_column(String(60))
    args: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    job_id: Mapped[str] = mapped_column(String(300))
    defer_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


PENDING_KEY = "outbox_pending"
"""``session.info`` key: ids of the outbox rows added in the session's transaction."""


def add_job(
    session: AsyncSession,
    coach_id: uuid.UUID | None,
    name: str,
    *args: Any,
    job_id: str | None = None,
    defer_until: datetime | None = None,
) -> OutboxJob:
    """Add a job to the session's transaction (sent after commit). ``job_id`` defaults to one derived from the
    row, so the relay never queues the same row twice."""
    row_id = uuid.uuid4()
    row = OutboxJob(
        id=row_id,
        coach_id=coach_id,
        name=name,
        args=list(args),
        job_id=job_id or f"{name}:outbox:{row_id}",
        defer_until=defer_until,
        attempts=0,
    )
    session.add(row)
    session.info.setdefault(PENDING_KEY, []).append(row_id)
    return row


def pending_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Ids of the outbox rows this session's (committed) transaction added; clears the list."""
    ids: list[uuid.UUID] = session.info.pop(PENDING_KEY, [])
    return ids


async def relay(
    sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis, ids: Sequence[uuid.UUID] | None = None
) -> int:
    """Send outbox rows to arq and delete them: the rows ``ids`` (after a commit), or every row (the cron).

    Rows are locked ``FOR UPDATE SKIP LOCKED``, so relays in several processes never send a row twice at
    once. Returns the number sent. A Redis error stops the batch: the row gets ``attempts``/``last_error``
    and stays for the next relay; the error is logged, never raised (a committed change must not fail).
    """
    sent = 0
    while True:
        async with sessionmaker() as session, session.begin():
            stmt = select(OutboxJob).order_by(OutboxJob.created_at).limit(RELAY_BATCH)
            if ids is not None:
                stmt = stmt.where(OutboxJob.id.in_(list(ids)))
            rows = (await session.scalars(stmt.with_for_update(skip_locked=True))).all()
            done: list[uuid.UUID] = []
            failed: OutboxJob | None = None
            error = ""
            for row in rows:
                try:
                    await redis.enqueue_job(row.name, *row.args, _job_id=row.job_id, _defer_until=row.defer_until)
                except Exception as exc:  # Redis down or refusing: keep the row for the next relay
                    failed, error = row, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                    break
                done.append(row.id)
            if done:
                await session.execute(delete(OutboxJob).where(OutboxJob.id.in_(done)))
            if failed is not None:
                await session.execute(
                    update(OutboxJob)
                    .where(OutboxJob.id == failed.id)
                    .values(attempts=OutboxJob.attempts + 1, last_error=error)
                )
        sent += len(done)
        if failed is not None:
            log.warning("outbox relay stopped after %d jobs: %s", sent, error)
            return sent
        if ids is not None or len(rows) < RELAY_BATCH:
            return sent


async def waiting(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """How many jobs wait in the outbox (for health checks and tests)."""
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxJob)) or 0)
