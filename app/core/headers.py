"""Security headers on every HTTP response, and the per-coach CORS headers of the widget's API.

One Litestar ``before_send`` hook (:class:`SecurityHeaders`) sees every response the app sends (pages, API,
static files, error pages, 404s of unknown paths) and adds what it does not already carry:

- ``Content-Security-Policy`` (:func:`content_security_policy`): scripts, styles, images, fonts and fetch /
  WebSocket targets only from this origin (no inline script, no ``eval``), no plugins, no ``<base>``, forms
  post only here; ``frame-ancestors 'none'`` unless the handler set its own policy (the widget page lists the
  coach's ``widget_allowed_origins``). CSP Level 3, https://www.w3.org/TR/CSP3/.
- ``X-Frame-Options: DENY`` with that default policy (for browsers without ``frame-ancestors``; RFC 7034).
- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` (tokens in URLs never leak
  through ``Referer``).
- ``Strict-Transport-Security`` when the configured ``PUBLIC_URL`` is https (RFC 6797).
- ``Cache-Control: no-store`` on the dashboard, the widget's pages and the API (:data:`NO_STORE_PREFIXES`):
  they show API keys, widget tokens, webhook secrets and transcripts, which a shared machine's disk or
  back/forward cache would keep after a log-out (RFC 9111 §5.2.2.5); a response that sets its own
  ``Cache-Control`` (the avatar, the event stream) keeps it.

CORS (https://fetch.spec.whatwg.org/#http-cors-protocol) for the widget's API is per coach, so Litestar's
``CORSConfig`` (one static allow-list) does not fit: the request's widget token names the coach, and
:func:`app.auth.identify_client` refuses an ``Origin`` the coach did not list and records an allowed one in the
connection state (:data:`CORS_ORIGIN_STATE`), which this hook answers with ``Access-Control-Allow-Origin``. A
preflight carries no token (https://fetch.spec.whatwg.org/#cors-preflight-fetch: no credentials, no
``Authorization``), so it cannot name the coach: a preflight to a widget API path gets the allow headers only
for an origin that some coach lists (:data:`OriginListed`); for any other it gets none, and the browser does not
send the request (which would be refused with a 403). The real request is checked against its own coach's list.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import Message, Scope
from sqlalchemy.exc import SQLAlchemyError

from app.core.validation import is_https

log = logging.getLogger(__name__)

CORS_ORIGIN_STATE = "widget_cors_origin"
"""Key in the ASGI scope's ``state`` under which an allowed cross-origin ``Origin`` of a widget call is kept."""
HSTS_VALUE = "max-age=31536000"
"""One year; no ``includeSubDomains`` (other hosts of the operator's domain are not ours to pin)."""
PREFLIGHT_MAX_AGE_S = 600
CORS_ALLOW_HEADERS = "authorization, content-type"
CORS_ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
"""Every method of the widget API's routes (a preflight for another gets no answer a browser accepts)."""
CORS_EXPOSE_HEADERS = "Link, Retry-After"
"""Response headers a page on an allowed origin may read besides the CORS-safelisted ones: a paged list's next
page (``Link``) and how long a client over its message limit waits (``Retry-After``)."""
NO_STORE_PREFIXES = ("/dashboard", "/w/", "/api/", "/login", "/signup")
"""Paths whose responses are never stored by a browser or proxy cache (see the module docstring)."""

OriginListed = Callable[[str], Awaitable[bool]]
"""Whether any coach lists an origin in its ``widget_allowed_origins``
(:meth:`app.accounts.service.AccountService.widget_origin_listed`, which the app passes in)."""


def content_security_policy(frame_ancestors: Sequence[str] = ()) -> str:
    """The app's CSP header value; ``frame_ancestors``: origins that may frame the page (empty: none)."""
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        f"frame-ancestors {ancestors}"
    )


def is_own_origin(origin: str, host_header: str, public_url: str) -> bool:
    """Whether a request's ``Origin`` is this server itself: the origin of ``PUBLIC_URL``, or the host the
    request was sent to (``Host`` header; the scheme is not compared, since a TLS proxy may sit in front). An
    ``Origin`` that is no URL (``http://[``) is a foreign one."""
    public = urlsplit(public_url)
    if origin.lower() == f"{public.scheme}://{public.netloc}".lower():
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host_header) and netloc.lower() == host_header.lower()


class SecurityHeaders:
    """The ``before_send`` hook described in the module docstring. ``public_url``: ``PUBLIC_URL`` (HSTS when
    it is https); ``widget_api_prefixes``: path prefixes of the routes the widget calls with its token (their
    CORS preflights are answered for the origins ``origin_listed`` accepts)."""

    def __init__(self, public_url: str, widget_api_prefixes: Sequence[str], origin_listed: OriginListed) -> None:
        self._hsts = is_https(public_url)
        self._widget_api_prefixes = tuple(widget_api_prefixes)
        self._origin_listed = origin_listed
        self._csp = content_security_policy()

    async def __call__(self, message: Message, scope: Scope) -> None:
        """Add the headers to the ``http.response.start`` message of an HTTP response."""
        if message["type"] != "http.response.start" or scope["type"] != ScopeType.HTTP:
            return
        headers = MutableScopeHeaders.from_message(message)
        if "content-security-policy" not in headers:
            headers["Content-Security-Policy"] = self._csp
            headers["X-Frame-Options"] = "DENY"
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if self._hsts:
            headers.setdefault("Strict-Transport-Security", HSTS_VALUE)
        if scope["path"].startswith(NO_STORE_PREFIXES):
            headers.setdefault("Cache-Control", "no-store")
        await self._cors(scope, headers)

    async def _cors(self, scope: Scope, headers: MutableScopeHeaders) -> None:
        allowed = scope.get("state", {}).get(CORS_ORIGIN_STATE)
        if allowed:
            headers["Access-Control-Allow-Origin"] = allowed
            headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            headers.extend_header_value("Vary", "Origin")
            return
        request_headers = dict(scope["headers"])
        origin = request_headers.get(b"origin")
        if (
            scope.get("method") == "OPTIONS"
            and origin
            and b"access-control-request-method" in request_headers
            and scope["path"].startswith(self._widget_api_prefixes)
        ):
            headers.extend_header_value("Vary", "Origin")
            if await self._listed(origin.decode("latin-1")):
                headers["Access-Control-Allow-Origin"] = origin.decode("latin-1")
                headers["Access-Control-Allow-Methods"] = CORS_ALLOW_METHODS
                headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
                headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)

    async def _listed(self, origin: str) -> bool:
        """``origin_listed(origin)``; ``False`` (logged) when it fails: the database is out of reach, and a
        preflight is refused rather than the response lost."""
        try:
            return await self._origin_listed(origin)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("CORS preflight refused, the allowed origins could not be read: %s", type(exc).__name__)
            return False
