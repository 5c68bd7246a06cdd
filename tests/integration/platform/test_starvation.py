"""Jobs that never starve (issue 14): slow ingestions hold neither a crisis alert nor another coach's work.

The real app and the real long-lived workers (``build_workers`` + ``run_workers``, as ``opencoach worker``
runs them) on a Redis of this module's own. The workers' embedder never answers (a coach's endpoint that
hangs), so every ingestion job holds its worker slot until it is cancelled; the web app's models are the
real offline ones.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest
from arq.jobs import Job
from arq.worker import Worker
from redis.asyncio import Redis

from app.accounts.models import Coach as CoachRow
from app.asgi import create_app
from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.core.security import SecretBox
from app.db.jobs import PURGE_ERASED_DATA
from app.learning.dashboard import FAILURE_PATTERNS_PREFIX
from app.llm.base import Embedder
from app.llm.local import LOCAL_EMBEDDING_MODEL
from app.llm.registry import ProviderRegistry
from app.worker import build_workers, run_workers
from tests.conftest import Coach, upload
from tests.integration.platform.conftest import Receiver
from tests.redis_process import RedisProcess

CRISIS = "I have decided to kill myself this weekend"
NOTES = b"Small steps, every day, add up to a long way.\n" * 40


class HangingEmbedder:
    """An embedder whose every batch waits until cancelled; counts the batches started."""

    model = LOCAL_EMBEDDING_MODEL  # the coaches' model in use, or ingestion would start again with the new one
    dimensions = 384
    max_input_tokens = 256

    def __init__(self) -> None:
        self.started: list[float] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.started.append(time.monotonic())
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class HangingRegistry(ProviderRegistry):
    """The workers' registry: every coach's embedder hangs."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, SecretBox.from_settings(settings))
        self.hanging = HangingEmbedder()

    async def embedder_for(self, coach: CoachRow) -> Embedder:
        return self.hanging


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("starve-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def app_http(
    settings: Settings, services: Services, registry: ProviderRegistry, own_redis: RedisProcess
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, services.database_url, own_redis.url, registry=registry)
    async with serve_in_background(app) as url, httpx.AsyncClient(base_url=url, timeout=120) as client:
        await app.state.warm_up
        yield client


