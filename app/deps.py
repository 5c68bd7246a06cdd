"""Litestar dependency providers and the annotated types handlers declare them with."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any, TypeAlias, TypeVar
from urllib.parse import urlencode

from litestar import Request, Response
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter

from app.accounts.service import ClientIdentity
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.container import Container
from app.conversations.inbox import InboxFilter
from app.core.pagination import Keyset, Page, PageRequest

T = TypeVar("T")
Out = TypeVar("Out")
ContainerDep: TypeAlias = NamedDependency[Container]
CoachId: TypeAlias = NamedDependency[uuid.UUID]
"""The tenant of the request (from the API key, the widget token or the dashboard session)."""
ClientIdentityDep: TypeAlias = NamedDependency[ClientIdentity]
Uow: TypeAlias = NamedDependency[UnitOfWork]
"""The request's tenant unit of work (:func:`provide_unit_of_work`)."""
PathId: TypeAlias = FromPath[uuid.UUID]
"""An id in the path. Its route names it ``{name:str}`` (never ``{name:uuid}``, which the router parses itself and
answers a malformed one with a bare 404): the handler's signature parses it, and a malformed one is a 400 naming
the parameter (:func:`app.web.errors.validation_error_handler`)."""
StateQuery: TypeAlias = Annotated[str | None, QueryParameter(name="state")]
"""An optional ``?state=`` query parameter (``state`` itself is a name Litestar reserves for the app state)."""
PathStr: TypeAlias = FromPath[str]


def provide_container(state: State) -> Container:
    """The process container created at start-up (``app.state.container``)."""
    container: Any = state.container
    return container  # type: ignore[no-any-return]


async def provide_unit_of_work(container: ContainerDep, coach_id: CoachId) -> AsyncGenerator[UnitOfWork, None]:
    """One :class:`~app.accounts.unit_of_work.UnitOfWork` per request, for the request's tenant ``coach_id``
    (whatever layer provides it: API key, widget token, dashboard session). Registered as ``"uow"`` next to
    the layer's ``coach_id`` provider (Litestar checks every provider's own dependencies at start-up, so it
    cannot sit on the app where no ``coach_id`` exists); only handlers that declare ``uow`` open one.

    A generator dependency: Litestar runs the rest after the handler returned and its response was built
    (``litestar.routes.http``: the cleanup group wraps the handler call and ``to_response``), so the
    transaction commits before the response is sent; a commit that fails becomes the error response. When
    the handler (or building its response) raises, Litestar throws the exception in here
    (``DependencyCleanupGroup._throw``): the transaction rolls back, the jobs it queued and its after-commit
    hooks are dropped, and the exception goes on to the error handlers. Handlers that must not hold a
    transaction over a slow call (the chat turn) do not declare ``uow``.
    """
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        yield uow


def provide_identity_coach_id(identity: ClientIdentityDep) -> uuid.UUID:
    """The tenant of the widget token's client: ``coach_id`` (and so ``uow``) for the client's handlers."""
    return identity.coach_id


def provide_inbox_filter(
    wanted_state: StateQuery = None,
    channel: FromQuery[str | None] = None,
    unread: FromQuery[bool] = False,
    q: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
    limit: FromQuery[int | None] = None,
) -> InboxFilter:
    """The inbox's filter and page from the query (``state``, ``channel``, ``unread=true``, ``q``, ``cursor``:
    the ``next`` of the previous page, ``limit``: rows per page): see
    :meth:`app.conversations.inbox.InboxFilter.parse` (``InvalidInput``, a 400, for an unknown state or channel,
    a search over its length limit, a bad cursor or a limit out of range)."""
    return InboxFilter.parse(wanted_state, channel, unread, q, cursor, limit)


INBOX_FILTER = {"wanted": Provide(provide_inbox_filter, sync_to_thread=False)}
"""Handler dependency: ``wanted: WantedInbox`` parsed from the query by :func:`provide_inbox_filter`."""
WantedInbox: TypeAlias = NamedDependency[InboxFilter]


def provide_page(cursor: FromQuery[str | None] = None, limit: FromQuery[int | None] = None) -> PageRequest:
    """Which page of a list the request asks for: ``cursor`` (the one the previous page's ``Link: <…>;
    rel="next"`` header carries, :func:`page_response`; none: the first page) and ``limit`` (rows, 1–200,
    default 50). Raises ``InvalidInput`` (a 400) for a bad cursor or a limit out of range
    (:meth:`PageRequest.parse`)."""
    return PageRequest.parse(cursor, limit)


PAGE = {"page": Provide(provide_page, sync_to_thread=False)}
"""Handler dependency: ``page: WantedPage`` parsed from the query by :func:`provide_page`."""
WantedPage: TypeAlias = NamedDependency[PageRequest]


def page_response(request: Request[Any, Any, Any], page: Page[T], out: Callable[[T], Out]) -> Response[list[Out]]:
    """A list the API returns a page at a time, as GitHub's REST API does: ``page``'s items, each through
    ``out``, as the JSON body, and while another page follows, its address in a ``Link`` header
    (:func:`next_page_link`). A client follows the ``next`` links until a page has none."""
    return Response([out(item) for item in page.items], headers=next_page_link(request, page.next))


def next_page_link(request: Request[Any, Any, Any], after: Keyset | None) -> dict[str, str]:
    """The headers that point at the page after position ``after`` (the page's ``next``):
    ``{"Link": "</path?…&cursor=…>; rel=\"next\""}`` (RFC 8288, :func:`next_link` with ``cursor``), none when
    ``after`` is ``None`` (the last page)."""
    return {} if after is None else next_link(request, cursor=after.encode())


def next_link(request: Request[Any, Any, Any], **position: str) -> dict[str, str]:
    """The ``Link`` header (RFC 8288, ``rel="next"``) to the request's own path and query with the ``position``
    parameters replaced (``cursor=…``, or a catch-up's ``after=<message id>``): a relative reference, resolved
    against the request's URL, so it holds behind a proxy too."""
    query = {key: value for key, value in request.query_params.items() if key not in position}
    return {"Link": f'<{request.url.path}?{urlencode(query | position)}>; rel="next"'}
