"""Request authentication, as Litestar dependencies.

- Coach REST calls: ``Authorization: Bearer <api key>``.
- Client chat calls: ``Authorization: Bearer <widget token>`` (WebSocket: ``?token=`` query parameter,
  since browsers cannot set headers on a WebSocket).
- Dashboard pages: the server-side session (Redis) holds ``coach_id`` after log-in.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException

from app.accounts.service import ClientIdentity
from app.deps import ContainerDep


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or of a ``token`` query parameter."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
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
    """The client (and tenant) of a request's or socket's widget token. Raises 401 when missing or invalid."""
    token = bearer_token(connection)
    if not token:
        raise NotAuthorizedException("missing widget token: send Authorization: Bearer <widget_token>")
    identity = await container.accounts.client_for_widget_token(token)
    if identity is None:
        raise NotAuthorizedException("invalid widget token")
    return identity


async def provide_client_identity(request: Request[Any, Any, Any], container: ContainerDep) -> ClientIdentity:
    """Dependency form of :func:`identify_client` for HTTP handlers."""
    return await identify_client(request, container)
