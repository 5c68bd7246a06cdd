"""Error pages for people: a 404 on a dashboard or widget address is an HTML page with a way back, not the API's
JSON body. API, WebSocket and static paths keep their JSON answers."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar import MediaType, Request, Response
from litestar.enums import ParamType, RequestEncodingType
from litestar.exceptions import ClientException, HTTPException, SerializationException, ValidationException
from litestar.exceptions.responses import create_exception_response
from litestar.response import Template

from app.core.errors import DomainError

CSRF_COOKIE = "oc_csrf"
"""The cookie of the dashboard forms' CSRF token (:func:`app.web.sessions.csrf_config`)."""
CSRF_FAILED = "CSRF token verification failed"
"""Litestar's ``PermissionDeniedException`` detail when a form's CSRF token does not verify."""
PAGE_PREFIXES = ("/dashboard", "/w/", "/w?", "/login", "/signup")
"""Addresses a person opens in a browser tab: their errors are pages."""
WIDGET_PREFIX = "/w"
INTERNAL_ERROR = "Internal Server Error"
"""Litestar's own ``detail`` of a 500: no traceback, no SQL."""
NOTHING_HERE = "There is nothing at this address. It may have moved or been deleted."
"""The 404 page's text for an address no route or id leads to."""
FORM_UNREADABLE = "invalid form data: a text field is not in its part's charset (UTF-8 unless it names a known one)"
"""The ``detail`` of a 400 for a multipart form whose text fields cannot be decoded (:func:`form_unreadable`)."""


def is_page_request(request: Request[Any, Any, Any]) -> bool:
    """Whether the request is a browser's page load of the dashboard or the widget: ``Accept`` names
    ``text/html`` (a browser's navigation does; ``fetch`` and API clients do not) and it is not an htmx
    fragment request (those keep the JSON body)."""
    path = request.url.path
    if path != WIDGET_PREFIX and not path.startswith(PAGE_PREFIXES):
        return False
    if request.headers.get("hx-request"):
        return False
    return MediaType.HTML in request.headers.get("accept", "")


def error_response(
    status_code: int, detail: str, headers: dict[str, str] | None = None, refused: DomainError | None = None
) -> Response[Any]:
    """The API's JSON error body, the shape Litestar itself answers with: ``{"status_code", "detail"}``, and the
    ``code`` and ``fields`` of a ``refused`` request's error that has a code (the widget's scripts show the
    catalogue's ``refused_<code>`` in the page's language: :func:`app.handoff.catalogue.refusal`)."""
    body: dict[str, Any] = {"status_code": status_code, "detail": detail}
    if refused is not None and refused.code:
        body |= {"code": refused.code, "fields": refused.fields}
    return Response(body, status_code=status_code, headers=headers)


def not_found_page(request: Request[Any, Any, Any], detail: str) -> Template:
    """The 404 page (``templates/errors/not_found.html``): ``detail`` and a link back to the chat (widget
    paths) or the dashboard."""
    widget = request.url.path == WIDGET_PREFIX or request.url.path.startswith(WIDGET_PREFIX + "/")
    return Template("errors/not_found.html", context={"detail": detail, "widget": widget}, status_code=404)


def not_found_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's 404 (no such route, or a page handler's ``NotFoundException``): the 404 page for a page
    request, else the usual JSON body ``{"status_code": 404, "detail": …}``."""
    if is_page_request(request):
        return not_found_page(request, NOTHING_HERE)
    return error_response(404, exc.detail)


def unreadable_body_handler(request: Request[Any, Any, Any], exc: ClientException) -> Response[Any]:
    """Litestar's 400 for a request body its JSON decoder (msgspec) refuses, saying that the body is the problem:
    ``{"status_code": 400, "detail": "request body is not valid JSON: JSON is malformed: invalid character (byte
    9)"}``. msgspec's own words alone can mislead: a lone surrogate escape (``"\\ud800"`` without its pair) reads
    "Input data was truncated". Any other ``ClientException``: Litestar's own response."""
    if not isinstance(exc.__cause__, SerializationException):
        return create_exception_response(request, exc)
    return error_response(400, f"request body is not valid JSON: {exc.detail}")


def malformed_params(exc: ValidationException, sources: tuple[str, ...] = (ParamType.PATH,)) -> list[str]:
    """The names of the parameters Litestar could not parse for the handler (``exc.extra``'s errors whose
    ``source`` is one of ``sources``: the path's by default), in route order; ``[]`` when they were fine."""
    errors = exc.extra if isinstance(exc.extra, list) else []
    return [e["key"] for e in errors if isinstance(e, dict) and e.get("source") in sources and "key" in e]


