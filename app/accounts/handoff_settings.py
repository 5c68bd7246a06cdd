"""A coach's escalation settings: mode, confidence threshold, topics, SLA, hours, crisis resources, alerts.

Validated here and applied to the ``Coach`` row by :meth:`app.accounts.service.AccountService.update_settings`
(the same call as persona and provider settings, so one ``PATCH /api/v1/settings`` changes them together and
a bad field changes nothing).
"""

from __future__ import annotations

import base64
import secrets as _secrets
from collections.abc import Sequence
from typing import Any

from app.accounts.alert_email import set_alert_email
from app.accounts.availability import validate_availability
from app.accounts.models import Coach, HandoffMode
from app.core.errors import InvalidInput
from app.core.security import SecretBox
from app.core.validation import EMAIL_RE, MAX_EMAIL_CHARS, bounded_text, http_url, in_range

SLA_MINUTES_RANGE = (1, 10080)
"""Allowed ``handoff_sla_minutes``: a minute to a week."""
MAX_TOPICS = 50
MAX_TOPIC_CHARS = 100
MAX_RESOURCES = 10
MAX_RESOURCE_CHARS = 300
CRISIS_LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German", "pt": "Portuguese"}
CRISIS_LANGUAGES = tuple(CRISIS_LANGUAGE_NAMES)
"""Languages a client's crisis message is recognised in (:attr:`app.handoff.risk.RiskAssessment.language`),
the keys of ``crisis_resources_by_language``."""

HANDOFF_FIELDS = (
    "handoff_mode",
    "confidence_threshold",
    "high_stakes_topics",
    "always_escalate_topics",
    "handoff_sla_minutes",
    "availability",
    "crisis_resources",
    "crisis_resources_by_language",
    "alert_webhook_url",
    "alert_email",
)
"""The settings this module owns, as named in the API."""


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks signing secret: ``"whsec_"`` + base64 of 24 random bytes (192 bits).

    Store it encrypted (:meth:`app.core.security.SecretBox.encrypt`) in
    ``Coach.alert_webhook_secret_encrypted`` and show it to the coach once, for their receiver.
    """
    return "whsec_" + base64.b64encode(_secrets.token_bytes(24)).decode()


def replace_webhook_secret(coach: Coach, secrets: SecretBox) -> str:
    """Give the coach's alert webhook a new signing secret (:func:`new_webhook_secret`; the old one stops signing
    at once) and return it, to show once. Raises ``InvalidInput`` when no ``alert_webhook_url`` is set."""
    if not coach.alert_webhook_url:
        raise InvalidInput("set alert_webhook_url first: the signing secret signs what is sent there")
    secret = new_webhook_secret()
    coach.alert_webhook_secret_encrypted = secrets.encrypt(secret)
    return secret


def _lines(name: str, values: Sequence[str], limit: int, chars: int) -> list[str]:
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{name} must be a list of strings")
    cleaned = list(dict.fromkeys(v.strip() for v in values if v.strip()))
    if len(cleaned) > limit:
        raise InvalidInput(f"{name} takes at most {limit} entries")
    if any(len(v) > chars for v in cleaned):
        raise InvalidInput(f"each entry of {name} must be at most {chars} characters")
    return cleaned


def _resources_by_language(value: Any) -> dict[str, list[str]]:
    """``{language: [line, …]}`` checked like ``crisis_resources`` per language; a language with no lines is
    dropped (``{}`` clears them all). Raises ``InvalidInput`` naming the field."""
    name = "crisis_resources_by_language"
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be an object of language → list of lines")
    unknown = sorted(str(key) for key in value if key not in CRISIS_LANGUAGES)
    if unknown:
        raise InvalidInput(f"{name}: unknown language {', '.join(unknown)} (one of {', '.join(CRISIS_LANGUAGES)})")
    cleaned = {
        lang: _lines(f"{name}.{lang}", lines, MAX_RESOURCES, MAX_RESOURCE_CHARS) for lang, lines in value.items()
    }
    return {lang: lines for lang, lines in sorted(cleaned.items()) if lines}


def apply_handoff_settings(coach: Coach, secrets: SecretBox, **changes: Any) -> None:
    """Validate and set the given fields (``None`` leaves one as is; ``""`` clears the webhook URL or the
    e-mail; ``{}`` clears the availability hours: always available, or every per-language crisis resource).
    Setting a new webhook URL generates its signing secret (``whsec_…``); a new ``alert_email`` waits for its
    owner's confirmation (:func:`app.accounts.alert_email.set_alert_email`). Raises ``InvalidInput`` naming the
    first bad field."""
    unknown = set(changes) - set(HANDOFF_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown settings: {', '.join(sorted(unknown))}")
    mode = changes.get("handoff_mode")
    if mode is not None:
        if mode not in HandoffMode.ALL:
            raise InvalidInput(f"handoff_mode must be one of {', '.join(HandoffMode.ALL)}")
        coach.handoff_mode = mode
    threshold = changes.get("confidence_threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise InvalidInput("confidence_threshold must be a number from 0 to 1")
        coach.confidence_threshold = float(threshold)
    for name in ("high_stakes_topics", "always_escalate_topics"):
        if changes.get(name) is not None:
            setattr(coach, name, _lines(name, changes[name], MAX_TOPICS, MAX_TOPIC_CHARS))
    if changes.get("crisis_resources") is not None:
        coach.crisis_resources = _lines(
            "crisis_resources", changes["crisis_resources"], MAX_RESOURCES, MAX_RESOURCE_CHARS
        )
    if changes.get("crisis_resources_by_language") is not None:
        coach.crisis_resources_by_language = _resources_by_language(changes["crisis_resources_by_language"])
    if changes.get("handoff_sla_minutes") is not None:
        coach.handoff_sla_minutes = in_range("handoff_sla_minutes", changes["handoff_sla_minutes"], SLA_MINUTES_RANGE)
    if changes.get("availability") is not None:
        coach.availability = validate_availability(changes["availability"] or None)
    if changes.get("alert_webhook_url") is not None:
        url = http_url("alert_webhook_url", changes["alert_webhook_url"])
        if url != coach.alert_webhook_url:
            coach.alert_webhook_secret_encrypted = secrets.encrypt(new_webhook_secret()) if url else None
        coach.alert_webhook_url = url
    email = changes.get("alert_email")
    if email is not None:
        email = bounded_text("alert_email", email, MAX_EMAIL_CHARS)
        if email and not EMAIL_RE.match(email):
            raise InvalidInput("alert_email is not an e-mail address")
        set_alert_email(coach, email or None)
