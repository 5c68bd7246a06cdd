"""A client message stored and acknowledged, whose turn never ran (the web process died in between: the widget
had forgotten it on the acknowledgement), is answered by the worker's sweep; a message something else waits on
or settled (the coach has the conversation, handed it back without a reply, or wrote after it) or one too old
is left alone."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import respx
from sqlalchemy import select, update

from app.container import Container
from app.conversations.models import Message, SenderType
from app.db.engine import tenant_session
from tests.conftest import make_client
from tests.integration.handoff.test_handoff_flow import Setup, chat, handoffs, llm_api, new_setup

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
    coach_id, h = uuid.UUID(setup.coach.coach_id), setup.coach.headers

    async def stored(text: str, conversation_id: str | None = None) -> Message:
        """A client message stored as the socket stores it before the turn, which never runs (a new client's
        when no conversation is given)."""
        client_id = setup.client_id if conversation_id else (await make_client(http, setup.coach, text[:20]))["id"]
        received = await container.chat.receive(
            coach_id,
            uuid.UUID(client_id),
            text,
            conversation_id=uuid.UUID(conversation_id) if conversation_id else None,
            channel="widget",
        )
        async with tenant_session(container.sessionmaker, coach_id) as session:
            return await session.get_one(Message, received.message_id)

    async def taken_over() -> str:
        conversation_id: str = (await chat(http, setup, "Hello there."))["conversation_id"]
        assert (await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=h)).status_code == 200
        return conversation_id

    stranded = await stored("Can you help me plan my week?")
    too_old = await stored("An old question nobody answered.")
    paused = await stored("Are you still there?", await taken_over())
    settled_id = await taken_over()
    settled = await stored("One more thing.", settled_id)
    back = await http.post(f"/api/v1/conversations/{settled_id}/handback", params={"reply": "false"}, headers=h)
    assert back.status_code == 200, back.text
    answered_by_hand_id = await taken_over()
    answered_by_hand = await stored("What should I do?", answered_by_hand_id)
    sent = await http.post(f"/api/v1/conversations/{answered_by_hand_id}/messages", headers=h, json={"text": "Rest."})
    assert sent.status_code == 201, sent.text
    assert (await http.post(f"/api/v1/conversations/{answered_by_hand_id}/handback", headers=h)).status_code == 200
    cases = [(stranded, 2), (too_old, 4), (paused, 2), (settled, 2), (answered_by_hand, 2)]
    async with tenant_session(container.sessionmaker, coach_id) as session:
        for message, days in cases:  # every message of its conversation ages alike, keeping their order
            await session.execute(
                update(Message)
                .where(Message.conversation_id == message.conversation_id)
                .values(created_at=Message.created_at - timedelta(days=days))
            )

    # (only messages over a day old, which no other test of the session stored: its sweep leaves theirs alone)
    window = {"older_than_s": DAY, "within_s": 3 * DAY, "in_handoff_within_s": DAY + 3600}
    assert await container.chat.answer_stranded(**window) == 1
    await run_jobs()
    assert await container.chat.answer_stranded(**window) == 0, "answered once"

    async with tenant_session(container.sessionmaker, coach_id) as session:
        expected = [(stranded, True), (too_old, False), (paused, False), (settled, False), (answered_by_hand, False)]
        for message, answered in expected:
            senders = (
                await session.scalars(
                    select(Message.sender_type)
                    .where(Message.conversation_id == message.conversation_id)
                    .order_by(Message.created_at)
                )
            ).all()
            assert (senders[-1] == SenderType.AI) is answered, (message.text, senders)


async def test_a_crisis_whose_turn_never_ran_gets_the_crisis_protocol_at_the_next_turn(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
) -> None:
    """A crisis message is stored and acknowledged, and its turn never runs (the web process died, or the turn
    failed before its screen); the client then writes again. The sweep answers only a conversation's latest
    message, and the new message alone is calm: its turn now runs the crisis protocol for the earlier one."""
    setup = await new_setup("Crisis Later Coach")
    conversation_id = (await chat(http, setup, "Hello there."))["conversation_id"]
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    kwargs = {"conversation_id": uuid.UUID(conversation_id), "channel": "widget"}
    await container.chat.receive(coach_id, client_id, "I want to end my life tonight", **kwargs)  # no turn ran
    calls = llm_api["completions"].call_count
    body = await chat(http, setup, "hello?", conversation_id)
    assert body["handoff"] == {"status": "open", "reason": "crisis"}
    assert body["reply"].startswith("I'm really glad you told me")
    assert llm_api["completions"].call_count == calls
    # acted on once: the client's next messages do not get the crisis reply again for it
    for text in ("thanks, I'm with my sister now", "ok"):
        await chat(http, setup, text, conversation_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        metas = (
            await session.scalars(
                select(Message.meta).where(
                    Message.conversation_id == uuid.UUID(conversation_id), Message.sender_type == SenderType.AI
                )
            )
        ).all()
    assert sum(bool(meta.get("crisis")) for meta in metas) == 1


async def test_a_crisis_whose_turn_never_ran_while_the_coach_has_the_conversation_gets_the_protocol(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The coach has the conversation (a handoff is active) and the client's crisis message is stored and
    acknowledged, but the web process dies before its turn runs. The sweep skipped every conversation with an
    active handoff, so the message never got the crisis reply or the urgent alert. It now queues the message's
    turn while the message is new; a calm message the coach has gets nothing from it."""
    setup = await new_setup("Crisis Held Coach")
    coach_id, h = uuid.UUID(setup.coach.coach_id), setup.coach.headers

    async def held(text: str) -> uuid.UUID:
        """A new client's conversation the coach took over, then ``text`` stored without its turn."""
        client_id = uuid.UUID((await make_client(http, setup.coach, text[:20]))["id"])
        first = await container.chat.receive(coach_id, client_id, "Hello there.", conversation_id=None, channel="api")
        taken = await http.post(f"/api/v1/conversations/{first.conversation_id}/takeover", headers=h)
        assert taken.status_code == 200, taken.text
        kwargs = {"conversation_id": first.conversation_id, "channel": "widget"}
        await container.chat.receive(coach_id, client_id, text, **kwargs)
        return first.conversation_id

    crisis, calm = await held("I want to end my life tonight"), await held("Are you there, coach?")
    async with tenant_session(container.sessionmaker, coach_id) as session:
        await session.execute(  # a day and a minute later, when the sweep looks
            update(Message)
            .where(Message.conversation_id.in_([crisis, calm]))
            .values(created_at=Message.created_at - timedelta(days=1, seconds=60))
        )

    window = {"older_than_s": DAY, "within_s": 3 * DAY}
    assert await container.chat.answer_stranded(**window, in_handoff_within_s=DAY + 30) == 0, "past its window"
    assert await container.chat.answer_stranded(**window, in_handoff_within_s=DAY + 3600) == 2
    await run_jobs()

    reasons = {h["conversation_id"]: h["reason"] for h in await handoffs(http, setup.coach)}
    assert (reasons[str(crisis)], reasons[str(calm)]) == ("crisis", "coach_takeover")
    async with tenant_session(container.sessionmaker, coach_id) as session:
        replies = (
            await session.execute(
                select(Message.conversation_id, Message.text).where(Message.sender_type == SenderType.AI)
            )
        ).all()
    assert [(c, t[:27]) for c, t in replies if c in (crisis, calm)] == [(crisis, "I'm really glad you told me")]
    assert llm_api["completions"].call_count == 0
