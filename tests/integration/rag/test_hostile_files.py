"""Hostile and broken uploads end ``failed`` with a reason, within the extraction limits, while the worker
keeps serving other tenants; a document whose job was stopped is never left ``processing``."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psutil
import pytest
from arq.constants import job_key_prefix
from arq.jobs import deserialize_job_raw
from sqlalchemy import func, select, update

from app import worker
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.core.config import Settings
from app.core.runtime import Services
from app.db.engine import tenant_session
from app.db.jobs import INGEST_DOCUMENT
from app.db.outbox import OutboxJob
from app.llm.registry import ProviderRegistry
from app.rag.models import Document, DocumentStatus
from app.rag.service import LOST_AFTER_S, DocumentService
from app.worker import build_worker
from tests.conftest import Coach, upload
from tests.hostile_files import CORPUS, flate_bomb, text_pdf

PASSWORD = "correct horse battery"


async def _document(http: httpx.AsyncClient, coach: Coach, document_id: str) -> dict:
    response = await http.get(f"/api/v1/documents/{document_id}", headers=coach.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _run_worker(settings: Settings, services: Services, registry: ProviderRegistry) -> None:
    """A burst worker built with ``settings`` (the extraction limits under test)."""
    worker = build_worker(settings, services.database_url, services.redis_url, burst=True, registry=registry)
    try:
        await worker.main()
    finally:
        await worker.close()


async def test_every_hostile_file_fails_with_a_reason(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> None:
    """The whole corpus through the real upload API and worker, under the default limits."""
    coach = await make_coach("Targeted Coach")
    ids = {hostile.name: (await upload(http, coach, hostile.name, hostile.make()))["id"] for hostile in CORPUS}
    await run_jobs()
    for hostile in CORPUS:
        doc = await _document(http, coach, ids[hostile.name])
        assert doc["status"] == "failed", (hostile.name, doc)
        assert re.search(hostile.reason, doc["error"]), (hostile.name, doc["error"])
        assert doc["chunks"] == 0


async def test_a_metadata_title_names_the_document_unless_it_is_a_placeholder(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> None:
    """A PDF ``/Title`` ending in a NUL character (some producers write one; PostgreSQL refuses it) names the
    document without it; the document used to fail after all its chunks were stored. A placeholder title keeps
    the coach's file name."""
    coach = await make_coach("Titled Coach")
    named = await upload(http, coach, "notes.pdf", text_pdf(2, title=b"Coaching Notes\\000"))
    placeholder = await upload(http, coach, "week-3.pdf", text_pdf(2, title=b"Microsoft Word - week3.docx"))
    await run_jobs()
    named, placeholder = [await _document(http, coach, d["id"]) for d in (named, placeholder)]
    assert (named["status"], named["title"]) == ("ready", "Coaching Notes"), named
    assert (placeholder["status"], placeholder["title"]) == ("ready", "Week 3"), placeholder


async def test_the_worker_serves_another_tenant_while_a_hostile_file_burns_its_cpu_limit(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    container: Container,
) -> None:
    attacker, neighbour = await make_coach("Attacker"), await make_coach("Neighbour")
    bomb = await upload(http, attacker, "bomb.pdf", flate_bomb())
    small = await upload(http, neighbour, "small.txt", b"Keep going, one small step a day.\n" * 40)
    limited = settings.model_copy(
        update={"extract_memory_mb": 2048, "extract_cpu_seconds": 6, "extract_cpu_seconds_per_page": 0}
    )
    await _run_worker(limited, services, registry)

    hostile, served = await _document(http, attacker, bomb["id"]), await _document(http, neighbour, small["id"])
    assert hostile["status"] == "failed" and "more than 6 s of CPU" in hostile["error"], hostile
    assert served["status"] == "ready" and served["chunks"] >= 1, served
    # the neighbour's document was finished while the hostile one was still being read
    async with unit_of_work(container.sessionmaker, uuid.UUID(attacker.coach_id)) as uow:
        read = await container.documents.get(uow, uuid.UUID(bomb["id"]))
    async with unit_of_work(container.sessionmaker, uuid.UUID(neighbour.coach_id)) as uow:
        other = await container.documents.get(uow, uuid.UUID(small["id"]))
    assert read.started_at and read.finished_at and other.finished_at
    assert read.started_at < other.finished_at < read.finished_at


def _extraction_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


