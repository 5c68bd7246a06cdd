"""The Litestar application: routes, dependencies, error mapping, templates, static files, sessions, security
headers (:mod:`app.core.headers`), the ``Host`` allowlist (:mod:`app.core.hosts`) and an access log without secrets
(:mod:`app.core.access_log`)."""

from __future__ import annotations

import asyncio
import logging
from copy import copy
from pathlib import Path
from typing import Any

from litestar import Controller, Litestar, Request, Response, get
from litestar.channels import ChannelsPlugin
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import (
    ClientException,
    HTTPException,
    InternalServerException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler, ExceptionHandlersMap, Scope
from redis.asyncio import Redis
from sqlalchemy.exc import DBAPIError

from app.auth import BODY_MAX_BYTES, authenticate_first
from app.channels.telegram import wiring as telegram
from app.channels.telegram.api import ROUTES as TELEGRAM_ROUTES
from app.channels.web.chat import (
    WIDGET_API_PREFIXES,
    ChatController,
    FeedbackController,
    WidgetConversationController,
    WidgetPassageController,
    WidgetPresenceController,
    chat_socket,
)
from app.channels.web.widget import WidgetController
from app.container import Container
from app.core.access_log import install_access_log_redaction, redact_url
from app.core.config import Settings
from app.core.errors import DomainError
from app.core.headers import SecurityHeaders
from app.core.hosts import host_allowlist
from app.core.runtime import freeze_startup_heap
from app.core.validation import NUL_REFUSED, refused_for_nul
from app.deps import provide_container
from app.handoff.languages import language_probability
from app.handoff.live import ReconnectingPubSubBackend
from app.llm.registry import ProviderRegistry
from app.web.api.accounts import (
    AccountController,
    ApiKeyController,
    AuthController,
    ClientController,
    SettingsController,
)
from app.web.api.conversations import ConversationController, InboxController
from app.web.api.documents import DocumentController
from app.web.api.experiments import ExperimentController
from app.web.api.handoff import HandoffController
from app.web.api.learning_dashboard import LearningDashboardController
from app.web.api.memory import MemoryController, SessionController, WidgetMemoryController
from app.web.api.tone import ToneSettingsController, WidgetToneController
from app.web.api.training import ModelController, TrainingController
from app.web.dashboard.auth import DashboardController
from app.web.dashboard.clients import ClientPages
from app.web.dashboard.conversations import ConversationPages
from app.web.dashboard.documents import DocumentPages
from app.web.dashboard.events import EventPages
from app.web.dashboard.handoffs import HandoffPages
from app.web.dashboard.learning import LearningPages
from app.web.dashboard.onboarding import OnboardingPages
from app.web.dashboard.settings import SettingsPages
from app.web.dashboard.telegram import TelegramPages
from app.web.errors import (
    INTERNAL_ERROR,
    domain_error_page,
    error_response,
    form_error_handler,
    form_unreadable,
    not_found_handler,
    permission_denied_handler,
    too_large_handler,
    unreadable_body_handler,
    validation_error_handler,
)
from app.web.sessions import DashboardSessions, csrf_config, provide_dashboard_sessions

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ICON_MAX_AGE_S = 86_400
log = logging.getLogger(__name__)


@get("/favicon.ico", include_in_schema=False, sync_to_thread=False)
def favicon() -> File:
    """The site icon (``static/favicon.ico``, 16/32/48 px) where browsers look for one on a page that names none:
    the JSON API, the schema, an image opened alone. The pages link ``static/favicon.svg``. Cached a day."""
    return File(
        PROJECT_ROOT / "static" / "favicon.ico",
        media_type="image/vnd.microsoft.icon",
        content_disposition_type="inline",
        headers={"Cache-Control": f"public, max-age={ICON_MAX_AGE_S}"},
    )


def _warm_up(registry: ProviderRegistry) -> None:
    """Load the offline models (:meth:`ProviderRegistry.warm_up`) and the language identifier (about 0.7 s, which
    the first turn's notice language would otherwise wait for on the event loop), blocking: run in a thread."""
    registry.warm_up()
    language_probability("warm up")


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    """Map a service's ``DomainError`` to its HTTP status with the message as ``detail`` (and its ``code`` and
    ``fields`` when it has a code: :func:`app.web.errors.error_response`) and its headers (a 429's
    ``Retry-After``); on a dashboard or widget page load, the 404 page or the refused page instead
    (:func:`app.web.errors.domain_error_page`)."""
    page = domain_error_page(request, exc)
    if page is not None:
        return page
    return error_response(exc.status_code, exc.message, exc.headers(), exc)


TOO_DEEP = "JSON is nested too deeply"
CLIENT_GONE = "client disconnected prematurely"
"""The detail of the 500 that Litestar's ``Request.stream`` raises when the ASGI server's ``receive()`` says the
client went away before its body was complete (it closed the connection, or ``opencoach serve`` closed it with a
408 for a body too slow: :mod:`app.core.connections`)."""


def database_error_handler(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[dict[str, Any]]:
    """A request whose text holds a NUL character (U+0000), which PostgreSQL cannot store, gets a 400 with a JSON
    message; its unit of work rolled back, so nothing of it is stored. Any other database error is logged and
    answered with Litestar's usual 500 body (no traceback, no SQL)."""
    if refused_for_nul(exc):
        return error_response(400, NUL_REFUSED)
    log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, INTERNAL_ERROR)


async def log_unhandled(exc: Exception, scope: Scope) -> None:
    """Log, with its traceback, an exception no handler of ours expected (Litestar answers it with a bare 500
    and logs it only in debug mode): the operator sees what failed. Not logged: service errors
    (``DomainError``, answered with their 4xx), database errors of HTTP requests (:func:`database_error_handler`
    logs those that are not the client's), Litestar's own client errors (validation 400, 404, 405), bodies
    nested too deeply (:func:`recursion_error_handler`) and multipart forms that cannot be decoded
    (:func:`app.web.errors.form_error_handler`). A client gone before its body was complete (:data:`CLIENT_GONE`)
    is no fault of the server: one line at INFO, no traceback (a slow-POST attack would fill the log with them)."""
    handled = (DomainError | DBAPIError) if scope["type"] == ScopeType.HTTP else DomainError  # a socket has none
    if (
        isinstance(exc, handled)
        or (isinstance(exc, HTTPException) and exc.status_code < 500)
        or (isinstance(exc, RecursionError) and decoding_too_deep(exc))
        or (isinstance(exc, UnicodeError | LookupError) and form_unreadable(exc))
    ):
        return
    path = redact_url(scope["path"])  # a widget page's path carries its token
    if isinstance(exc, InternalServerException) and exc.detail == CLIENT_GONE:
        log.info("client gone before its body was complete: %s %s", scope.get("method"), path)
        return
    log.error("unhandled error on %s %s", scope.get("method", scope["type"]), path, exc_info=exc)


def decoding_too_deep(exc: RecursionError) -> bool:
    """Whether ``exc`` was raised decoding a request's JSON body: its innermost Python frame is ``decode_json``,
    Litestar's decoding with msgspec. msgspec recurses once per nesting level, so a body like ``[[[[…]]]]`` a few
    thousand levels deep exhausts the interpreter's recursion limit instead of failing as malformed JSON."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "decode_json"


def recursion_error_handler(request: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    """A request body nested too deeply to decode gets a 400 with a JSON message (nothing was read from it);
    any other ``RecursionError`` is a bug (:func:`log_unhandled` logs it), answered with the usual 500 body."""
    if decoding_too_deep(exc):
        return error_response(400, TOO_DEEP)
    return error_response(500, INTERNAL_ERROR)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: domain_error_handler,
    DBAPIError: database_error_handler,
    RecursionError: recursion_error_handler,
    NotFoundException: not_found_handler,
    PermissionDeniedException: permission_denied_handler,
    RequestEntityTooLarge: too_large_handler,
    ValidationException: validation_error_handler,
    ClientException: unreadable_body_handler,
    UnicodeError: form_error_handler,
    LookupError: form_error_handler,
}
"""Service errors → their status with a JSON ``detail`` (a 404 on a page load: the 404 page), database errors,
bodies nested too deeply or not JSON, Litestar's own 404 (no such route), 400 (a malformed id in the path: a 400
naming it; on a dashboard or widget page the 404 page), 403 (a dashboard form's CSRF token that does not
verify: the "This form expired" page), 413 (on a dashboard page: a page saying the file is too large) and a
multipart form whose text cannot be decoded (400; on a dashboard page: a page saying so)."""


ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    AuthController,
    ApiKeyController,
    ClientController,
    AccountController,
    SettingsController,
    ChatController,
    FeedbackController,
    WidgetConversationController,
    WidgetPassageController,
    WidgetPresenceController,
    ConversationController,
    InboxController,
    HandoffController,
    TrainingController,
    ModelController,
    ExperimentController,
    LearningDashboardController,
    chat_socket,
    MemoryController,
    SessionController,
    WidgetMemoryController,
    ToneSettingsController,
    WidgetToneController,
    DashboardController,
    ClientPages,
    ConversationPages,
    HandoffPages,
    LearningPages,
    EventPages,
    SettingsPages,
    OnboardingPages,
    WidgetController,
    *TELEGRAM_ROUTES,
    TelegramPages,
    create_static_files_router(path="/static", directories=[PROJECT_ROOT / "static"]),
    favicon,
]
"""Every controller, the WebSocket handler, the Telegram routes, the static files and the site icon, but the
documents' two (:func:`upload_routes`)."""


