"""One insight extraction of a conversation at a time, under a short Redis lease: a job that finds another running
ends at once (no worker slot held waiting, no copy of itself queued) and the running one serves its request
when done, so every batch is extracted once; a killed holder's lease lapses within ``WORKER_LEASE_SECONDS``.

The coach's model is the fake OpenAI endpoint of :mod:`tests.integration.memory.test_memory_pipeline`; jobs are
the worker's own ``extract_insights``, called directly or run by a burst worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest
from arq.constants import default_queue_name
from arq.jobs import JobDef
from sqlalchemy import func, select

from app import worker
from app.container import Container
from app.conversations.models import Conversation, Message
from app.core.config import Settings
from app.db.engine import tenant_session
from app.db.jobs import EXTRACT_INSIGHTS
from app.llm.base import ProviderError
from app.memory.insights import INSIGHT_BATCH, InsightService
from tests.conftest import Coach
from tests.integration.memory.memory_wire import new_client_lines
from tests.integration.memory.test_memory_pipeline import FakeOpenAI, coach, llm, new_client, say

__all__ = ["coach", "llm"]

GUARD_S = 30
"""The tests' own bound on a job that should end at once (the old lock made it wait up to 30 minutes)."""


async def _conversation(
    container: Container, coach: Coach, client_id: uuid.UUID, texts: list[str], conversation: uuid.UUID | None = None
) -> uuid.UUID:
    """The client says ``texts`` in turn (one conversation); returns its id."""
    for text in texts:
        conversation = (await say(container, coach, client_id, text, conversation)).conversation_id
    assert conversation is not None
    return conversation


def _job(container: Container, coach: Coach, conversation: uuid.UUID, *, force: bool = False) -> Awaitable[str]:
    """One run of the worker's ``extract_insights`` job (its first try)."""
    ctx = {"container": container, "job_try": 1}
    return worker.extract_insights(ctx, coach.coach_id, str(conversation), force)


def _extracted(llm: FakeOpenAI) -> list[list[str]]:
    """The client's lines of each extraction request the model got, in order."""
    requests = [body["messages"][-1]["content"] for body in llm.structured["extract"]]
    return [[text for _, text in new_client_lines(request)] for request in requests]


def _jobs_of(conversation: uuid.UUID, jobs: Sequence[JobDef]) -> set[str]:
    """The ids of the ``extract_insights`` jobs of ``conversation`` among ``jobs`` (queued ones, or results)."""
    return {job.job_id or "" for job in jobs if job.function == EXTRACT_INSIGHTS and job.args[1] == str(conversation)}


async def _watermark_is_last_message(container: Container, coach: Coach, conversation: uuid.UUID) -> bool:
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        through = (await session.get_one(Conversation, conversation)).insights_extracted_through
        last = await session.scalar(select(func.max(Message.created_at)).where(Message.conversation_id == conversation))
    return through == last


