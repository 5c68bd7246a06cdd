"""The coach's handoff alerts outside the dashboard: a signed webhook and an e-mail.

One alert per escalation event of a handoff, queued as the arq job ``deliver_alert`` (job id
``deliver_alert:<handoff id>:<event>``, see :func:`app.db.jobs.deliver_alert`), which calls
:meth:`AlertService.deliver`. Events:

``opened`` (:data:`OPENED`)
    The handoff opened (:meth:`app.handoff.service.HandoffService.open`); urgent when opened by a crisis.
``crisis:<client message id>`` (:func:`crisis_event`)
    A crisis message while the handoff is already open or claimed
    (:meth:`app.handoff.service.HandoffService.escalate_to_crisis`): always urgent, however many alerts the handoff
    had before (in ``human_only`` mode every crisis after the first message is such an event). The handoff's
    reason, detail, confidence and brief are the crisis's by then (the brief quotes the crisis message), and the
    alert sends them as stored.

Channels
    ``webhook``
        ``POST`` of a JSON event to the coach's ``alert_webhook_url``, signed per the Standard Webhooks
        specification (https://www.standardwebhooks.com, ``spec/standard-webhooks.md``): headers
        ``webhook-id`` (the event's id, :func:`webhook_id`: the handoff id for ``opened``,
        ``<handoff id>:<event>`` otherwise; stable across retries so receivers can deduplicate),
        ``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` of
        ``"{id}.{timestamp}.{body}"`` under the secret's bytes (``whsec_<base64>``), computed by the
        reference library ``standardwebhooks``. Receivers verify with
        ``standardwebhooks.Webhook(secret).verify(body, headers)``.
    ``email``
        A plain-text message to the coach's ``alert_email`` (a confirmed address only: a new one waits in
        ``alert_email_pending`` until its owner opens the link :meth:`AlertService.send_confirmation` mailed
        to it, :mod:`app.accounts.alert_email`) through the server's SMTP settings
        (``SMTP_HOST`` …), sent with ``aiosmtplib``. Without ``SMTP_HOST`` the channel is recorded as
        ``skipped``.

Preview
    A handoff of the coach's own preview chat ("Preview (you)", :attr:`app.accounts.models.Coach.
    preview_client_id`: the coach trying the clone, e.g. its crisis flow) is alerted as a test: sent, so the
    coach sees the channels work, but ``urgent: false`` and ``preview: true`` in the webhook event and a
    ``[Test]`` e-mail subject, so no pager or on-call rule fires for a client who does not exist.

Delivery state lives in ``Handoff.alerts``, per event (the ``opened`` event's channels at the top level,
as before events existed, so existing readers keep working)::

    {"webhook": {"status": "sent" | "failed", "at": ISO 8601, "attempts": n, "error"?: str},
     "email":   {"status": "sent" | "failed" | "skipped", "at": ..., "attempts": n, "error"?: str},
     "events":  {"crisis:<message id>": {"webhook": {...}, "email": {...}}, ...}}

A channel the coach has not configured has no entry. arq runs a job at least once, so a channel already
``sent`` for an event is never sent again for that event; a new event always sends. A failed channel makes
the job raise :class:`arq.worker.Retry` with a growing delay until :data:`MAX_ATTEMPTS`; the worker's
``max_tries`` for the job must equal it.
The webhook secret is never logged nor stored in clear; stored errors are at most
:data:`MAX_ERROR_CHARS` characters and say what failed (a status code with its standard phrase, the kind of
transport error, the egress guard's reason), never what the receiver answered.

The webhook URL is the coach's choice, so the POST goes through the egress guard
(:class:`app.core.egress.EgressGuard`, allowlist ``OUTBOUND_ALLOW``): https only, public addresses only, the
connection pinned to the checked address, no redirect followed (a 3xx is a failed delivery).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

import aiosmtplib
import httpx
from arq.worker import Retry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from app.accounts.alert_email import CONFIRM_TTL, confirmation_token, confirmation_url
from app.accounts.models import Client, Coach
from app.accounts.unit_of_work import unit_of_work
from app.conversations.handoffs import Handoff, HandoffReason, HandoffStatus
from app.core.config import Settings
from app.core.egress import EgressGuard, EgressRefused, http_status_text
from app.core.security import SecretBox
from app.core.text import one_line
from app.handoff.crisis import crisis_reasons, crisis_reasons_text

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
"""Tries of the ``deliver_alert`` job (``app/worker.py`` must pass it as the job's ``max_tries``): with
:func:`retry_delay`, the last one about three hours after the first, so a receiver or mail server down for a
while still gets a crisis alert (five tries over 100 s did not outlast a restart)."""
RETRY_DELAY_SECONDS = 10.0
RETRY_BACKOFF = 3.0


def retry_delay(attempt: int) -> float:
    """Seconds before the try after failed try ``attempt`` (1-based): ``RETRY_DELAY_SECONDS ×
    RETRY_BACKOFF^(attempt − 1)``, exponential back-off as Standard Webhooks recommends (10 s, 30 s, 90 s,
    4.5 min, 13.5 min, 40.5 min, 2 h)."""
    return RETRY_DELAY_SECONDS * RETRY_BACKOFF ** (attempt - 1)


WEBHOOK_TIMEOUT_SECONDS = 10.0
SMTP_TIMEOUT_SECONDS = 10.0
MAX_ERROR_CHARS = 300
WEBHOOK_EVENT = "handoff.opened"
"""The webhook ``type`` of the :data:`OPENED` event."""
WEBHOOK_CRISIS_EVENT = "handoff.crisis"
"""The webhook ``type`` of a crisis event inside an already open or claimed handoff."""
USER_AGENT = "OpenCoach-Webhooks/1"


WEBHOOK = "webhook"
EMAIL = "email"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"

OPENED = "opened"
"""The event of a handoff opening (its channels are stored at the top level of ``Handoff.alerts``)."""
CRISIS_PREFIX = "crisis:"
EVENTS = "events"
"""The key of ``Handoff.alerts`` holding every event but :data:`OPENED`."""


def crisis_event(client_message_id: uuid.UUID) -> str:
    """The event id of a crisis message inside an active handoff: ``crisis:<client message id>``."""
    return f"{CRISIS_PREFIX}{client_message_id}"


def webhook_id(handoff_id: uuid.UUID, event: str) -> str:
    """The ``webhook-id`` of an event: the handoff id for :data:`OPENED` (as before per-event alerts),
    ``<handoff id>:<event>`` for every other event."""
    return str(handoff_id) if event == OPENED else f"{handoff_id}:{event}"


def event_channels(alerts: dict[str, Any] | None, event: str) -> dict[str, Any]:
    """The stored channel records (``{"webhook": {...}, "email": {...}}``) of one event."""
    alerts = alerts or {}
    if event == OPENED:
        return {k: v for k, v in alerts.items() if k != EVENTS}
    events = alerts.get(EVENTS)
    entry = events.get(event) if isinstance(events, dict) else None
    return dict(entry) if isinstance(entry, dict) else {}


def _with_channel(alerts: dict[str, Any] | None, event: str, channel: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``alerts`` with one event's channel record replaced."""
    updated = dict(alerts or {})
    if event == OPENED:
        updated[channel] = entry
        return updated
    events = dict(updated.get(EVENTS) or {})
    events[event] = {**event_channels(updated, event), channel: entry}
    updated[EVENTS] = events
    return updated


def sign_webhook(secret: str, msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` (the exact JSON text sent).

    ``secret`` is ``whsec_<base64>``; ``timestamp`` an aware datetime (sent as whole unix seconds).
    Returns ``{"webhook-id", "webhook-timestamp", "webhook-signature"}``. Raises ``ValueError`` (binascii)
    for a secret that is not base64, ``standardwebhooks`` errors for an empty one.
    Source: Standard Webhooks specification, "Signature scheme" (symmetric, ``v1``).
    """
    signature = Webhook(secret).sign(msg_id, timestamp, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }


@dataclass(frozen=True)
class AlertContent:
    """What an alert says about one handoff (shared by the webhook event and the e-mail)."""

    handoff_id: uuid.UUID
    conversation_id: uuid.UUID
    client_id: uuid.UUID
    client_name: str
    reason: str
    detail: str
    confidence: float | None
    brief: str
    dashboard_url: str
    event: str = OPENED
    preview: bool = False
    """The handoff is of the coach's own preview chat: a test, never urgent."""

    @property
    def urgent(self) -> bool:
        """A client's crisis: a handoff opened by one, or a crisis message inside an active handoff (never in the
        coach's preview chat)."""
        return not self.preview and (self.reason == HandoffReason.CRISIS or self.event.startswith(CRISIS_PREFIX))

    @property
    def crisis_message_id(self) -> str | None:
        """The client message of a crisis event inside an active handoff (``None`` for the opening)."""
        return self.event.removeprefix(CRISIS_PREFIX) if self.event.startswith(CRISIS_PREFIX) else None

    @property
    def reason_label(self) -> str:
        """The reason in words (``"Crisis risk"``), or the raw reason if it has no label."""
        return HandoffReason.LABELS.get(self.reason, self.reason)

    def webhook_event(self, at: datetime) -> dict[str, Any]:
        """The webhook body: ``{"type": "handoff.opened" | "handoff.crisis", "timestamp": ISO 8601, "data":
        {...}}``; a crisis handoff's ``detail`` is in words (:func:`~app.handoff.crisis.crisis_reasons_text`: labelled
        as the dashboard labels them, not as the detector's cue names), and ``crisis_reasons`` lists them as
        ``[{"label", "cue"}]`` (``null`` for another reason); a crisis event's ``data`` also names the client's
        ``message_id``."""
        reasons = crisis_reasons(self.detail)
        data: dict[str, Any] = {
            "handoff_id": str(self.handoff_id),
            "conversation_id": str(self.conversation_id),
            "client_id": str(self.client_id),
            "client_name": self.client_name,
            "reason": self.reason,
            "detail": crisis_reasons_text(self.detail) or self.detail,
            "crisis_reasons": None if reasons is None else [{"label": r.label, "cue": r.cue} for r in reasons],
            "confidence": self.confidence,
            "brief": self.brief,
            "urgent": self.urgent,
            "preview": self.preview,
            "dashboard_url": self.dashboard_url,
        }
        if self.crisis_message_id is not None:
            data["message_id"] = self.crisis_message_id
        return {
            "type": WEBHOOK_EVENT if self.event == OPENED else WEBHOOK_CRISIS_EVENT,
            "timestamp": at.isoformat(),
            "data": data,
        }

    def email(self, sender: str, recipient: str) -> EmailMessage:
        """The alert e-mail (plain text, UTF-8). ``Message-ID`` is derived from the handoff id and the event,
        so a re-sent alert can be recognised as the same message; a later event's e-mail replies to the
        opening one (same thread). Raises ``ValueError`` for a malformed address."""
        name = one_line(self.client_name, 100)
        message = EmailMessage()
        if self.preview:
            message["Subject"] = f"[Test] Preview handoff: {name} — {self.reason_label}"
        elif self.crisis_message_id is not None:
            message["Subject"] = f"[URGENT] Crisis message in handoff: {name}"
        elif self.urgent:
            message["Subject"] = f"[URGENT] Crisis handoff: {name}"
        else:
            message["Subject"] = f"Handoff: {name} — {self.reason_label}"
        message["From"] = sender
        message["To"] = recipient
        message["Date"] = format_datetime(datetime.now(UTC))
        domain = parseaddr(sender)[1].rpartition("@")[2] or "opencoach.local"
        opening = f"<handoff.{self.handoff_id}@{domain}>"
        if self.event == OPENED:
            message["Message-ID"] = opening
            first = f"{name} was handed to you{' — this may be a crisis, please respond now' if self.urgent else ''}."
        else:
            message["Message-ID"] = f"<handoff.{self.handoff_id}.{self.event.replace(':', '.')}@{domain}>"
            message["In-Reply-To"] = opening
            message["References"] = opening
            first = f"{name} wrote a crisis message in a conversation handed to you — please respond now."
        if self.preview:
            first = "A test from your own preview chat: no client is involved, nothing to do."
        confidence = "n/a" if self.confidence is None else f"{self.confidence:.2f}"
        lines = [
            first,
            "",
            f"Reason: {self.reason_label}",
            crisis_reasons_text(self.detail) or f"Detail: {self.detail or '-'}",
            f"AI confidence: {confidence}",
            "",
            "Brief:",
            self.brief or "-",
            "",
            f"Open the conversation: {self.dashboard_url}",
        ]
        message.set_content("\n".join(lines))
        return message


def confirmation_email(sender: str, recipient: str, coach_name: str, url: str) -> EmailMessage:
    """The e-mail asking ``recipient`` to confirm it as ``coach_name``'s alert address: plain text with the
    confirmation ``url`` (:func:`app.accounts.alert_email.confirmation_url`). Raises ``ValueError`` for a
    malformed address."""
    message = EmailMessage()
    message["Subject"] = "Confirm your OpenCoach alert e-mail"
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = format_datetime(datetime.now(UTC))
    hours = int(CONFIRM_TTL.total_seconds() // 3600)
    lines = [
        f'The OpenCoach account "{one_line(coach_name, 100)}" asked for its handoff alerts to be e-mailed to '
        "this address. They can include what clients in crisis wrote.",
        "",
        f"If that is you, confirm the address (the link works for {hours} hours):",
        url,
        "",
        "If you did not expect this, ignore this e-mail: nothing will be sent here.",
    ]
    message.set_content("\n".join(lines))
    return message


@dataclass(frozen=True)
class _Target:
    """One delivery run's snapshot of the coach's alert settings and the handoff."""

    content: AlertContent
    webhook_url: str | None
    webhook_secret: str | None
    secret_error: str | None
    alert_email: str | None
    alerts: dict[str, Any]
    moot: str | None
    """Why the event's alert is not worth sending any more (:func:`_moot`), or ``None``."""


@dataclass(frozen=True)
class _Outcome:
    """A channel's result: what to store, and whether a later attempt could change it."""

    status: str
    error: str | None = None
    retryable: bool = False


def _moot(status: str, event: str) -> str | None:
    """Why the opening alert (``event`` :data:`OPENED`) of a handoff now in ``status`` would only page the coach
    about something settled (a retry, or a queue that waited): the coach took the conversation, or handed it back,
    since. ``None`` when it is still news, and always for a crisis: the crisis reply answered the client's message,
    so a handback does not show it to anyone, and the alert is the only page about it."""
    if event != OPENED:
        return None
    if status == HandoffStatus.CLOSED:
        return "the handoff was closed before the alert went out"
    if status == HandoffStatus.CLAIMED:
        return "the coach took the conversation before the alert went out"
    return None


class AlertService:
    """Delivers the webhook and e-mail alerts of a handoff's events, at least once and at most once per event
    and channel."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, secrets: SecretBox) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._secrets = secrets
        self._egress = EgressGuard.from_settings(settings)

    async def deliver(
        self,
        coach_id: uuid.UUID,
        handoff_id: uuid.UUID,
        *,
        event: str = OPENED,
        reason: str | None = None,
        attempt: int = 1,
    ) -> str:
        """Send one event's alerts on every configured channel not yet ``sent`` for it; record each outcome.

        ``event`` is :data:`OPENED` or :func:`crisis_event`; ``reason`` the handoff's reason when the event
        happened (``None``: the handoff's reason now), so an opening alert delivered after a later crisis
        still says why the handoff opened. An opening alert found moot (the coach took the conversation or
        handed it back since: :func:`_moot`) is recorded ``skipped`` with why, not sent. ``attempt`` is the arq
        job try (1-based). Returns a summary such as ``"webhook sent, email skipped"`` (``"no alert channel
        configured"``, ``"handoff not found"``). Raises :class:`arq.worker.Retry` (``defer`` =
        :func:`retry_delay` of ``attempt``) when a channel failed in a way a retry could fix and ``attempt <
        MAX_ATTEMPTS``; on the last attempt the failure stays recorded and the summary is returned. Database
        errors propagate.
        """
        target = await self._load(coach_id, handoff_id, event, reason)
        if target is None:
            return "handoff not found"
        channels: list[tuple[str, Callable[[_Target], Awaitable[_Outcome]]]] = []
        if target.webhook_url:
            channels.append((WEBHOOK, self._webhook))
        if target.alert_email:
            channels.append((EMAIL, self._email))
        if not channels:
            return "no alert channel configured"

        async def run(channel: str, send: Callable[[_Target], Awaitable[_Outcome]]) -> tuple[str, _Outcome]:
            previous = target.alerts.get(channel)
            if _status(previous) == SENT:
                return channel, _Outcome(SENT)
            outcome = _Outcome(SKIPPED, target.moot) if target.moot is not None else await send(target)
            await self._record(coach_id, handoff_id, event, channel, outcome)
            log.info(
                "handoff %s alert %s %s: %s%s (attempt %d)",
                handoff_id,
                event,
                channel,
                outcome.status,
                f" ({outcome.error})" if outcome.error else "",
                attempt,
            )
            return channel, outcome

        results = await asyncio.gather(*(run(channel, send) for channel, send in channels))
        summary = ", ".join(f"{channel} {outcome.status}" for channel, outcome in results)
        if attempt < MAX_ATTEMPTS and any(o.status == FAILED and o.retryable for _, o in results):
            raise Retry(defer=timedelta(seconds=retry_delay(attempt)))
        return summary

    async def _load(self, coach_id: uuid.UUID, handoff_id: uuid.UUID, event: str, reason: str | None) -> _Target | None:
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            handoff = await session.get(Handoff, handoff_id)
            coach = await session.get(Coach, coach_id)
            if handoff is None or coach is None or handoff.coach_id != coach_id:
                return None
            client = await session.get(Client, handoff.client_id)
        secret: str | None = None
        secret_error: str | None = None
        if coach.alert_webhook_url:
            if coach.alert_webhook_secret_encrypted is None:
                secret_error = "no webhook signing secret; make one in Settings (New signing secret)"
            else:
                try:
                    secret = self._secrets.decrypt(coach.alert_webhook_secret_encrypted)
                except ValueError:
                    secret_error = "the webhook signing secret cannot be decrypted (SECRET_KEY changed?)"
        base = self._settings.public_url.rstrip("/")
        content = AlertContent(
            handoff_id=handoff.id,
            conversation_id=handoff.conversation_id,
            client_id=handoff.client_id,
            client_name=client.name if client is not None else "a client",
            reason=reason or handoff.reason,
            detail=handoff.detail or "",
            confidence=handoff.confidence,
            brief=handoff.brief or "",
            dashboard_url=f"{base}/dashboard/conversations/{handoff.conversation_id}",
            event=event,
            preview=handoff.client_id == coach.preview_client_id,
        )
        return _Target(
            content=content,
            webhook_url=coach.alert_webhook_url,
            webhook_secret=secret,
            secret_error=secret_error,
            alert_email=coach.alert_email,
            alerts=event_channels(handoff.alerts, event),
            moot=_moot(handoff.status, event),
        )

    async def _webhook(self, target: _Target) -> _Outcome:
        if target.webhook_secret is None or target.webhook_url is None:
            return _Outcome(FAILED, target.secret_error or "no webhook URL")
        at = datetime.now(UTC).replace(microsecond=0)
        body = json.dumps(target.content.webhook_event(at), ensure_ascii=False, separators=(",", ":"))
        try:
            msg_id = webhook_id(target.content.handoff_id, target.content.event)
            headers = sign_webhook(target.webhook_secret, msg_id, at, body)
        except Exception:  # a malformed stored secret; never echo it
            return _Outcome(FAILED, "the webhook signing secret is malformed; make a new one in Settings")
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        try:
            async with self._egress.client(timeout=WEBHOOK_TIMEOUT_SECONDS) as client:
                response = await client.post(target.webhook_url, content=body.encode(), headers=headers)
        except EgressRefused as exc:
            return _Outcome(FAILED, _error(f"refused: {exc}"))
        except httpx.InvalidURL:
            return _Outcome(FAILED, "invalid webhook URL")
        except httpx.TimeoutException as exc:
            return _Outcome(FAILED, f"{type(exc).__name__}: no answer in time", retryable=True)
        except httpx.ConnectError as exc:
            return _Outcome(FAILED, f"{type(exc).__name__}: could not resolve or connect", retryable=True)
        except (httpx.HTTPError, OSError) as exc:
            return _Outcome(FAILED, f"{type(exc).__name__}: the request failed", retryable=True)
        if response.is_redirect:
            return _Outcome(FAILED, f"{http_status_text(response.status_code)}: redirects are not followed")
        if not response.is_success:
            # the standard phrase for the code: the receiver's own reason phrase and body are never stored
            return _Outcome(FAILED, http_status_text(response.status_code), retryable=True)
        return _Outcome(SENT)

    async def send_confirmation(self, coach_id: uuid.UUID, email: str, *, attempt: int = 1) -> str:
        """E-mail ``email`` the link that confirms it as the coach's alert address (:mod:`app.accounts.alert_email`)
        while it is still the coach's pending one. Returns ``"confirmation sent"`` (``skipped`` without
        ``SMTP_HOST``, ``failed (…)`` on the last attempt) or why nothing was sent. Raises
        :class:`arq.worker.Retry` like :meth:`deliver` when the mail server failed and ``attempt < MAX_ATTEMPTS``."""
        async with unit_of_work(self._sessionmaker, coach_id, autocommit=True) as uow:
            coach = await uow.session.get(Coach, coach_id)
            if coach is None or coach.alert_email_pending != email:
                return "not sent: the address no longer waits for confirmation"
            coach_name = coach.name
        url = confirmation_url(self._settings.public_url, confirmation_token(self._secrets, coach_id, email))
        try:
            outcome = await self._send_mail(confirmation_email(self._settings.smtp_from, email, coach_name, url))
        except ValueError as exc:  # a malformed address or sender
            outcome = _Outcome(FAILED, _error(f"cannot build the e-mail: {exc}"))
        summary = f"confirmation {outcome.status}" + (f" ({outcome.error})" if outcome.error else "")
        log.info("alert e-mail of coach %s: %s (attempt %d)", coach_id, summary, attempt)
        if outcome.status == FAILED and outcome.retryable and attempt < MAX_ATTEMPTS:
            raise Retry(defer=timedelta(seconds=retry_delay(attempt)))
        return summary

    async def _email(self, target: _Target) -> _Outcome:
        if not target.alert_email:
            return _Outcome(FAILED, "no alert e-mail address")
        try:
            message = target.content.email(self._settings.smtp_from, target.alert_email)
        except ValueError as exc:
            return _Outcome(FAILED, _error(f"cannot build the e-mail: {exc}"))
        return await self._send_mail(message)

    async def _send_mail(self, message: EmailMessage) -> _Outcome:
        """Send ``message`` through the server's SMTP settings (``SKIPPED`` without ``SMTP_HOST``)."""
        settings = self._settings
        if not settings.smtp_host:
            return _Outcome(SKIPPED, "SMTP is not configured")
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=settings.smtp_password,
                start_tls=settings.smtp_starttls,
                timeout=SMTP_TIMEOUT_SECONDS,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return _Outcome(FAILED, _error(f"{type(exc).__name__}: {exc}"), retryable=True)
        return _Outcome(SENT)

    async def _record(
        self, coach_id: uuid.UUID, handoff_id: uuid.UUID, event: str, channel: str, outcome: _Outcome
    ) -> None:
        """Store one event's channel outcome in ``handoff.alerts`` in its own transaction (row locked)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            handoff = await session.get(Handoff, handoff_id, with_for_update=True)
            if handoff is None:
                return
            previous = event_channels(handoff.alerts, event).get(channel)
            attempts = previous.get("attempts", 0) if isinstance(previous, dict) else 0
            entry: dict[str, Any] = {
                "status": outcome.status,
                "at": datetime.now(UTC).isoformat(),
                "attempts": int(attempts) + 1,
            }
            if outcome.error:
                entry["error"] = _error(outcome.error)
            handoff.alerts = _with_channel(handoff.alerts, event, channel, entry)


def _status(entry: Any) -> str | None:
    """A stored channel's status (``entry`` is its ``{"status", …}`` record, or ``None`` when not tried)."""
    return entry.get("status") if isinstance(entry, dict) else None


def _error(text: str) -> str:
    """One line of at most :data:`MAX_ERROR_CHARS` characters."""
    return one_line(text, MAX_ERROR_CHARS)
