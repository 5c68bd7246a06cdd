"""After the crisis reply: what a client in crisis gets while the coach has not answered yet (outside the coach's
hours too), and that the crisis handoff cannot be left behind by starting a new conversation.

Fixtures and helpers are those of :mod:`tests.integration.handoff.test_handoff_flow` (the app, PostgreSQL, Redis
and the local embedder are real; only the coach's OpenAI-compatible endpoint is mocked).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import respx

from app.accounts.availability import describe_return
from app.container import Container
from app.core.runtime import Services
from app.handoff.crisis import DEFAULT_CRISIS_RESOURCES, crisis_acknowledgement, crisis_reply
from tests.conftest import make_client, widget_page
from tests.integration.handoff.test_handoff_flow import REPLY, Setup, backdate, chat, llm_api, new_setup, transcript

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

CRISIS = "I have decided to kill myself tonight. I already have the pills."
LIFELINE = "Call Lifeline Aotearoa on 0800 543 354."


def away_now() -> dict[str, object]:
    """Hours on one weekday three days from now (Berlin): the coach is away today and tomorrow."""
    day = (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(days=3)).weekday()
    return {"timezone": "Europe/Berlin", "days": [day], "start": "09:00", "end": "17:00"}


async def test_a_client_in_crisis_outside_the_coachs_hours_is_told_when_the_coach_is_back_and_never_met_by_silence(
    base_url: str,
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    services: Services,
) -> None:
    """The coach is away until their next working day. The crisis reply said it flagged the conversation for the
    coach and nothing about them being away; the client's next message ("hello? is anyone there?") got no reply
    at all (the AI is paused during the handoff), and the widget promised a reply within the SLA. Now the crisis
    reply says when the coach is back, every client message while the coach has not replied gets a notice with the
    coach's crisis resources again (one per ``CRISIS_ACK_INTERVAL``: a burst gets one), and the widget says the
    coach is away until then. Once the coach writes, the notices stop."""
    availability = away_now()
    setup = await new_setup(availability=availability, handoff_sla_minutes=2, crisis_resources=[LIFELINE])
    back = describe_return(availability, datetime.now(UTC))
    crisis = await chat(http, setup, CRISIS)
    assert crisis["handoff"] == {"status": "open", "reason": "crisis"}
    assert crisis["reply"] == crisis_reply("Handoff Coach", (LIFELINE,), "en", back)
    assert f"Handoff Coach is away right now and back {back}." in crisis["reply"]
    conversation_id = crisis["conversation_id"]
    await backdate(services, [conversation_id], minutes=3, messages=True)
    assert await container.sla_notices.send_sla_notices() >= 1  # the holding message at the SLA mark

    hello = await chat(http, setup, "hello? is anyone there?", conversation_id)
    notice = crisis_acknowledgement("Handoff Coach", (LIFELINE,), "en", back)
    assert hello["message_id"] is not None and hello["reply"] == notice, hello
    assert LIFELINE in notice and back in notice
    assert hello["handoff"] == {"status": "open", "reason": "crisis"}
    burst = await chat(http, setup, "please", conversation_id)
    assert burst["message_id"] is None and burst["reply"] == "", "a burst of messages gets one notice"
    await backdate(services, [conversation_id], minutes=4, messages=True)
    assert (await chat(http, setup, "hello??", conversation_id))["reply"] == notice
    notices = [m for m in await transcript(http, setup, conversation_id) if m["metadata"].get("notice") == "crisis"]
    assert [m["text"] for m in notices] == [notice, notice] and all(m["sender_type"] == "ai" for m in notices)
    assert llm_api["completions"].call_count == 0

    page = await widget_page(base_url, setup.widget_token)
    assert page.status_code == 200
    [line] = re.findall(r'<p id="presence"[^>]*>([^<]*)</p>', page.text)  # the presence line (not its templates)
    assert line == f"Waiting for Handoff Coach, who is away until {back}…", line

    h = setup.coach.headers
    assert (await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=h)).status_code == 200
    sent = await http.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "I'm here."})
    assert sent.status_code == 201, sent.text
    await backdate(services, [conversation_id], minutes=4, messages=True)
    answered = await chat(http, setup, "thank you", conversation_id)
    assert answered["message_id"] is None and answered["reply"] == "", "the coach answers now"


SPANISH_DAYS = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
GERMAN_DAYS = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")


async def test_the_crisis_messages_name_the_coachs_return_day_in_the_clients_language(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """A Spanish crisis reply said "vuelve: Monday at 09:00" and a German acknowledgement "wieder da: Monday at
    09:00": the day was English inside translated sentences. Both name it in the client's language now."""
    availability = away_now()
    day = availability["days"][0]  # type: ignore[index]
    english = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")[day]
    spanish = await new_setup(availability=availability)
    reply = (await chat(http, spanish, "quiero matarme"))["reply"]
    assert "No tienes que pasar por esto a solas" in reply
    assert f"vuelve: {describe_return(availability, datetime.now(UTC), 'es')}." in reply
    assert SPANISH_DAYS[day] in reply and english not in reply

    german = await new_setup(availability=availability)
    crisis = await chat(http, german, "ich will mich umbringen")
    assert GERMAN_DAYS[day] in crisis["reply"] and english not in crisis["reply"]
    notice = (await chat(http, german, "hallo? ist da jemand?", crisis["conversation_id"]))["reply"]
    assert notice.startswith("Deine Nachricht ist gespeichert")
    assert f"wieder da: {describe_return(availability, datetime.now(UTC), 'de')}." in notice
    assert GERMAN_DAYS[day] in notice and english not in notice
    assert llm_api["completions"].call_count == 0


