"""A Redis outage during chat turns loses no job (issue 11, deliverable 3).

The real app (``create_app`` served by uvicorn on loopback) runs against a redis-server of this module's own
(:class:`tests.redis_process.RedisProcess`), which the tests stop and restart on the same port; the shared
session Redis is untouched. Restarted, that Redis is empty (no persistence): whatever was to be queued
during the outage can only come from the transactional outbox. The coach's OpenAI-compatible endpoint is
mocked with respx in OpenAI's wire format (:class:`FakeModel`: streamed chat replies, and the memory jobs'
Structured Outputs answered from the transcript they send); the webhook receiver is a loopback listener.

With Redis stopped, a client's REST turn is answered (the response cache counts as a miss), the thumbs-up
and the end of the session are stored, and a crisis message gets the crisis reply; their jobs wait in the
outbox. Once Redis is back, the relay (what the worker's cron does) sends them and a worker runs them: the
insight extraction, the session summary (and the profile update it queues), the training-data rebuild and
the crisis alert, whose webhook reaches the receiver exactly once. One test runs the long-lived worker
itself through the outage: it waits for Redis instead of stopping, and its relay cron sends the kept alert.
The widget's WebSocket chats during the outage, and live events reach open sockets again once Redis is back.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import select

from app.asgi import create_app
from app.container import Container
from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.db import jobs
from app.db.engine import tenant_session
from app.db.outbox import OutboxJob, relay
from app.handoff import live
from app.handoff.crisis import crisis_reply
from app.learning.models import TrainingExample
from app.llm.registry import ProviderRegistry
from app.worker import build_workers, relay_outbox, run_workers
from tests.integration.memory.memory_wire import client_lines, memory_job, new_client_lines
from tests.integration.platform.conftest import Receiver
from tests.openai_wire import mock_openai, openai_completion, openai_sse, sse_response
from tests.redis_process import RedisProcess
from tests.stub_dns import LOOPBACK_HOOKS

LLM_BASE_URL = "https://llm.example.test/v1"
DELTAS = ["Let's", " take", " it", " one", " step", " at", " a", " time", "."]
REPLY = "".join(DELTAS)
MARATHON = "Wants to run the Berlin marathon in September 2027"
CRISIS = "I have decided to kill myself this weekend"


@dataclass
class FakeModel:
    """The coach's OpenAI endpoint: streamed requests are chat turns (answered with ``REPLY``); the others are
    the memory jobs' Structured Outputs calls, counted by job and answered like a careful model would."""

    chat_turns: int = 0
    structured: Counter[str] = field(default_factory=Counter)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("stream"):
            self.chat_turns += 1
            return sse_response(openai_sse(DELTAS, (120, len(DELTAS))))
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        job = memory_job(system)
        assert job is not None, system[:80]
        self.structured[job] += 1
        if job == "extract":
            evidence = [n for n, text in new_client_lines(user) if "berlin marathon" in text.casefold()]
            insights = [{"kind": "goal", "text": MARATHON, "importance": 8, "status": "active", "evidence": evidence}]
            answer: dict[str, Any] = {"insights": insights if evidence else []}
        elif job == "summary":
            said = " ".join(text for _, text in client_lines(user))
            answer = {
                "summary": f"In this session the client said: {said}"[:1500],
                "topics": ["running"],
                "insights": [],
                "action_items": ["Plan the first training week"],
                "emotional_state": "hopeful",
            }
        elif job == "profile":
            answer = {
                "communication_preferences": ["Likes short, concrete plans"],
                "what_works": ["Weekly steps"],
                "what_doesnt_work": [],
                "tone": "warm and direct",
                "sensitive_topics": [],
            }
        else:
            answer = {"decision": "same"}
        return openai_completion(json.dumps(answer))


