"""Request authentication, as Litestar dependencies.

- Coach REST calls: ``Authorization: Bearer <api key>``.
- Client chat calls: ``Authorization: Bearer <widget token>``. Only the WebSocket handshake may carry the token
  as a ``?token=`` query parameter (browsers cannot set headers on a WebSocket); anywhere else a URL token would
  end up in logs, history and ``Referer`` headers, so it is ignored there (401).
- A widget call from another site's page (an ``Origin`` that is not this server) is allowed only from the
  coach's ``widget_allowed_origins`` (403 otherwise); :mod:`app.core.headers` answers it with CORS headers.
- Dashboard pages: the server-side session (Redis) holds ``coach_id`` after log-in.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from app.accounts.service import ClientIdentity
from app.core.headers import CORS_ORIGIN_STATE, is_own_origin
from app.deps import ContainerDep


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
    """The client (and tenant) of a request's or socket's widget token. Raises 401 when missing or invalid, 403
    for a call from another site that the coach did not list (:func:`check_widget_origin`)."""
    token = bearer_token(connection)
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
    """Dependency form of :func:`identify_client` for HTTP handlers."""
    return await identify_client(request, container)
