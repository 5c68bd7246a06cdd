"""Checks of values a coach enters in settings, shared by the account and the handoff settings. Each raises
``InvalidInput`` naming the field, so the API and the dashboard show one clear message."""

from __future__ import annotations

import re

from app.core.errors import InvalidInput

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
"""A plausible e-mail address (``local@domain.tld``); deliverability is the mail server's to judge."""


def in_range(name: str, value: int, bounds: tuple[int, int]) -> int:
    """``value`` if it is an integer within ``bounds`` (inclusive), else ``InvalidInput`` naming the field."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}")
    return value


def http_url(name: str, value: str) -> str | None:
    """An http(s) URL with surrounding blanks removed; ``None`` for an empty one (the setting is cleared).
    Raises ``InvalidInput`` for any other scheme."""
    url = value.strip()
    if url and not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{name} must start with http:// or https://")
    return url or None
