"""The coach's handoff alerts: a Standard Webhooks-signed POST to a real local HTTP receiver and an e-mail to
a real local SMTP server (aiosmtpd), recorded in ``handoff.alerts``, idempotent, retried through arq's
``Retry`` while a channel fails.

Coaches and clients come from the account service and the other rows are created straight in the tenant's
tables (the web app is not needed); the :class:`AlertService` under test is built here with
its own SMTP settings.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from arq.worker import Retry
from sqlalchemy.exc import DBAPIError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app import worker
from app.accounts.handoff_settings import new_webhook_secret
from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.conversations.handoffs import Handoff
from app.conversations.models import Conversation
from app.core.config import Settings
from app.core.security import SecretBox, mask_secret
from app.db import jobs
from app.db.engine import tenant_session
from app.handoff.alerts import MAX_ATTEMPTS, AlertService, crisis_event, retry_delay
from tests.conftest import Coach as ApiCoach
from tests.conftest import make_client
from tests.stub_dns import LOOPBACK_HOOKS

PASSWORD = "correct horse battery"
BRIEF = "Why: Crisis risk\nRecent: 'I want to kill myself'"
CRISIS_TEXT = (
    "Crisis signals: Suicidal intent or self-harm stated (detector cue: kill myself); "
    "Mentions a means of harm (detector cue: pills)"
)
"""The crisis handoff's detail ``crisis: kill myself, pills`` in an alert: labelled as the dashboard labels it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on a loopback port that records every request and answers ``status``."""

    status: int = 204
    requests: list[Received] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(state.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # a name the test settings allowlist (OUTBOUND_ALLOW) and the stub resolver maps to 127.0.0.1: the egress
    # guard refuses a literal loopback URL, as it does on an install with the default empty allowlist
    state.url = f"http://{LOOPBACK_HOOKS}:{server.server_address[1]}/hooks/opencoach"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class Mailbox:
    """aiosmtpd handler collecting every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd API)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@dataclass
class Opened:
    coach_id: uuid.UUID
    client_id: uuid.UUID
    conversation_id: uuid.UUID
    handoff_id: uuid.UUID
    secret: str | None


async def open_handoff(
    container: Container,
    settings: Settings,
    *,
    webhook_url: str | None = None,
    alert_email: str | None = None,
    reason: str = "crisis",
    preview: bool = False,
) -> Opened:
    """A coach with the given alert settings, a client "Maya" (with ``preview``: the coach's preview client), a
    conversation and an open handoff."""
    signup = await container.accounts.signup("Alert Coach", f"{uuid.uuid4().hex[:12]}@example.com", PASSWORD)
    coach_id = signup.coach_id
    secret = new_webhook_secret() if webhook_url else None
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        session = uow.session
        client, _ = await container.accounts.create_client(uow, "Maya")
        client_id = client.id
        row = await session.get(Coach, coach_id)
        assert row is not None
        row.alert_webhook_url = webhook_url
        row.alert_webhook_secret_encrypted = SecretBox.from_settings(settings).encrypt(secret) if secret else None
        row.alert_email = alert_email
        row.preview_client_id = client_id if preview else None
        conversation = Conversation(coach_id=coach_id, client_id=client_id, channel="widget")
        session.add(conversation)
        await session.flush()
        handoff = Handoff(
            coach_id=coach_id,
            conversation_id=conversation.id,
            client_id=client_id,
            status="open",
            reason=reason,
            detail="crisis: kill myself, pills" if reason == "crisis" else "asked for the coach",
            confidence=0.0,
            signals={},
            brief=BRIEF,
            alerts={},
        )
        session.add(handoff)
        await session.flush()
        return Opened(coach_id, client_id, conversation.id, handoff.id, secret)


async def alerts_of(container: Container, opened: Opened) -> dict[str, Any]:
    async with tenant_session(container.sessionmaker, opened.coach_id) as session:
        handoff = await session.get(Handoff, opened.handoff_id)
        assert handoff is not None
        return dict(handoff.alerts)


def service(container: Container, settings: Settings, **smtp: Any) -> AlertService:
    configured = settings.model_copy(update={"public_url": "https://coach.example/", **smtp})
    return AlertService(container.sessionmaker, configured, SecretBox.from_settings(settings))


async def test_webhook_is_signed_delivered_once_and_recorded(
    container: Container,
    settings: Settings,
    receiver: Receiver,
) -> None:
    opened = await open_handoff(container, settings, webhook_url=receiver.url)
    alerts = service(container, settings)

    assert await alerts.deliver(opened.coach_id, opened.handoff_id) == "webhook sent"

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == "/hooks/opencoach"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == str(opened.handoff_id)
    assert request.headers["webhook-signature"].startswith("v1,")
    assert opened.secret is not None
    assert opened.secret not in json.dumps(request.headers) and opened.secret.encode() not in request.body
    event = Webhook(opened.secret).verify(request.body, request.headers)  # raises if the signature is wrong
    assert event["type"] == "handoff.opened"
    assert event["timestamp"]
    assert event["data"] == {
        "handoff_id": str(opened.handoff_id),
        "conversation_id": str(opened.conversation_id),
        "client_id": str(opened.client_id),
        "client_name": "Maya",
        "reason": "crisis",
        "detail": CRISIS_TEXT,
        "crisis_reasons": [
            {"label": "Suicidal intent or self-harm stated", "cue": "kill myself"},
            {"label": "Mentions a means of harm", "cue": "pills"},
        ],
        "confidence": 0.0,
        "brief": BRIEF,
        "urgent": True,
        "preview": False,
        "dashboard_url": f"https://coach.example/dashboard/conversations/{opened.conversation_id}",
    }
    with pytest.raises(Exception, match="signature"):
        Webhook(new_webhook_secret()).verify(request.body, request.headers)

    stored = await alerts_of(container, opened)
    assert set(stored) == {"webhook"}
    assert stored["webhook"]["status"] == "sent" and stored["webhook"]["attempts"] == 1
    assert "error" not in stored["webhook"] and stored["webhook"]["at"]

    # arq runs a job at least once: a second run sends nothing more and leaves the record alone.
    assert await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=2) == "webhook sent"
    assert len(receiver.requests) == 1
    assert await alerts_of(container, opened) == stored


async def test_email_goes_to_the_coach_with_the_urgent_subject_and_the_brief(
    container: Container,
    settings: Settings,
    smtp: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp
    opened = await open_handoff(container, settings, alert_email="coach@example.com")
    alerts = service(container, settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)

    assert await alerts.deliver(opened.coach_id, opened.handoff_id) == "email sent"

    assert len(mailbox.messages) == 1
    recipients, message = mailbox.messages[0]
    assert recipients == ["coach@example.com"]
    assert message["To"] == "coach@example.com"
    assert message["From"] == settings.smtp_from
    assert message["Subject"] == "[URGENT] Crisis handoff: Maya"
    assert message["Message-ID"] == f"<handoff.{opened.handoff_id}@opencoach.local>"
    body = message.get_content().replace("\r\n", "\n")  # SMTP line endings
    assert BRIEF in body
    assert CRISIS_TEXT in body and "crisis: kill myself" not in body and "Detail:" not in body
    assert f"https://coach.example/dashboard/conversations/{opened.conversation_id}" in body

    stored = await alerts_of(container, opened)
    assert set(stored) == {"email"}
    assert stored["email"]["status"] == "sent" and stored["email"]["attempts"] == 1

    assert await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=2) == "email sent"
    assert len(mailbox.messages) == 1


async def test_a_crisis_in_the_coachs_preview_chat_is_alerted_as_a_test_not_as_urgent(
    container: Container,
    settings: Settings,
    receiver: Receiver,
    smtp: tuple[Mailbox, int],
) -> None:
    """The coach tries the crisis flow in their own preview chat: the alert still goes out on both channels (the
    coach sees them work) but as a test, not urgent (an urgent alert for nobody paged the coach's on-call)."""
    mailbox, port = smtp
    opened = await open_handoff(
        container, settings, webhook_url=receiver.url, alert_email="coach@example.com", preview=True
    )
    alerts = service(container, settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    for event in ("opened", crisis_event(uuid.uuid4())):
        assert await alerts.deliver(opened.coach_id, opened.handoff_id, event=event) == "webhook sent, email sent"
    assert opened.secret is not None
    sent = [Webhook(opened.secret).verify(request.body, request.headers)["data"] for request in receiver.requests]
    assert [(data["urgent"], data["preview"]) for data in sent] == [(False, True), (False, True)]
    subjects = [message["Subject"] for _, message in mailbox.messages]
    assert subjects == ["[Test] Preview handoff: Maya — Crisis risk"] * 2
    assert all(
        "URGENT" not in subject and "respond now" not in m.get_content()
        for subject, (_, m) in zip(subjects, mailbox.messages, strict=True)
    )


async def test_non_crisis_email_subject_names_the_reason(
    container: Container,
    settings: Settings,
    smtp: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp
    opened = await open_handoff(container, settings, alert_email="coach@example.com", reason="human_request")
    alerts = service(container, settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    await alerts.deliver(opened.coach_id, opened.handoff_id)
    assert mailbox.messages[0][1]["Subject"] == "Handoff: Maya — Client asked for a human"
    assert "Detail: asked for the coach" in mailbox.messages[0][1].get_content()


async def test_failed_webhook_is_retried_with_growing_delay_until_the_last_attempt(
    container: Container,
    settings: Settings,
    receiver: Receiver,
) -> None:
    receiver.status = 500
    opened = await open_handoff(container, settings, webhook_url=receiver.url)
    alerts = service(container, settings)

    with pytest.raises(Retry) as first:
        await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=1)
    assert first.value.defer_score == int(retry_delay(1) * 1000)
    stored = (await alerts_of(container, opened))["webhook"]
    assert stored["status"] == "failed" and "500" in stored["error"] and stored["attempts"] == 1
    assert len(stored["error"]) <= 300

    with pytest.raises(Retry) as second:
        await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=2)
    assert second.value.defer_score is not None and second.value.defer_score > (first.value.defer_score or 0)
    # the tries back off exponentially: the last comes hours after the first (five tries over 100 s did not
    # outlast a receiver's or a mail server's restart)
    assert sum(map(retry_delay, range(1, MAX_ATTEMPTS))) > 2 * 3600

    # The last attempt records the failure and returns instead of raising.
    assert await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=MAX_ATTEMPTS) == "webhook failed"
    stored = (await alerts_of(container, opened))["webhook"]
    assert stored["status"] == "failed" and stored["attempts"] == 3

    # The receiver recovers: the next run delivers it.
    receiver.status = 200
    assert await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=2) == "webhook sent"
    stored = (await alerts_of(container, opened))["webhook"]
    assert stored["status"] == "sent" and stored["attempts"] == 4 and "error" not in stored
    assert len(receiver.requests) == 4
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(opened.handoff_id)}


async def test_an_alert_retried_after_the_coach_took_or_closed_the_handoff_is_not_sent(
    container: Container,
    settings: Settings,
    receiver: Receiver,
) -> None:
    """A retry finds the handoff claimed: its opening alert is recorded ``skipped`` with the reason, not sent (it
    would page the coach about a conversation they have); a crisis in it still alerts, even once it is closed (the
    crisis reply answered the message: nobody else is told)."""
    receiver.status = 500
    opened = await open_handoff(container, settings, webhook_url=receiver.url, reason="human_request")
    alerts = service(container, settings)
    with pytest.raises(Retry):
        await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=1)
    receiver.status = 200

    async def set_status(status: str) -> None:
        async with tenant_session(container.sessionmaker, opened.coach_id) as session:
            handoff = await session.get(Handoff, opened.handoff_id)
            assert handoff is not None
            handoff.status = status
            await session.commit()

    await set_status("claimed")
    assert await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=2) == "webhook skipped"
    stored = (await alerts_of(container, opened))["webhook"]
    assert stored["status"] == "skipped" and "took the conversation" in stored["error"]
    assert len(receiver.requests) == 1, "only the first, failed, attempt reached the receiver"

    crisis = crisis_event(uuid.uuid4())
    assert await alerts.deliver(opened.coach_id, opened.handoff_id, event=crisis, reason="crisis") == "webhook sent"
    assert len(receiver.requests) == 2
    await set_status("closed")
    later = crisis_event(uuid.uuid4())
    assert await alerts.deliver(opened.coach_id, opened.handoff_id, event=later, reason="crisis") == "webhook sent"
    assert len(receiver.requests) == 3


