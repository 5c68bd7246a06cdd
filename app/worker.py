"""The arq worker: document ingestion, the memory jobs (session summaries, insights, profiles), the coach's
handoff alerts, the AI's answer after a handback, the learning jobs (intervention analysis and outcomes,
training data, fine-tunes, the promotion gate), the minute crons that end idle chat sessions and send SLA
holding messages, the five-minute sweep that queues failed session summaries again, the minute sweep that fails
documents a killed worker left ``processing``, the five-minute learning sweep (fine-tune readiness and polling) and
the ten-minute sweep that gives each big coach an HNSW index of its own (:mod:`app.rag.vector_index`).

Start with ``opencoach worker``; ``opencoach serve`` runs one alongside the web app. The process runs three arq
workers (:func:`build_workers`): the main one on arq's default queue, one on the handoff alerts' own queue and
one on the erasure jobs' own queue, each with its own slots, so that slow jobs never hold back a crisis alert nor
the purge after an erasure or a forget; one coach runs at most
``INGEST_JOBS_PER_COACH`` ingestions and ``MEMORY_JOBS_PER_COACH`` model-bound memory jobs at a time
(:class:`CoachSlots`). The worker refuses to
start on a database whose schema is not at the migrations' head. It rides out a Redis outage (arq's own
worker would stop at the first connection error): it waits for Redis to come back, then its 10-second relay
cron sends the jobs that the outbox kept meanwhile (:mod:`app.db.outbox`) and logs a health line while jobs
wait.

Transactions: a job that only touches the database runs in one unit of work, opened here with
:func:`~app.accounts.unit_of_work.unit_of_work` and passed to the service. Jobs that call a model or a
provider between reads and writes (ingestion, summaries, insights, profiles, alerts, intervention analysis,
fine-tunes, the promotion gate, the crons' per-tenant sweeps) take ids and open their own short units of
work inside the service, so no transaction is held across a slow external call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.cron import CronJob, cron
from arq.worker import Function, Retry, Worker, func
from redis.backoff import FullJitterBackoff
from redis.exceptions import LockError, RedisError
from sqlalchemy.exc import DBAPIError
from telegram.error import NetworkError, RetryAfter

from app.accounts.unit_of_work import unit_of_work
from app.channels.telegram.adapter import TelegramChannel
from app.channels.telegram.outbound import SEND_JOB
from app.channels.telegram.wiring import build_channel
from app.container import Container
from app.core.config import Settings
from app.core.runtime import freeze_startup_heap
from app.db.engine import make_engine
from app.db.jobs import (
    ALERTS_QUEUE,
    ANALYSE_INTERVENTION,
    ANSWER_PENDING,
    CONFIRM_ALERT_EMAIL,
    DELIVER_ALERT,
    EMBED_MESSAGES,
    ERASURE_QUEUE,
    EVALUATE_MODEL,
    EXTRACT_INSIGHTS,
    INGEST_DOCUMENT,
    POLL_FINE_TUNE,
    PURGE_ERASED_DATA,
    REBUILD_BRIEFS,
    REEMBED_COACH,
    REFRESH_TRAINING_DATA,
    REHEADER_DOCUMENT,
    SCORE_INTERVENTIONS,
    START_FINE_TUNE,
    STOP_FINE_TUNES,
    SUMMARIZE_SESSION,
    TELEGRAM_DELIVER,
    UPDATE_PROFILE,
)
from app.db.leases import leased
from app.db.migrate import assert_schema_current
from app.db.outbox import UNAVAILABLE, connect_redis, health, relay
from app.handoff.alerts import MAX_ATTEMPTS as ALERT_ATTEMPTS
from app.handoff.alerts import OPENED as ALERT_OPENED
from app.handoff.alerts import retry_delay as alert_retry_delay
from app.llm.base import ProviderError
from app.llm.openai_compat import RETRY_AFTER_MAX_S
from app.llm.registry import ProviderRegistry
from app.memory.summaries import SummaryFailed
from app.rag import vector_index
from app.rag.headers import queue_heading_backfill
from app.rag.headers import reheader_document as reheader_document_chunks

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 3600
"""A 300-page PDF takes about a minute to extract and another to embed on 2 cores; leave ample room."""
MEMORY_JOB_TRIES = 4
RETRY_DELAY_S = 30
START_FINE_TUNE_BUDGET_S = MEMORY_JOB_TRIES * JOB_TIMEOUT_S + (MEMORY_JOB_TRIES - 1) * RETRY_AFTER_MAX_S + 3600
"""The longest every try of a ``start_fine_tune`` job may take, with the delays between them (each at most the
longest wait a provider may ask for, :data:`~app.llm.openai_compat.RETRY_AFTER_MAX_S`, longer than
:data:`RETRY_DELAY_S` times any try) and an hour's margin (a killed worker's job waits for its lease, Redis may be
down a while): a fine-tune still ``preparing`` after this has no start left to finish it
(:meth:`app.learning.finetune.FineTuneService.recover_stalled`)."""
STRANDED_GRACE_S = 120
"""Seconds past ``LLM_DEADLINE_SECONDS`` before a client message nobody answered counts as stranded (a live turn
also waits for its turn slot and stores its reply)."""
STRANDED_WITHIN_S = 24 * 3600
"""Client messages older than this are never answered by the sweep (an answer days later would surprise)."""
STRANDED_SCREEN_S = 900
"""Seconds (after the sweep's first look) during which a stranded client message the coach has is queued for its
crisis screen: its job id is refused once queued, so this only covers a worker that was down at the first look."""
OUTBOX_RELAY_EVERY_S = 10
"""How often the worker sends outbox jobs left behind by a Redis outage."""
REDIS_RETRY_S = 1.0
"""Pause between the worker's polls while Redis is unavailable."""
INGEST_TRIES = 3
INGEST_RETRY_S = 5
"""Seconds (times the try) before an ingestion that met Redis or PostgreSQL out of reach is tried again."""
STORE_JOB_TRIES = 3
"""Tries of the jobs queued once that touch only the database and Redis: ``refresh_training_data``,
``answer_pending``, ``score_interventions``, ``rebuild_briefs``, ``purge_erased_data``, ``telegram_deliver``."""
STORE_RETRY_S = 5
"""Seconds, times the try, before one of those jobs that met the database or Redis out of reach runs again."""
INGEST_WAIT_S = 5.0
"""Base of the wait, off the worker, of an ingestion job whose coach already uses every ingestion slot: its
``n``-th deferral waits up to ``INGEST_WAIT_S * 2**n`` seconds (:class:`CoachSlots`)."""
MEMORY_WAIT_S = 3.0
"""Base of the wait, off the worker, of a model-bound memory job (:func:`_in_memory_slot`) whose coach already uses
every memory slot (``MEMORY_JOBS_PER_COACH``): short, as a summary or an extraction takes seconds."""
INGEST_WAIT_CAP_S = 10.0
"""The longest one wait of an ingestion job over its coach's slots (:class:`CoachSlots`): a coach's documents are
few and each takes a while, so a short cap keeps the slot busy when no ending job wakes the next one (a killed
worker): the coach's next document then starts within 10 s of the slot coming free, not up to a minute later."""
MEMORY_WAIT_CAP_S = 60.0
"""The longest one wait of a memory job over its coach's slots (:class:`CoachSlots`): a slot no ending job wakes a
waiting job for (a killed worker, a lost waiting list) is taken again within this (and a poll), however long the
jobs have waited. Long, as a bulk import queues them by the hundred, and a summary or an insight a minute later is
not seen by anyone."""
WAITING_TTL_S = 86_400
"""Seconds a coach's waiting list (:class:`CoachSlots`) outlives its last deferral: a list no job ends to clear
(its jobs ran elsewhere, or were dropped) goes by itself."""
WAKE_LOOKS = 10
"""Entries of a coach's waiting list one wake reads at most, dropping those whose copy is no longer queued."""
_WAKE = """
local originals = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, original in ipairs(originals) do
  local copy = redis.call('HGET', KEYS[2], original)
  local due = copy and redis.call('ZSCORE', KEYS[3], copy)
  if not due then
    redis.call('ZREM', KEYS[1], original)
    redis.call('HDEL', KEYS[2], original)
  elseif tonumber(due) > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[3], 'XX', 'LT', ARGV[1], copy)
    return copy
  end
end
return false
"""
"""The wake of :meth:`CoachSlots._wake`, atomic in Redis (``EVAL``): KEYS the coach's waiting list (sorted set),
its copies (hash) and arq's queue (sorted set of job ids by due time, ms); ARGV now (ms) and how many entries to
read (:data:`WAKE_LOOKS`). Returns the copy woken, or nil."""
_BACKOFF_MAX_EXPONENT = 32
"""A job's deferrals past this count as this many in its backoff: 2**32 times any wait is past the cap, and a much
higher power overflows a float."""
REEMBED_TRIES = 3
"""Tries of a ``reembed_coach`` job; arq allows it one more, in which it fails the request (:func:`reembed_coach`)."""
REEMBED_DEADLINE_S = JOB_TIMEOUT_S - 60
"""Seconds a ``reembed_coach`` try may run before it fails the request itself, ahead of arq's timeout."""
ALERT_WORKER_MAX_JOBS = 4
ERASURE_WORKER_MAX_JOBS = 4
"""Slots of the worker of :data:`~app.db.jobs.ERASURE_QUEUE` (its jobs touch the database and Redis, and a purge
deletes training files at the coach's provider)."""


class CoachSlots:
    """At most ``per_coach`` jobs of one kind of one coach at a time, across every worker process: slot ``i`` of
    a coach is the redis-py :class:`~redis.asyncio.lock.Lock` ``opencoach:<kind>:<coach id>:<i>`` (a token only
    its holder can release), held for ``lease_s`` seconds and renewed while the job runs
    (:func:`~app.db.leases.leased`), so the slot of a killed worker comes free by itself. One huge tenant thus
    takes at most ``per_coach`` of the worker's ``WORKER_MAX_JOBS`` slots; the other tenants' jobs go on. Kinds:
    ``ingest`` (``INGEST_JOBS_PER_COACH``) and ``memory`` (the model-bound memory jobs,
    ``MEMORY_JOBS_PER_COACH``: :func:`_in_memory_slot`). ``lease_s``: ``WORKER_LEASE_SECONDS``.

    A job over the cap waits off the worker (:meth:`run`) with capped exponential backoff and full jitter (Marc
    Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015; redis-py's
    :class:`~redis.backoff.FullJitterBackoff`): its ``n``-th deferral (``n`` from 0) waits a uniformly random
    ``0 … min(max_wait_s, wait_s * 2**n)`` seconds. A fixed wait made every waiting job of a big backlog (a bulk
    transcript import queues hundreds) run every ``wait_s`` seconds for nothing: ``N / wait_s`` job runs and
    enqueues a second, taking the worker's slots from other tenants' jobs. With the backoff a job that has waited
    long retries about every ``max_wait_s / 2`` seconds, ``max_wait_s / (2 * wait_s)`` times less often (10 times
    for memory jobs), a short wait stays short, and the jitter spreads the copies so they do not wake together.
    The cap bounds the delay: once a slot frees, each waiting job tries again within ``max_wait_s`` seconds.

    A job that ends in a slot also wakes the coach's longest-waiting job (:meth:`_wake`): the coach's waiting list
    (``opencoach:<kind>:<coach id>:waiting``, a sorted set of original job ids by their first deferral, and
    ``…:copies``, each one's latest copy) names its copy, whose deferral is cut to now (``ZADD XX LT`` on arq's
    queue). So a freed slot is taken within a poll of the worker (``poll_delay``, 0.5 s), not up to ``max_wait_s``
    later, and waiting jobs get the slots in the order they first waited, where the backoff alone served them at
    random (a newer one, retrying more often, tended to come first). The list is a hint over the backoff, never
    needed: every copy is an ordinary arq job (never lost, never run twice) that wakes by its own deferral when
    nobody wakes it (a killed worker, Redis forgetting the keys, which expire a day after the last deferral)."""

    def __init__(
        self, redis: ArqRedis, kind: str, per_coach: int, lease_s: float, wait_s: float, max_wait_s: float
    ) -> None:
        self._redis = redis
        self._kind = kind
        self._per_coach = per_coach
        self._lease_s = lease_s
        self._backoff = FullJitterBackoff(cap=max_wait_s, base=wait_s)
        self._wake_script = redis.register_script(_WAKE)

    @contextlib.asynccontextmanager
    async def hold(self, coach_id: str) -> AsyncIterator[bool]:
        """Take a free slot of ``coach_id`` for the ``async with`` block: yields ``True``, or ``False`` (and
        holds nothing) when all are taken. Raises Redis errors from the acquisition."""
        for slot in range(self._per_coach):
            key = f"{self._prefix(coach_id)}:{slot}"
            async with leased(self._redis.lock(key, timeout=self._lease_s)) as held:
                if held:
                    yield True
                    return
        yield False

    async def run(
        self, ctx: dict[str, Any], function: str, args: Sequence[Any], work: Callable[[], Awaitable[str]]
    ) -> str:
        """Run ``work()`` (the arq job ``function`` of ``ctx`` with ``args``, the first its coach's id) in a free
        slot of its coach and return its result; with every slot taken, queue the job again after its backoff
        (see the class) and return ``"deferred: …"``. The copy has the same function and arguments, the id
        ``<the original job's id>:wait:<n + 1>:<random hex>`` for the ``n``-th deferral (the count of deferrals
        of this job so far, ``0`` for the original and for a copy queued by a version without the count; an id
        arq has not seen: never refused as a duplicate, and the work runs once, in the copy) and the try the job
        is at (a deferral uses none of its tries; a copy from a retried try does not start its tries afresh).
        Raises Redis errors from the slot or the queueing: the job's retry on Redis out of reach
        (:func:`_retrying_unreachable`) runs it again, so no job is lost."""
        coach_id = str(args[0])
        original, _, copy = str(ctx.get("job_id", "")).partition(":wait:")  # arq gives one; direct calls may not
        ran = False
        try:
            async with self.hold(coach_id) as held:
                if not held:
                    count, counted, _ = copy.partition(":")
                    deferrals = int(count) if counted and count.isdecimal() else 0
                    await self._defer(ctx, function, args, coach_id, original, deferrals)
                    return f"deferred: the coach's {self._kind} slots are busy"
                ran = True
                if copy:  # no longer waiting
                    await self._forget(coach_id, original)
                return await work()
        finally:
            if ran:  # the slot is free now
                await self._wake(coach_id)

    def _prefix(self, coach_id: str) -> str:
        """The prefix of the coach's keys of this kind: its slots' locks (``<prefix>:<slot>``) and waiting list."""
        return f"opencoach:{self._kind}:{coach_id}"

    def _waiting_keys(self, coach_id: str) -> tuple[str, str]:
        """The coach's waiting list: the sorted set of original job ids by first deferral (ms), the hash of their
        latest copies' ids."""
        return f"{self._prefix(coach_id)}:waiting", f"{self._prefix(coach_id)}:copies"

    async def _defer(
        self, ctx: dict[str, Any], function: str, args: Sequence[Any], coach_id: str, original: str, deferrals: int
    ) -> None:
        """Queue the copy of job ``original`` after its ``deferrals``-th backoff and put it on ``coach_id``'s waiting
        list (first deferral kept). Raises Redis errors."""
        copy_id = f"{original}:wait:{deferrals + 1}:{uuid.uuid4().hex}"
        await self._redis.enqueue_job(
            function,
            *args,
            _job_id=copy_id,
            _defer_by=self._backoff.compute(min(deferrals, _BACKOFF_MAX_EXPONENT)),
            _job_try=ctx["job_try"],
        )
        waiting, copies = self._waiting_keys(coach_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(waiting, {original: time.time() * 1000}, nx=True)
            pipe.hset(copies, original, copy_id)
            pipe.expire(waiting, WAITING_TTL_S)
            pipe.expire(copies, WAITING_TTL_S)
            await pipe.execute()

    async def _forget(self, coach_id: str, original: str) -> None:
        """Take job ``original`` off the coach's waiting list. Raises Redis errors."""
        waiting, copies = self._waiting_keys(coach_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(waiting, original)
            pipe.hdel(copies, original)
            await pipe.execute()

    async def _wake(self, coach_id: str) -> None:
        """Cut the deferral of the coach's longest-waiting job's copy to now, passing over copies due already (woken
        for another slot, not yet run) and dropping entries whose copy is no longer queued (it ran, or Redis lost
        it): :data:`_WAKE`, one Lua script run in Redis, so two slots freed at once wake two copies, never the same
        one twice. Never raises but for cancellation: the copy then wakes by its own deferral (logged)."""
        waiting, copies = self._waiting_keys(coach_id)
        try:
            await self._wake_script(
                keys=[waiting, copies, self._redis.default_queue_name], args=[int(time.time() * 1000), WAKE_LOOKS]
            )
        except (RedisError, OSError) as exc:
            log.warning("coach %s: no waiting %s job woken (%r); it runs after its own wait", coach_id, self._kind, exc)


TELEGRAM_SEND_TRIES = 5
"""Tries of a ``telegram_send`` job (a 429 is waited out in the job up to ``WAIT_IN_JOB_S``, else by arq)."""


async def ingest_document(ctx: dict[str, Any], coach_id: str, document_id: str) -> str:
    """arq job: ingest one document (idempotent). Returns the final status for arq's result store.

    When the coach already runs ``INGEST_JOBS_PER_COACH`` ingestions (:class:`CoachSlots`), the job queues
    itself again under a new job id, after a backoff from :data:`INGEST_WAIT_S` up to :data:`INGEST_WAIT_CAP_S`
    seconds, and ends, freeing the worker's slot for other tenants (a deferral is not a failed try). Redis or
    PostgreSQL out of reach before the document's own error handling runs (taking a slot, reading the document) is
    retried after :data:`INGEST_RETRY_S` times the try (arq runs no job again after a plain error: the document
    stayed ``queued`` for good)."""
    job = _ingest(ctx, coach_id, document_id)
    return await _retrying_unreachable(
        ctx, job, tries=INGEST_TRIES, delay_s=INGEST_RETRY_S, what=f"document {document_id}"
    )


async def _retrying_unreachable(
    ctx: dict[str, Any], job: Awaitable[str], *, tries: int, delay_s: float | Callable[[int], float], what: str
) -> str:
    """Run a job; Redis or PostgreSQL out of reach (a connection refused, dropped or timed out: the next try may
    succeed, not that the job's work is wrong) is retried after ``delay_s`` times the try (or ``delay_s(try)``
    seconds), up to ``tries`` tries (arq runs no job again after a plain error). ``what`` names the job's subject
    in the log."""
    try:
        return await job
    except (*UNAVAILABLE, DBAPIError) as exc:
        unreachable = exc.connection_invalidated if isinstance(exc, DBAPIError) else True
        if not unreachable or ctx["job_try"] >= tries:
            raise
        log.warning("%s: retried, the database or Redis is out of reach: %r", what, exc)
        raise Retry(defer=delay_s(ctx["job_try"]) if callable(delay_s) else delay_s * ctx["job_try"]) from exc


async def _retrying_store(ctx: dict[str, Any], job: Awaitable[str], what: str) -> str:
    """Run a job that the database or Redis may find out of reach (:func:`_retrying_unreachable`), queued once:
    retried after :data:`STORE_RETRY_S` times the try, up to :data:`STORE_JOB_TRIES` tries. ``what`` names the
    job's subject in the log."""
    return await _retrying_unreachable(ctx, job, tries=STORE_JOB_TRIES, delay_s=STORE_RETRY_S, what=what)


async def _ingest(ctx: dict[str, Any], coach_id: str, document_id: str) -> str:
    container: Container = ctx["container"]
    settings = container.settings

    async def ingest() -> str:
        timings = await container.documents.ingest(uuid.UUID(coach_id), uuid.UUID(document_id))
        return "skipped" if timings is None else f"{timings.chunks} chunks"

    slots = CoachSlots(
        container.redis,
        "ingest",
        settings.ingest_jobs_per_coach,
        settings.worker_lease_seconds,
        INGEST_WAIT_S,
        INGEST_WAIT_CAP_S,
    )
    return await slots.run(ctx, INGEST_DOCUMENT, (coach_id, document_id), ingest)


def _in_memory_slot(
    ctx: dict[str, Any], function: str, args: Sequence[Any], work: Callable[[], Awaitable[str]]
) -> Awaitable[str]:
    """``work()``, the memory job ``function`` of ``ctx`` with ``args``, in one of its coach's
    ``MEMORY_JOBS_PER_COACH`` memory slots, else queued again after a backoff from :data:`MEMORY_WAIT_S` up to
    :data:`MEMORY_WAIT_CAP_S` seconds (:meth:`CoachSlots.run`). Await it inside the job's retry on Redis out of
    reach (:func:`_retrying`).

    The jobs that take a memory slot: ``summarize_session``, ``extract_insights``, ``update_profile`` and
    ``analyse_intervention``. Each waits on the coach's chat model for seconds to minutes, and a coach with many
    clients (a bulk transcript import) queues them by the hundred. The cheap ones (``embed_messages``, the outbox
    relay, outcome scoring) and the rare ones (fine-tunes, the promotion gate) take none."""
    container: Container = ctx["container"]
    settings = container.settings
    slots = CoachSlots(
        container.redis,
        "memory",
        settings.memory_jobs_per_coach,
        settings.worker_lease_seconds,
        MEMORY_WAIT_S,
        MEMORY_WAIT_CAP_S,
    )
    return slots.run(ctx, function, args, work)


async def reheader_document(ctx: dict[str, Any], coach_id: str, document_id: str) -> str:
    """arq job: give a renamed document's stored chunks its new title in their contextual headers and vectors
    (:func:`app.rag.headers.reheader_document`, idempotent); the database or Redis out of reach is retried
    (:func:`_retrying_store`)."""
    container: Container = ctx["container"]

    async def reheader() -> str:
        changed = await reheader_document_chunks(
            container.sessionmaker, container.registry, uuid.UUID(coach_id), uuid.UUID(document_id)
        )
        return f"{changed} chunks re-headed"

    return await _retrying_store(ctx, reheader(), what=f"headers of document {document_id}")


async def backfill_headings(ctx: dict[str, Any]) -> str:
    """arq cron (every 10 minutes, and at start-up): queue the ``reheader_document`` job of a few documents whose
    chunks were stored before they recorded their section heading (migration 0059), so their search headers name the
    title the file declares instead of the file name (:func:`app.rag.headers.queue_heading_backfill`, at most
    :data:`~app.rag.headers.BACKFILL_PER_RUN` a run); once every one is done, each run finds none."""
    container: Container = ctx["container"]
    return f"{await queue_heading_backfill(container.sessionmaker)} documents queued for their headings"


async def fail_stalled_documents(ctx: dict[str, Any]) -> str:
    """arq cron (every minute, and at start-up): fail the documents no ingestion job will finish
    (:meth:`app.rag.service.DocumentService.fail_stalled`): left ``processing`` by a killed worker, or ``queued``
    by cancelled ingestions, whose job arq has given up (past every try's deadline and the waits between them,
    with a lease of margin)."""
    container: Container = ctx["container"]
    settings = container.settings
    tries = INGEST_TRIES * settings.ingest_timeout_seconds + INGEST_RETRY_S * sum(range(INGEST_TRIES))
    failed = await container.documents.fail_stalled(
        container.redis, abandoned_after_s=tries + settings.worker_lease_seconds
    )
    return f"{failed} stalled documents failed"


async def requeue_lost_documents(ctx: dict[str, Any]) -> str:
    """arq cron (every minute, and at start-up): queue again the ingestion of documents never started whose job
    is lost (:meth:`app.rag.service.DocumentService.requeue_lost`): arq dropped it unrun after a day with no
    worker, or Redis forgot it."""
    container: Container = ctx["container"]
    requeued = await container.documents.requeue_lost(container.redis)
    return f"{requeued} documents with a lost job queued again"


async def answer_stranded_messages(ctx: dict[str, Any]) -> str:
    """arq cron (every minute, and at start-up): queue the answers of client messages that a stopped web process
    stored but never answered (:meth:`app.chat.turn.ChatService.answer_stranded`): stored longer ago than a live
    turn may take (``LLM_DEADLINE_SECONDS`` and :data:`STRANDED_GRACE_S`), within :data:`STRANDED_WITHIN_S`; one
    the coach has, for its crisis screen, within :data:`STRANDED_SCREEN_S` more."""
    container: Container = ctx["container"]
    older_than_s = container.settings.llm_deadline_seconds + STRANDED_GRACE_S
    queued = await container.chat.answer_stranded(
        older_than_s=older_than_s, within_s=STRANDED_WITHIN_S, in_handoff_within_s=older_than_s + STRANDED_SCREEN_S
    )
    return f"{queued} stranded client messages queued for an answer"


async def sync_vector_indexes(ctx: dict[str, Any]) -> str:
    """arq cron (every ten minutes, and at start-up): build the HNSW index of each coach that became big, drop
    those of coaches that shrank (:mod:`app.rag.vector_index`), as the schema owner (``MIGRATION_DATABASE_URL``,
    else ``DATABASE_URL``). A refusal (the URL's role does not own ``chunks``) is logged, not raised."""
    container: Container = ctx["container"]
    settings = container.settings
    owner = make_engine(settings.migration_database_url or container.database_url, pool_size=1)
    try:
        changes = await vector_index.sync_vector_indexes(owner, min_chunks=settings.vector_index_min_chunks)
    except DBAPIError as exc:
        log.warning("vector indexes not synced: %s", exc.orig)
        return "vector indexes not synced"
    finally:
        await owner.dispose()
    return f"vector indexes: {len(changes.created)} created, {len(changes.dropped)} dropped"


async def _retrying(ctx: dict[str, Any], job: Awaitable[str], what: str) -> str:
    """Run a model-calling job; a provider failure (network, rate limit), or the database or Redis out of reach
    (:func:`_retrying_unreachable`), is retried after :data:`RETRY_DELAY_S` times the try, or the wait the provider
    asked for when longer (``ProviderError.retry_after``), up to :data:`MEMORY_JOB_TRIES` tries; a refusal no retry
    changes (``ProviderError.lasting``: a key refused, a model missing, a quota used up) is not. ``what`` names the
    job's subject in the log."""
    try:
        return await _retrying_unreachable(ctx, job, tries=MEMORY_JOB_TRIES, delay_s=RETRY_DELAY_S, what=what)
    except ProviderError as exc:
        if ctx["job_try"] >= MEMORY_JOB_TRIES or exc.lasting:
            raise
        raise Retry(defer=max(RETRY_DELAY_S * ctx["job_try"], exc.retry_after or 0)) from exc


async def summarize_session(ctx: dict[str, Any], coach_id: str, session_id: str) -> str:
    """arq job: L2 summary of an ended session (fails, with the reason stored, on invalid model output, and on the
    last try's error: a provider failure or the database or Redis out of reach is tried again first)."""
    container: Container = ctx["container"]
    coach, chat_session = uuid.UUID(coach_id), uuid.UUID(session_id)
    try:
        summary = _in_memory_slot(
            ctx,
            SUMMARIZE_SESSION,
            (coach_id, session_id),
            lambda: container.summaries.summarize_session(coach, chat_session),
        )
        return await _retrying(ctx, summary, f"summary of session {session_id}")
    except (Retry, SummaryFailed):
        raise
    except Exception as exc:
        # the last try, or a bug: record it on the session so it is not left "ended" without a reason
        async with unit_of_work(container.sessionmaker, coach) as uow:
            await container.summaries.fail_summary(uow, chat_session, f"{type(exc).__name__}: {exc}")
        raise


async def extract_insights(ctx: dict[str, Any], coach_id: str, conversation_id: str, force: bool) -> str:
    """arq job: L3 insights from a conversation's unread messages. While another extraction of the conversation
    runs, the job ends at once and that extraction serves its request when done
    (:meth:`~app.memory.insights.InsightService.extract_insights`): it neither waits in its worker slot nor queues
    itself again (a copy queued under a new id started its tries afresh: with the model failing, such copies and
    the failing job's retries took turns for ever). Its coach's memory slots all taken, it is queued again later
    at the try it is at (:func:`_in_memory_slot`)."""
    container: Container = ctx["container"]
    extraction = _in_memory_slot(
        ctx,
        EXTRACT_INSIGHTS,
        (coach_id, conversation_id, force),
        lambda: container.insights.extract_insights(uuid.UUID(coach_id), uuid.UUID(conversation_id), force=force),
    )
    return await _retrying(ctx, extraction, f"insights of conversation {conversation_id}")


async def update_profile(ctx: dict[str, Any], coach_id: str, session_id: str) -> str:
    """arq job: L4 profile update from a summarised session."""
    container: Container = ctx["container"]
    update = _in_memory_slot(
        ctx,
        UPDATE_PROFILE,
        (coach_id, session_id),
        lambda: container.profiles.update_profile(uuid.UUID(coach_id), uuid.UUID(session_id)),
    )
    return await _retrying(ctx, update, f"profile update from session {session_id}")


async def retry_failed_summaries(ctx: dict[str, Any]) -> str:
    """arq cron (every five minutes, and at start-up): queue again the session summaries whose job failed and whose
    back-off is over (:meth:`app.memory.summaries.SummaryService.retry_failed`, a bounded number of jobs each)."""
    container: Container = ctx["container"]
    return f"{await container.summaries.retry_failed()} failed summaries queued again"


async def close_idle_sessions(ctx: dict[str, Any]) -> str:
    """arq cron (every minute): end sessions idle past their coach's gap and queue their summaries."""
    container: Container = ctx["container"]
    return f"{await container.sessions.close_idle_sessions()} sessions ended"


async def deliver_alert(
    ctx: dict[str, Any], coach_id: str, handoff_id: str, event: str = ALERT_OPENED, reason: str | None = None
) -> str:
    """arq job: the coach's webhook and e-mail alerts for one escalation event of a handoff (its opening, or a
    crisis message inside it); a failed delivery is retried, and so is the database or Redis out of reach (after
    :func:`~app.handoff.alerts.retry_delay` of the try: the job's outbox row is gone, nothing else
    would send the alert). Jobs queued before events existed carry only the two ids and deliver the opening."""
    container: Container = ctx["container"]
    delivery = container.alerts.deliver(
        uuid.UUID(coach_id), uuid.UUID(handoff_id), event=event, reason=reason, attempt=ctx["job_try"]
    )
    what = f"alert {event} of handoff {handoff_id}"
    return await _retrying_unreachable(ctx, delivery, tries=ALERT_ATTEMPTS, delay_s=alert_retry_delay, what=what)


async def confirm_alert_email(ctx: dict[str, Any], coach_id: str, email: str) -> str:
    """arq job: e-mail a coach's new alert address the link that confirms it
    (:meth:`~app.handoff.alerts.AlertService.send_confirmation`), retried like an alert."""
    container: Container = ctx["container"]
    sending = container.alerts.send_confirmation(uuid.UUID(coach_id), email, attempt=ctx["job_try"])
    what = f"alert e-mail confirmation of coach {coach_id}"
    return await _retrying_unreachable(ctx, sending, tries=ALERT_ATTEMPTS, delay_s=alert_retry_delay, what=what)


async def send_sla_notices(ctx: dict[str, Any]) -> str:
    """arq cron (every minute): holding messages for handoffs still open past their coach's SLA."""
    container: Container = ctx["container"]
    return f"{await container.sla_notices.send_sla_notices()} holding messages sent"


async def analyse_intervention(ctx: dict[str, Any], coach_id: str, intervention_id: str) -> str:
    """arq job: analyse one intervention and update the client, coach and cross-coach profiles."""
    container: Container = ctx["container"]
    analysis = _in_memory_slot(
        ctx,
        ANALYSE_INTERVENTION,
        (coach_id, intervention_id),
        lambda: container.interventions.analyse(uuid.UUID(coach_id), uuid.UUID(intervention_id)),
    )
    return await _retrying(ctx, analysis, f"analysis of intervention {intervention_id}")


async def score_interventions(ctx: dict[str, Any], coach_id: str, conversation_id: str) -> str:
    """arq job: outcomes (the client's next turn, thumbs) of a conversation's interventions."""
    container: Container = ctx["container"]

    async def score() -> str:
        async with unit_of_work(container.sessionmaker, uuid.UUID(coach_id)) as uow:
            return await container.interventions.score_outcomes(uow, uuid.UUID(conversation_id))

    return await _retrying_store(ctx, score(), f"outcomes of conversation {conversation_id}")


async def refresh_training_data(ctx: dict[str, Any], coach_id: str, conversation_id: str, erase: bool = False) -> str:
    """arq job: rebuild one conversation's SFT examples and preference pairs (``erase``: after a forget, the
    examples removed leave the dataset snapshots and provider files too). The database or Redis out of reach is
    retried (:func:`_retrying_store`: arq runs no job again after a plain error, and a forget queues this rebuild
    once)."""
    container: Container = ctx["container"]

    async def refresh() -> str:
        async with unit_of_work(container.sessionmaker, uuid.UUID(coach_id)) as uow:
            return await container.training.refresh(uow, uuid.UUID(conversation_id), erase=erase)

    return await _retrying_store(ctx, refresh(), f"training data of conversation {conversation_id}")


async def start_fine_tune(ctx: dict[str, Any], coach_id: str, job_id: str) -> str:
    """arq job: upload a fine-tune job's files and create it at the provider. A provider out of reach (network,
    5xx, 429) is tried again with growing delays; still so at the last try, the job fails with the reason (it
    stayed ``preparing`` for good, and the coach could start no other fine-tune)."""
    container: Container = ctx["container"]
    coach, job = uuid.UUID(coach_id), uuid.UUID(job_id)
    try:
        return await _retrying(ctx, container.fine_tunes.start(coach, job), f"start of fine-tune job {job_id}")
    except ProviderError as exc:  # the last try
        return await container.fine_tunes.give_up(coach, job, str(exc))


async def poll_fine_tune(ctx: dict[str, Any], coach_id: str, job_id: str) -> str:
    """arq job: poll a fine-tune job's status; a finished job yields a staging model version."""
    container: Container = ctx["container"]
    return await container.fine_tunes.poll(uuid.UUID(coach_id), uuid.UUID(job_id))


async def stop_fine_tunes(ctx: dict[str, Any], coach_id: str) -> str:
    """arq job: poll the coach's active fine-tunes now, which cancels them once the coach is on the local model."""
    container: Container = ctx["container"]
    return await container.fine_tunes.poll_active(uuid.UUID(coach_id))


async def evaluate_model(ctx: dict[str, Any], coach_id: str, version_id: str) -> str:
    """arq job: the promotion gate for a staging model version."""
    container: Container = ctx["container"]
    evaluation = container.model_versions.evaluate(uuid.UUID(coach_id), uuid.UUID(version_id))
    return await _retrying(ctx, evaluation, f"evaluation of model version {version_id}")


async def answer_pending(ctx: dict[str, Any], coach_id: str, message_id: str) -> str:
    """arq job: after a handback, the AI answers the client message the coach left unanswered (idempotent)."""
    container: Container = ctx["container"]
    answer = container.chat.answer_pending(uuid.UUID(coach_id), uuid.UUID(message_id))
    return await _retrying_store(ctx, answer, f"answer to message {message_id}")


async def telegram_deliver(ctx: dict[str, Any], coach_id: str, client_id: str, message_id: str) -> str:
    """arq job: queue a stored message for the client's Telegram chat when Redis refused it as it was stored
    (:meth:`app.channels.telegram.adapter.TelegramChannel.deliver_stored`; sent once, by ``telegram_send``),
    tried again while the database or Redis is out of reach (queued once, it is the message's only way out)."""
    telegram: TelegramChannel = ctx["telegram"]
    delivery = telegram.deliver_stored(uuid.UUID(coach_id), uuid.UUID(client_id), uuid.UUID(message_id))
    return await _retrying_store(ctx, delivery, what=f"telegram delivery of message {message_id}")


async def telegram_send(
    ctx: dict[str, Any],
    coach_id: str,
    chat_id: int,
    parts: list[str] | None = None,
    keyboard: dict[str, Any] | None = None,
) -> str:
    """Send the messages queued for a client's Telegram chat (coach messages, joined/left notices), in order
    across workers (:meth:`app.channels.telegram.outbound.ChatOutbox.flush`); a 429 still refused after the
    flush's own waits, a chat lock held elsewhere too long, or a network error, a timeout or a 5xx from
    Telegram, is retried later (the 429 after its ``retry_after``, the others after 1, 2, 4 and 8 s).
    ``parts``/``keyboard``: a job queued by an earlier version carries its message, which is queued for the chat
    first."""
    telegram: TelegramChannel = ctx["telegram"]
    coach, outbox = uuid.UUID(coach_id), telegram.outbox
    if parts is not None and ctx["job_try"] == 1:
        await outbox.push(coach, chat_id, parts, keyboard)
    try:
        return await outbox.flush(coach, chat_id)
    except (RetryAfter, LockError, NetworkError) as exc:
        if ctx["job_try"] >= TELEGRAM_SEND_TRIES:
            raise  # the unsent message stays first in the chat's list, for the next job (telegram_resend's at worst)
        if isinstance(exc, RetryAfter):
            raise Retry(defer=exc.retry_after) from exc
        raise Retry(defer=2 ** (ctx["job_try"] - 1)) from exc  # 1, 2, 4, 8 s


async def telegram_resend(ctx: dict[str, Any]) -> str:
    """arq cron (every minute): send what is still queued for a Telegram chat after its ``telegram_send`` job used up
    its tries (:meth:`app.channels.telegram.outbound.ChatOutbox.requeue_waiting`): once Telegram takes messages
    again, or the coach connected a new token, the client gets it within a minute, not at their next message."""
    telegram: TelegramChannel = ctx["telegram"]
    return f"{await telegram.outbox.requeue_waiting()} chats' queued messages sent again"


async def telegram_recover(ctx: dict[str, Any]) -> str:
    """arq cron (every minute): process the Telegram updates recorded but never finished because their process
    died after answering Telegram (:meth:`app.channels.telegram.adapter.TelegramChannel.recover`)."""
    telegram: TelegramChannel = ctx["telegram"]
    return f"{await telegram.recover()} telegram updates recovered"


async def rebuild_briefs(ctx: dict[str, Any], coach_id: str, client_id: str) -> str:
    """arq job: the briefs of the client's active handoffs written again from their memory now (after a forget)."""
    container: Container = ctx["container"]

    async def rebuild() -> str:
        async with unit_of_work(container.sessionmaker, uuid.UUID(coach_id)) as uow:
            rebuilt = await container.handoffs.rebuild_briefs(uow.session, uuid.UUID(coach_id), uuid.UUID(client_id))
        return f"{rebuilt} briefs rebuilt"

    return await _retrying_store(ctx, rebuild(), f"briefs of client {client_id}")


async def purge_erased_data(ctx: dict[str, Any], coach_id: str, file_ids: list[str]) -> str:
    """arq job: after an erasure, the coach's Redis caches and the erased training files at the provider
    (idempotent; a file the provider fails to delete is logged and named in the result, not retried)."""
    container: Container = ctx["container"]

    async def purge() -> str:
        return str((await container.rights.purge(uuid.UUID(coach_id), file_ids)).as_dict())

    return await _retrying_store(ctx, purge(), f"erased data of coach {coach_id}")


async def embed_messages(ctx: dict[str, Any], coach_id: str, conversation_id: str, until: str | None = None) -> str:
    """arq job: episodic embedding of a conversation's messages that have none (sent up to ``until``, ISO 8601)."""
    container: Container = ctx["container"]
    sent_by = datetime.fromisoformat(until) if until else None
    embedding = container.episodes.embed_messages(uuid.UUID(coach_id), uuid.UUID(conversation_id), until=sent_by)
    return await _retrying(ctx, embedding, f"episodes of conversation {conversation_id}")


async def reembed_coach(ctx: dict[str, Any], coach_id: str, request_id: str) -> str:
    """arq job: re-embed the coach's vectors with its requested embedder, then switch to it. The database or Redis
    out of reach is retried (:func:`_retrying_unreachable`, :data:`REEMBED_TRIES` tries); whatever ends it
    otherwise marks the request ``failed`` with the reason (it showed ``running`` for good): its
    :data:`REEMBED_DEADLINE_S` passed (arq's timeout, which cancels it unrecorded, comes a minute later), the last
    try's error or a bug (all raised again), or every try ended by a stopped or killed worker (the job's spare
    try)."""
    container: Container = ctx["container"]
    coach, request = uuid.UUID(coach_id), uuid.UUID(request_id)
    if ctx["job_try"] > REEMBED_TRIES:
        await container.embeddings.fail(coach, request, f"stopped {REEMBED_TRIES} times before it finished")
        return "failed: its tries were used up"
    deadline = asyncio.timeout(REEMBED_DEADLINE_S)
    try:
        async with deadline:
            run = container.embeddings.run(coach, request)
            what = f"re-embedding {request_id}"
            return await _retrying_unreachable(ctx, run, tries=REEMBED_TRIES, delay_s=RETRY_DELAY_S, what=what)
    except Retry:
        raise
    except Exception as exc:
        late = deadline.expired()
        reason = f"not finished within {REEMBED_DEADLINE_S // 60} minutes" if late else f"{type(exc).__name__}: {exc}"
        await container.embeddings.fail(coach, request, reason)
        raise


async def relay_outbox(ctx: dict[str, Any]) -> str:
    """arq cron (every 10 s): send outbox jobs that their commit could not (Redis was down), oldest first;
    while jobs still wait afterwards, log the outbox's health line (count, oldest age, failing sends)."""
    container: Container = ctx["container"]
    sent = await relay(container.sessionmaker, container.redis)
    state = await health(container.sessionmaker)
    if state.waiting:
        log.warning("%s (%d sent by this relay)", state.line(), sent)
    return f"{sent} outbox jobs sent; {state.line()}"


async def learning_sweep(ctx: dict[str, Any]) -> str:
    """arq cron (every five minutes): fine-tune readiness per coach, polls of running fine-tunes, and fine-tunes
    whose start no longer runs taken up."""
    container: Container = ctx["container"]
    up_long_enough = time.monotonic() - ctx["started_at"] >= START_FINE_TUNE_BUDGET_S  # its arq ran the tries due
    return await container.fine_tunes.sweep(stalled_start_s=START_FINE_TUNE_BUDGET_S if up_long_enough else None)


class OutageTolerantWorker(Worker):
    """arq's :class:`~arq.worker.Worker` that waits out a Redis outage instead of ending: a Redis error in a
    poll (picking jobs, the heartbeat, queueing crons) is logged once per outage and the poll is retried
    every :data:`REDIS_RETRY_S`; the connection pool reconnects by itself once Redis is back. Jobs running
    when Redis went away finish; arq runs again those whose completion it could not record (every job is
    idempotent). Burst mode (tests) is unchanged.

    A running job's claim (arq's ``arq:in-progress:<job id>`` key, which arq sets for the longest job timeout
    plus 10 s, an hour here) is a lease of ``lease_s`` seconds that the worker renews every ``lease_s / 3``
    while the job runs: when a worker is killed, its jobs are picked up again (by any worker, after a restart
    too) ``lease_s`` seconds later rather than an hour; the job's own timeout still applies. Relies on arq's
    ``_poll_iteration``/``start_jobs``/``in_progress_timeout_s``/``job_tasks`` (arq 0.26–0.28)."""

    _outage_since: float | None = None
    _renewed_at: float = 0.0
    _stopping = False

    def handle_sig(self, signum: signal.Signals) -> None:
        """arq's stop (cancel the jobs and the main task), remembered: a cancellation swallowed inside a poll
        iteration left the worker polling after SIGTERM (seen in CI: both workers logged "shutdown on SIGTERM"
        and ran their crons for 120 s more), so the next iteration ends the loop instead."""
        self._stopping = True
        super().handle_sig(signum)

    def __init__(self, *args: Any, lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_progress_timeout_s = lease_s

    async def _renew_leases(self) -> None:
        """Extend the claims of the jobs this worker runs (every ``lease_s / 3`` seconds)."""
        if time.monotonic() - self._renewed_at < self.in_progress_timeout_s / 3 or not self.job_tasks:
            return
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in self.job_tasks:
                pipe.pexpire(in_progress_key_prefix + job_id, int(self.in_progress_timeout_s * 1000))
            await pipe.execute()
        self._renewed_at = time.monotonic()

    async def _poll_iteration(self) -> None:
        if self._stopping:
            raise asyncio.CancelledError("the worker was stopped")
        try:
            await self._renew_leases()
            await super()._poll_iteration()
        except UNAVAILABLE as exc:
            if self.burst:
                raise
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.warning("Redis unavailable, the worker waits for it: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(REDIS_RETRY_S)
            return
        if self._outage_since is not None:
            log.warning("Redis is back after %.0f s; the worker goes on", time.monotonic() - self._outage_since)
            self._outage_since = None

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # a job whose lease lapsed while this worker still runs it (a stalled event loop) is not started twice here
        job_ids = [job_id for job_id in job_ids if job_id.decode() not in self.job_tasks]
        try:
            await super().start_jobs(job_ids)
        except UNAVAILABLE:
            # arq took a slot for the job whose start failed and never gives it back: free it
            self._release_sem_dec_counter_on_complete()
            raise

    async def close(self) -> None:
        """arq's ``close`` (cancel the jobs, run ``on_shutdown``, close the pool), but a job the stop cancelled
        does not end it early: arq gathers its job tasks without ``return_exceptions``, so the first cancelled
        job raised ``CancelledError`` out of ``close`` and skipped the shutdown (the container stayed open)."""
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        await super().close()


class _SharedContainer:
    """One :class:`Container` for the workers of a process: the first worker's start-up builds it and checks
    the schema version, the last one's shutdown closes it."""

    def __init__(
        self, settings: Settings, database_url: str, redis_url: str, registry: ProviderRegistry | None
    ) -> None:
        self._args = (settings, database_url, redis_url)
        self._registry = registry
        self._container: Container | None = None
        self._telegram: TelegramChannel | None = None
        self._users = 0
        self._lock = asyncio.Lock()

    async def startup(self, ctx: dict[str, Any]) -> None:
        async with self._lock:
            if self._container is None:
                container = await Container.create(*self._args, registry=self._registry)
                try:
                    await assert_schema_current(container.engine)
                except BaseException:  # an out-of-date schema, or a stop signal during the check
                    await asyncio.shield(container.close())
                    raise
                self._container = container
                self._telegram = build_channel(container)  # once: it registers the handoff's client sink
                freeze_startup_heap()  # full collections then skip what start-up loaded (they paused jobs)
            self._users += 1
        ctx["container"] = self._container
        ctx["telegram"] = self._telegram
        ctx["started_at"] = time.monotonic()

    async def shutdown(self, ctx: dict[str, Any]) -> None:
        if ctx.pop("container", None) is None:
            return
        async with self._lock:
            self._users -= 1
            if self._users == 0 and self._container is not None:
                if self._telegram is not None:
                    await self._telegram.service.close()
                await self._container.close()
                self._container = None


_ERASURE_FUNCTIONS = (
    func(purge_erased_data, name=PURGE_ERASED_DATA, timeout=600, max_tries=STORE_JOB_TRIES),
    func(rebuild_briefs, name=REBUILD_BRIEFS, timeout=120, max_tries=STORE_JOB_TRIES),
    func(refresh_training_data, name=REFRESH_TRAINING_DATA, timeout=600, max_tries=STORE_JOB_TRIES),
)
"""The jobs of :data:`~app.db.jobs.ERASURE_QUEUE` (the main worker runs them too: those left in the default queue
by a version before that queue, and the training data refreshes that erase nothing)."""


def _main_worker(settings: Settings, redis_url: str, shared: _SharedContainer, burst: bool) -> Worker:
    """The worker of arq's default queue: ingestion, memory, learning and the sweeps (see the module)."""
    return OutageTolerantWorker(
        functions=[
            func(
                ingest_document, name=INGEST_DOCUMENT, timeout=settings.ingest_timeout_seconds, max_tries=INGEST_TRIES
            ),
            func(reheader_document, name=REHEADER_DOCUMENT, timeout=JOB_TIMEOUT_S, max_tries=STORE_JOB_TRIES),
            func(summarize_session, name=SUMMARIZE_SESSION, timeout=JOB_TIMEOUT_S, max_tries=MEMORY_JOB_TRIES),
            func(extract_insights, name=EXTRACT_INSIGHTS, timeout=JOB_TIMEOUT_S, max_tries=MEMORY_JOB_TRIES),
            func(update_profile, name=UPDATE_PROFILE, timeout=JOB_TIMEOUT_S, max_tries=MEMORY_JOB_TRIES),
            # alerts go to ALERTS_QUEUE; this one runs those a version before it left in the default queue
            func(deliver_alert, name=DELIVER_ALERT, timeout=120, max_tries=ALERT_ATTEMPTS),
            func(analyse_intervention, name=ANALYSE_INTERVENTION, timeout=600, max_tries=MEMORY_JOB_TRIES),
            func(score_interventions, name=SCORE_INTERVENTIONS, timeout=300, max_tries=STORE_JOB_TRIES),
            func(start_fine_tune, name=START_FINE_TUNE, timeout=JOB_TIMEOUT_S, max_tries=MEMORY_JOB_TRIES),
            func(poll_fine_tune, name=POLL_FINE_TUNE, timeout=300, max_tries=3),
            func(stop_fine_tunes, name=STOP_FINE_TUNES, timeout=300, max_tries=3),
            func(evaluate_model, name=EVALUATE_MODEL, timeout=JOB_TIMEOUT_S, max_tries=MEMORY_JOB_TRIES),
            func(answer_pending, name=ANSWER_PENDING, timeout=600, max_tries=STORE_JOB_TRIES),
            func(telegram_send, name=SEND_JOB, timeout=120, max_tries=TELEGRAM_SEND_TRIES),
            func(telegram_deliver, name=TELEGRAM_DELIVER, timeout=60, max_tries=STORE_JOB_TRIES),
            # erasure jobs go to ERASURE_QUEUE; this one runs those a version before it left here (and the training
            # data refreshes that erase nothing)
            *_ERASURE_FUNCTIONS,
            func(embed_messages, name=EMBED_MESSAGES, timeout=JOB_TIMEOUT_S, max_tries=MEMORY_JOB_TRIES),
            func(reembed_coach, name=REEMBED_COACH, timeout=JOB_TIMEOUT_S, max_tries=REEMBED_TRIES + 1),
        ],
        # a burst run (tests, one-off processing) must not sweep every tenant's sessions on a minute boundary
        cron_jobs=[]
        if burst
        else [
            cron(close_idle_sessions, second=0, run_at_startup=True),
            cron(retry_failed_summaries, minute=set(range(2, 60, 5)), second=35, run_at_startup=True),
            cron(fail_stalled_documents, second=45, run_at_startup=True),
            cron(requeue_lost_documents, second=20, run_at_startup=True),
            cron(answer_stranded_messages, second=40, run_at_startup=True),
            cron(
                sync_vector_indexes,
                minute=set(range(0, 60, 10)),
                second=50,
                run_at_startup=True,
                timeout=JOB_TIMEOUT_S,
            ),
            cron(learning_sweep, minute=set(range(0, 60, 5)), second=15, run_at_startup=True),
            cron(backfill_headings, minute=set(range(5, 60, 10)), second=25, run_at_startup=True),
            cron(telegram_recover, second=50, run_at_startup=True),
            cron(telegram_resend, second=55, run_at_startup=True),
        ],
        redis_pool=connect_redis(redis_url, socket_timeout_s=settings.redis_socket_timeout_seconds),
        lease_s=settings.worker_lease_seconds,
        on_startup=shared.startup,
        on_shutdown=shared.shutdown,
        burst=burst,
        max_jobs=settings.worker_max_jobs,
        handle_signals=False,
        poll_delay=0.2,
    )


def _own_queue_worker(
    settings: Settings,
    redis_url: str,
    shared: _SharedContainer,
    burst: bool,
    *,
    queue: str,
    functions: Sequence[Function],
    max_jobs: int,
    cron_jobs: Sequence[CronJob] = (),
) -> Worker:
    """A worker of ``queue`` with ``max_jobs`` slots of its own, running ``functions`` (and ``cron_jobs``, unless
    ``burst``), so that no job of the default queue holds back its jobs."""
    return OutageTolerantWorker(
        functions=list(functions),
        cron_jobs=[] if burst else list(cron_jobs),
        queue_name=queue,
        redis_pool=connect_redis(redis_url, socket_timeout_s=settings.redis_socket_timeout_seconds, queue=queue),
        lease_s=settings.worker_lease_seconds,
        on_startup=shared.startup,
        on_shutdown=shared.shutdown,
        burst=burst,
        max_jobs=max_jobs,
        handle_signals=False,
        poll_delay=0.2,
    )


def _alert_worker(settings: Settings, redis_url: str, shared: _SharedContainer, burst: bool) -> Worker:
    """The worker of :data:`ALERTS_QUEUE`: handoff alerts, plus the crons that must run however busy the
    default queue is (the outbox relay, which sends alerts kept through a Redis outage, and the SLA holding
    messages). Its own slots: a slow ingestion never delays a crisis alert."""
    return _own_queue_worker(
        settings,
        redis_url,
        shared,
        burst,
        queue=ALERTS_QUEUE,
        functions=[
            func(deliver_alert, name=DELIVER_ALERT, timeout=120, max_tries=ALERT_ATTEMPTS),
            func(confirm_alert_email, name=CONFIRM_ALERT_EMAIL, timeout=120, max_tries=ALERT_ATTEMPTS),
        ],
        max_jobs=ALERT_WORKER_MAX_JOBS,
        cron_jobs=[
            cron(relay_outbox, second=set(range(5, 60, OUTBOX_RELAY_EVERY_S)), run_at_startup=True),
            cron(send_sla_notices, second=30, run_at_startup=True),
        ],
    )


def _erasure_worker(settings: Settings, redis_url: str, shared: _SharedContainer, burst: bool) -> Worker:
    """The worker of :data:`ERASURE_QUEUE`: the purges that follow an erasure or a forget, a forget's training
    data refresh and brief rebuilds. Its own slots: model jobs (summaries, insights, ingestion, fine-tunes)
    filling the default queue's never delay an erasure, and a provider slow to delete files never an alert."""
    return _own_queue_worker(
        settings,
        redis_url,
        shared,
        burst,
        queue=ERASURE_QUEUE,
        functions=_ERASURE_FUNCTIONS,
        max_jobs=ERASURE_WORKER_MAX_JOBS,
    )


def build_workers(
    settings: Settings,
    database_url: str,
    redis_url: str,
    *,
    burst: bool = False,
    registry: ProviderRegistry | None = None,
) -> tuple[Worker, Worker, Worker]:
    """The process's three arq workers, ``(main, alerts, erasure)``, sharing one container: the main worker on
    arq's default queue (``WORKER_MAX_JOBS`` slots), the alert worker on :data:`ALERTS_QUEUE` and the erasure
    worker on :data:`ERASURE_QUEUE`, each with slots of its own. Start-up builds the container and refuses an
    out-of-date schema (``RuntimeError``). Run them with :func:`run_workers`.

    ``burst=True`` processes each queue until it is empty, then returns (tests, one-off runs)."""
    shared = _SharedContainer(settings, database_url, redis_url, registry)
    return (
        _main_worker(settings, redis_url, shared, burst),
        _alert_worker(settings, redis_url, shared, burst),
        _erasure_worker(settings, redis_url, shared, burst),
    )


def build_worker(
    settings: Settings,
    database_url: str,
    redis_url: str,
    *,
    burst: bool = False,
    registry: ProviderRegistry | None = None,
) -> Worker:
    """The main worker alone (arq's default queue; see :func:`build_workers`)."""
    return build_workers(settings, database_url, redis_url, burst=burst, registry=registry)[0]


async def run_workers(workers: Sequence[Worker]) -> None:
    """Run ``workers`` until they end, then close them all. Burst workers run one after the other (jobs one
    queues for a later one are run); long-lived ones run side by side until SIGINT or SIGTERM, which stops
    every one of them (arq's own handler would serve only the worker that installed it last) and returns; a
    worker's ``handle_sig`` stops them the same way. Re-raises an error of a worker's ``close``."""
    if all(worker.burst for worker in workers):
        try:
            for worker in workers:
                await worker.main()
        finally:
            for worker in workers:
                await worker.close()
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum: signal.Signals) -> None:
        for worker in workers:
            worker.handle_sig(signum)  # cancels the worker's jobs and its main task

    for sig in previous:
        loop.add_signal_handler(sig, stop, sig)
    tasks = [asyncio.create_task(worker.main()) for worker in workers]
    for worker, task in zip(workers, tasks, strict=True):
        worker.main_task = task
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # this coroutine was cancelled; otherwise the workers were stopped (a signal, ``handle_sig``)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closed = await asyncio.gather(*(worker.close() for worker in workers), return_exceptions=True)
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)
    for outcome in closed:
        if isinstance(outcome, BaseException):
            raise outcome