def upload_body_max_bytes(settings: Settings) -> int:
    """The body limit of the document upload routes: twice ``MAX_UPLOAD_MB`` and a MiB for the multipart framing.
    A file up to that size over ``MAX_UPLOAD_MB`` is recorded as ``failed`` with the reason
    (:meth:`app.rag.service.DocumentService.upload`); a larger body is a 413."""
    return int((settings.max_upload_mb * 2 + 1) * 1024 * 1024)


def upload_routes(settings: Settings) -> list[ControllerRouterHandler]:
    """The documents' controllers (API and dashboard), their ``upload`` route taking bodies of up to
    :func:`upload_body_max_bytes`, every other route of theirs the app's :data:`app.auth.BODY_MAX_BYTES`. The
    only routes that take a document file (the widget avatar's set their own limit). Subclasses made per app, as
    the limit is a setting; a controller of its own for the upload would clash with the list at its address (two
    controllers on one path each bring an ``OPTIONS`` route)."""
    limit = upload_body_max_bytes(settings)
    routes: list[ControllerRouterHandler] = []
    controller: type[Controller]
    for controller in (DocumentController, DocumentPages):
        upload = copy(controller.upload)
        upload.request_max_body_size = limit
        routes.append(type(controller.__name__, (controller,), {"upload": upload}))
    return routes