async def signup(http: httpx.AsyncClient, name: str, **settings: Any) -> Coach:
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    response = await http.post(
        "/api/v1/auth/signup", json={"coach_name": name, "email": email, "password": "correct horse battery"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    coach = Coach(body["coach_id"], body["api_key"], email)
    if settings:
        response = await http.patch("/api/v1/settings", headers=coach.headers, json=settings)
        assert response.status_code == 200, response.text
    return coach


def start_workers(settings: Settings, services: Services, redis_url: str, registry: ProviderRegistry) -> Any:
    """The long-lived workers without their crons (those sweep every tenant of the shared database)."""
    workers = build_workers(settings, services.database_url, redis_url, registry=registry)
    for worker in workers:
        worker.cron_jobs = []
    return workers, asyncio.create_task(run_workers(workers))


async def stop_workers(workers: Sequence[Worker], task: asyncio.Task[None]) -> None:
    """SIGINT as ``opencoach worker`` gets it: ``run_workers`` must end without an error (cancelled jobs and
    all) and the workers' shared container must be closed."""
    for worker in workers:
        worker.handle_sig(signal.SIGINT)
    await asyncio.wait_for(task, 60)
    assert all("container" not in worker.ctx for worker in workers), "the shared container was left open"


async def wait_for(condition: Any, seconds: float) -> bool:
    """Whether ``condition()`` (a value, or an awaitable of one) became true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        met = condition()
        if await met if inspect.isawaitable(met) else met:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_two_slow_ingestions_and_a_crisis_the_alert_goes_out_within_30_s(
    app_http: httpx.AsyncClient, own_redis: RedisProcess, receiver: Receiver, settings: Settings, services: Services
) -> None:
    """Two coaches' ingestions take both slots of the main worker (``WORKER_MAX_JOBS`` = 2) and never end;
    a third coach's client then writes a crisis message: the coach's webhook alert arrives within 30 s,
    from the alert worker's own queue and slots (on one shared queue it would wait behind the ingestions)."""
    registry = HangingRegistry(settings)
    first, second = await signup(app_http, "First"), await signup(app_http, "Second")
    crisis_coach = await signup(app_http, "On call", alert_webhook_url=receiver.url)
    response = await app_http.post("/api/v1/clients", headers=crisis_coach.headers, json={"name": "Robin"})
    assert response.status_code == 201, response.text
    client_headers = {"Authorization": f"Bearer {response.json()['widget_token']}"}
    await upload(app_http, first, "first.txt", NOTES)
    await upload(app_http, second, "second.txt", NOTES)
    workers, task = start_workers(settings, services, own_redis.url, registry)
    try:
        assert await wait_for(lambda: len(registry.hanging.started) == 2, 60), "the ingestions did not start"
        response = await app_http.post("/api/v1/chat", headers=client_headers, json={"text": CRISIS})
        assert response.status_code == 200, response.text
        assert response.json()["handoff"]["reason"] == "crisis"
        sent = time.monotonic()
        assert await asyncio.to_thread(receiver.arrived.wait, 30), "no alert within 30 s of the crisis"
        assert time.monotonic() - sent < 30
        assert len(registry.hanging.started) == 2  # both ingestions still hold their slots
        assert not task.done()
    finally:
        await stop_workers(workers, task)


async def test_a_client_erased_while_slow_jobs_hold_every_slot_of_the_main_worker_is_purged_at_once(
    app_http: httpx.AsyncClient, own_redis: RedisProcess, settings: Settings, services: Services
) -> None:
    """Two coaches' ingestions take both slots of the main worker and never end; a third coach then erases a
    client: the purge that follows (the coach's Redis caches, which may quote the client) runs from the erasure
    worker's own queue and slots while the ingestions still hold theirs (on the default queue it would wait behind
    them, as it waited behind model jobs under load)."""
    registry = HangingRegistry(settings)
    async with Redis.from_url(own_redis.url) as redis:
        await redis.flushdb()  # an earlier test's hung ingestions would be picked up again (their leases lapsed)
    first, second, erasing = (
        await signup(app_http, "First"),
        await signup(app_http, "Second"),
        await signup(app_http, "Erasing"),
    )
    response = await app_http.post("/api/v1/clients", headers=erasing.headers, json={"name": "Kim"})
    assert response.status_code == 201, response.text
    client_id = response.json()["id"]
    await upload(app_http, first, "first.txt", NOTES)
    await upload(app_http, second, "second.txt", NOTES)
    workers, task = start_workers(settings, services, own_redis.url, registry)
    try:
        assert await wait_for(lambda: len(registry.hanging.started) == 2, 60), "the ingestions did not start"
        async with Redis.from_url(own_redis.url) as redis:
            cached = f"{FAILURE_PATTERNS_PREFIX}:{erasing.coach_id}:recent"
            await redis.set(cached, "a failure pattern that quotes Kim")
            response = await app_http.delete(f"/api/v1/clients/{client_id}", headers=erasing.headers)
            assert response.status_code == 204, response.text
            purge = Job(f"{PURGE_ERASED_DATA}:{erasing.coach_id}:client:{client_id}", redis)
            assert await wait_for(purge.result_info, 30), "the purge waited behind the ingestions"
            result = await purge.result_info()
            assert result is not None and result.success, result and result.result
            assert not await redis.exists(cached), "the coach's cached failure patterns were purged"
        assert len(registry.hanging.started) == 2  # both ingestions still hold their slots
        assert not task.done()
    finally:
        await stop_workers(workers, task)


async def test_one_coach_runs_one_ingestion_at_a_time_and_another_coach_is_not_held_back(
    app_http: httpx.AsyncClient, own_redis: RedisProcess, settings: Settings, services: Services
) -> None:
    """A coach uploading three documents at once takes one ingestion slot (``INGEST_JOBS_PER_COACH`` = 1):
    their other jobs wait off the worker, so a second coach's upload, queued after them, starts at once."""
    registry = HangingRegistry(settings)
    async with Redis.from_url(own_redis.url) as redis:
        await redis.flushdb()  # the previous test's hung ingestions would be picked up again (their leases lapsed)
    big, small = await signup(app_http, "Big"), await signup(app_http, "Small")
    for n in range(3):
        await upload(app_http, big, f"big-{n}.txt", NOTES + f"\nPart {n}.".encode())
    await upload(app_http, small, "small.txt", NOTES)
    workers, task = start_workers(settings, services, own_redis.url, registry)
    try:
        assert await wait_for(lambda: len(registry.hanging.started) == 2, 60), "the second coach was held back"
        await asyncio.sleep(2 * 5.0)  # the big coach's waiting jobs defer a few times (a backoff from 0–5 s)
        assert len(registry.hanging.started) == 2, "a coach ran more than one ingestion at once"
        statuses = []
        for coach in (big, small):
            response = await app_http.get("/api/v1/documents", headers=coach.headers)
            assert response.status_code == 200, response.text
            statuses.append(sorted(doc["status"] for doc in _items(response.json())))
        assert statuses[0].count("processing") == 1 and statuses[1] == ["processing"]
    finally:
        await stop_workers(workers, task)


def _items(body: Any) -> list[dict[str, Any]]:
    return body if isinstance(body, list) else body["items"]


async def test_a_stop_signal_while_jobs_run_ends_the_workers_cleanly(
    app_http: httpx.AsyncClient, own_redis: RedisProcess, settings: Settings, services: Services
) -> None:
    """SIGINT while an ingestion runs: the job is cancelled, both workers shut down (``on_shutdown`` closes the
    shared container) and ``run_workers`` returns. arq's own ``close`` re-raised the cancelled job's
    ``CancelledError``, which skipped the shutdown and ended ``opencoach worker`` with a traceback."""
    registry = HangingRegistry(settings)
    async with Redis.from_url(own_redis.url) as redis:
        await redis.flushdb()
    coach = await signup(app_http, "Stopping")
    await upload(app_http, coach, "notes.txt", NOTES)
    workers, task = start_workers(settings, services, own_redis.url, registry)
    assert await wait_for(lambda: len(registry.hanging.started) == 1, 60), "the ingestion did not start"
    await stop_workers(workers, task)
    assert task.result() is None