async def test_a_stopped_ingestion_is_queued_again_or_failed_at_its_deadline_and_its_reader_ends(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job is cancelled, and the document is never left ``processing`` and the child reading the file is
    killed: by a worker shutting down, it goes back to ``queued`` (arq runs the job again when a worker starts;
    it was failed with "upload the file again", then finished by that re-run); at the job's deadline (arq runs
    it no more) it is failed with the reason."""

    async def cancelled_while_reading(after_s: float) -> dict[str, Any]:
        coach = await make_coach("Patient Coach")  # each its own: the same file twice is refused
        doc = await upload(http, coach, "bomb.pdf", flate_bomb())
        job = asyncio.create_task(container.documents.ingest(uuid.UUID(coach.coach_id), uuid.UUID(doc["id"])))
        started = time.monotonic()
        for _ in range(200):
            await asyncio.sleep(0.1)
            reading = (await _document(http, coach, doc["id"]))["status"] == "processing" and _extraction_children()
            if reading and time.monotonic() - started >= after_s:
                break
        assert (await _document(http, coach, doc["id"]))["status"] == "processing"
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        await asyncio.sleep(0.5)
        assert _extraction_children() == []
        return await _document(http, coach, doc["id"])

    shut_down = await cancelled_while_reading(0.0)
    assert (shut_down["status"], shut_down["error"]) == ("queued", None), shut_down
    monkeypatch.setattr(container.documents, "_settings", settings.model_copy(update={"ingest_timeout_seconds": 3}))
    deadline = await cancelled_while_reading(1.5)
    assert deadline["status"] == "failed", deadline
    assert "processing stopped before it finished (the job ran past its 3 s deadline" in deadline["error"]


async def test_an_ingestion_that_meets_the_database_out_of_reach_at_its_start_is_tried_again(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL (or Redis) out of reach for a moment as the job starts, before the document's own error
    handling: the job is tried again and the document gets ready (arq ran it no more, and it stayed
    ``queued`` for good)."""
    coach = await make_coach("Blip Coach")
    doc = await upload(http, coach, "notes.txt", b"Notes on patience, kept for a slow week.\n" * 10)
    ingest, failures = DocumentService.ingest, [ConnectionRefusedError("the database is restarting")]

    async def blip(self: DocumentService, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await ingest(self, *args, **kwargs)

    monkeypatch.setattr(DocumentService, "ingest", blip)
    await run_jobs()
    assert not failures
    assert (await _document(http, coach, doc["id"]))["status"] == "ready"


async def _arq_jobs(container: Container, function: str) -> dict[str, list[bytes]]:
    """The document id of each ``function`` job in arq's queue whose data arq holds → those jobs' ids."""
    jobs: dict[str, list[bytes]] = {}
    for job_id in await container.redis.zrange(container.redis.default_queue_name, 0, -1):
        payload = await container.redis.get(job_key_prefix.encode() + job_id)
        if payload is not None:
            name, args, *_ = deserialize_job_raw(payload)
            if name == function:
                jobs.setdefault(args[1], []).append(job_id)
    return jobs


async def _drained(container: Container, *docs: dict) -> None:
    """Wait until the after-commit relay sent (and deleted) the ingestion jobs of ``docs`` from the outbox."""
    ids = [doc["id"] for doc in docs]
    waiting = select(func.count()).where(OutboxJob.name == INGEST_DOCUMENT, OutboxJob.args[1].astext.in_(ids))
    async with container.sessionmaker() as session:
        for _ in range(100):
            if not await session.scalar(waiting):
                return
            await asyncio.sleep(0.05)
    raise AssertionError("outbox rows left unsent")


async def _status(http: httpx.AsyncClient, coach: Coach, *docs: dict) -> list[str]:
    return [(await _document(http, coach, doc["id"]))["status"] for doc in docs]


async def _forget_job(container: Container, document_id: str) -> None:
    """Take a document's ingestion job out of arq, as arq does once it gave the job up (or as a Redis that lost
    its data does)."""
    for job_id in (await _arq_jobs(container, INGEST_DOCUMENT))[document_id]:
        await container.redis.zrem(container.redis.default_queue_name, job_id)
        await container.redis.delete(job_key_prefix.encode() + job_id)


async def test_the_sweep_fails_documents_arq_gave_up_after_cancelled_ingestions(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    """An ingestion cancelled by its worker's shutdown puts the document back to ``queued`` for arq's next try;
    after the last try arq runs it no more. Such a document stayed ``queued`` for good (its committed chunks
    answering); once every try could have ended and arq holds no job of it, the sweep fails it with the reason.
    One whose job arq still holds (a night without worker: arq runs it again), one put back to ``queued``
    recently, and one never started, wait for their job."""
    coach = await make_coach("Given Up")
    given_up, requeued, waiting = [
        await upload(http, coach, f"{name}.txt", f"Notes on patience, part {name}.\n".encode() * 10)
        for name in ("a", "b", "c")
    ]
    budget = 3 * 3600.0
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        for doc, started in (
            (given_up, datetime.now(UTC) - timedelta(seconds=budget + 60)),
            (requeued, datetime.now(UTC) - timedelta(seconds=60)),
            (waiting, None),
        ):
            await session.execute(
                update(Document)
                .where(Document.id == uuid.UUID(doc["id"]))
                .values(status=DocumentStatus.QUEUED, started_at=started)
            )
    await _drained(container, given_up, requeued, waiting)
    await container.documents.fail_stalled(container.redis, abandoned_after_s=budget)  # (every tenant's)
    assert await _status(http, coach, given_up) == ["queued"], "arq holds its job: it runs it again"
    await _forget_job(container, given_up["id"])  # arq's last try ended
    await container.documents.fail_stalled(container.redis, abandoned_after_s=budget * 2)
    assert await _status(http, coach, given_up) == ["queued"], "within every try's time"
    assert await container.documents.fail_stalled(container.redis, abandoned_after_s=budget) >= 1
    failed = await _document(http, coach, given_up["id"])
    assert failed["status"] == "failed" and "processing stopped before it finished" in failed["error"]
    for doc in (requeued, waiting):
        assert (await _document(http, coach, doc["id"]))["status"] == "queued"


async def test_the_sweep_queues_again_documents_whose_job_arq_dropped_or_redis_lost(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A document whose ingestion job arq dropped unrun (its data expired after a day with no worker) or Redis
    forgot (restarted without persistence) stayed ``queued`` for good. The sweep queues its ingestion again
    once it has waited past :data:`LOST_AFTER_S`; a document whose job still waits, and one uploaded just now,
    are left alone."""
    coach = await make_coach("Lost Jobs")
    expired, forgotten, waiting, recent = [
        await upload(http, coach, f"{name}.txt", f"Notes on {name} patience.\n".encode() * 10)
        for name in ("expired", "forgotten", "waiting", "recent")
    ]
    await _drained(container, expired, forgotten, waiting, recent)
    queued = await _arq_jobs(container, INGEST_DOCUMENT)
    assert {doc["id"] for doc in (expired, forgotten, waiting, recent)} <= queued.keys()
    await container.redis.delete(job_key_prefix.encode() + queued[expired["id"]][0])  # arq's expiry
    for doc in (forgotten, recent):  # a Redis that lost its data
        await _forget_job(container, doc["id"])
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        await session.execute(
            update(Document)
            .where(Document.id.in_([uuid.UUID(doc["id"]) for doc in (expired, forgotten, waiting)]))
            .values(created_at=datetime.now(UTC) - timedelta(seconds=LOST_AFTER_S + 60))
        )

    # two sweeps at once (a worker's start-up sweep beside another's) queue each document's job once
    both = await asyncio.gather(*(worker.requeue_lost_documents({"container": container}) for _ in "ab"))
    assert all(re.fullmatch(r"\d+ documents with a lost job queued again", line) for line in both)
    await _drained(container, expired, forgotten, waiting)
    queued = await _arq_jobs(container, INGEST_DOCUMENT)
    assert [len(queued[doc["id"]]) for doc in (expired, forgotten, waiting)] == [1, 1, 1]
    await container.documents.requeue_lost(container.redis)  # their jobs now wait: idempotent
    await _drained(container, expired, forgotten, waiting)
    queued = await _arq_jobs(container, INGEST_DOCUMENT)
    assert [len(queued[doc["id"]]) for doc in (expired, forgotten, waiting)] == [1, 1, 1]
    assert recent["id"] not in queued, "uploaded just now: left alone"
    await run_jobs()
    for doc in (expired, forgotten, waiting):
        assert (await _document(http, coach, doc["id"]))["status"] == "ready", doc
    assert (await _document(http, coach, recent["id"]))["status"] == "queued"  # its turn comes after the margin
    assert await container.documents.requeue_lost(container.redis, older_than_s=0) >= 1
    await run_jobs()
    assert (await _document(http, coach, recent["id"]))["status"] == "ready"


async def test_the_sweep_fails_documents_a_killed_worker_left_processing(
    http: httpx.AsyncClient,
    base_url: str,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    settings: Settings,
) -> None:
    abandoned_by, busy = await make_coach("Abandoned"), await make_coach("Busy")
    abandoned = await upload(http, abandoned_by, "notes.txt", b"Notes on courage.\n" * 10)
    running = await upload(http, busy, "plan.txt", b"A plan for the week.\n" * 10)
    long_ago = datetime.now(UTC) - timedelta(seconds=settings.ingest_timeout_seconds + 120)
    for coach, doc, started in ((abandoned_by, abandoned, long_ago), (busy, running, datetime.now(UTC))):
        async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
            await session.execute(
                update(Document)
                .where(Document.id == uuid.UUID(doc["id"]))
                .values(status=DocumentStatus.PROCESSING, started_at=started)
            )

    # while arq holds its job, the cron leaves it to arq's next run (a worker starting after a night without
    # one runs it again); once arq gave the job up, the cron fails it
    await _drained(container, abandoned, running)
    await worker.fail_stalled_documents({"container": container})  # (every tenant's documents)
    assert await _status(http, abandoned_by, abandoned) == ["processing"]
    await _forget_job(container, abandoned["id"])
    swept = await worker.fail_stalled_documents({"container": container})
    assert re.fullmatch(r"[1-9]\d* stalled documents failed", swept), swept
    failed = await _document(http, abandoned_by, abandoned["id"])
    assert failed["status"] == "failed" and "processing stopped before it finished" in failed["error"]
    assert await _status(http, busy, running) == ["processing"]  # its job may still be running

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as browser:
        login = await browser.get("/login")
        token = re.search(r'name="_csrf_token" value="([^"]+)"', login.text)
        assert token
        await browser.post(
            "/login", data={"email": abandoned_by.email, "password": PASSWORD, "_csrf_token": token.group(1)}
        )
        page = await browser.get("/dashboard/documents")
        assert page.status_code == 200
        assert "processing stopped before it finished" in page.text