async def test_a_new_conversation_does_not_sidestep_an_open_crisis_handoff(
    base_url: str,
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
) -> None:
    """While a crisis handoff was open, a message without ``conversation_id`` (or naming an older conversation)
    started or used another conversation and the AI answered it as if nothing had happened; the widget then showed
    that conversation without the crisis thread. Every message of the client now goes to the crisis conversation
    while its handoff is active: the AI stays paused there, the widget shows it. Other clients are not affected,
    and once the coach hands back, a new conversation is a new one again."""
    setup = await new_setup()
    earlier = (await chat(http, setup, "How can I plan my week better?"))["conversation_id"]
    crisis = await chat(http, setup, CRISIS)
    crisis_id = crisis["conversation_id"]
    assert crisis_id != earlier and crisis["handoff"] == {"status": "open", "reason": "crisis"}

    fresh = await chat(http, setup, "Let's talk about something else. How do I plan my week?")
    assert fresh["conversation_id"] == crisis_id and fresh["handoff"] == {"status": "open", "reason": "crisis"}
    assert fresh["reply"] == crisis_acknowledgement("Handoff Coach", DEFAULT_CRISIS_RESOURCES)
    old = await chat(http, setup, "And my weekend?", earlier)
    assert old["conversation_id"] == crisis_id and old["reply"] == ""
    assert llm_api["completions"].call_count == 1, "the AI answered only the first message, before the crisis"
    page = await widget_page(base_url, setup.widget_token)
    assert f'data-conversation="{crisis_id}"' in page.text and 'data-handoff="open"' in page.text
    texts = [m["text"] for m in await transcript(http, setup, crisis_id) if m["sender_type"] == "client"]
    assert texts == [CRISIS, "Let's talk about something else. How do I plan my week?", "And my weekend?"]

    other = await make_client(http, setup.coach, "Sam")
    theirs = await chat(http, replace(setup, widget_token=other["widget_token"]), "How can I plan my week better?")
    assert theirs["conversation_id"] not in (crisis_id, earlier) and theirs["reply"] == REPLY

    h = setup.coach.headers
    inbox = (await http.get("/api/v1/inbox", headers=h)).json()["rows"]
    robin = {row["conversation_id"]: row["state"] for row in inbox if row["client_name"] == "Robin"}
    assert robin == {crisis_id: "crisis", earlier: "ai"}
    assert (await http.post(f"/api/v1/conversations/{crisis_id}/takeover", headers=h)).status_code == 200
    sent = await http.post(f"/api/v1/conversations/{crisis_id}/messages", headers=h, json={"text": "I'm here."})
    assert sent.status_code == 201, sent.text
    assert (await chat(http, setup, "Thank you."))["conversation_id"] == crisis_id
    assert (await http.post(f"/api/v1/conversations/{crisis_id}/handback", headers=h)).status_code == 200
    after = await chat(http, setup, "How can I plan my week better?")
    assert after["conversation_id"] not in (crisis_id, earlier) and after["reply"] == REPLY and after["handoff"] is None


async def test_a_crisis_written_across_two_messages_gets_the_crisis_protocol(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """ "i'm going to", then "jump off the bridge tonight": each read alone, neither called for the crisis protocol,
    and the AI answered both (found by a run as clients). The previous message is now read with this one; and
    with the learned component too when its cues alone find only concern ("…going to" / "do it. the pills are on
    the table"). An ordinary sentence in two parts stays ordinary, and a crisis already handled is not read again
    with each later message."""
    setup = await new_setup()
    first = await chat(http, setup, "i'm going to")
    assert first["handoff"] is None
    bridge = await chat(http, setup, "jump off the bridge tonight", first["conversation_id"])
    assert bridge["handoff"] == {"status": "open", "reason": "crisis"}
    assert bridge["reply"] == crisis_reply("Handoff Coach", DEFAULT_CRISIS_RESOURCES, "en")

    pills = await new_setup()
    first = await chat(http, pills, "i think tonight im finaly going to")
    assert first["handoff"] is None
    second = await chat(http, pills, "do it. the pills are on the table", first["conversation_id"])
    assert second["handoff"] == {"status": "open", "reason": "crisis"}, second

    gym = await new_setup()
    first = await chat(http, gym, "I am going to")
    ordinary = await chat(http, gym, "the gym tonight, what should I train?", first["conversation_id"])
    assert ordinary["handoff"] is None and ordinary["reply"] == REPLY
