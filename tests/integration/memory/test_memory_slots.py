"""Per-coach memory slots (``MEMORY_JOBS_PER_COACH``): one coach's model-bound memory jobs take at most that many
of the worker's slots, the rest wait off the worker, so another coach's jobs queued after them run at once.

The coaches' model is the fake OpenAI endpoint of :mod:`tests.integration.memory.test_memory_pipeline`, made slow;
jobs run on the real workers (``build_workers``, burst) against the tests' PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest
from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import Job, JobDef, JobResult

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
    """:class:`FakeOpenAI` answering each extraction after ``delay_s`` (:data:`MODEL_S`) seconds; ``answered`` lists,
    in the order they were answered, the marker (:data:`MARKERS`) of the line each extraction read."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[str] = []
        self.delay_s = MODEL_S

    async def slow(self, request: httpx.Request) -> httpx.Response:
        response = self(request)
        body = json.loads(request.content)
        if not body.get("stream"):
            await asyncio.sleep(self.delay_s)
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
    memory = CoachSlots(container.redis, "memory", 1, 30, 30, 60)
    ingest = CoachSlots(container.redis, "ingest", 1, 30, 30, 60)
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
    assert (copies[0].job_id or "").startswith("extract_insights:m1:True:wait:1:")  # the first deferral it counts
    assert copies[0].job_id != ctx["job_id"]
    await container.redis.delete(job_key_prefix + (copies[0].job_id or ""))
    await container.redis.zrem(default_queue_name, copies[0].job_id or "")
    assert await memory.run({"job_id": "x", "job_try": 1}, EXTRACT_INSIGHTS, (coach,), work) == "done"


def _defer_s(job: JobDef) -> float:
    """Seconds from ``job``'s queueing to its start (arq's queue score, ms)."""
    return (job.score or 0) / 1000 - round(job.enqueue_time.timestamp() * 1000) / 1000


async def test_a_waiting_job_waits_longer_the_more_it_was_deferred_with_jitter_up_to_the_cap(
    container: Container,
) -> None:
    """A job over its coach's slot queues a copy whose id counts its deferrals (``:wait:<n>:``) and whose wait is
    random up to ``wait_s * 2**n`` seconds, never past the cap (capped exponential backoff, full jitter): twenty
    first deferrals wait at most ``wait_s`` (1 s), twenty eighth ones spread up to the cap (60 s), and a count
    past any power a float holds still waits within the cap. A fixed wait gave every copy ``wait_s``."""
    coach = str(uuid.uuid4())
    memory = CoachSlots(container.redis, "memory", 1, 30, 1, 60)

    async def work() -> str:
        raise AssertionError("ran without the coach's slot")

    async def copies_from(job_id: str) -> list[JobDef]:
        for _ in range(20):
            ctx = {"job_id": job_id, "job_try": 1}
            assert (await memory.run(ctx, EXTRACT_INSIGHTS, (coach, "c", True), work)).startswith("deferred")
        copies = [job for job in await container.redis.queued_jobs() if job.args[0] == coach]
        for job in copies:
            await container.redis.delete(job_key_prefix + (job.job_id or ""))
            await container.redis.zrem(default_queue_name, job.job_id or "")
        assert len(copies) == 20
        return copies

    async with memory.hold(coach) as held:
        assert held
        first = await copies_from(f"{EXTRACT_INSIGHTS}:backoff")
        eighth = await copies_from(f"{EXTRACT_INSIGHTS}:backoff:wait:7:{uuid.uuid4().hex}")
        far = await copies_from(f"{EXTRACT_INSIGHTS}:backoff:wait:5000:{uuid.uuid4().hex}")
    assert all((job.job_id or "").startswith(f"{EXTRACT_INSIGHTS}:backoff:wait:1:") for job in first)
    assert all((job.job_id or "").startswith(f"{EXTRACT_INSIGHTS}:backoff:wait:8:") for job in eighth)
    assert all((job.job_id or "").startswith(f"{EXTRACT_INSIGHTS}:backoff:wait:5001:") for job in far)
    assert all(0 <= _defer_s(job) <= 1.001 for job in first), [_defer_s(job) for job in first]
    assert all(0 <= _defer_s(job) <= 60.001 for job in eighth + far)
    # twenty uniform draws over 0…60 s all under 5 s: a chance of (1/12)**20
    assert max(_defer_s(job) for job in eighth) > 5 and max(_defer_s(job) for job in far) > 5


