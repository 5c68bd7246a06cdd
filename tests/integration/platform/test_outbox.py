"""The transactional outbox and the unit of work on real PostgreSQL and a real redis-server of this module's own
(:class:`tests.redis_process.RedisProcess`), stopped or hung where a test needs Redis unavailable: rows are
sent once (also by two relays at once), kept with ``attempts``/``last_error`` while Redis is down and sent
when it is back, a rolled-back transaction queues nothing, arq's job-id deduplication counts as sent,
after-commit hooks run only after a commit and never fail it, and the response cache and live events
degrade to a miss / a dropped update.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import default_queue_name
from arq.jobs import Job
from sqlalchemy import select, text

from app import container as container_module
from app.container import Container
from app.core.config import Settings
from app.core.runtime import Services
from app.db import outbox
from app.db.engine import after_commit, make_engine, make_sessionmaker, tenant_session
from app.db.outbox import OutboxJob, add_job, relay
from app.learning.cache import ResponseCache
from app.llm.registry import ProviderRegistry
from tests.redis_process import RedisProcess

NAME = "outbox_test_job"
"""A job name no worker knows: nothing here is run, only queued in this module's Redis."""


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("outbox-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def app(
    settings: Settings, services: Services, registry: ProviderRegistry, own_redis: RedisProcess
) -> AsyncIterator[Container]:
    """The services wired as the app wires them, on this module's Redis."""
    built = await Container.create(settings, services.database_url, own_redis.url, registry=registry)
    yield built
    await built.close()


@pytest.fixture
async def redis(app: Container, own_redis: RedisProcess) -> ArqRedis:
    """This module's Redis, running and empty."""
    if not own_redis.running:
        own_redis.start()
    await app.redis.flushall()
    return app.redis


async def queued(redis: ArqRedis) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """arq's queue: ``{job id: (function, args)}``."""
    ids = [raw.decode() for raw in await redis.zrange(default_queue_name, 0, -1)]
    found = {}
    for job_id in ids:
        info = await Job(job_id, redis).info()
        assert info is not None
        found[job_id] = (info.function, info.args)
    return found


async def rows(app: Container, ids: list[uuid.UUID]) -> list[OutboxJob]:
    async with app.sessionmaker() as session:
        stmt = select(OutboxJob).where(OutboxJob.id.in_(ids)).order_by(OutboxJob.created_at, OutboxJob.id)
        return list((await session.scalars(stmt)).all())


async def add(app: Container, coach_id: uuid.UUID, *args: Any, **kwargs: Any) -> OutboxJob:
    """Commit one job through the unit of work (which relays it after the commit)."""
    async with tenant_session(app.sessionmaker, coach_id) as session:
        return add_job(session, coach_id, NAME, *args, **kwargs)


async def test_a_committed_job_is_sent_once_and_its_row_deleted(app: Container, redis: ArqRedis) -> None:
    coach_id = uuid.uuid4()
    async with tenant_session(app.sessionmaker, coach_id) as session:
        first = add_job(session, coach_id, NAME, str(coach_id), "a", True, job_id=f"{NAME}:{uuid.uuid4()}")
        second = add_job(session, coach_id, NAME, str(coach_id), "b", False)
        assert outbox.PENDING_KEY in session.info
    await app.outbox.drain()  # the after-commit relay deletes sent rows in the background
    assert await rows(app, [first.id, second.id]) == []
    assert await queued(redis) == {
        first.job_id: (NAME, (str(coach_id), "a", True)),
        second.job_id: (NAME, (str(coach_id), "b", False)),
    }
    # a later relay (the cron) finds nothing more to send
    assert await relay(app.sessionmaker, redis, [first.id, second.id]) == 0
    assert len(await queued(redis)) == 2


