"""Keep tokens and keys out of access logs.

The server's access log (uvicorn's ``uvicorn.access`` logger: ``'%s - "%s %s HTTP/%s" %d'`` with the client
address, method, full path with query string, HTTP version and status; a WebSocket handshake is logged on
``uvicorn.error`` as ``'%s - "WebSocket %s" [accepted]'``, the path with its query string) never logs headers, so
``Authorization`` and ``Cookie`` stay out of it; what could leak is a secret in the URL: a ``?token=`` (the
widget's WebSocket handshake), any other query parameter named like a secret, and the widget token in the
path of the widget pages (``/w/<token>``). :class:`RedactSecrets` rewrites those to ``[redacted]`` before any
handler sees the record; :func:`install_access_log_redaction` puts it on both loggers (idempotent).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, quote, urlsplit

ACCESS_LOGGERS = ("uvicorn.access", "uvicorn.error")
"""uvicorn's loggers that write request targets: HTTP requests, WebSocket handshakes."""
REDACTED = "[redacted]"
SECRET_PARAM_RE = re.compile(r"token|key|secret|password|session|auth|signature|code", re.IGNORECASE)
"""Query parameters whose values are never logged (``token``, ``api_key``, ``access_token``, …)."""
SECRET_PATH_RE = re.compile(r"^(/w/)[^/?]+")
"""A path that carries a widget token (``/w/<widget_token>``, ``/w/<widget_token>/memory``)."""


def redact_url(target: str) -> str:
    """``target`` (a request path with an optional query string) with the widget token of a ``/w/`` path and
    the values of secret-like query parameters (:data:`SECRET_PARAM_RE`) replaced by ``[redacted]``."""
    parts = urlsplit(target)
    path = SECRET_PATH_RE.sub(rf"\g<1>{REDACTED}", parts.path)
    if not parts.query:
        return path
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(
        f"{quote(name, safe='')}={REDACTED if SECRET_PARAM_RE.search(name) else quote(value, safe='')}"
        for name, value in pairs
    )
    return f"{path}?{query}"


class RedactSecrets(logging.Filter):
    """A logging filter for access records: every string argument that looks like a request target (starts
    with ``/``) goes through :func:`redact_url`; the record is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record.args`` in place; always ``True``."""
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, str) and arg.startswith("/") else arg for arg in record.args
            )
        return True


def install_access_log_redaction() -> None:
    """Put :class:`RedactSecrets` once on each of :data:`ACCESS_LOGGERS` (a logger filter runs before every
    handler, whatever logging configuration the server was started with)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