WAITING_JOBS = 20
HELD_S = 10.0
"""How long the test holds the coach's memory slot while its :data:`WAITING_JOBS` extractions wait."""


async def test_jobs_waiting_long_for_their_coachs_slot_back_off_and_each_runs_once_when_it_frees(
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
    """Twenty extractions of one coach wait :data:`HELD_S` seconds for its memory slot (held by the test), on the
    real worker with a wait of 0.1 s up to a cap of 4 s. Over that window they defer about ten times each
    (a backoff climbing to the cap), far fewer than the forty and more each of a fixed 0.1 s wait (a copy on every
    poll); once the slot frees each of them runs exactly once (one result that is not a deferral, among its own
    and its copies') and the queue is left empty."""
    slow_llm.delay_s = 0
    coach = await _coach_on_the_endpoint(http, make_coach)
    client_id = await new_client(http, coach, "zebra-waiting")
    said = await say(container, coach, client_id, "A note from zebra-waiting for the coach")
    await run_jobs()  # the turn's own follow-ups
    monkeypatch.setattr(worker, "MEMORY_WAIT_S", 0.1)
    monkeypatch.setattr(worker, "MEMORY_WAIT_CAP_S", 4.0, raising=False)  # raising: the fixed wait had no cap
    prefix = f"{EXTRACT_INSIGHTS}:churn-test:{uuid.uuid4().hex}"
    ids = [f"{prefix}:{n}" for n in range(WAITING_JOBS)]
    for job_id in ids:
        await container.redis.enqueue_job(
            EXTRACT_INSIGHTS, coach.coach_id, str(said.conversation_id), True, _job_id=job_id
        )
    capped = settings.model_copy(update={"memory_jobs_per_coach": 1, "worker_max_jobs": 4})
    workers = build_workers(capped, services.database_url, services.redis_url, burst=True, registry=registry)

    async def outcomes() -> list[JobResult]:
        return [r for r in await container.redis.all_job_results() if (r.job_id or "").startswith(prefix + ":")]

    async with CoachSlots(container.redis, "memory", 1, settings.worker_lease_seconds, 1, 1).hold(coach.coach_id):
        running = asyncio.create_task(run_workers(workers))
        await asyncio.sleep(HELD_S)
        while_held = await outcomes()
    await asyncio.wait_for(running, 120)

    assert all(str(r.result).startswith("deferred") for r in while_held)
    assert len(while_held) < WAITING_JOBS * 20, len(while_held)  # a fixed 0.1 s wait: 40 and more each
    done = [r for r in await outcomes() if not str(r.result).startswith("deferred")]
    assert sorted(r.job_id.split(":wait:")[0] for r in done if r.job_id) == sorted(ids)
    assert all(r.success for r in done), done
    assert await container.redis.queued_jobs() == []


class _LongestWait:
    """A backoff without jitter: every copy waits 30 s, so one runs early only when woken."""

    def compute(self, failures: int) -> float:
        return 30.0


async def _due_in(container: Container, coach: str) -> dict[str, float]:
    """Seconds until each queued job of ``coach`` is due, by its second argument."""
    now = time.time()
    return {
        job.args[1]: (job.score or 0) / 1000 - now
        for job in await container.redis.queued_jobs()
        if job.args[0] == coach
    }


async def test_a_job_ending_in_its_slot_wakes_the_coachs_longest_waiting_job(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs b, c, d and e of a coach find its one slot taken, in that order, and their copies wait 30 s. When the
    job in the slot ends, b's copy is due at once while the others wait; when b's ends, c's. Another slot's end
    before c's copy ran wakes d's (c's is due already). Copies no longer queued are passed over and leave the
    waiting list. Before, each copy waited out its own backoff (up to 60 s for memory jobs, the slot idle
    meanwhile), and which one came first was random."""
    coach = str(uuid.uuid4())
    memory = CoachSlots(container.redis, "memory", 1, 30, 30, 60)
    monkeypatch.setattr(memory, "_backoff", _LongestWait())
    started, release = asyncio.Event(), asyncio.Event()

    async def first() -> str:
        started.set()
        await release.wait()
        return "first"

    async def later() -> str:
        return "later"

    async def never() -> str:
        raise AssertionError("ran without the coach's slot")

    async def due_now() -> set[str]:
        due = await _due_in(container, coach)
        assert all(d <= 0.5 or d > 25 for d in due.values()), due
        return {name for name, d in due.items() if d <= 0.5}

    holding = asyncio.create_task(memory.run({"job_id": "a", "job_try": 1}, EXTRACT_INSIGHTS, (coach, "a"), first))
    await started.wait()
    for name in "bcde":
        ctx = {"job_id": f"{EXTRACT_INSIGHTS}:wake-test:{name}", "job_try": 1}
        assert (await memory.run(ctx, EXTRACT_INSIGHTS, (coach, name), never)).startswith("deferred")
    copies = {job.args[1]: job.job_id or "" for job in await container.redis.queued_jobs() if job.args[0] == coach}
    assert sorted(copies) == ["b", "c", "d", "e"] and await due_now() == set()
    try:
        release.set()
        assert await holding == "first"
        assert await due_now() == {"b"}

        assert await memory.run({"job_id": copies["b"], "job_try": 1}, EXTRACT_INSIGHTS, (coach, "b"), later) == "later"
        await container.redis.zrem(default_queue_name, copies["b"])  # as arq does once a job ends
        assert await due_now() == {"c"}
        await memory._wake(coach)  # another slot's end, before c's copy ran
        assert await due_now() == {"c", "d"}

        for name in "cd":  # their copies ran elsewhere, or Redis lost them
            await container.redis.zrem(default_queue_name, copies[name])
        await memory._wake(coach)
        assert await due_now() == {"e"}
        assert await container.redis.zrange(f"opencoach:memory:{coach}:waiting", 0, -1) == [
            copies["e"].split(":wait:")[0].encode()
        ]
    finally:
        for job_id in copies.values():
            await container.redis.delete(job_key_prefix + job_id)
            await container.redis.zrem(default_queue_name, job_id)


async def test_two_slots_freed_at_once_wake_two_waiting_jobs(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs ending together each wake one waiting job: b's copy and c's, not b's twice (the wake read the
    waiting list and moved the copy in separate commands, so both ends could pick b, leaving c to wait out its
    30 s while a slot stood idle). The wake is one Lua script now."""
    coach = str(uuid.uuid4())
    memory = CoachSlots(container.redis, "memory", 2, 30, 30, 60)
    monkeypatch.setattr(memory, "_backoff", _LongestWait())

    async def never() -> str:
        raise AssertionError("ran without the coach's slot")

    async with memory.hold(coach) as first, memory.hold(coach) as second:
        assert first and second
        for name in "bcd":
            ctx = {"job_id": f"{EXTRACT_INSIGHTS}:wake-pair:{name}", "job_try": 1}
            assert (await memory.run(ctx, EXTRACT_INSIGHTS, (coach, name), never)).startswith("deferred")
    copies = [job.job_id or "" for job in await container.redis.queued_jobs() if job.args[0] == coach]
    try:
        await asyncio.gather(memory._wake(coach), memory._wake(coach))
        due = await _due_in(container, coach)
        assert sorted(name for name, d in due.items() if d <= 0.5) == ["b", "c"], due
        assert due["d"] > 25, due
    finally:
        for job_id in copies:
            await container.redis.delete(job_key_prefix + job_id)
            await container.redis.zrem(default_queue_name, job_id)
