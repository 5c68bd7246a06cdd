"""Per-coach memory slots (``MEMORY_JOBS_PER_COACH``): one coach's model-bound memory jobs take at most that many
of the worker's slots, the rest wait off the worker, so another coach's jobs queued after them run at once.

The coaches' model is the fake OpenAI endpoint of :mod:`tests.integration.memory.test_memory_pipeline`, made slow;
jobs run on the real workers (``build_workers``, burst) against the tests' PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest
from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import Job

from app import worker
from app.container import Container
from app.core.config import Settings
from app.core.runtime import Services
from app.db.jobs import EXTRACT_INSIGHTS
from app.llm.registry import ProviderRegistry
from app.worker import CoachSlots, build_workers, run_workers
from tests.conftest import Coach
from tests.integration.memory.test_memory_pipeline import (
    COMPLETIONS_URL,
    LLM_BASE_URL,
    LLM_KEY,
    LLM_MODEL,
    FakeOpenAI,
    new_client,
    say,
)
from tests.openai_wire import mock_openai

MODEL_S = 1.0
"""How long the slow model takes over each extraction."""
BIG_JOBS = 4
"""The big coach's extractions, queued first: two rounds of the worker's two slots."""
SMALL = "zebra-small"
MARKERS = (*(f"zebra-big-{n}" for n in range(BIG_JOBS)), SMALL)
"""What each conversation's client says (and is named), to tell the extractions apart."""


class SlowOpenAI(FakeOpenAI):
    """:class:`FakeOpenAI` answering each extraction after :data:`MODEL_S` seconds; ``answered`` lists, in the order
    they were answered, the marker (:data:`MARKERS`) of the line each extraction read."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[str] = []

    async def slow(self, request: httpx.Request) -> httpx.Response:
        response = self(request)
        body = json.loads(request.content)
        if not body.get("stream"):
            await asyncio.sleep(MODEL_S)
            user = body["messages"][-1]["content"]
            self.answered.extend(m for m in MARKERS if m in user)
        return response


@pytest.fixture
def slow_llm() -> Iterator[SlowOpenAI]:
    fake = SlowOpenAI()
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        router.post(COMPLETIONS_URL).mock(side_effect=fake.slow)
        yield fake


async def _coach_on_the_endpoint(http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]) -> Coach:
    coach = await make_coach("Coach " + uuid.uuid4().hex[:6])
    endpoint = {"llm_provider": "openai", "llm_model": LLM_MODEL, "llm_base_url": LLM_BASE_URL, "llm_api_key": LLM_KEY}
    response = await http.patch("/api/v1/settings", headers=coach.headers, json=endpoint)
    assert response.status_code == 200, response.text
    return coach


async def test_a_coach_with_many_memory_jobs_takes_one_slot_and_another_coachs_job_runs_at_once(
    container: Container,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    run_jobs: Callable[[], Awaitable[None]],
    slow_llm: SlowOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A big coach's four slow insight extractions are queued first, a small coach's one after them, and the
    worker has two slots with ``MEMORY_JOBS_PER_COACH`` = 1: the small coach's extraction is answered while the
    big coach's are still being worked through (at least two of them after it). Without the cap the big coach's
    jobs took both slots, round after round, and the small coach's ran last."""
    big, small = await _coach_on_the_endpoint(http, make_coach), await _coach_on_the_endpoint(http, make_coach)
    conversations = []
    for coach, marker in [(big, marker) for marker in MARKERS[:-1]] + [(small, SMALL)]:
        client_id = await new_client(http, coach, marker)
        said = await say(container, coach, client_id, f"A note from {marker} for the coach")
        conversations.append((coach, said.conversation_id))
    await run_jobs()  # the turns' own follow-ups, so the queue holds only the extractions below
    slow_llm.answered.clear()
    monkeypatch.setattr(worker, "MEMORY_WAIT_S", 0.5)
    ids = []
    for n, (coach, conversation) in enumerate(conversations):
        job_id = f"{EXTRACT_INSIGHTS}:slots-test:{uuid.uuid4().hex}"
        await container.redis.enqueue_job(
            EXTRACT_INSIGHTS, coach.coach_id, str(conversation), True, _job_id=job_id, _defer_by=n * 0.01
        )
        ids.append(job_id)
    capped = settings.model_copy(update={"memory_jobs_per_coach": 1, "worker_max_jobs": 2})

    await asyncio.wait_for(
        run_workers(build_workers(capped, services.database_url, services.redis_url, burst=True, registry=registry)),
        120,
    )

    assert sorted(slow_llm.answered) == sorted(MARKERS)
    assert slow_llm.answered.index(SMALL) < len(slow_llm.answered) - 2, slow_llm.answered
    small_result = await Job(ids[-1], container.redis).result_info()
    assert small_result is not None and small_result.success, small_result


async def test_slots_cap_each_kind_per_coach_and_a_job_over_the_cap_is_queued_again_at_its_try(
    container: Container,
) -> None:
    """With one memory slot a coach's second memory job finds none, while its ingestion slot and another coach's
    memory slot are free; the job over the cap queues a copy of itself (same arguments, its try, a new id from
    its own, deferred) and runs nothing."""
    coach, other = str(uuid.uuid4()), str(uuid.uuid4())
    memory = CoachSlots(container.redis, "memory", 1, 30, 60)
    ingest = CoachSlots(container.redis, "ingest", 1, 30, 60)
    async with memory.hold(coach) as first:
        async with memory.hold(coach) as second, ingest.hold(coach) as ingesting, memory.hold(other) as others:
            assert (first, second, ingesting, others) == (True, False, True, True)
        ran: list[str] = []

        async def work() -> str:
            ran.append("ran")
            return "done"

        ctx = {"job_id": "extract_insights:m1:True:wait:0ld", "job_try": 3}
        status = await memory.run(ctx, EXTRACT_INSIGHTS, (coach, "conversation", True), work)
    assert status.startswith("deferred") and ran == []
    copies = [job for job in await container.redis.queued_jobs() if job.args[0] == coach]
    copy = (EXTRACT_INSIGHTS, (coach, "conversation", True), 3)
    assert [(job.function, job.args, job.job_try) for job in copies] == [copy]
    assert (copies[0].job_id or "").startswith("extract_insights:m1:True:wait:")
    assert copies[0].job_id != ctx["job_id"]
    await container.redis.delete(job_key_prefix + (copies[0].job_id or ""))
    await container.redis.zrem(default_queue_name, copies[0].job_id or "")
    assert await memory.run({"job_id": "x", "job_try": 1}, EXTRACT_INSIGHTS, (coach,), work) == "done"