async def test_a_failing_channel_does_not_resend_the_one_that_worked(
    container: Container,
    settings: Settings,
    receiver: Receiver,
) -> None:
    closed_port = free_port()  # nothing listens there: connection refused
    opened = await open_handoff(container, settings, webhook_url=receiver.url, alert_email="coach@example.com")
    alerts = service(container, settings, smtp_host="127.0.0.1", smtp_port=closed_port, smtp_starttls=False)

    with pytest.raises(Retry):
        await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=1)
    with pytest.raises(Retry):
        await alerts.deliver(opened.coach_id, opened.handoff_id, attempt=2)

    stored = await alerts_of(container, opened)
    assert stored["webhook"]["status"] == "sent" and stored["webhook"]["attempts"] == 1
    assert stored["email"]["status"] == "failed" and stored["email"]["attempts"] == 2
    assert stored["email"]["error"] and len(stored["email"]["error"]) <= 300
    assert len(receiver.requests) == 1


async def test_nothing_configured_sends_nothing(
    container: Container,
    settings: Settings,
    receiver: Receiver,
) -> None:
    alerts = service(container, settings, smtp_host=None)

    # No webhook, no alert address: no entry at all.
    bare = await open_handoff(container, settings)
    assert await alerts.deliver(bare.coach_id, bare.handoff_id) == "no alert channel configured"
    assert await alerts_of(container, bare) == {}

    # An alert address but no SMTP server: e-mail recorded as skipped (not a failure, no retry).
    no_smtp = await open_handoff(container, settings, alert_email="coach@example.com")
    assert await alerts.deliver(no_smtp.coach_id, no_smtp.handoff_id) == "email skipped"
    stored = await alerts_of(container, no_smtp)
    assert set(stored) == {"email"}
    assert stored["email"]["status"] == "skipped" and stored["email"]["error"] == "SMTP is not configured"
    assert receiver.requests == []

    # Another tenant's handoff is invisible (row-level security): nothing is sent or recorded.
    assert await alerts.deliver(bare.coach_id, no_smtp.handoff_id) == "handoff not found"
    assert await alerts_of(container, no_smtp) == stored


