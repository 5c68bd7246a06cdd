"""Two memory bugs found by a run as a client remembered over many sessions.

1. A session summary whose job failed (the coach's model endpoint down, or its answers refused by the summary check)
   stayed ``failed`` for good: nothing queued it again once the model was fixed, so the session was never summarised.
   Now the worker's sweep (:meth:`app.memory.summaries.SummaryService.retry_failed`) queues it again after an
   exponential back-off, a bounded number of times.
2. The product's canned messages (the handoff notice "I'm passing this to …", the crisis reply, the SLA holding
   message) were stored as episodes and recalled into later prompts as "[you, <date>] I'm passing this to …".
   They get no episode now, and recall leaves out any stored before (migration 0064 deletes those).

The summary tests run the coach of :mod:`tests.integration.memory.test_memory_pipeline` on its fake OpenAI endpoint;
migration 0064 is tested on a database of its own, migrated by a schema owner that is no superuser."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from alembic import command
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app import worker
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.core.config import Settings
from app.core.runtime import Services
from app.db.engine import tenant_session
from app.db.jobs import SUMMARIZE_SESSION
from app.db.migrate import alembic_config, upgrade_head
from app.memory.episodes import insert_episodes
from app.memory.models import ChatSession, Episode, SessionStatus
from app.memory.retrieval import recall
from app.memory.summaries import RETRY_BACKOFF, SUMMARY_JOBS
from tests.conftest import Coach, make_client
from tests.integration.memory.test_memory_pipeline import (
    FakeOpenAI,
    coach,
    end_and_run,
    job_outcome,
    llm,
    new_client,
    say,
)
from tests.integration.platform.test_migrations import _insert_at, owned_database
from tests.openai_wire import openai_completion

__all__ = ["coach", "llm"]  # fixtures used by name below

CUT_OFF = '{"summary": "Noor wants to sleep before mid'
"""A summary answer cut off at its token limit: invalid JSON, refused by the summary check."""


async def _session(container: Container, coach: Coach, session_id: uuid.UUID) -> ChatSession:
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        return await s.get_one(ChatSession, session_id)


async def _due(container: Container) -> list[uuid.UUID]:
    """The sessions the sweep's look-up finds due, of every coach."""
    async with container.sessionmaker() as s:
        return list((await s.scalars(text("SELECT session_id FROM failed_summaries_due(100000)"))).all())


