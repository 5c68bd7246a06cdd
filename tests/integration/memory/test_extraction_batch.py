"""A reply queues L3 extraction only once INSIGHT_BATCH client messages are unread: before that the job would
only answer "waiting" (app.memory.insights.extraction_due), so the turn spares the worker the job. Extractions
of one conversation run one at a time under a short, renewed Redis lease; a job that finds it taken does not wait
in its worker slot."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from arq.constants import default_queue_name

from app import worker
from app.container import Container
from app.core.config import Settings
from app.db.jobs import EXTRACT_INSIGHTS
from app.db.leases import leased
from app.memory import insights
from app.memory.insights import INSIGHT_BATCH
from tests.integration.chat.test_turn_stages import model
from tests.integration.handoff.test_handoff_flow import Setup, chat, new_setup

__all__ = ["model", "new_setup"]

MESSAGES = (
    "I want to sleep better before my exams.",
    "My manager keeps moving my deadlines.",
    "I started running twice a week, it helps.",
    "My sister visits next month and I am nervous about it.",
    "Cooking at home saves me money.",
)


async def test_extraction_is_queued_from_the_batch_th_unread_client_message_on(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    container: Container,
) -> None:
    setup = await new_setup("Batch Coach")
    conversation_id, queued = None, []
    for text in MESSAGES[: INSIGHT_BATCH + 1]:
        body = await chat(http, setup, text, conversation_id)
        assert body["reply"] == "Start with one task.", body
        conversation_id = body["conversation_id"]
        job_id = f"{EXTRACT_INSIGHTS}:{body['message_id']}:False"
        queued.append(await container.redis.zscore(default_queue_name, job_id) is not None)

    assert queued == [False] * (INSIGHT_BATCH - 1) + [True, True]  # no run has moved the watermark yet


async def test_an_extraction_job_that_finds_the_conversation_busy_frees_its_worker_slot(container: Container) -> None:
    """While another extraction of the conversation holds its lock (or a killed worker's lock has not lapsed yet),
    the job does not wait for it in its worker slot (it waited up to 30 minutes: with ``WORKER_MAX_JOBS`` 2, two
    such jobs starved every other job): it queues itself again ``INSIGHTS_WAIT_S`` later, under a new id, and
    ends; that run extracts what the running one did not read."""
    coach_id, conversation_id = str(uuid.uuid4()), str(uuid.uuid4())
    other = container.redis.lock(f"lock:{conversation_id}:insights", timeout=60)
    assert await other.acquire(blocking=False)
    try:
        job = worker.extract_insights({"container": container, "job_try": 1}, coach_id, conversation_id, True)
        result = await asyncio.wait_for(job, timeout=5)
    finally:
        await other.release()
    assert result.startswith("deferred")
    [again] = [j for j in await container.redis.queued_jobs() if j.args[:2] == (coach_id, conversation_id)]
    assert (again.function, again.args) == (EXTRACT_INSIGHTS, (coach_id, conversation_id, True))
    assert again.job_id.startswith(f"{EXTRACT_INSIGHTS}:{conversation_id}:wait:")
    delay_s = again.score / 1000 - time.time()
    assert worker.INSIGHTS_WAIT_S - 5 < delay_s <= worker.INSIGHTS_WAIT_S


async def test_an_extractions_lock_is_a_short_lease_that_lapses_soon_after_its_holder_died(
    container: Container, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversation's lock lives ``WORKER_LEASE_SECONDS`` (it lived 30 minutes: a worker killed mid-extraction
    held the conversation's extractions up that long), renewed while its holder runs, and is released at the
    end."""
    conversation_id = uuid.uuid4()
    key = f"lock:{conversation_id}:insights"
    seen: list[int] = []
    real = insights.unit_of_work

    @contextlib.asynccontextmanager
    async def watched(*args: Any) -> AsyncIterator[Any]:
        seen.append(await container.redis.pttl(key))
        async with real(*args) as uow:
            yield uow

    monkeypatch.setattr(insights, "unit_of_work", watched)
    assert await container.insights.extract_insights(uuid.uuid4(), conversation_id, force=True) == "gone"
    assert seen and 0 < seen[0] <= settings.worker_lease_seconds * 1000
    assert not await container.redis.exists(key)

    async with leased(container.redis.lock(key, timeout=0.6)) as held:
        assert held
        await asyncio.sleep(1.2)  # twice its lifetime: renewed meanwhile
        assert await container.redis.pttl(key) > 0
        async with leased(container.redis.lock(key, timeout=0.6)) as second:
            assert not second, "a second holder does not get it, nor waits"
    assert not await container.redis.exists(key)