async def test_concurrent_commits_are_queued_at_once_and_their_rows_deleted_together(
    app: Container, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The after-commit relay queues each job when its transaction commits, before any row is deleted; the
    deletions of commits that finish while one is running go out as one ``DELETE`` (counted here)."""
    coach_id = uuid.uuid4()
    deletes: list[int] = []
    settle = outbox._settle

    async def counted(session: Any, done: Any, failed: Any) -> None:
        if done:
            deletes.append(len(done))
            await asyncio.sleep(0.05)  # a slow database: the next commits finish meanwhile
        await settle(session, done, failed)

    monkeypatch.setattr(outbox, "_settle", counted)
    first = await add(app, coach_id, "first")
    assert list(await queued(redis)) == [first.job_id]  # queued at commit, whatever the deletion does
    later = await asyncio.gather(*(add(app, coach_id, n) for n in range(4)))
    assert len(await queued(redis)) == 5
    await app.outbox.drain()
    assert await rows(app, [first.id, *(row.id for row in later)]) == []
    assert sum(deletes) == 5 and deletes[0] == 1 and len(deletes) <= 3, deletes


async def test_a_sent_row_whose_deletion_failed_is_sent_again_by_the_cron_and_queued_once(
    app: Container, redis: ArqRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """The database goes away between the send and the deletion (here: the relay's pool points at a closed
    port): the row stays, the cron sends it again, arq refuses the second copy, and the cron deletes it."""
    coach_id = uuid.uuid4()
    async with app.sessionmaker() as session, session.begin():  # no relay after this commit
        row = add_job(session, coach_id, NAME, "once")
    gone = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none", pool_size=1)
    try:
        with caplog.at_level(logging.ERROR, logger="app.db.outbox"):
            broken = outbox.AfterCommitRelay(make_sessionmaker(gone), redis)
            assert await broken([row]) == 1
            await broken.drain()
    finally:
        await gone.dispose()
    assert "deleting 1 sent outbox rows failed" in caplog.text
    assert [kept.id for kept in await rows(app, [row.id])] == [row.id]
    assert await relay(app.sessionmaker, redis, [row.id]) == 1  # arq already has the job: counts as sent
    assert await rows(app, [row.id]) == []
    assert list(await queued(redis)) == [row.job_id]


async def test_closing_waits_for_pending_deletions_for_a_bounded_time(
    app: Container,
    redis: ArqRedis,
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    own_redis: RedisProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process shutting down waits for the relay's pending deletions, but not for ever (a hung database):
    after ``OUTBOX_DRAIN_S`` it closes, and the row left behind is the cron's to send again."""
    built = await Container.create(settings, services.database_url, own_redis.url, registry=registry)
    release = asyncio.Event()
    settle = outbox._settle

    async def hung(session: Any, done: Any, failed: Any) -> None:
        await release.wait()
        await settle(session, done, failed)

    monkeypatch.setattr(outbox, "_settle", hung)
    monkeypatch.setattr(container_module, "OUTBOX_DRAIN_S", 0.3)
    coach_id = uuid.uuid4()
    async with tenant_session(built.sessionmaker, coach_id) as session:
        row = add_job(session, coach_id, NAME, "at shutdown")
    started = time.perf_counter()
    await asyncio.wait_for(built.close(), 5)  # the test's own bound: an unbounded wait fails here
    assert time.perf_counter() - started < 3
    assert [kept.id for kept in await rows(app, [row.id])] == [row.id]
    assert list(await queued(redis)) == [row.job_id]
    release.set()
    await built.outbox.drain()
    await built.engine.dispose()


async def test_a_rolled_back_transaction_queues_nothing(app: Container, redis: ArqRedis) -> None:
    coach_id = uuid.uuid4()
    hooks: list[str] = []

    async def hook() -> None:
        hooks.append("ran")

    with pytest.raises(RuntimeError, match="changed my mind"):
        async with tenant_session(app.sessionmaker, coach_id) as session:
            row = add_job(session, coach_id, NAME, "x")
            after_commit(session, hook)
            await session.flush()  # the row reached the database inside the transaction
            raise RuntimeError("changed my mind")
    assert await rows(app, [row.id]) == []
    assert await queued(redis) == {}
    assert hooks == []


async def test_jobs_are_kept_while_redis_is_down_and_sent_when_it_is_back(
    app: Container, redis: ArqRedis, own_redis: RedisProcess
) -> None:
    coach_id = uuid.uuid4()
    own_redis.stop()
    started = time.perf_counter()
    async with tenant_session(app.sessionmaker, coach_id) as session:  # the commit succeeds; only the relay fails
        first = add_job(session, coach_id, NAME, "first")
        second = add_job(session, coach_id, NAME, "second")
    assert time.perf_counter() - started < outbox.SEND_TIMEOUT_S  # connection refused: no waiting
    kept = await rows(app, [first.id, second.id])
    assert {row.id for row in kept} == {first.id, second.id}
    assert all(row.attempts == 1 and "Connect" in (row.last_error or "") for row in kept), kept
    # the cron tries again while Redis is still down: one more attempt each, nothing lost
    assert await relay(app.sessionmaker, app.redis, [first.id, second.id]) == 0
    assert [row.attempts for row in await rows(app, [first.id, second.id])] == [2, 2]
    state = await outbox.health(app.sessionmaker)
    assert state.waiting >= 2 and state.failing >= 2 and state.oldest_age_s is not None
    assert "jobs waiting" in state.line() and "failing" in state.line()

    own_redis.start()  # an empty Redis on the same port: the pool reconnects by itself
    assert await relay(app.sessionmaker, app.redis, [first.id, second.id]) == 2
    assert await rows(app, [first.id, second.id]) == []
    assert sorted(args for _, args in (await queued(app.redis)).values()) == [("first",), ("second",)]


async def test_a_hung_redis_delays_a_commit_by_the_send_timeout_at_most(
    app: Container, redis: ArqRedis, own_redis: RedisProcess
) -> None:
    """A server that accepts connections but never answers (SIGSTOP) costs a commit at most
    :data:`SEND_TIMEOUT_S`; the job waits in the outbox; the response cache is a miss within its own timeout."""
    coach_id = uuid.uuid4()
    cache = ResponseCache(app.redis)
    key = f"opencoach:response-cache:{coach_id}:{'0' * 64}"
    own_redis.pause()
    try:
        started = time.perf_counter()
        job = await add(app, coach_id, "hung")
        commit_s = time.perf_counter() - started
        started = time.perf_counter()
        assert await cache.get(coach_id, key) is None
        await cache.put(coach_id, key, "reply", [], 60)
        cache_s = time.perf_counter() - started
    finally:
        own_redis.resume()
    assert commit_s < outbox.SEND_TIMEOUT_S + 1.0, commit_s
    assert cache_s < 2 * 1.0 + 1.0, cache_s
    [kept] = await rows(app, [job.id])
    assert kept.attempts == 1 and kept.last_error is not None and "Timeout" in kept.last_error
    assert await relay(app.sessionmaker, app.redis, [job.id]) == 1


async def test_two_relays_at_once_send_each_row_once(app: Container, redis: ArqRedis) -> None:
    """The after-commit relay and the cron racing over the same rows: ``FOR UPDATE SKIP LOCKED`` gives each
    row to one of them; every job reaches arq once (counted at ``enqueue_job``, before arq's dedup, which
    would hide a double send)."""
    coach_id = uuid.uuid4()
    calls: list[str] = []

    class Slow:
        """The real Redis, slowed so that the two relays overlap, counting ``enqueue_job`` calls."""

        async def enqueue_job(self, name: str, *args: Any, **kwargs: Any) -> Job | None:
            calls.append(kwargs["_job_id"])
            await asyncio.sleep(0.05)
            return await redis.enqueue_job(name, *args, **kwargs)

    async with app.sessionmaker() as session, session.begin():  # no relay after this commit
        added = [add_job(session, coach_id, NAME, n) for n in range(6)]
    ids = [row.id for row in added]
    slow: Any = Slow()
    sent = await asyncio.gather(relay(app.sessionmaker, slow, ids), relay(app.sessionmaker, slow, ids[::-1]))
    assert sum(sent) == 6, sent  # each row went to the relay that locked it first; the other skipped it
    assert sorted(calls) == sorted(row.job_id for row in added)
    assert len(await queued(redis)) == 6
    assert await rows(app, ids) == []


async def test_a_job_id_arq_already_has_counts_as_sent(app: Container, redis: ArqRedis) -> None:
    """arq refuses a job id that is queued (or whose result it keeps): ``enqueue_job`` returns ``None``, the
    row is deleted, and the job is queued once."""
    coach_id = uuid.uuid4()
    job_id = f"{NAME}:{uuid.uuid4()}"
    assert await redis.enqueue_job(NAME, "earlier", _job_id=job_id) is not None
    row = await add(app, coach_id, "later", job_id=job_id)
    await app.outbox.drain()
    assert await rows(app, [row.id]) == []
    assert await queued(redis) == {job_id: (NAME, ("earlier",))}


async def test_defer_until_is_honoured_and_a_past_one_is_sent_as_now(app: Container, redis: ArqRedis) -> None:
    """A deferred job is queued for its time; a row kept past its time (a long outage) is queued for now —
    arq would otherwise give it a negative expiry and refuse it, holding back every row behind it."""
    coach_id = uuid.uuid4()
    later = datetime.now(UTC) + timedelta(hours=1)
    future = await add(app, coach_id, "future", defer_until=later)
    past = await add(app, coach_id, "past", defer_until=datetime.now(UTC) - timedelta(days=3))
    await app.outbox.drain()
    assert await rows(app, [future.id, past.id]) == []
    future_score = await redis.zscore(default_queue_name, future.job_id)
    past_score = await redis.zscore(default_queue_name, past.job_id)
    assert future_score is not None and abs(future_score / 1000 - later.timestamp()) < 1
    assert past_score is not None and abs(past_score / 1000 - time.time()) < 60


async def test_the_cron_sends_every_row_oldest_first_in_batches(
    app: Container, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    coach_id = uuid.uuid4()
    monkeypatch.setattr(outbox, "RELAY_BATCH", 2)
    added = []
    for n in range(5):  # five transactions, five creation times
        async with app.sessionmaker() as session, session.begin():
            added.append(add_job(session, coach_id, NAME, n))
    order: list[Any] = []

    class Recording:
        async def enqueue_job(self, name: str, *args: Any, **kwargs: Any) -> Job | None:
            order.append(args[0] if name == NAME and args and isinstance(args[0], int) else None)
            return await redis.enqueue_job(name, *args, **kwargs)

    recording: Any = Recording()
    assert await relay(app.sessionmaker, recording) >= 5
    assert [n for n in order if n is not None] == [0, 1, 2, 3, 4]
    assert await rows(app, [row.id for row in added]) == []


async def test_one_bad_row_does_not_hold_back_the_others(app: Container, redis: ArqRedis) -> None:
    """A row arq refuses for a reason of its own (not Redis being down) is kept with its error; the rows
    after it are sent."""
    coach_id = uuid.uuid4()

    class Picky:
        async def enqueue_job(self, name: str, *args: Any, **kwargs: Any) -> Job | None:
            if args == ("bad",):
                raise ValueError("cannot serialise this job")
            return await redis.enqueue_job(name, *args, **kwargs)

    async with app.sessionmaker() as session, session.begin():
        bad = add_job(session, coach_id, NAME, "bad")
        good = add_job(session, coach_id, NAME, "good")
    picky: Any = Picky()
    assert await relay(app.sessionmaker, picky, [bad.id, good.id]) == 1
    [kept] = await rows(app, [bad.id, good.id])
    assert kept.id == bad.id and kept.attempts == 1 and kept.last_error == "ValueError: cannot serialise this job"
    assert [args for _, args in (await queued(redis)).values()] == [("good",)]
    assert await relay(app.sessionmaker, redis, [bad.id]) == 1  # fixed: it goes


async def test_after_commit_hooks_run_after_the_commit_in_order_and_a_failing_one_is_logged(
    app: Container, redis: ArqRedis, caplog: pytest.LogCaptureFixture
) -> None:
    coach_id = uuid.uuid4()
    seen: list[Any] = []

    async def sees_the_commit() -> None:
        # PostgreSQL reports the transaction committed (its row may already be deleted by the relay, so
        # looking for the row would race the deletion), and arq has the job: the relay sent it first
        async with app.sessionmaker() as other:
            status = await other.scalar(text("SELECT pg_xact_status(CAST(:xid AS xid8))"), {"xid": xid})
        seen.append(("committed", status == "committed"))
        seen.append(("queued", len(await queued(redis))))

    async def fails() -> None:
        raise RuntimeError("live update failed")

    async def last() -> None:
        seen.append("last")

    with caplog.at_level(logging.ERROR, logger="app.db.engine"):
        async with tenant_session(app.sessionmaker, coach_id) as session:
            add_job(session, coach_id, NAME, "x")
            xid = int(await session.scalar(text("SELECT pg_current_xact_id()::text")))
            after_commit(session, sees_the_commit)
            after_commit(session, fails)
            after_commit(session, last)
            assert seen == []
    assert seen == [("committed", True), ("queued", 1), "last"]
    assert "after-commit hook" in caplog.text and "live update failed" in caplog.text


async def test_the_response_cache_is_a_miss_and_live_events_are_dropped_while_redis_is_down(
    app: Container, redis: ArqRedis, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    coach_id = uuid.uuid4()
    key = f"opencoach:response-cache:{coach_id}:{'1' * 64}"
    await app.cache.put(coach_id, key, "cached reply", [], 60)
    assert (await app.cache.get(coach_id, key)) is not None
    own_redis.stop()
    with caplog.at_level(logging.WARNING):
        assert await app.cache.get(coach_id, key) is None
        await app.cache.put(coach_id, key, "another reply", [], 60)
        await app.live.publish({"type": "alert"}, coach_id=coach_id)
    assert "response cache look-up skipped" in caplog.text
    assert "response cache store skipped" in caplog.text
    assert "live alert event not published" in caplog.text
    own_redis.start()
    assert await app.cache.get(coach_id, key) is None  # the restarted Redis is empty; the cache works again
    await app.cache.put(coach_id, key, "cached reply", [], 60)
    assert (await app.cache.get(coach_id, key)) is not None