def validation_error_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's 400 for a request its handler's signature refuses. An id in the path that is not a UUID
    (every id parameter is ``{name:str}`` and parsed by the handler's :data:`app.deps.PathId`: a ``:uuid`` route
    parameter would make the router answer a bare 404) is a 400 naming the parameter, ``{"status_code": 400,
    "detail": "malformed conversation_id: not a UUID"}``; on a dashboard or widget page load, the 404 page (an
    address with such an id leads nowhere; so does a page's query parameter that does not parse, as
    ``/dashboard/inbox?conversation=zzz``). Any other refusal (a body, an API's query) keeps Litestar's body
    ``{"status_code": 400, "detail": …, "extra": [{"message", "key", "source"}]}``."""
    if is_page_request(request) and malformed_params(exc, (ParamType.PATH, ParamType.QUERY)):
        return not_found_page(request, NOTHING_HERE)
    malformed = malformed_params(exc)
    if not malformed:
        return create_exception_response(request, exc)
    names = " and ".join(malformed)
    return error_response(400, f"malformed {names}: not {'a UUID' if len(malformed) == 1 else 'UUIDs'}")


def domain_error_page(request: Request[Any, Any, Any], exc: DomainError) -> Template | None:
    """The page for a service's refusal of a page request: the 404 page for a ``NotFound`` (e.g. a deleted
    client's page), the refused page with the message for another 4xx of a page load (``GET
    /dashboard/learning?days=0``: "days must be a whole number from 1 to 365"); ``None`` for anything else, a
    form's refusal included (the caller answers with JSON)."""
    if not is_page_request(request):
        return None
    if exc.status_code == 404:
        return not_found_page(request, f"Not found: {exc.message}.")
    if request.method == "GET" and 400 <= exc.status_code < 500:
        return refused_page(request, exc.status_code, "This page cannot be shown", f"{exc.message}.")
    return None


def _back(request: Request[Any, Any, Any]) -> str:
    """The page a refused form was sent from (its ``Referer`` on this site), else the dashboard (also for a
    ``Referer`` that is no URL, such as ``http://[``)."""
    try:
        referer = urlsplit(request.headers.get("referer", ""))
    except ValueError:
        return "/dashboard/conversations"
    if referer.netloc == request.url.netloc and referer.path.startswith(PAGE_PREFIXES):
        return f"{referer.path}{'?' + referer.query if referer.query else ''}"
    return "/dashboard/conversations"


def refused_page(request: Request[Any, Any, Any], status_code: int, title: str, detail: str) -> Template:
    """A page saying why a form was refused (``templates/errors/refused.html``) with a link back to its page."""
    context = {"title": title, "detail": detail, "back": _back(request)}
    return Template("errors/refused.html", context=context, status_code=status_code)


def permission_denied_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's 403. A dashboard form whose CSRF token does not verify (the page was opened before a change of
    ``SECRET_KEY``, or its cookie is stale) gets the "This form expired" page, and the stale ``oc_csrf`` cookie is
    deleted: Litestar reuses a cookie it cannot verify for every later form, so without this the coach was stuck
    on a JSON 403 until they cleared their cookies. Anything else keeps the JSON body
    ``{"status_code": 403, "detail": …}``."""
    if exc.detail != CSRF_FAILED or not is_page_request(request):
        return error_response(exc.status_code, exc.detail, headers=exc.headers)
    detail = (
        "Nothing was sent. The page was opened before OpenCoach was restarted with a new secret key, or it was "
        "open for a long time. Open it again and send the form once more."
    )
    page = refused_page(request, 403, "This form expired", detail)
    page.delete_cookie(CSRF_COOKIE, path="/")
    return page


def body_limit_text(limit: int) -> str:
    """A body limit in bytes as people read it: ``"64 KiB"``, ``"5 MiB"``, ``"2.5 MiB"``."""
    if limit < 1024 * 1024:
        return f"{limit / 1024:g} KiB"
    return f"{limit / (1024 * 1024):.3g} MiB"


def too_large_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's 413 (a body over the route's ``request_max_body_size``), sent before the rest of the body is
    read: JSON naming the route's limit, or on a dashboard page a page saying so: a multipart form (the two file
    forms: documents, avatar) that the file is too large, any other form that its text is too long."""
    limit = body_limit_text(request.route_handler.resolve_request_max_body_size() or 0)
    if not is_page_request(request):
        detail = f"request body too large: this endpoint takes at most {limit}"
        return error_response(exc.status_code, detail, headers=exc.headers)
    if request.content_type[0] == RequestEncodingType.MULTI_PART:
        detail = (
            f"Nothing was stored: the file is larger than this form takes ({limit} at most). Choose a smaller one "
            "and send it again."
        )
        return refused_page(request, 413, "The file is too large", detail)
    detail = f"Nothing was stored: the form sent more than it takes ({limit} at most). Shorten it and send it again."
    return refused_page(request, 413, "The form is too large", detail)


def form_unreadable(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by Litestar's multipart parser (``parse_multipart_form``; the CSRF check of every
    dashboard form runs it first) decoding a text field: bytes not in the part's charset (``UnicodeError``, e.g.
    ``\\xff\\xfe`` as UTF-8) or a charset Python does not know (``LookupError``, ``charset=bogus``)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "parse_multipart_form":
            return True
        tb = tb.tb_next
    return False


def form_error_handler(request: Request[Any, Any, Any], exc: UnicodeError | LookupError) -> Response[Any]:
    """A multipart form that cannot be read (:func:`form_unreadable`), so nothing of it was used: a 400 with
    :data:`FORM_UNREADABLE`, on a dashboard page a page saying so with a link back. Any other ``UnicodeError`` or
    ``LookupError`` is a bug (:func:`app.asgi.log_unhandled` logs it), answered with the usual 500 body."""
    if not form_unreadable(exc):
        return error_response(500, INTERNAL_ERROR)
    if not is_page_request(request):
        return error_response(400, FORM_UNREADABLE)
    detail = (
        "Nothing was sent: the browser sent a field that is not text in the form's character set. Open the page "
        "again and send the form once more."
    )
    return refused_page(request, 400, "The form could not be read", detail)
