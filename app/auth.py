"""Request authentication, as Litestar dependencies (checked before the body is read: :func:`authenticate_first`),
and the request body limits.

- Coach REST calls: ``Authorization: Bearer <api key>``.
- Client chat calls: ``Authorization: Bearer <widget token>`` (only the WebSocket handshake may carry it as a
  ``?token=`` query parameter, since browsers cannot set headers on a WebSocket; anywhere else a URL token
  would end up in logs, history and ``Referer`` headers, so it is ignored there), or the widget session
  cookie (:data:`WIDGET_COOKIE`) that the widget page sets in exchange for the link's token
  (``app.channels.web.widget``). A cookie is accepted on a WebSocket handshake or an unsafe method (POST,
  PATCH, DELETE…) only when the request's ``Origin`` is this server (the widget page itself): with
  ``SameSite=None`` another site could otherwise make the browser send it (cross-site request forgery,
  cross-site WebSocket hijacking).
- A widget call from another site's page (an ``Origin`` that is not this server) is allowed only from the
  coach's ``widget_allowed_origins`` (403 otherwise); :mod:`app.core.headers` answers it with CORS headers.
- Dashboard pages: the server-side session (Redis) holds ``coach_id`` after log-in; a form sent to a page behind
  log-in without one is answered before it is read (``app.web.dashboard.auth.LoginFirst``).
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler

from app.accounts.service import ClientIdentity
from app.core.headers import CORS_ORIGIN_STATE, is_own_origin
from app.core.validation import is_https
from app.deps import ContainerDep, provide_identity_coach_id, provide_unit_of_work

WIDGET_COOKIE = "oc_widget"
"""Name of the widget session cookie (HttpOnly; its value is opaque, see ``AccountService.widget_session``)."""
WIDGET_SESSION_S = 12 * 3600
"""A widget session lasts 12 hours from the last time the client opened a widget page (sliding)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def widget_cookie(value: str, public_url: str) -> Cookie:
    """The widget session cookie: HttpOnly, path ``/``, ``WIDGET_SESSION_S`` max-age. Over https (``PUBLIC_URL``)
    ``SameSite=None; Secure``, so it also reaches the server when the widget page is framed by the coach's own
    site (``static/widget.js``: a third-party context); over plain http (the local demo) ``SameSite=Lax``,
    since browsers refuse ``SameSite=None`` without ``Secure``. A browser that blocks third-party cookies
    altogether gets the "link expired" page inside the frame; the chat link opened directly still works."""
    https = is_https(public_url)
    return Cookie(
        key=WIDGET_COOKIE,
        value=value,
        max_age=WIDGET_SESSION_S,
        path="/",
        httponly=True,
        secure=https,
        samesite="none" if https else "lax",
    )


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header or, on a WebSocket handshake only, of a ``token``
    query parameter."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if connection.scope["type"] != ScopeType.WEBSOCKET:
        return None
    query_token = connection.query_params.get("token")
    return query_token.strip() if query_token else None


