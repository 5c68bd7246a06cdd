"""Request authentication, as Litestar dependencies.

- Coach REST calls: ``Authorization: Bearer <api key>``.
- Client chat calls: ``Authorization: Bearer <widget token>`` (WebSocket: ``?token=`` query parameter,
  since browsers cannot set headers on a WebSocket), or the widget session cookie (:data:`WIDGET_COOKIE`)
  that the widget page sets in exchange for the link's token (``app.channels.web.widget``). A cookie is
  accepted on a WebSocket handshake or an unsafe method (POST, PATCH, DELETE…) only when the request's
  ``Origin`` is this server (the widget page itself): with ``SameSite=None`` another site could otherwise
  make the browser send it (cross-site request forgery, cross-site WebSocket hijacking).
- Dashboard pages: the server-side session (Redis) holds ``coach_id`` after log-in.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException

from app.accounts.service import ClientIdentity
from app.deps import ContainerDep

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
    https = public_url.lower().startswith("https://")
    return Cookie(
        key=WIDGET_COOKIE,
        value=value,
        max_age=WIDGET_SESSION_S,
        path="/",
        httponly=True,
        secure=https,
        samesite="none" if https else "lax",
    )


def same_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the request's ``Origin`` header names this server (its host and port, as in ``Host``)."""
    origin = connection.headers.get("origin")
    host = connection.headers.get("host")
    return bool(origin and host) and urlsplit(origin).netloc.lower() == str(host).lower()


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or of a ``token`` query parameter."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    query_token = connection.query_params.get("token")
    return query_token.strip() if query_token else None


def _changes_state(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """A WebSocket handshake or an HTTP request with an unsafe method (RFC 9110 section 9.2.1)."""
    if connection.scope["type"] != ScopeType.HTTP:
        return True
    return str(connection.scope.get("method", "")) not in SAFE_METHODS


async def provide_coach_id(request: Request[Any, Any, Any], container: ContainerDep) -> uuid.UUID:
    """The tenant of the request's API key. Raises 401 when missing or invalid."""
    token = bearer_token(request)
    if not token:
        raise NotAuthorizedException("missing API key: send Authorization: Bearer <api_key>")
    coach_id = await container.accounts.coach_for_api_key(token)
    if coach_id is None:
        raise NotAuthorizedException("invalid or revoked API key")
    return coach_id


async def identify_client(connection: ASGIConnection[Any, Any, Any, Any], container: ContainerDep) -> ClientIdentity:
    """The client (and tenant) of a request's or socket's widget token, else of its widget session cookie (see
    the module docstring for when a cookie counts). Raises 401 when missing or invalid."""
    token = bearer_token(connection)
    cookie = connection.cookies.get(WIDGET_COOKIE)
    if not token and cookie:
        if _changes_state(connection) and not same_origin(connection):
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
    return identity


async def provide_client_identity(request: Request[Any, Any, Any], container: ContainerDep) -> ClientIdentity:
    """Dependency form of :func:`identify_client` for HTTP handlers."""
    return await identify_client(request, container)
