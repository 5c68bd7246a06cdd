"""Outside the coach's hours, the client is told when the coach is back, but not while the coach is in the
conversation: they took it over or wrote in it within ``COACH_PRESENT_WINDOW`` (15 minutes).

Fixtures and helpers are those of :mod:`tests.integration.handoff.test_handoff_flow` (the app, PostgreSQL, Redis
and the local embedder are real; only the coach's OpenAI-compatible endpoint is mocked).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import respx

from app.accounts.availability import describe_return
from app.container import Container
from app.core.runtime import Services
from app.handoff.catalogue import handoff_notice, holding_message
from app.handoff.crisis import DEFAULT_CRISIS_RESOURCES, crisis_acknowledgement, crisis_reply
from app.handoff.service import COACH_PRESENT_WINDOW
from tests.integration.handoff.test_crisis_followup import away_now
from tests.integration.handoff.test_handoff_flow import Setup, backdate, chat, llm_api, new_setup, transcript

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

COACH = "Handoff Coach"
CRISIS = "I want to end my life tonight"
GONE = int(COACH_PRESENT_WINDOW.total_seconds() // 60) + 5
"""Minutes to move a conversation into the past so the coach's takeover and messages are no longer recent."""


async def coach_writes(http: httpx.AsyncClient, setup: Setup, conversation_id: str, text: str) -> None:
    """The coach writes ``text`` in ``conversation_id`` (which takes it over when it is not theirs yet)."""
    h = setup.coach.headers
    sent = await http.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": text})
    assert sent.status_code == 201, sent.text


async def test_a_crisis_reply_does_not_say_the_coach_is_away_while_the_coach_is_in_the_conversation(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    services: Services,
) -> None:
    """Outside the coach's hours, the coach had taken Kemal's conversation over and written to him two minutes
    before his crisis message; the crisis reply said "Handoff Coach is away right now and back …". It does not now;
    once the coach has left the conversation (nothing from them for longer than the window), it does again."""
    availability = away_now()
    back = describe_return(availability, datetime.now(UTC))
    kemal, other = [await new_setup(availability=availability) for _ in range(2)]  # a crisis takes a client's chats
    here = (await chat(http, kemal, "How can I plan my week better?"))["conversation_id"]
    left = (await chat(http, other, "How can I plan my week better?"))["conversation_id"]
    await coach_writes(http, kemal, here, "I'm here, Kemal.")
    await coach_writes(http, other, left, "I'm here.")
    await backdate(services, [left], minutes=GONE, messages=True)

    crisis = await chat(http, kemal, CRISIS, here)
    assert crisis["handoff"] == {"status": "claimed", "reason": "crisis"}, crisis
    assert crisis["reply"] == crisis_reply(COACH, DEFAULT_CRISIS_RESOURCES, "en", None)
    assert "away right now" not in crisis["reply"]
    gone = await chat(http, other, CRISIS, left)
    assert gone["handoff"] == {"status": "claimed", "reason": "crisis"}, gone
    assert gone["reply"] == crisis_reply(COACH, DEFAULT_CRISIS_RESOURCES, "en", back)


async def test_the_crisis_acknowledgement_does_not_say_the_coach_is_away_once_the_coach_took_over(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    services: Services,
) -> None:
    """Outside the coach's hours a crisis reply says when the coach is back; the coach then takes the conversation
    over (not written yet): the client's next message is acknowledged without "away" (the coach is there), and,
    when the takeover is no longer recent, with when the coach is back again."""
    availability = away_now()
    setup = await new_setup(availability=availability)
    back = describe_return(availability, datetime.now(UTC))
    crisis = await chat(http, setup, CRISIS)
    assert crisis["reply"] == crisis_reply(COACH, DEFAULT_CRISIS_RESOURCES, "en", back)
    conversation_id = crisis["conversation_id"]
    taken = await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
    assert taken.status_code == 200, taken.text

    hello = await chat(http, setup, "hello? is anyone there?", conversation_id)
    assert hello["reply"] == crisis_acknowledgement(COACH, DEFAULT_CRISIS_RESOURCES, "en", None), hello
    await backdate(services, [conversation_id], minutes=GONE, messages=True)
    later = await chat(http, setup, "hello??", conversation_id)
    assert later["reply"] == crisis_acknowledgement(COACH, DEFAULT_CRISIS_RESOURCES, "en", back), later


async def test_the_holding_message_does_not_say_the_coach_is_away_while_the_coach_is_in_the_conversation(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    services: Services,
) -> None:
    """Outside the coach's hours, the coach replied to Jonas, who asked again; past the SLA the holding message said
    "Handoff Coach has been pulled away for a moment and will reply here when they're back, …" while the widget
    said the coach is in the conversation. The coach wrote a minute before: the holding message no longer says they
    are away. A coach who took a conversation over and left it long ago is still said to be back then."""
    availability = away_now()
    setup = await new_setup(availability=availability, handoff_sla_minutes=1)
    back = describe_return(availability, datetime.now(UTC))
    here, left = [(await chat(http, setup, "Hello there."))["conversation_id"] for _ in range(2)]
    for conversation_id in (here, left):
        await coach_writes(http, setup, conversation_id, "Hi Jonas, what's up?")
        await chat(http, setup, "Can we talk about my week?", conversation_id)
    await backdate(services, [here], minutes=2, messages=True)
    await backdate(services, [left], minutes=GONE, messages=True)
    assert await container.sla_notices.send_sla_notices() >= 2

    def holding(messages: list[dict]) -> list[str]:
        return [m["text"] for m in messages if m["metadata"].get("notice") == "sla"]

    assert holding(await transcript(http, setup, here)) == [holding_message(COACH, "en", joined=True, back=None)]
    assert holding(await transcript(http, setup, left)) == [holding_message(COACH, "en", joined=True, back=back)]


async def test_the_handoff_notice_does_not_say_the_coach_is_away_just_after_they_wrote(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
) -> None:
    """Outside the coach's hours, the coach wrote and handed the conversation back; the client asks for a person
    a minute later: the notice says the coach was asked to join, not that they are away until their next day."""
    setup = await new_setup(availability=away_now(), handoff_sla_minutes=5)
    conversation_id = (await chat(http, setup, "How can I plan my week better?"))["conversation_id"]
    await coach_writes(http, setup, conversation_id, "Let's pick this up together.")
    handback = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
    assert handback.status_code == 200, handback.text
    asked = await chat(http, setup, "/human", conversation_id)
    assert asked["handoff"] == {"status": "open", "reason": "human_request"}, asked
    assert asked["reply"] == handoff_notice(COACH, "en", requested=True, sla_minutes=5, back=None)