@pytest.fixture
def model() -> Iterator[FakeModel]:
    """The coach's endpoint, mocked; the app and the receiver on 127.0.0.1 are reached for real."""
    fake = FakeModel()
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        router.route(host=LOOPBACK_HOOKS).pass_through()
        router.post(f"{LLM_BASE_URL}/chat/completions").mock(side_effect=fake)
        yield fake


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("outage-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def outage_http(
    settings: Settings, services: Services, registry: ProviderRegistry, redis_server: RedisProcess
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app on this module's Redis, and an HTTP client for it."""
    app = create_app(settings, services.database_url, redis_server.url, registry=registry)
    async with serve_in_background(app) as url, httpx.AsyncClient(base_url=url, timeout=120) as client:
        await app.state.warm_up  # the models are loaded: a turn's time is the turn's own
        yield client


@pytest.fixture(scope="module")
async def outage_container(
    settings: Settings, services: Services, registry: ProviderRegistry, redis_server: RedisProcess
) -> AsyncIterator[Container]:
    """The services on this module's Redis, for the relay and for looking behind the API."""
    built = await Container.create(settings, services.database_url, redis_server.url, registry=registry)
    yield built
    await built.close()


@pytest.fixture
async def redis_up(redis_server: RedisProcess, outage_container: Container) -> RedisProcess:
    """Each test starts with this module's Redis running and empty."""
    if not redis_server.running:
        redis_server.start()
    await outage_container.redis.flushall()
    return redis_server


@dataclass
class Setup:
    coach_id: uuid.UUID
    coach_headers: dict[str, str]
    client_headers: dict[str, str]


async def new_setup(http: httpx.AsyncClient, name: str, **settings: Any) -> Setup:
    """A coach on the mocked endpoint (with ``settings``) and one client, through the API."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    response = await http.post(
        "/api/v1/auth/signup", json={"coach_name": name, "email": email, "password": "correct horse battery"}
    )
    assert response.status_code == 201, response.text
    coach = response.json()
    coach_headers = {"Authorization": f"Bearer {coach['api_key']}"}
    endpoint = {"llm_provider": "openai", "llm_model": "gpt-4o-mini", "llm_base_url": LLM_BASE_URL}
    response = await http.patch(
        "/api/v1/settings", headers=coach_headers, json=endpoint | {"llm_api_key": "sk-test"} | settings
    )
    assert response.status_code == 200, response.text
    response = await http.post("/api/v1/clients", headers=coach_headers, json={"name": "Robin"})
    assert response.status_code == 201, response.text
    client_headers = {"Authorization": f"Bearer {response.json()['widget_token']}"}
    return Setup(uuid.UUID(coach["coach_id"]), coach_headers, client_headers)


async def chat(http: httpx.AsyncClient, setup: Setup, text: str) -> dict[str, Any]:
    response = await http.post("/api/v1/chat", headers=setup.client_headers, json={"text": text})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def waiting_jobs(container: Container, coach_id: uuid.UUID) -> list[OutboxJob]:
    """The coach's jobs waiting in the outbox."""
    async with container.sessionmaker() as session:
        stmt = select(OutboxJob).where(OutboxJob.coach_id == coach_id).order_by(OutboxJob.created_at)
        return list((await session.scalars(stmt)).all())


async def run_worker(settings: Settings, services: Services, registry: ProviderRegistry, redis_url: str) -> None:
    """The real arq workers (main, then alerts) in burst mode on this module's Redis, until their queues are
    empty."""
    await run_workers(build_workers(settings, services.database_url, redis_url, burst=True, registry=registry))


async def test_a_turn_during_a_redis_outage_is_answered_and_its_jobs_run_once_redis_is_back(
    outage_http: httpx.AsyncClient,
    outage_container: Container,
    redis_up: RedisProcess,
    model: FakeModel,
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
) -> None:
    setup = await new_setup(outage_http, "Outage Coach")  # the response cache is on (a day, the default)
    redis_up.stop()

    # the client's turn: answered by the model, the cache look-up a miss
    started = time.perf_counter()
    body = await chat(outage_http, setup, "I want to run the Berlin marathon in September, where do I start?")
    turn_s = time.perf_counter() - started
    assert body["reply"] == REPLY and body["handoff"] is None and model.chat_turns == 1
    assert turn_s < 5, f"the turn took {turn_s:.1f} s with Redis down"
    conversation_id = body["conversation_id"]
    response = await outage_http.get(f"/api/v1/conversations/{conversation_id}", headers=setup.coach_headers)
    [_, ai] = response.json()["messages"]
    assert ai["id"] == body["message_id"] and ai["metadata"]["cache"] == "miss" and "error" not in ai["metadata"]

    # the client's thumbs-up, then the end of the session: stored, their jobs kept
    response = await outage_http.post(
        f"/api/v1/messages/{body['message_id']}/feedback", headers=setup.client_headers, json={"helpful": True}
    )
    assert response.status_code == 200, response.text
    response = await outage_http.post(
        f"/api/v1/widget/conversations/{conversation_id}/end-session", headers=setup.client_headers
    )
    assert response.status_code == 200 and response.json()["session_id"], response.text

    kept = await waiting_jobs(outage_container, setup.coach_id)
    assert Counter(job.name for job in kept) == {
        jobs.EXTRACT_INSIGHTS: 1,  # the forced one at the session's end (one client message: none after the reply)
        jobs.REFRESH_TRAINING_DATA: 1,
        jobs.SCORE_INTERVENTIONS: 1,
        jobs.SUMMARIZE_SESSION: 1,
        jobs.EMBED_MESSAGES: 2,  # the AI reply's episode, and the catch-up at the session's end
    }
    assert all(job.attempts >= 1 and "Connect" in (job.last_error or "") for job in kept), kept

    # Redis is back, empty: the relay (the worker's cron) sends the kept jobs and a worker runs them
    redis_up.start()
    assert await relay(outage_container.sessionmaker, outage_container.redis, [job.id for job in kept]) == len(kept)
    assert await waiting_jobs(outage_container, setup.coach_id) == []
    await run_worker(settings, services, registry, redis_up.url)

    assert model.structured["extract"] >= 1 and model.structured["summary"] == 1 and model.structured["profile"] == 1
    memory = (await outage_http.get("/api/v1/widget/memory", headers=setup.client_headers)).json()
    assert [insight["text"] for insight in memory["insights"]] == [MARATHON]
    [summary] = memory["summaries"]
    assert summary["summary"].startswith("In this session the client said: I want to run the Berlin marathon")
    async with tenant_session(outage_container.sessionmaker, setup.coach_id) as session:
        examples = (
            await session.scalars(
                select(TrainingExample).where(TrainingExample.conversation_id == uuid.UUID(conversation_id))
            )
        ).all()
    assert [(example.kind, str(example.message_id)) for example in examples] == [("sft", body["message_id"])]
    assert await waiting_jobs(outage_container, setup.coach_id) == []


async def test_a_crisis_alert_survives_a_redis_outage(
    outage_http: httpx.AsyncClient,
    outage_container: Container,
    redis_up: RedisProcess,
    model: FakeModel,
    receiver: Receiver,
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
) -> None:
    setup = await new_setup(outage_http, "Crisis Coach", alert_webhook_url=receiver.url)
    redis_up.stop()

    body = await chat(outage_http, setup, CRISIS)
    assert body["reply"] == crisis_reply("Crisis Coach") and body["handoff"]["reason"] == "crisis"
    assert model.chat_turns == 0  # the crisis reply is written without the model
    response = await outage_http.get("/api/v1/handoffs", headers=setup.coach_headers, params={"status": "open"})
    [handoff] = response.json()
    assert handoff["reason"] == "crisis" and handoff["conversation_id"] == body["conversation_id"]
    [alert] = [job for job in await waiting_jobs(outage_container, setup.coach_id) if job.name != jobs.EMBED_MESSAGES]
    assert alert.name == jobs.DELIVER_ALERT and alert.args == [str(setup.coach_id), handoff["id"], "opened", "crisis"]
    assert alert.attempts == 1 and receiver.bodies == []

    redis_up.start()
    assert await relay(outage_container.sessionmaker, outage_container.redis, [alert.id]) == 1
    await run_worker(settings, services, registry, redis_up.url)
    assert len(receiver.bodies) == 1
    assert receiver.bodies[0]["data"]["handoff_id"] == handoff["id"], receiver.bodies[0]

    # sent once: nothing is left to relay, and another worker run sends nothing more
    assert await relay(outage_container.sessionmaker, outage_container.redis, [alert.id]) == 0
    await run_worker(settings, services, registry, redis_up.url)
    assert len(receiver.bodies) == 1


async def test_the_worker_waits_out_the_outage_and_its_relay_cron_sends_the_kept_alert(
    outage_http: httpx.AsyncClient,
    outage_container: Container,
    redis_up: RedisProcess,
    model: FakeModel,
    receiver: Receiver,
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
) -> None:
    """The long-lived worker (not burst) through a Redis outage, as ``opencoach worker`` runs it: arq's own
    worker would end at the first connection error; this one waits, and its 10-second relay cron sends the
    alert that a crisis during the outage left in the outbox. Only the relay cron runs here (the others sweep
    every tenant of the shared test database)."""
    setup = await new_setup(outage_http, "Worker Coach", alert_webhook_url=receiver.url)
    worker = build_workers(settings, services.database_url, redis_up.url, registry=registry)[1]  # the alert worker
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # the worker took the test process's signals
        loop.remove_signal_handler(signum)
    worker.cron_jobs = [cron for cron in worker.cron_jobs if cron.coroutine is relay_outbox]
    assert len(worker.cron_jobs) == 1
    task = asyncio.create_task(worker.main())
    try:
        await asyncio.sleep(1.0)  # started
        redis_up.stop()
        body = await chat(outage_http, setup, CRISIS)
        assert body["handoff"]["reason"] == "crisis"
        await asyncio.sleep(2.5)  # the worker polls a dead Redis meanwhile
        assert not task.done(), task
        waiting = await waiting_jobs(outage_container, setup.coach_id)
        assert [job.name for job in waiting if job.name != jobs.EMBED_MESSAGES] == [jobs.DELIVER_ALERT]
        assert receiver.bodies == []

        redis_up.start()
        # the next relay cron (every 10 s), then the job
        assert await asyncio.to_thread(receiver.arrived.wait, 30), "no alert 30 s after Redis came back"
        assert not task.done()
        assert await waiting_jobs(outage_container, setup.coach_id) == []
        await asyncio.sleep(1.0)
        assert len(receiver.bodies) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()


async def next_event(ws: Any, kind: str, wait: float = 10) -> dict[str, Any]:
    """The next event of type ``kind`` on a widget socket (others are skipped)."""
    async with asyncio.timeout(wait):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == kind:
                return event  # type: ignore[no-any-return]


async def probe_until_received(container: Container, ws: Any, client_id: uuid.UUID, n: int, wait: float = 30) -> None:
    """Publish the event ``{"type": "probe", "n": n}`` to ``client_id`` every :data:`live.RECONNECT_S` until the
    widget socket ``ws`` receives it; fails after ``wait`` seconds. Redis pub/sub keeps nothing for a channel
    nobody listens to, so a probe published before the app's listener has resubscribed is lost: a fixed sleep
    before one probe failed on a loaded machine."""
    async with asyncio.timeout(wait):
        while True:
            await container.live.publish({"type": "probe", "n": n}, client_id=client_id)
            try:
                if (await next_event(ws, "probe", wait=live.RECONNECT_S))["n"] == n:
                    return
            except TimeoutError:
                continue


async def test_the_widget_socket_chats_during_the_outage_and_live_events_resume_after_it(
    outage_http: httpx.AsyncClient,
    outage_container: Container,
    redis_up: RedisProcess,
    model: FakeModel,
) -> None:
    """A widget socket opened before the outage, and one opened during it (which still streams its turn),
    both receive live events again once Redis is back: the app's subscriber reconnects and resubscribes
    (Litestar's own backend stopped listening at the first connection error, until the app restarted)."""
    setup = await new_setup(outage_http, "Live Coach")
    response = await outage_http.post("/api/v1/clients", headers=setup.coach_headers, json={"name": "Sam"})
    assert response.status_code == 201, response.text
    second = response.json()  # a client whose channel is first subscribed during the outage
    response = await outage_http.get("/api/v1/clients", headers=setup.coach_headers)
    [first_id] = [uuid.UUID(c["id"]) for c in response.json() if c["id"] != second["id"]]
    base = str(outage_http.base_url).replace("http://", "ws://") + "/ws/chat?token="
    first_token = setup.client_headers["Authorization"].removeprefix("Bearer ")
    async with websockets.connect(base + first_token) as before:
        await asyncio.sleep(0.3)  # subscribed
        await outage_container.live.publish({"type": "probe", "n": 1}, client_id=first_id)
        assert (await next_event(before, "probe"))["n"] == 1

        redis_up.stop()
        async with websockets.connect(base + second["widget_token"]) as during:
            await during.send(json.dumps({"text": "How do I plan my week?"}))
            tokens = []
            while (event := json.loads(await during.recv()))["type"] in ("ack", "token"):  # ack: stored
                if event["type"] == "token":
                    tokens.append(event["text"])
            assert event["type"] == "done" and event["reply"] == REPLY == "".join(tokens)

            redis_up.start()  # the listener reconnects (every live.RECONNECT_S) and resubscribes
            await probe_until_received(outage_container, before, first_id, 2)
            await probe_until_received(outage_container, during, uuid.UUID(second["id"]), 3)
