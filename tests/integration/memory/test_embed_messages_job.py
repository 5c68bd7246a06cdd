"""The ``embed_messages`` job (:meth:`app.memory.episodes.EpisodeService.embed_messages`) stores an episode for
the message and for every earlier remembered message of its conversation without one, a batch at a time, and
reads the conversation again only after a full batch."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.db.engine import tenant_session
from app.memory import episodes
from app.memory.episodes import EpisodeService
from app.memory.models import Episode
from tests.conftest import Coach, make_client

TEXTS = [
    "I want to run a marathon next spring.",
    "That is a big goal. What does a normal training week look like for you?",
    "Three runs, one of them long.",
    "I keep skipping the long run when work gets busy.",
    "What would make the long run easier to keep on a busy week?",
]


async def _conversation(container: Container, coach_id: uuid.UUID, client_id: uuid.UUID) -> list[Message]:
    """Five messages, client and AI in turn, none with an episode; the second is forgotten."""
    start = datetime.now(UTC) - timedelta(hours=1)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        conversation = Conversation(coach_id=coach_id, client_id=client_id, channel="api")
        session.add(conversation)
        await session.flush()
        messages = [
            Message(coach_id=coach_id, conversation_id=conversation.id, citations=[], meta={}, text=body,
                    sender_type=SenderType.CLIENT if i % 2 == 0 else SenderType.AI,
                    created_at=start + timedelta(minutes=i), forgotten_at=datetime.now(UTC) if i == 1 else None)
            for i, body in enumerate(TEXTS)
        ]  # fmt: skip
        session.add_all(messages)
    return messages


async def _embedded(container: Container, coach_id: uuid.UUID) -> set[uuid.UUID]:
    async with tenant_session(container.sessionmaker, coach_id) as session:
        return set((await session.scalars(select(Episode.message_id))).all())


@pytest.mark.parametrize("batch", [2, 64])
async def test_the_job_embeds_every_earlier_remembered_message_reading_again_only_after_a_full_batch(
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

    result = await container.episodes.embed_messages(coach_id, messages[3].id)

    assert result == f"message {messages[3].id}: 3 episodes stored"
    # the forgotten message (1) and the one after the job's message (4) are left alone
    assert await _embedded(container, coach_id) == {messages[0].id, messages[2].id, messages[3].id}
    # batch 2: a full batch, then the last one (shorter: no read after it); batch 64: one read only
    assert reads == ([2, 1] if batch == 2 else [3])