async def test_the_worker_job_delivers_the_alert(
    container: Container,
    settings: Settings,
    receiver: Receiver,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The queued ``deliver_alert`` job, run by a real arq worker, sends the webhook once."""
    opened = await open_handoff(container, settings, webhook_url=receiver.url)
    for _ in range(2):  # the same job id: queued once
        async with tenant_session(container.sessionmaker, opened.coach_id) as session:
            jobs.deliver_alert(session, opened.coach_id, opened.handoff_id)
    await run_jobs()

    assert len(receiver.requests) == 1
    assert (await alerts_of(container, opened))["webhook"]["status"] == "sent"


async def test_an_alert_the_database_dropped_is_tried_again(
    container: Container, settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database drops its connection as the ``deliver_alert`` job reads the handoff: arq is asked to run the
    job again (a plain error was its end: its outbox row is gone, the crisis alert was lost), and the next try
    sends it; at the last try the error is the job's end."""
    opened = await open_handoff(container, settings, webhook_url=receiver.url)
    ids = (str(opened.coach_id), str(opened.handoff_id))

    async def dropped(*args: Any) -> None:
        raise DBAPIError("SELECT 1", {}, ConnectionResetError("reset"), connection_invalidated=True)

    with monkeypatch.context() as patched:
        patched.setattr(container.alerts, "_load", dropped)
        with pytest.raises(Retry) as retried:
            await worker.deliver_alert({"container": container, "job_try": 1}, *ids)
        assert retried.value.defer_score == int(retry_delay(1) * 1000)
        with pytest.raises(DBAPIError):
            await worker.deliver_alert({"container": container, "job_try": MAX_ATTEMPTS}, *ids)
    assert receiver.requests == []
    assert await worker.deliver_alert({"container": container, "job_try": 2}, *ids) == "webhook sent"
    assert len(receiver.requests) == 1


async def test_a_webhook_without_a_usable_secret_fails_without_retrying(
    container: Container, settings: Settings, receiver: Receiver
) -> None:
    """Nothing is sent unsigned; a retry cannot fix a missing secret, so the job does not ask for one."""
    opened = await open_handoff(container, settings, webhook_url=receiver.url)
    async with tenant_session(container.sessionmaker, opened.coach_id) as session:
        coach = await session.get(Coach, opened.coach_id)
        assert coach is not None
        coach.alert_webhook_secret_encrypted = None

    assert await service(container, settings).deliver(opened.coach_id, opened.handoff_id) == "webhook failed"
    stored = (await alerts_of(container, opened))["webhook"]
    assert stored["status"] == "failed" and "secret" in stored["error"]
    assert receiver.requests == []


# ---------------------------------------------------------------------------------------- one alert per event


async def test_human_only_crisis_after_the_first_message_alerts_again_urgently(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[ApiCoach]],
    receiver: Receiver,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """In ``human_only`` mode the first message opens the handoff (one alert); a crisis message in that already
    alerted handoff is a new escalation event: a second, urgent delivery with its own ``webhook-id``. The signing
    secret is shown by the change that made it only; a new one made between the two signs the second alone."""
    coach = await make_coach("Human Only Coach")
    response = await http.patch(
        "/api/v1/settings",
        headers=coach.headers,
        json={"handoff_mode": "human_only", "alert_webhook_url": receiver.url},
    )
    assert response.status_code == 200, response.text
    secret = response.json()["alert_webhook_secret"]
    assert secret.startswith("whsec_") and response.json()["alert_webhook_secret_hint"] == mask_secret(secret)
    shown = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert shown["alert_webhook_secret"] is None and shown["alert_webhook_secret_hint"] == mask_secret(secret)
    client = await make_client(http, coach, "Robin")
    auth = {"Authorization": f"Bearer {client['widget_token']}"}

    first = await http.post("/api/v1/chat", headers=auth, json={"text": "hi"})
    assert first.status_code == 200, first.text
    assert first.json()["handoff"]["reason"] == "human_only"
    conversation_id = first.json()["conversation_id"]
    await run_jobs()
    assert len(receiver.requests) == 1
    rotated = await http.post("/api/v1/settings/alert-webhook-secret", headers=coach.headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["alert_webhook_secret"]
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert rotated.json()["alert_webhook_secret_hint"] == mask_secret(new_secret)

    crisis = await http.post(
        "/api/v1/chat", headers=auth, json={"text": "I want to end my life tonight", "conversation_id": conversation_id}
    )
    assert crisis.status_code == 200, crisis.text
    assert crisis.json()["handoff"] == {"status": "open", "reason": "crisis"}
    await run_jobs()
    await run_jobs()  # nothing left to send: still two deliveries

    assert len(receiver.requests) == 2, [r.body for r in receiver.requests]
    opened = Webhook(secret).verify(receiver.requests[0].body, receiver.requests[0].headers)
    urgent = Webhook(new_secret).verify(receiver.requests[1].body, receiver.requests[1].headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(receiver.requests[1].body, receiver.requests[1].headers)
    assert opened["type"] == "handoff.opened"
    assert opened["data"]["urgent"] is False and opened["data"]["reason"] == "human_only"
    assert urgent["type"] == "handoff.crisis"
    assert urgent["data"]["urgent"] is True and urgent["data"]["reason"] == "crisis"
    assert urgent["data"]["handoff_id"] == opened["data"]["handoff_id"]
    assert urgent["data"]["conversation_id"] == conversation_id
    handoff_id = opened["data"]["handoff_id"]
    first_id, second_id = (r.headers["webhook-id"] for r in receiver.requests)
    assert first_id == handoff_id
    assert second_id == f"{handoff_id}:crisis:{urgent['data']['message_id']}"


async def test_a_crisis_event_is_sent_once_across_retries_and_each_new_event_sends(
    container: Container,
    settings: Settings,
    receiver: Receiver,
    smtp: tuple[Mailbox, int],
) -> None:
    """Every event has its own delivery state: retries of one event send it once (webhook and e-mail), a
    new crisis message in the same handoff always sends, and the opening's record stays where readers look."""
    mailbox, port = smtp
    opened = await open_handoff(
        container, settings, webhook_url=receiver.url, alert_email="coach@example.com", reason="human_only"
    )
    alerts = service(container, settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    assert await alerts.deliver(opened.coach_id, opened.handoff_id) == "webhook sent, email sent"
    assert mailbox.messages[0][1]["Subject"] == "Handoff: Maya — Human-only mode"

    first, second = uuid.uuid4(), uuid.uuid4()
    for attempt in (1, 2, 3):  # arq retries the same event's job
        summary = await alerts.deliver(
            opened.coach_id, opened.handoff_id, event=crisis_event(first), reason="crisis", attempt=attempt
        )
        assert summary == "webhook sent, email sent"
    assert len(receiver.requests) == 2 and len(mailbox.messages) == 2

    await alerts.deliver(opened.coach_id, opened.handoff_id, event=crisis_event(second), reason="crisis")
    assert len(receiver.requests) == 3 and len(mailbox.messages) == 3

    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert ids == [
        str(opened.handoff_id),
        f"{opened.handoff_id}:crisis:{first}",
        f"{opened.handoff_id}:crisis:{second}",
    ]
    assert opened.secret is not None
    bodies = [Webhook(opened.secret).verify(r.body, r.headers) for r in receiver.requests]
    assert [b["data"]["urgent"] for b in bodies] == [False, True, True]
    assert bodies[1]["data"]["message_id"] == str(first)

    subjects = [m["Subject"] for _, m in mailbox.messages]
    assert subjects[1] == subjects[2] == "[URGENT] Crisis message in handoff: Maya"
    message_ids = [m["Message-ID"] for _, m in mailbox.messages]
    assert len(set(message_ids)) == 3 and mailbox.messages[1][1]["In-Reply-To"] == message_ids[0]

    stored = await alerts_of(container, opened)
    assert stored["webhook"]["status"] == "sent" and stored["webhook"]["attempts"] == 1
    assert stored["email"]["status"] == "sent"
    assert set(stored["events"]) == {crisis_event(first), crisis_event(second)}
    for event in stored["events"].values():
        assert event["webhook"]["status"] == "sent" and event["webhook"]["attempts"] == 1
        assert event["email"]["status"] == "sent" and event["email"]["attempts"] == 1


async def test_a_failed_crisis_event_is_retried_on_its_own(
    container: Container,
    settings: Settings,
    receiver: Receiver,
) -> None:
    """A crisis event's failure is retried (arq ``Retry``) without re-sending the opening alert."""
    opened = await open_handoff(container, settings, webhook_url=receiver.url, reason="human_only")
    alerts = service(container, settings)
    assert await alerts.deliver(opened.coach_id, opened.handoff_id) == "webhook sent"

    event = crisis_event(uuid.uuid4())
    receiver.status = 503
    with pytest.raises(Retry):
        await alerts.deliver(opened.coach_id, opened.handoff_id, event=event, reason="crisis", attempt=1)
    receiver.status = 204
    assert await alerts.deliver(opened.coach_id, opened.handoff_id, event=event, reason="crisis", attempt=2) == (
        "webhook sent"
    )
    assert [r.headers["webhook-id"] for r in receiver.requests] == [str(opened.handoff_id)] + [
        f"{opened.handoff_id}:{event}"
    ] * 2
    stored = await alerts_of(container, opened)
    assert stored["webhook"]["attempts"] == 1
    assert (
        stored["events"][event]["webhook"]["status"] == "sent" and stored["events"][event]["webhook"]["attempts"] == 2
    )
