"""A crisis message inside a handoff already open or claimed for another reason: the handoff becomes a crisis one,
and its brief (the API's and dashboard's, the alerts') is written again for the crisis, quoting what the client just
wrote, as the brief of a handoff the crisis opened.

Fixtures and helpers are those of :mod:`tests.integration.handoff.test_handoff_flow` and
:mod:`tests.integration.handoff.test_alerts` (the app, PostgreSQL, Redis, the local embedder, a webhook receiver and
an SMTP server are real; only the coach's OpenAI-compatible endpoint is mocked).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from standardwebhooks import Webhook

from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.core.config import Settings
from app.handoff.alerts import crisis_event
from tests.integration.handoff.test_alerts import Mailbox, Receiver, receiver, service, smtp
from tests.integration.handoff.test_handoff_flow import Setup, chat, handoffs, llm_api, new_setup, transcript
from tests.stub_dns import LOOPBACK_HOOKS

__all__ = ["llm_api", "new_setup", "receiver", "smtp"]  # fixtures used by name below

CRISIS = "I want to end my life tonight"
SAID = f"Client said: “{CRISIS}”"


async def handed_off(http: httpx.AsyncClient, setup: Setup, how: str) -> str:
    """A conversation of ``setup``'s client handed to the coach ``how``: ``low_confidence`` (a high-stakes topic
    under a 0.95 threshold), ``human_request`` or ``coach_takeover`` (the coach took over an AI conversation and
    wrote); its id."""
    if how == "low_confidence":
        body = await chat(http, setup, "I'm thinking about quitting my job next week")
    elif how == "human_request":
        body = await chat(http, setup, "Can I talk to a real person please?")
    else:
        body = await chat(http, setup, "How can I plan my week better?")
        conversation_id = body["conversation_id"]
        h = setup.coach.headers
        assert (await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=h)).status_code == 200
        sent = await http.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "Hi!"})
        assert sent.status_code == 201, sent.text
        return str(conversation_id)
    assert body["handoff"]["reason"] == how, body
    return str(body["conversation_id"])


@pytest.mark.parametrize("how", ["low_confidence", "human_request", "coach_takeover"])
async def test_a_crisis_inside_a_handoff_rewrites_its_brief_for_the_crisis(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    how: str,
) -> None:
    """Gita (low confidence), Uma (asked for a human), Kemal (the coach had taken over) then wrote a crisis message:
    the reason became ``crisis`` but the brief still read "Why: Low AI confidence (…)" / "Why: Client asked for a
    human" / "Why: Coach took over" and quoted only the earlier, harmless messages. It names the crisis now and
    quotes the crisis message, as a crisis handoff's brief does; the AI's earlier confidence is gone too."""
    setup = await new_setup(high_stakes_topics=["quitting my job"], confidence_threshold=0.95)
    conversation_id = await handed_off(http, setup, how)
    [before] = await handoffs(http, setup.coach)
    assert before["reason"] == how and not before["brief"].startswith("Why: Crisis risk")

    body = await chat(http, setup, CRISIS, conversation_id)
    assert body["handoff"]["reason"] == "crisis", body
    [after] = await handoffs(http, setup.coach)
    assert after["id"] == before["id"] and after["reason"] == "crisis" and after["confidence"] == 0.0
    brief = after["brief"].splitlines()
    assert brief[0].startswith("Why: Crisis risk (detector cues: "), brief
    assert brief[-1] == SAID, brief
    assert before["brief"].splitlines()[0] not in brief

    fresh = await new_setup()
    opened = await chat(http, fresh, CRISIS)
    [crisis] = await handoffs(http, fresh.coach)
    assert opened["handoff"]["reason"] == "crisis"
    assert crisis["brief"].splitlines() == [brief[0], SAID], "the same brief a handoff the crisis opened has"


async def test_the_crisis_alert_inside_a_handoff_sends_the_crisis_brief(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    settings: Settings,
    receiver: Receiver,
    smtp: tuple[Mailbox, int],
) -> None:
    """The "[URGENT] Crisis message in handoff" e-mail and the ``handoff.crisis`` webhook of Gita's crisis inside her
    low-confidence handoff carried "Why: Low AI confidence (…)", the earlier messages only and "AI confidence: 0.37".
    Both carry the crisis brief now, with the crisis message, and the crisis's confidence."""
    mailbox, port = smtp
    setup = await new_setup(high_stakes_topics=["quitting my job"], confidence_threshold=0.95)
    conversation_id = await handed_off(http, setup, "low_confidence")
    await chat(http, setup, CRISIS, conversation_id)
    [handoff] = await handoffs(http, setup.coach)
    [message] = [m for m in await transcript(http, setup, conversation_id) if m["text"] == CRISIS]
    # the alert channels are set only now, so no alert job waits in the queue: the alerts are delivered below
    changed = await http.patch(
        "/api/v1/settings", headers=setup.coach.headers, json={"alert_webhook_url": receiver.url}
    )
    assert changed.status_code == 200, changed.text
    secret = changed.json()["alert_webhook_secret"]
    async with unit_of_work(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as uow:
        coach = await uow.session.get(Coach, uuid.UUID(setup.coach.coach_id))
        assert coach is not None
        coach.alert_email = "coach@example.com"  # as if confirmed (the confirmation is tested elsewhere)

    llm_api.route(host=LOOPBACK_HOOKS).pass_through()  # to the receiver
    alerts = service(container, settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    event = crisis_event(uuid.UUID(message["id"]))
    summary = await alerts.deliver(uuid.UUID(setup.coach.coach_id), uuid.UUID(handoff["id"]), event=event)
    assert summary == "webhook sent, email sent"

    [(_, mail)] = mailbox.messages
    assert mail["Subject"] == "[URGENT] Crisis message in handoff: Robin"
    body = mail.get_content().replace("\r\n", "\n")
    assert f"Brief:\n{handoff['brief']}\n" in body and SAID in body, body
    assert "Why: Low AI confidence" not in body and "AI confidence: 0.00" in body
    [request] = receiver.requests
    data: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)["data"]
    assert data["brief"] == handoff["brief"] and data["brief"].startswith("Why: Crisis risk")
    assert data["confidence"] == 0.0 and data["message_id"] == message["id"]