async def test_a_batch_said_while_the_conversation_is_extracted_is_extracted_next_and_its_job_ends_at_once(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While one extraction runs, the client says a second batch. Its job ends at once, queuing nothing (it
    waited for the lock in its worker slot, up to 30 minutes, starving the worker's other jobs; then it queued a
    copy of itself, and such copies took turns for ever with a failing job's retries). The running extraction
    then extracts the second batch too: each batch once. Its lease lives half of ``WORKER_LEASE_SECONDS`` (the
    lock lived 30 minutes, holding the conversation up that long after a worker was killed). The coach has two
    memory slots here, so the second job meets the conversation's lease, not its coach's cap."""
    monkeypatch.setattr(settings, "memory_jobs_per_coach", 2)
    client_id = await new_client(http, coach, "Lena")
    first = [f"First batch, message {n}." for n in range(INSIGHT_BATCH)]
    second = [f"Second batch, message {n}." for n in range(INSIGHT_BATCH)]
    conversation = await _conversation(container, coach, client_id, first)
    reading, go_on = asyncio.Event(), asyncio.Event()
    lease_ms: list[int] = []
    extract_window = InsightService._extract_window

    async def held(self: InsightService, *args: Any) -> int:
        reading.set()
        lease_ms.append(await container.redis.pttl(f"lock:{conversation}:insights"))
        await go_on.wait()
        return await extract_window(self, *args)

    monkeypatch.setattr(InsightService, "_extract_window", held)
    running = asyncio.create_task(_job(container, coach, conversation))
    await asyncio.wait_for(reading.wait(), GUARD_S)
    await _conversation(container, coach, client_id, second, conversation)
    queued = await container.redis.zrange(default_queue_name, 0, -1)

    status = await asyncio.wait_for(_job(container, coach, conversation), GUARD_S)

    assert "running" in status
    assert await container.redis.zrange(default_queue_name, 0, -1) == queued, "no copy of the job was queued"
    go_on.set()
    assert (await asyncio.wait_for(running, GUARD_S)).endswith("insights stored or updated")
    assert _extracted(llm) == [first, second]
    assert await _watermark_is_last_message(container, coach, conversation)
    assert 0 < lease_ms[0] <= settings.worker_lease_seconds * 1000 / 2


async def test_a_killed_holders_lease_lapses_and_the_next_job_serves_the_request_made_meanwhile(
    container: Container, http: httpx.AsyncClient, coach: Coach, llm: FakeOpenAI
) -> None:
    """A worker killed mid-extraction leaves the conversation's lease, which nobody renews. The session's end
    (a forced extraction) finds it taken and ends at once; once the lease has lapsed, the conversation's next
    job (the killed one run again, or the next reply's) proceeds and serves that forced request: the session's
    last messages, fewer than a batch, are extracted."""
    client_id = await new_client(http, coach, "Omar")
    said = ["I sleep badly before exams.", "My sister visits next month."]
    conversation = await _conversation(container, coach, client_id, said)
    key = f"lock:{conversation}:insights"
    await container.redis.set(key, "a killed worker's token", px=500)

    status = await asyncio.wait_for(_job(container, coach, conversation, force=True), GUARD_S)

    assert "running" in status and _extracted(llm) == []
    deadline = time.monotonic() + GUARD_S
    while await container.redis.exists(key):
        assert time.monotonic() < deadline, "the lease never lapsed"
        await asyncio.sleep(0.1)
    assert (await _job(container, coach, conversation)).endswith("insights stored or updated")
    assert _extracted(llm) == [said]


async def test_two_jobs_of_a_conversation_whose_model_fails_both_end(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """``bench/chat.py --instant`` never settled: its model cannot answer an extraction, and the two jobs the
    turns queued for one conversation (from the batch's last message on) ran for ever, each finding the other's
    failing try holding the lock and queuing a copy of itself whose tries started afresh. Now the two jobs end
    within their tries and nothing is left queued (a job over its coach's memory slots queues a copy of itself
    at the try it is at, its id the job's with ``:wait:…``); once the model is back, the conversation's next job
    extracts the unread messages once."""
    client_id = await new_client(http, coach, "Ines")
    said = [f"Message {n} of the batch." for n in range(INSIGHT_BATCH + 1)]
    conversation = await _conversation(container, coach, client_id, said)
    tries: list[uuid.UUID] = []

    async def failing(self: InsightService, *args: Any) -> int:
        tries.append(args[-1][0].conversation_id)  # the window's first message
        raise ProviderError("APIResponseValidationError: the response does not match the API")

    monkeypatch.setattr(InsightService, "_extract_window", failing)
    monkeypatch.setattr(worker, "RETRY_DELAY_S", 0.1)
    queued = _jobs_of(conversation, await container.redis.queued_jobs())
    assert len(queued) == 2
    await asyncio.wait_for(run_jobs(), 120)  # a burst worker returns once its queue is empty, deferred jobs too

    ran = {job_id.split(":wait:")[0] for job_id in _jobs_of(conversation, await container.redis.all_job_results())}
    assert ran == queued, "the jobs the turns queued ran (or their copies), and no other"
    assert 0 < tries.count(conversation) <= 2 * worker.MEMORY_JOB_TRIES
    monkeypatch.undo()

    extra = "One more thing before I go."
    await _conversation(container, coach, client_id, [extra], conversation)
    await asyncio.wait_for(run_jobs(), 120)
    assert _extracted(llm) == [[*said, extra]]
