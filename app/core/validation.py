"""Checks of values a coach enters in settings, shared by the account and the handoff settings. Each raises
``InvalidInput`` naming the field, so the API and the dashboard show one clear message."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import urlsplit

from app.core.errors import InvalidInput

MAX_ALLOWED_ORIGINS = 20
"""At most this many origins in one origin list setting (e.g. ``widget_allowed_origins``)."""
_DEFAULT_PORTS = {"http": 80, "https": 443}

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
"""A plausible e-mail address (``local@domain.tld``); deliverability is the mail server's to judge."""

NUL = "\x00"
NUL_REFUSED = "text must not contain the NUL character (U+0000)"
"""PostgreSQL stores no U+0000 in text or jsonb: the message of a value refused for holding one."""
NUL_SQLSTATES = frozenset({"22021", "22P05"})
"""PostgreSQL's ``character_not_in_repertoire`` (a NUL byte in text) and ``untranslatable_character`` (``\\u0000``
in jsonb): it stores no U+0000 in text or jsonb."""


def refused_for_nul(exc: BaseException) -> bool:
    """Whether a database error (SQLAlchemy's ``DBAPIError``, the driver's in ``orig``) is PostgreSQL refusing a
    value for holding U+0000 (:data:`NUL_SQLSTATES`)."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in NUL_SQLSTATES


MAX_NAME_CHARS = 200
"""The longest coach or client name (the ``name`` columns' size)."""
MAX_PERSONA_CHARS = 8000
"""The longest persona (system prompt) a coach may write."""
MAX_EMAIL_CHARS = 320
"""The longest e-mail address (RFC 3696's errata: 64 + 1 + 255), the column's size."""

MAX_URL_CHARS = 500
"""The longest URL a coach may set (the model endpoint, the alert webhook: the columns' size)."""
MAX_API_KEY_CHARS = 1024
"""The longest provider API key a coach may enter (OpenAI's project keys are under 200 characters)."""
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def is_https(url: str) -> bool:
    """Whether ``url`` (e.g. ``PUBLIC_URL``) is an https URL: then cookies are ``Secure`` and HSTS is sent."""
    return url.lower().startswith("https://")


def in_range(name: str, value: int, bounds: tuple[int, int]) -> int:
    """``value`` if it is an integer within ``bounds`` (inclusive), else ``InvalidInput`` naming the field."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}")
    return value


_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
"""Unicode's bidirectional embeddings, overrides and isolates (UAX #9): in a name or a title they reorder how the
text after them is shown (``ev\u202etxt.exe`` reads "evexe.txt"), the spoof of "Trojan Source" (CVE-2021-42574).
Right-to-left scripts need none of them (their letters carry their direction; the marks U+200E/U+200F stay)."""


def plain_text(value: str) -> str:
    """``value`` without :data:`_BIDI_CONTROLS` and with control characters (line breaks, tabs: Unicode category
    Cc) as spaces: what a name, a title or a file name may hold."""
    value = _BIDI_CONTROLS.sub("", value)
    if value.isprintable():
        return value
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in value)


def _visible(text: str) -> bool:
    """Whether ``text`` shows anything: a character that is neither blank nor an invisible format character
    (category Cf: a zero-width space, a BOM)."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)


def bounded_text(name: str, value: str, max_chars: int, *, required: bool = False) -> str:
    """``value`` with blanks around it removed and without bidirectional controls (:data:`_BIDI_CONTROLS`), at
    most ``max_chars`` characters long (and, when ``required``, showing something: a name of zero-width characters
    alone is empty). Raises ``InvalidInput`` naming the field otherwise: the API's schema says the same, and the
    dashboard's forms, which have no schema, get the same message instead of the database's error."""
    text = _BIDI_CONTROLS.sub("", value).strip()
    if required and not _visible(text):
        raise InvalidInput(f"{name} must not be empty")
    if len(text) > max_chars:
        raise InvalidInput(f"{name} must be at most {max_chars} characters")
    return text


def http_url(name: str, value: str) -> str | None:
    """An http(s) URL with surrounding blanks removed; ``None`` for an empty one (the setting is cleared).
    Raises ``InvalidInput`` for any other scheme or over :data:`MAX_URL_CHARS` characters."""
    url = value.strip()
    if url and not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{name} must start with http:// or https://")
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"{name} must be at most {MAX_URL_CHARS} characters")
    return url or None


def provider_api_key(name: str, value: str) -> str | None:
    """A provider API key, blanks around it removed; ``None`` for an empty one (the key is cleared). The key is
    sent as ``Authorization: Bearer <key>``, so it must be 1 to :data:`MAX_API_KEY_CHARS` visible ASCII
    characters (RFC 9110 §5.5 field values, as the HTTP client encodes them: ASCII only, no spaces or control
    characters; RFC 6750's Bearer tokens are a subset). Raises ``InvalidInput`` naming the field otherwise: such
    a key could never be sent, and every call with it would fail."""
    key = value.strip()
    if not key:
        return None
    if len(key) > MAX_API_KEY_CHARS or not _HEADER_SAFE.fullmatch(key):
        raise InvalidInput(
            f"{name} must be 1 to {MAX_API_KEY_CHARS} visible ASCII characters (letters, digits, punctuation; no "
            "spaces): it is sent in an HTTP header"
        )
    return key


def web_origin(name: str, value: str) -> str:
    """``value`` as a web origin ``scheme://host[:port]`` (RFC 6454): http or https, lower-case, no default
    port, no path, query, fragment or user info. Raises ``InvalidInput`` naming the field ``name``."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InvalidInput(f"{name}: {value!r} is not an origin (scheme://host[:port])") from None
    host = parts.hostname
    if (
        parts.scheme.lower() not in _DEFAULT_PORTS
        or not host
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "*" in host
        or any(c.isspace() for c in text)
    ):
        raise InvalidInput(f"{name}: {value!r} is not an origin (scheme://host[:port], e.g. https://example.com)")
    scheme = parts.scheme.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}"


def web_origins(name: str, values: Iterable[str]) -> list[str]:
    """Each of ``values`` as a normalised origin (:func:`web_origin`), blanks dropped, duplicates once, at
    most :data:`MAX_ALLOWED_ORIGINS`. Raises ``InvalidInput`` naming the field."""
    origins: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be a list of origins (strings)")
        if value.strip() and (origin := web_origin(name, value)) not in origins:
            origins.append(origin)
    if len(origins) > MAX_ALLOWED_ORIGINS:
        raise InvalidInput(f"{name}: at most {MAX_ALLOWED_ORIGINS} origins")
    return origins