def _changes_state(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """A WebSocket handshake or an HTTP request with an unsafe method (RFC 9110 section 9.2.1)."""
    if connection.scope["type"] != ScopeType.HTTP:
        return True
    return str(connection.scope.get("method", "")) not in SAFE_METHODS


_API_KEY_COACH = "opencoach.api_key_coach"
_WIDGET_CLIENT = "opencoach.widget_client"
"""``scope["state"]`` keys: the request's API-key tenant and widget client, once checked (by
:func:`authenticate_first`, then read by the handler's dependency)."""


async def provide_coach_id(request: Request[Any, Any, Any], container: ContainerDep) -> uuid.UUID:
    """The tenant of the request's API key (looked up once per request). Raises 401 when missing or invalid."""
    known = request.scope["state"].get(_API_KEY_COACH)
    if isinstance(known, uuid.UUID):
        return known
    token = bearer_token(request)
    if not token:
        raise NotAuthorizedException("missing API key: send Authorization: Bearer <api_key>")
    coach_id = await container.accounts.coach_for_api_key(token)
    if coach_id is None:
        raise NotAuthorizedException("invalid or revoked API key")
    request.scope["state"][_API_KEY_COACH] = coach_id
    return coach_id


async def identify_client(connection: ASGIConnection[Any, Any, Any, Any], container: ContainerDep) -> ClientIdentity:
    """The client (and tenant) of a request's or socket's widget token, else of its widget session cookie (see
    the module docstring for when a cookie counts). Raises 401 when missing or invalid, 403 for a call from
    another site that the coach did not list (:func:`check_widget_origin`)."""
    token = bearer_token(connection)
    cookie = connection.cookies.get(WIDGET_COOKIE)
    if not token and cookie:
        origin = connection.headers.get("origin", "")
        own = is_own_origin(origin, connection.headers.get("host", ""), container.settings.public_url)
        if _changes_state(connection) and not (origin and own):
            raise NotAuthorizedException("the widget session is accepted only from the widget page")
        session = await container.accounts.client_for_widget_session(cookie, WIDGET_SESSION_S)
        if session is None:
            raise NotAuthorizedException("widget session expired or revoked: open the chat link again")
        return session[0]
    if not token:
        raise NotAuthorizedException("missing widget token: send Authorization: Bearer <widget_token>")
    identity = await container.accounts.client_for_widget_token(token)
    if identity is None:
        raise NotAuthorizedException("invalid widget token")
    await check_widget_origin(connection, identity, container)
    return identity


async def check_widget_origin(
    connection: ASGIConnection[Any, Any, Any, Any], identity: ClientIdentity, container: ContainerDep
) -> None:
    """Allow a widget call without ``Origin`` (not from a browser page), from this server's own pages, or
    from an origin in the coach's ``widget_allowed_origins``; the last is kept in the connection's scope
    state (:data:`app.core.headers.CORS_ORIGIN_STATE`) for the CORS response headers. Raises 403 otherwise."""
    origin = connection.headers.get("origin")
    if not origin or is_own_origin(origin, connection.headers.get("host", ""), container.settings.public_url):
        return
    if origin not in await container.accounts.widget_allowed_origins(identity.coach_id):
        raise PermissionDeniedException(f"origin {origin[:100]} is not in the coach's widget_allowed_origins")
    connection.scope["state"][CORS_ORIGIN_STATE] = origin


async def provide_client_identity(request: Request[Any, Any, Any], container: ContainerDep) -> ClientIdentity:
    """Dependency form of :func:`identify_client` for HTTP handlers (checked once per request)."""
    known = request.scope["state"].get(_WIDGET_CLIENT)
    if isinstance(known, ClientIdentity):
        return known
    identity = request.scope["state"][_WIDGET_CLIENT] = await identify_client(request, container)
    return identity


_CREDENTIAL_CHECKS = {"coach_id": provide_coach_id, "identity": provide_client_identity}
"""The dependencies that check a caller's credentials from the request's headers alone, by the name they
provide."""


async def authenticate_first(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The app's guard: a route whose ``coach_id`` comes from an API key (:func:`provide_coach_id`) or whose
    ``identity`` from a widget token or cookie (:func:`provide_client_identity`) checks it before its body is
    read (Litestar decodes a ``data`` body before it resolves dependencies), so a caller without credentials
    gets its 401 or 403 without the server reading what it sent; the dependency then reuses the result."""
    if not isinstance(connection, Request):
        return
    needed = needed_dependencies(handler)
    for name, check in _CREDENTIAL_CHECKS.items():
        if name in needed and needed[name].dependency is check:
            await check(connection, connection.app.state.container)


def needed_dependencies(handler: BaseRouteHandler) -> dict[str, Provide]:
    """The dependencies ``handler`` resolves, its own and theirs (``uow`` needs ``coach_id``…), by name: of the
    layers' dependencies, those it uses (a layer's ``OPTIONS`` route, for one, uses none)."""
    providers = handler.resolve_dependencies()
    needed: dict[str, Provide] = {}
    names = list(handler.parsed_fn_signature.parameters)
    while names:
        name = names.pop()
        if name in providers and name not in needed:
            needed[name] = providers[name]
            names.extend(providers[name].parsed_fn_signature.parameters)
    return needed


AUTH_BODY_MAX_BYTES = 4 * 1024
"""Request body limit of the log-in, sign-up and password-change routes (``request_max_body_size``): larger
bodies get a 413 before anything is parsed or hashed."""
BODY_MAX_BYTES = 64 * 1024
"""Request body limit of every route that sets none of its own (the app's ``request_max_body_size``): a larger
body is a 413, at once when its ``Content-Length`` says so, else once this many bytes came. A body is read
whole before its handler runs, a route without credentials (log-out, a widget page's form) reads it from
anybody, so this bounds what a caller can make a process hold. The largest body these routes take is a chat
message or a coach's reply of 4,000 characters: 48 KB even as emoji (12 bytes a character as JSON escapes
``\\ud83d\\ude00``, or percent-encoded in a form)."""
TEXT_BODY_MAX_BYTES = 512 * 1024
"""Request body limit of the routes that take a coach's long texts: the settings (``PATCH /api/v1/settings`` and
its form: persona, topics, crisis resources in five languages, origins…), the tone modes, an experiment's
variant personas and a client's relationship profile. Their largest legitimate body, every field at its maximum
in a non-Latin script: the settings form, 346 KB (9 bytes a character percent-encoded), as JSON 234 KB (6
bytes a character as a ``\\uXXXX`` escape)."""


IPV6_PREFIX = 64
"""Bits of an IPv6 address that name the rate-limited network: one host usually holds a whole /64 (RFC 4291's
interface identifier is the other 64 bits), so counting by address let it take a fresh one per request."""


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer the rate limits count: its IPv4 address, or its IPv6 address's :data:`IPV6_PREFIX` network
    (``2001:db8:1:2::/64``); an IPv4-mapped IPv6 address counts as its IPv4 address. uvicorn puts a trusted
    proxy's ``X-Forwarded-For`` here (``FORWARDED_ALLOW_IPS``)."""
    host = connection.client.host if connection.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return host


def account_delete_key(coach_id: uuid.UUID) -> str:
    """The rate-limit account of an account deletion (API and dashboard share it): the password it checks may
    be any dashboard user's, so the count is per coach, not per e-mail."""
    return f"account-delete:{coach_id}"


async def throttle_auth_attempt(
    connection: ASGIConnection[Any, Any, Any, Any], container: ContainerDep, account: str | None
) -> None:
    """Count a log-in, sign-up or password-change attempt on ``account`` (an e-mail address or user id) from
    this connection's IP. Raises ``TooManyAttempts`` (429 with ``Retry-After``) over the limits
    (:class:`app.core.ratelimit.AuthThrottle`)."""
    await container.auth_throttle.hit(ip=client_ip(connection), account=account)


COACH_DEPENDENCIES = {"coach_id": Provide(provide_coach_id), "uow": Provide(provide_unit_of_work)}
"""A coach API controller's dependencies: the API key's tenant and the request's unit of work."""
CLIENT_DEPENDENCIES = {
    "identity": Provide(provide_client_identity),
    "coach_id": Provide(provide_identity_coach_id, sync_to_thread=False),
    "uow": Provide(provide_unit_of_work),
}
"""A widget API controller's dependencies: the client (widget token or session cookie), its tenant and the
request's unit of work."""
