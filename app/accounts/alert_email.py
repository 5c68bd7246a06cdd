"""Confirming a coach's alert e-mail address before any alert goes there.

A crisis alert names a client and quotes what they wrote: a mistyped address would send it to a stranger, and
an unchecked one would let any account make the server mail any address. So a new ``alert_email`` is stored as
``Coach.alert_email_pending`` (:func:`set_alert_email`) and the worker job ``confirm_alert_email``
(:func:`app.db.jobs.confirm_alert_email`, sent by :meth:`app.handoff.alerts.AlertService.send_confirmation`)
e-mails that address a link to :data:`CONFIRM_PATH`. Opening the link and pressing "Confirm" moves the address
to ``Coach.alert_email``, the only one alerts go to; until then alerts keep going to the previous confirmed
address, or nowhere but the dashboard.

The link's token is a Fernet token (:meth:`app.core.security.SecretBox.encrypt`: encrypted and authenticated
under ``SECRET_KEY``, stamped with its creation time) of ``{"coach_id", "email"}``: it cannot be forged or
altered, expires after :data:`CONFIRM_TTL`, and confirms only while its address is still the pending one, so
it confirms once (a new address, or the confirmation itself, voids it).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from app.accounts.models import Coach
from app.core.errors import InvalidInput
from app.core.security import SecretBox

CONFIRM_TTL = timedelta(hours=48)
"""How long a confirmation link works."""
CONFIRM_PATH = "/alert-email/confirm"
"""The public page a confirmation link opens (``?token=…``): a "Confirm" button that POSTs the token back."""
INVALID_LINK = (
    "This confirmation link is not valid: it has expired (links work for 48 hours), it was already used, or the "
    "alert e-mail was changed since. Ask for a new link in the dashboard: Settings → Handoff → Resend the link."
)
"""What a tampered, expired, used or outdated link answers (400)."""


def set_alert_email(coach: Coach, email: str | None) -> None:
    """Apply a checked ``alert_email`` setting: ``None`` (cleared) stops e-mail alerts at once and drops a pending
    address; the confirmed address itself drops a pending one; any other address becomes the pending one
    (alerts keep going to the confirmed address until it is confirmed)."""
    if email is None:
        coach.alert_email = coach.alert_email_pending = None
    elif email == coach.alert_email:
        coach.alert_email_pending = None
    else:
        coach.alert_email_pending = email


def confirmation_token(secrets: SecretBox, coach_id: uuid.UUID, email: str, *, at: int | None = None) -> str:
    """The token of a confirmation link for ``email`` as ``coach_id``'s alert address, made at ``at`` (unix
    seconds; default now): a URL-safe Fernet token."""
    payload = json.dumps({"coach_id": str(coach_id), "email": email}, separators=(",", ":"))
    return secrets.encrypt(payload, at=at).decode()


def confirmation_url(public_url: str, token: str) -> str:
    """The link e-mailed to the address: ``<public_url>/alert-email/confirm?token=<token>``."""
    return f"{public_url.rstrip('/')}{CONFIRM_PATH}?{urlencode({'token': token})}"


def read_confirmation_token(secrets: SecretBox, token: str) -> tuple[uuid.UUID, str]:
    """The ``(coach id, address)`` of a confirmation token. Raises ``InvalidInput`` (:data:`INVALID_LINK`) for a
    token that is not one of ours (malformed, tampered with, made under a key no longer configured) or older
    than :data:`CONFIRM_TTL`."""
    try:
        payload = json.loads(secrets.decrypt(token.encode(), ttl_s=int(CONFIRM_TTL.total_seconds())))
        return uuid.UUID(payload["coach_id"]), str(payload["email"])
    except (ValueError, KeyError, TypeError, UnicodeEncodeError) as exc:
        raise InvalidInput(INVALID_LINK) from exc
