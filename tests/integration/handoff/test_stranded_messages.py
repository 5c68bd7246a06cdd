"""A client message stored and acknowledged, whose turn never ran (the web process died in between: the widget
had forgotten it on the acknowledgement), is answered by the worker's sweep; a message something else waits on
(the coach's handoff, a draft the coach discarded) or one too old is left alone."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import respx
from sqlalchemy import select, update

from app.container import Container
from app.conversations.handoffs import Draft, DraftStatus
from app.conversations.models import Message, SenderType
from app.db.engine import tenant_session
from tests.conftest import make_client
from tests.integration.handoff.test_handoff_flow import Setup, chat, llm_api, new_setup

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

DAY = 24 * 3600


async def test_a_message_whose_turn_never_ran_is_answered_by_the_sweep_and_only_that_one(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    setup = await new_setup("Stranded Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)

    async def stored(text: str, *, client_id: str | None = None, conversation_id: str | None = None) -> Message:
        """A client message stored as the socket stores it before the turn, which never runs."""
        received = await container.chat.receive(
            coach_id,
            uuid.UUID(client_id or (await make_client(http, setup.coach, text[:20]))["id"]),
            text,
            conversation_id=uuid.UUID(conversation_id) if conversation_id else None,
            channel="widget",
        )
        async with tenant_session(container.sessionmaker, coach_id) as session:
            return await session.get_one(Message, received.message_id)

    stranded = await stored("Can you help me plan my week?")
    too_old = await stored("An old question nobody answered.")
    discarded = await stored("A question whose draft the coach discarded.")
    first = await chat(http, setup, "Hello there.")
    h = setup.coach.headers
    assert (await http.post(f"/api/v1/conversations/{first['conversation_id']}/takeover", headers=h)).status_code == 200
    paused = await stored("Are you still there?", client_id=setup.client_id, conversation_id=first["conversation_id"])
    async with tenant_session(container.sessionmaker, coach_id) as session:
        session.add(Draft(coach_id=coach_id, conversation_id=discarded.conversation_id, client_message_id=discarded.id,
                          status=DraftStatus.DISCARDED, text="A draft", citations=[], meta={}))  # fmt: skip
        for message, age in ((stranded, 2 * DAY), (too_old, 4 * DAY), (discarded, 2 * DAY), (paused, 2 * DAY)):
            when = datetime.now(UTC) - timedelta(seconds=age)
            await session.execute(update(Message).where(Message.id == message.id).values(created_at=when))

    # (only messages over a day old, which no other test of the session stored: its sweep leaves theirs alone)
    assert await container.chat.answer_stranded(older_than_s=DAY, within_s=3 * DAY) == 1
    await run_jobs()
    assert await container.chat.answer_stranded(older_than_s=DAY, within_s=3 * DAY) == 0, "answered once"

    async with tenant_session(container.sessionmaker, coach_id) as session:
        # AI messages of each conversation: the stranded one's answer; the paused one has only "Hello there."'s
        for message, replies, answered in (
            (stranded, 1, True),
            (too_old, 0, False),
            (discarded, 0, False),
            (paused, 1, False),
        ):
            ai = await session.scalars(
                select(Message.id).where(
                    Message.conversation_id == message.conversation_id, Message.sender_type == SenderType.AI
                )
            )
            assert len(ai.all()) == replies, message.text
            assert (
                (await session.get_one(Message, message.id, populate_existing=True)).answered_at is not None
            ) is answered