def create_app(
    settings: Settings, database_url: str, redis_url: str, *, registry: ProviderRegistry | None = None
) -> Litestar:
    """Build the ASGI app. The container (DB pool, Redis, services) is created on start-up and closed on
    shutdown; ``registry`` lets tests share loaded local models."""

    sessions = DashboardSessions(redis_url, settings)

    async def startup(app: Litestar) -> None:
        install_access_log_redaction()
        container = await Container.create(settings, database_url, redis_url, registry=registry)
        app.state.container = container
        # load the offline models in the background; requests that need them first wait on the registry lock
        app.state.warm_up = asyncio.create_task(asyncio.to_thread(_warm_up, container.registry))
        # then what start-up loaded leaves the garbage collector's full collections (they paused turns)
        app.state.warm_up.add_done_callback(lambda _: freeze_startup_heap())

    async def shutdown(app: Litestar) -> None:
        warm_up: asyncio.Task[None] | None = getattr(app.state, "warm_up", None)
        if warm_up is not None:
            await asyncio.gather(warm_up, return_exceptions=True)
        container: Container | None = getattr(app.state, "container", None)
        if container is not None:
            await container.close()
        await sessions.close()

    async def widget_origin_listed(origin: str) -> bool:
        container: Container = app.state.container
        return await container.accounts.widget_origin_listed(origin)

    app = Litestar(
        route_handlers=[*ROUTE_HANDLERS, *upload_routes(settings)],
        dependencies={
            "container": Provide(provide_container, sync_to_thread=False),
            "dashboard_sessions": Provide(provide_dashboard_sessions, sync_to_thread=False),
        },
        state=State({"dashboard_sessions": sessions}),
        exception_handlers=EXCEPTION_HANDLERS,
        after_exception=[log_unhandled],
        on_startup=[startup, telegram.start],
        before_send=[SecurityHeaders(settings.public_url, WIDGET_API_PREFIXES, widget_origin_listed)],
        on_shutdown=[telegram.stop, shutdown],
        template_config=TemplateConfig(directory=PROJECT_ROOT / "templates", engine=JinjaTemplateEngine),
        stores={"sessions": sessions.store},
        # first (outermost): a request naming a host we do not serve is refused before anything reads it
        middleware=[host_allowlist(settings.public_url, settings.allowed_hosts), sessions.config.middleware],
        csrf_config=csrf_config(settings),
        # the document itself at /schema too: Litestar's interactive pages load their script from a CDN and
        # run it inline, which the app's CSP refuses (they rendered blank), and would be third-party script
        openapi_config=OpenAPIConfig(
            title="OpenCoach API",
            version="1.0.0",
            path="/schema",
            render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"])],
        ),
        request_max_body_size=BODY_MAX_BYTES,
        guards=[authenticate_first],
        # live events (app.handoff.live) from any process reach this process's subscribers through Redis
        plugins=[
            ChannelsPlugin(
                backend=ReconnectingPubSubBackend(redis=Redis.from_url(redis_url)), arbitrary_channels_allowed=True
            )
        ],
    )
    return app
