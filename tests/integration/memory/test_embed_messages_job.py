"""The ``embed_messages`` job (:meth:`app.memory.episodes.EpisodeService.embed_messages`) stores an episode for
every remembered message of its conversation without one, a batch at a time, and reads the conversation again
only after a full batch; with an embedding window, the replies of one window share one deferred job
(:func:`app.db.jobs.embed_messages`)."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import Job
from sqlalchemy import select

from app.accounts.models import Coach as CoachRow
from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.db import jobs
from app.db.engine import tenant_session
from app.memory import episodes
from app.memory.episodes import EpisodeService
from app.memory.messages import store_message
from app.memory.models import Episode
from tests.conftest import Coach, make_client

TEXTS = [
    "I want to run a marathon next spring.",
    "That is a big goal. What does a normal training week look like for you?",
    "Three runs, one of them long.",
    "I keep skipping the long run when work gets busy.",
    "What would make the long run easier to keep on a busy week?",
    "I'm sorry — I couldn't put together an answer just now. Please try again in a moment.",
]


async def _conversation(container: Container, coach_id: uuid.UUID, client_id: uuid.UUID) -> list[Message]:
    """Six messages, client and AI in turn, none with an episode; the second is forgotten, the sixth the apology of
    a failed reply."""
    start = datetime.now(UTC) - timedelta(hours=1)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        conversation = Conversation(coach_id=coach_id, client_id=client_id, channel="api")
        session.add(conversation)
        await session.flush()
        messages = [
            Message(coach_id=coach_id, conversation_id=conversation.id, citations=[], text=body,
                    meta={"error": "timed out after 120 s"} if i == 5 else {},
                    sender_type=SenderType.CLIENT if i % 2 == 0 else SenderType.AI,
                    created_at=start + timedelta(minutes=i), forgotten_at=datetime.now(UTC) if i == 1 else None)
            for i, body in enumerate(TEXTS)
        ]  # fmt: skip
        session.add_all(messages)
    return messages


async def _embedded(container: Container, coach_id: uuid.UUID) -> set[uuid.UUID]:
    async with tenant_session(container.sessionmaker, coach_id) as session:
        return set((await session.scalars(select(Episode.message_id))).all())


@pytest.mark.parametrize("batch", [3, 64])
async def test_the_job_embeds_every_remembered_message_reading_again_only_after_a_full_batch(
    container: Container,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
) -> None:
    coach = await make_coach(f"Coach Batch {batch}")
    coach_id = uuid.UUID(coach.coach_id)
    client_id = uuid.UUID((await make_client(http, coach, "Runner"))["id"])
    messages = await _conversation(container, coach_id, client_id)
    monkeypatch.setattr(episodes, "EMBED_BATCH", batch)
    reads: list[int] = []
    pending = EpisodeService._pending

    async def counted(*args: object) -> object:
        found = await pending(*args)  # type: ignore[arg-type]
        reads.append(len(found[0]))
        return found

    monkeypatch.setattr(EpisodeService, "_pending", staticmethod(counted))

    result = await container.episodes.embed_messages(coach_id, messages[0].conversation_id)

    assert result == f"conversation {messages[0].conversation_id}: 4 episodes stored"
    # every message but the forgotten one (1) and the failed reply's apology (5: no recall can show it to a model)
    assert await _embedded(container, coach_id) == {messages[i].id for i in (0, 2, 3, 4)}
    # batch 3: a full batch, then the last one (shorter: no read after it); batch 64: one read only
    assert reads == ([3, 1] if batch == 3 else [4])
    assert await container.episodes.embed_messages(coach_id, messages[0].conversation_id) == (
        f"conversation {messages[0].conversation_id}: 0 episodes stored"
    )


async def test_the_job_of_a_deleted_account_ends_quietly(container: Container) -> None:
    """An account deleted right after its clients chatted: the ``embed_messages`` jobs queued by its turns failed
    with ``NotFound: coach not found`` (a traceback a conversation) where an erased client's end quietly."""
    gone, conversation = uuid.uuid4(), uuid.uuid4()
    assert (
        await container.episodes.embed_messages(gone, conversation) == f"conversation {conversation}: 0 episodes stored"
    )


async def test_the_job_leaves_out_the_messages_sent_after_its_time(
    container: Container, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """A later client message is its own turn's to embed (with the vector the turn computes anyway)."""
    coach = await make_coach("Coach Until")
    coach_id = uuid.UUID(coach.coach_id)
    client_id = uuid.UUID((await make_client(http, coach, "Swimmer"))["id"])
    messages = await _conversation(container, coach_id, client_id)

    until = messages[3].created_at
    result = await container.episodes.embed_messages(coach_id, messages[0].conversation_id, until=until)

    assert result == f"conversation {messages[0].conversation_id}: 3 episodes stored"
    assert await _embedded(container, coach_id) == {messages[0].id, messages[2].id, messages[3].id}


WINDOW_S = 3600.0
"""Long enough that the test never straddles two windows."""


async def test_the_replies_of_one_window_share_one_job_deferred_to_its_end(
    container: Container,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coach = await make_coach("Coach Window")
    coach_id = uuid.UUID(coach.coach_id)
    client_id = uuid.UUID((await make_client(http, coach, "Walker"))["id"])
    [first, *_] = await _conversation(container, coach_id, client_id)
    monkeypatch.setitem(container.sessionmaker.kw["info"], jobs.EMBED_WINDOW_KEY, WINDOW_S)
    window = math.floor(time.time() / WINDOW_S)
    replies = []
    for text in ("A first reply.", "A second reply, a moment later."):
        async with tenant_session(container.sessionmaker, coach_id) as session:  # a unit of work per reply
            coach_row = await session.get(CoachRow, coach_id)
            assert coach_row is not None
            reply, _ = await store_message(
                session, coach_row, first.conversation_id, SenderType.AI, text, at=datetime.now(UTC)
            )
            replies.append(reply.id)
    job_id = f"{jobs.EMBED_MESSAGES}:{first.conversation_id}:{WINDOW_S:g}s:{window}"
    try:
        queued = [m.decode() for m in await container.redis.zrange(default_queue_name, 0, -1)]
        assert [m for m in queued if m.startswith(f"{jobs.EMBED_MESSAGES}:")] == [job_id], queued
        due_ms = await container.redis.zscore(default_queue_name, job_id)
        assert due_ms == ((window + 1) * WINDOW_S + jobs.EMBED_SETTLE_S) * 1000
        info = await Job(job_id, container.redis).info()
        assert info is not None
        window_end = datetime.fromtimestamp((window + 1) * WINDOW_S, UTC)
        assert info.args == (str(coach_id), str(first.conversation_id), window_end.isoformat())
    finally:  # run_jobs' burst workers would wait for it
        await container.redis.zrem(default_queue_name, job_id)
        await container.redis.delete(job_key_prefix + job_id)

    await container.episodes.embed_messages(coach_id, first.conversation_id, until=window_end)  # what the job runs

    assert set(replies) <= await _embedded(container, coach_id)
