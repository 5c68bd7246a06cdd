"""Log-in for the dashboard: sign-up, log-in and log-out pages, the session's coach as the ``coach_id``
dependency, and :class:`CoachPage`, the base of every page behind log-in."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from litestar.types import ASGIApp, Receive, Scope, Send

from app.accounts.alert_email import CONFIRM_PATH
from app.auth import AUTH_BODY_MAX_BYTES, SAFE_METHODS, throttle_auth_attempt
from app.core.errors import DomainError
from app.deps import ContainerDep, provide_unit_of_work
from app.web.dashboard.forms import form_str
from app.web.sessions import start_session


class LoginRequired(HTTPException):
    """Raised by :func:`provide_dashboard_coach_id` when the session has no coach; answered by a redirect."""

    status_code = 401


def login_redirect(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Send a visitor without a session to the log-in page."""
    return Redirect("/login")


def provide_dashboard_coach_id(request: Request[Any, Any, Any]) -> uuid.UUID:
    """The logged-in coach from the server-side session, else ``LoginRequired``."""
    value = request.session.get("coach_id") if request.session else None
    if not value:
        raise LoginRequired()
    return uuid.UUID(value)


def session_user_id(request: Request[Any, Any, Any]) -> uuid.UUID:
    """The logged-in dashboard user (sessions started before user ids were kept: ``LoginRequired``)."""
    value = request.session.get("user_id") if request.session else None
    if not value:
        raise LoginRequired()
    return uuid.UUID(value)


class LoginFirst(ASGIMiddleware):
    """Middleware of the pages behind log-in: a POST (or any unsafe method) without a logged-in session is sent
    to ``/login`` before its body is read. Litestar's CSRF check, which runs before any handler, dependency or
    guard, reads the whole form to find its token: without this, anybody's upload-sized body was read to be
    refused."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Raise ``LoginRequired`` (answered by :func:`login_redirect`) for an unsafe method without a session
        coach, else pass the request on (the session middleware, which runs before, loaded the session)."""
        session = scope.get("session")
        method = scope.get("method", "GET")
        if method not in SAFE_METHODS and not (isinstance(session, dict) and session.get("coach_id")):
            raise LoginRequired()
        await next_app(scope, receive, send)


class CoachPage(Controller):
    """Base of the pages behind log-in: under ``/dashboard``, the logged-in coach as ``coach_id``; a visitor
    without a session is redirected to ``/login`` (a form before it is read: :class:`LoginFirst`). Mutating
    forms carry the CSRF token."""

    path = "/dashboard"
    include_in_schema = False
    middleware = [LoginFirst()]
    dependencies = {
        "coach_id": Provide(provide_dashboard_coach_id, sync_to_thread=False),
        "uow": Provide(provide_unit_of_work),
    }
    exception_handlers = {LoginRequired: login_redirect}


async def _alert_email_page(container: ContainerDep, token: str, *, confirm: bool) -> Template:
    """The confirmation page of ``token``: checked (and, with ``confirm``, used), or its error with a 400."""
    try:
        email = await container.accounts.confirm_alert_email(token, confirm=confirm)
    except DomainError as exc:
        context: dict[str, Any] = {"error": exc.message}
        return Template("dashboard/alert_email_confirm.html", context=context, status_code=exc.status_code)
    context = {"error": None, "email": email, "token": token, "confirmed": confirm}
    return Template("dashboard/alert_email_confirm.html", context=context)


class DashboardController(Controller):
    """HTML pages for coaches. Mutating forms carry the CSRF token (Litestar's CSRF middleware)."""

    include_in_schema = False
    exception_handlers = {LoginRequired: login_redirect}

    @get("/")
    async def home(self, request: Request[Any, Any, Any]) -> Redirect:
        return Redirect("/dashboard/documents" if request.session.get("coach_id") else "/login")

    @get("/signup")
    async def signup_page(self) -> Template:
        return Template("dashboard/signup.html", context={"error": None, "form": {}})

    @post("/signup", request_max_body_size=AUTH_BODY_MAX_BYTES)
    async def signup(self, request: Request[Any, Any, Any], container: ContainerDep) -> Template | Redirect:
        """Sign up (rate-limited like log-in); the new session gets a fresh id and shows the first API key."""
        form = await request.form()
        try:
            await throttle_auth_attempt(request, container, form_str(form, "email"))
            result = await container.accounts.signup(
                form_str(form, "coach_name"), form_str(form, "email"), form_str(form, "password")
            )
        except DomainError as exc:
            return Template(
                "dashboard/signup.html",
                context={"error": exc.message, "form": {k: form_str(form, k) for k in ("coach_name", "email")}},
                status_code=exc.status_code,
                headers=exc.headers(),
            )
        start_session(
            request, {"coach_id": str(result.coach_id), "user_id": str(result.user_id), "new_api_key": result.api_key}
        )
        return Redirect("/dashboard/start")

    @get("/login")
    async def login_page(self) -> Template:
        return Template("dashboard/login.html", context={"error": None, "email": ""})

    @post("/login", request_max_body_size=AUTH_BODY_MAX_BYTES)
    async def login(self, request: Request[Any, Any, Any], container: ContainerDep) -> Template | Redirect:
        """Log in: rate-limited per IP and per e-mail (429 with ``Retry-After``), the session gets a fresh id."""
        form = await request.form()
        email = form_str(form, "email")
        try:
            await throttle_auth_attempt(request, container, email)
        except DomainError as exc:
            return Template(
                "dashboard/login.html",
                context={"error": exc.message, "email": email},
                status_code=exc.status_code,
                headers=exc.headers(),
            )
        found = await container.accounts.login(email, form_str(form, "password"))
        if found is None:
            return Template(
                "dashboard/login.html", context={"error": "wrong e-mail or password", "email": email}, status_code=401
            )
        start_session(request, {"coach_id": str(found[0]), "user_id": str(found[1])})
        return Redirect("/dashboard/documents")

    @get(CONFIRM_PATH)
    async def alert_email_page(self, container: ContainerDep, token: FromQuery[str] = "") -> Template:
        """The page a confirmation link opens (:mod:`app.accounts.alert_email`): the address and a "Confirm"
        button (a GET changes nothing: mail scanners open links); 400 with why for a bad, expired or used link."""
        return await _alert_email_page(container, token, confirm=False)

    @post(CONFIRM_PATH, request_max_body_size=AUTH_BODY_MAX_BYTES)
    async def confirm_alert_email(self, request: Request[Any, Any, Any], container: ContainerDep) -> Template:
        """Confirm the link's address as the coach's alert e-mail; 400 with why for a bad, expired or used link."""
        return await _alert_email_page(container, form_str(await request.form(), "token"), confirm=True)

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()
        return Redirect("/login")