async def test_a_failed_summary_is_queued_again_after_its_back_off_and_written_once_the_model_answers(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The model answers junk (three cut-off answers, the job's three samples): the session ends ``failed``, one
    failed job counted, due again after the first back-off (10 minutes), not before. Once due, the sweep sets it
    ``ended`` (pending) and queues its job, which the model, fixed meanwhile, answers: the summary is written and the
    count starts afresh. (Before, the session stayed ``failed`` for good.)"""
    client_id = await new_client(http, coach, "Noor")
    turn = await say(container, coach, client_id, "I want to be asleep before midnight on work nights.")
    llm.summary_answers = [openai_completion(CUT_OFF, finish_reason="length") for _ in range(3)]
    failed_at = datetime.now(UTC)
    session_id = await end_and_run(container, coach, turn.conversation_id, run_jobs)

    failed = await _session(container, coach, session_id)
    assert failed.status == SessionStatus.FAILED and failed.summary is None
    assert failed.summary_failures == 1
    first_wait = timedelta(seconds=RETRY_BACKOFF.compute(0))
    assert first_wait == timedelta(minutes=10)
    assert failed.summary_retry_at is not None
    assert failed_at + first_wait <= failed.summary_retry_at <= datetime.now(UTC) + first_wait
    assert session_id not in await _due(container), "not due before its back-off is over"

    # its back-off is over (the longest due of all: the sweep of one takes it first)
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        await s.execute(
            update(ChatSession)
            .where(ChatSession.id == session_id)
            .values(summary_retry_at=datetime.now(UTC) - timedelta(days=365))
        )
    assert session_id in await _due(container)
    assert await container.summaries.retry_failed(limit=1) == 1
    pending = await _session(container, coach, session_id)
    assert pending.status == SessionStatus.ENDED and pending.summary_retry_at is None
    assert session_id not in await _due(container), "queued once"
    assert await job_outcome(container, f"{SUMMARIZE_SESSION}:{session_id}:retry:1") is None, "not run yet"

    await run_jobs()  # the model answers well now (no junk left)

    summarised = await _session(container, coach, session_id)
    assert summarised.status == SessionStatus.SUMMARIZED
    assert summarised.summary is not None and "asleep before midnight" in summarised.summary["summary"]
    assert summarised.summary_error is None
    assert (summarised.summary_failures, summarised.summary_retry_at) == (0, None)
    outcome = await job_outcome(container, f"{SUMMARIZE_SESSION}:{session_id}:retry:1")
    assert outcome is not None and outcome.success, outcome


@pytest.mark.parametrize("failures", [1, 2, 5, 9, SUMMARY_JOBS])
async def test_each_failed_job_waits_twice_as_long_and_the_last_one_stands(
    container: Container, http: httpx.AsyncClient, coach: Coach, llm: FakeOpenAI, failures: int
) -> None:
    """The ``n``-th failed job of a session is due again ``min(1 day, 10 min × 2^(n − 1))`` later; the
    :data:`SUMMARY_JOBS`-th is not tried again: its failure stands, and the sweep never finds it."""
    client_id = await new_client(http, coach, f"Failing {failures}")
    turn = await say(container, coach, client_id, "My sleep keeps slipping past midnight.")
    coach_id = uuid.UUID(coach.coach_id)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        session_id = await container.sessions.end_session(uow, turn.conversation_id, queue_jobs=False)
        assert session_id is not None
        (await uow.session.get_one(ChatSession, session_id)).summary_failures = failures - 1
    before = datetime.now(UTC)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await container.summaries.fail_summary(uow, session_id, "ProviderError: 503 Service Unavailable")

    failed = await _session(container, coach, session_id)
    assert failed.status == SessionStatus.FAILED and failed.summary_failures == failures
    assert failed.summary_error == "ProviderError: 503 Service Unavailable"
    if failures == SUMMARY_JOBS:
        assert failed.summary_retry_at is None
    else:
        wait = timedelta(minutes=min(24 * 60, 10 * 2 ** (failures - 1)))
        assert failed.summary_retry_at is not None
        assert before + wait <= failed.summary_retry_at <= datetime.now(UTC) + wait
    async with tenant_session(container.sessionmaker, coach_id) as s:  # even long past any back-off
        await s.execute(
            update(ChatSession)
            .where(ChatSession.id == session_id, ChatSession.summary_retry_at.is_not(None))
            .values(summary_retry_at=datetime.now(UTC) - timedelta(days=30))
        )
    assert (session_id in await _due(container)) is (failures < SUMMARY_JOBS)


def test_the_worker_runs_the_sweep_every_five_minutes(settings: Settings, services: Services) -> None:
    """The main worker's crons include the sweep (every five minutes, and at start-up); a burst worker runs none."""
    main = worker.build_worker(settings, services.database_url, services.redis_url)
    crons = {job.name: job for job in main.cron_jobs}
    sweep = crons["cron:retry_failed_summaries"]
    assert sweep.coroutine is worker.retry_failed_summaries and sweep.run_at_startup
    assert sweep.minute == set(range(2, 60, 5))
    burst = worker.build_worker(settings, services.database_url, services.redis_url, burst=True)
    assert burst.cron_jobs == []


# --- canned messages ------------------------------------------------------------------------------------

CLIENT_SAYS = "My sister Ines is moving to Lisbon in April and I will miss her."
REPLY = "Lisbon is not so far: could you plan a first visit to Ines in May?"
HANDOFF_NOTICE = "I'm passing this to Dana Coach, who will reply here soon. Lisbon, Ines and April noted."
CANNED = {
    HANDOFF_NOTICE: {"notice": "handoff", "handoff_id": str(uuid.uuid4())},
    "Dana Coach is still on the way about Lisbon and Ines; thanks for waiting.": {"notice": "sla"},
    "You matter. About Ines and Lisbon: please call a crisis line now.": {"crisis": True},
    "I'm sorry, I couldn't answer about Lisbon just now. Please try again.": {"error": "timed out after 120 s"},
}
"""The product's canned messages, each naming the conversation's words so that recall would find it."""


async def test_canned_messages_get_no_episode_and_are_never_recalled(
    container: Container, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """The ``embed_messages`` job embeds the client's message and the AI's reply, not the handoff notice, the SLA
    holding message, the crisis reply nor the apology; a notice's episode stored before (as this job did) is never
    recalled, while the client's words and the reply are."""
    coach = await make_coach("Dana Coach")
    coach_id = uuid.UUID(coach.coach_id)
    client_id = uuid.UUID((await make_client(http, coach, "Ana"))["id"])
    start = datetime.now(UTC) - timedelta(days=3)
    texts = [(CLIENT_SAYS, SenderType.CLIENT, {}), (REPLY, SenderType.AI, {})]
    texts += [(body, SenderType.AI, meta) for body, meta in CANNED.items()]
    async with tenant_session(container.sessionmaker, coach_id) as s:
        conversation = Conversation(coach_id=coach_id, client_id=client_id, channel="api")
        s.add(conversation)
        await s.flush()
        messages = [
            Message(coach_id=coach_id, conversation_id=conversation.id, sender_type=sender, text=body, citations=[],
                    meta=meta, created_at=start + timedelta(minutes=i))
            for i, (body, sender, meta) in enumerate(texts)
        ]  # fmt: skip
        s.add_all(messages)
    ids = {message.text: message.id for message in messages}

    await container.episodes.embed_messages(coach_id, conversation.id)

    async with tenant_session(container.sessionmaker, coach_id) as s:
        embedded = set((await s.scalars(select(Episode.message_id).where(Episode.client_id == client_id))).all())
    assert embedded == {ids[CLIENT_SAYS], ids[REPLY]}

    # a notice's episode as an earlier version stored it
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        embedder = await container.registry.embedder_for(await uow.coach())
    notice = next(message for message in messages if message.text == HANDOFF_NOTICE)
    query = "Is Dana Coach passing this on about Ines moving to Lisbon in April?"
    notice_vector, query_vector = await embedder.embed([HANDOFF_NOTICE, query])
    async with tenant_session(container.sessionmaker, coach_id) as s:
        await insert_episodes(s, coach_id, client_id, [notice], [notice_vector], embedder.model)
        items = await recall(
            s,
            coach_id,
            client_id,
            query=query,
            query_embedding=query_vector,
            embedding_model=embedder.model,
            now=datetime.now(UTC),
            limit=10,
        )
    recalled = {item.id for item in items}
    assert ids[HANDOFF_NOTICE] not in recalled, [item.line() for item in items]
    assert {ids[CLIENT_SAYS], ids[REPLY]} <= recalled, [item.line() for item in items]


# --- migration 0064 -------------------------------------------------------------------------------------


async def _seed_0063(conn: AsyncConnection, coach_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """A coach's failed, summarised and open sessions, and the episodes of a client message, a reply and a handoff
    notice, as revision 0063 stored them. Returns their ids by name."""
    ids = {name: uuid.uuid4() for name in ("client", "failed", "summarized", "said", "reply", "notice")}
    await _insert_at(conn, "coaches", {"id": coach_id, "name": "Old Coach"})
    await _insert_at(conn, "clients", {"id": ids["client"], "coach_id": coach_id, "name": "Ana"})
    owned = {"coach_id": coach_id, "client_id": ids["client"]}
    await _insert_at(conn, "conversations", {"id": ids["client"], **owned})
    for status in ("failed", "summarized"):
        values = {"id": ids[status], **owned, "conversation_id": ids["client"], "status": status}
        await _insert_at(conn, "chat_sessions", values | {"summary_error": "boom" if status == "failed" else None})
    for name, sender, meta in (
        ("said", "client", {}),
        ("reply", "ai", {}),
        ("notice", "ai", {"notice": "handoff", "handoff_id": str(uuid.uuid4())}),
    ):
        values = {"id": ids[name], "coach_id": coach_id, "conversation_id": ids["client"], "sender_type": sender}
        await _insert_at(conn, "messages", values | {"text": name}, metadata=f"'{json.dumps(meta)}'::jsonb")
        await _insert_at(
            conn,
            "episodes",
            {**owned, "message_id": ids[name], "embedding_model": "all-MiniLM-L6-v2"},
            embedding="array_fill(0.05::real, ARRAY[384])::halfvec",
            tsv=f"to_tsvector('english', '{name}')",
        )
    return ids


async def test_migration_0064_makes_failed_summaries_due_and_deletes_canned_episodes(services: Services) -> None:
    """Upgraded by a schema owner that is neither superuser nor BYPASSRLS (a data change must reach every tenant's
    rows under the row-level security forced on it): a session already ``failed`` counts one failed job and is due
    at once, a summarised one is left alone; the handoff notice's episode goes, the others stay. The downgrade
    drops the columns and the function."""
    coach_id = uuid.uuid4()
    async with owned_database(services, "retries") as (as_owner, in_database):
        await asyncio.to_thread(command.upgrade, alembic_config(as_owner), "0063")
        async with in_database.begin() as conn:
            ids = await _seed_0063(conn, coach_id)
        await asyncio.to_thread(upgrade_head, as_owner)
        async with in_database.connect() as conn:
            sessions = {
                row.id: (row.status, row.summary_failures, row.due)
                for row in await conn.execute(
                    text("SELECT id, status, summary_failures, summary_retry_at <= now() AS due FROM chat_sessions")
                )
            }
            episodes = set((await conn.scalars(text("SELECT message_id FROM episodes"))).all())
            due = (await conn.execute(text("SELECT coach_id, session_id FROM failed_summaries_due(10)"))).all()
        await asyncio.to_thread(command.downgrade, alembic_config(as_owner), "0063")
        async with in_database.connect() as conn:
            columns = set(
                (
                    await conn.scalars(
                        text("SELECT column_name FROM information_schema.columns WHERE table_name = 'chat_sessions'")
                    )
                ).all()
            )
            function = await conn.scalar(text("SELECT to_regproc('failed_summaries_due')"))
    assert sessions == {ids["failed"]: ("failed", 1, True), ids["summarized"]: ("summarized", 0, None)}
    assert episodes == {ids["said"], ids["reply"]}
    assert [tuple(row) for row in due] == [(coach_id, ids["failed"])]
    assert {"summary_failures", "summary_retry_at"}.isdisjoint(columns) and "summary_error" in columns
    assert function is None
