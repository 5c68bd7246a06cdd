"""Coach dashboard (server-rendered Jinja2 + htmx): sign-up / log-in, documents, clients and their memory,
conversations, the handoff queue, settings. Pages call the same services as the REST API.

Memory edits on the client page are htmx posts answered with the changed fragment (a 400 fragment carries
the error; ``base.html`` lets htmx swap 400s); without htmx the same forms redirect back to the page.

Live updates: every logged-in page loads ``static/dashboard.js``, which listens to ``GET /dashboard/events``
(Server-Sent Events relaying the coach's channel of :mod:`app.handoff.live`) and refreshes the queue, the
nav badge, the open conversation and the crisis banner. Pub/sub keeps no history, so each page renders the
current state from the database first and the stream only carries what changes afterwards."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromQuery
from litestar.response import Redirect, ServerSentEvent, Template
from litestar.response.sse import ServerSentEventMessage

from app.accounts.availability import DAY_NAMES
from app.accounts.handoff_settings import SLA_MINUTES_RANGE
from app.accounts.learning_settings import (
    FINE_TUNE_MIN_DAYS_RANGE,
    FINE_TUNE_MIN_EXAMPLES_RANGE,
    RESPONSE_CACHE_TTL_RANGE,
    apply_learning_settings,
)
from app.accounts.models import Coach, HandoffMode
from app.accounts.service import RECENT_MESSAGES_RANGE, SESSION_IDLE_MINUTES_RANGE
from app.container import Container
from app.conversations.handoffs import DraftStatus, HandoffReason, HandoffStatus
from app.core.errors import DomainError, InvalidInput
from app.core.security import mask_secret
from app.deps import CoachId, ContainerDep, PathId
from app.handoff.live import coach_channel
from app.handoff.service import QueueItem, draft_dict
from app.learning.charts import dashboard_charts
from app.memory.models import InsightKind, InsightStatus
from app.rag.models import DocumentStatus
from app.web.api.documents import read_upload

ACTIVE_STATUSES = (DocumentStatus.QUEUED, DocumentStatus.PROCESSING)
KEEPALIVE_SECONDS = 15.0
"""How often the event stream sends a comment when nothing happens (keeps proxies from closing it)."""
SSE_RETRY_MS = 3000
"""How long a browser waits before reconnecting a dropped event stream."""


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


def _form_str(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _form_int(form: Any, name: str, low: int, high: int) -> int | None:
    """An integer form field; ``None`` when absent or empty. Raises ``InvalidInput`` when not a number (the
    range itself is the service's to check; ``low``/``high`` only word the message)."""
    value = _form_str(form, name).strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}") from None


def _form_lines(form: Any, name: str) -> list[str]:
    """A textarea as a list of its non-empty lines."""
    return [line.strip() for line in _form_str(form, name).splitlines() if line.strip()]


def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def _form_opt_lines(form: Any, name: str) -> list[str] | None:
    """A textarea as its non-empty lines, or ``None`` when the form does not have the field (left as is)."""
    return _form_lines(form, name) if name in form else None


def _form_opt_str(form: Any, name: str) -> str | None:
    """A text field, or ``None`` when the form does not have it (left as is)."""
    return _form_str(form, name) if name in form else None


def handoff_form_settings(form: Any) -> dict[str, Any]:
    """The escalation settings of the settings form, as keyword arguments of
    :meth:`app.accounts.service.AccountService.update_settings`
    (see :data:`app.accounts.handoff_settings.HANDOFF_FIELDS`).

    Fields missing from the form are ``None`` (left as is). Topics and crisis resources are one entry per
    line; availability is ``{}`` (always available) when ``always_available`` is ticked, else
    ``{"timezone", "days": [0–6 from the ticked avail_days], "start", "end"}``. Raises ``InvalidInput`` for a
    threshold or SLA that is not a number (ranges are the service's to check)."""
    threshold_raw = _form_str(form, "confidence_threshold").strip()
    threshold: float | None = None
    if threshold_raw:
        try:
            threshold = float(threshold_raw)
        except ValueError:
            raise InvalidInput("confidence_threshold must be a number from 0 to 1") from None
    availability: dict[str, Any] | None = None
    if "availability_form" in form:
        if form.get("always_available"):
            availability = {}
        else:
            try:
                days = sorted({int(d) for d in form.getall("avail_days", [])})
            except ValueError:
                raise InvalidInput("availability.days must be weekdays 0–6 (Monday = 0)") from None
            availability = {
                "timezone": _form_str(form, "avail_timezone").strip() or "UTC",
                "days": days,
                "start": _form_str(form, "avail_start").strip(),
                "end": _form_str(form, "avail_end").strip(),
            }
    return {
        "handoff_mode": _form_str(form, "handoff_mode") or None,
        "confidence_threshold": threshold,
        "high_stakes_topics": _form_opt_lines(form, "high_stakes_topics"),
        "always_escalate_topics": _form_opt_lines(form, "always_escalate_topics"),
        "handoff_sla_minutes": _form_int(form, "handoff_sla_minutes", *SLA_MINUTES_RANGE),
        "availability": availability,
        "crisis_resources": _form_opt_lines(form, "crisis_resources"),
        "alert_webhook_url": _form_opt_str(form, "alert_webhook_url"),
        "alert_email": _form_opt_str(form, "alert_email"),
    }


async def coach_event_stream(
    channels: ChannelsPlugin, coach_id: uuid.UUID, keepalive: float = KEEPALIVE_SECONDS
) -> AsyncGenerator[ServerSentEventMessage, None]:
    """The coach's live events as Server-Sent Events: first ``event: ready`` (sent once the subscription to
    ``coach:<coach_id>`` is active, with ``retry``), then each event of the channel as ``event: <type>`` and
    ``data: <the event's JSON>``, and a ``: keep-alive`` comment after ``keepalive`` seconds of silence.
    Runs until the client disconnects (Litestar then cancels the stream and the subscription ends)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    async with (
        channels.start_subscription([coach_channel(coach_id)]) as subscriber,
        subscriber.run_in_background(queue.put, join=False),
    ):
        yield ServerSentEventMessage(event="ready", data="{}", retry=SSE_RETRY_MS)
        while True:
            try:
                raw = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                yield ServerSentEventMessage(comment="keep-alive", data=None)
                continue
            try:
                kind = str(json.loads(raw).get("type") or "message")
            except (ValueError, AttributeError):
                continue
            yield ServerSentEventMessage(event=kind, data=raw.decode())


def learning_form_settings(form: Any) -> dict[str, Any]:
    """The learning settings of the settings form, as keyword arguments of
    :func:`app.accounts.learning_settings.apply_learning_settings` (``{}`` when the form has no learning section; an
    unticked box turns fine-tuning off; an empty judge model clears it). Raises ``InvalidInput`` for a field
    that is not a whole number (ranges are the service's to check)."""
    if "learning_form" not in form:
        return {}
    return {
        "fine_tune_enabled": bool(form.get("fine_tune_enabled")),
        "fine_tune_min_examples": _form_int(form, "fine_tune_min_examples", *FINE_TUNE_MIN_EXAMPLES_RANGE),
        "fine_tune_min_days": _form_int(form, "fine_tune_min_days", *FINE_TUNE_MIN_DAYS_RANGE),
        "fine_tune_base_model": _form_str(form, "fine_tune_base_model").strip() or None,
        "judge_model": _form_str(form, "judge_model").strip(),
        "response_cache_ttl_seconds": _form_int(form, "response_cache_ttl_seconds", *RESPONSE_CACHE_TTL_RANGE),
    }


def _next(form: Any, default: str) -> str:
    """Where a form asks to go back to (``next``, a dashboard path only), else ``default``."""
    target = _form_str(form, "next")
    return target if target.startswith("/dashboard/") and "//" not in target else default


HANDOFF_MODES = (
    (HandoffMode.AUTO, "Auto — the AI answers unless it is unsure (below the threshold)"),
    (HandoffMode.DRAFT, "Draft — the AI drafts every reply, you approve or edit it"),
    (HandoffMode.HUMAN_ONLY, "Human only — every message comes to you"),
)
"""The handoff modes and how the settings page words them."""

PROFILE_LISTS = (
    ("communication_preferences", "Communication preferences"),
    ("what_works", "What works"),
    ("what_doesnt_work", "What does not work"),
    ("sensitive_topics", "Handle with care"),
)
"""The profile's list fields and their labels, in the order the client page shows them."""


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

    @post("/signup")
    async def signup(self, request: Request[Any, Any, Any], container: ContainerDep) -> Template | Redirect:
        form = await request.form()
        try:
            result = await container.accounts.signup(
                _form_str(form, "coach_name"), _form_str(form, "email"), _form_str(form, "password")
            )
        except DomainError as exc:
            return Template(
                "dashboard/signup.html",
                context={"error": exc.message, "form": {k: _form_str(form, k) for k in ("coach_name", "email")}},
                status_code=exc.status_code,
            )
        request.set_session({"coach_id": str(result.coach_id), "new_api_key": result.api_key})
        return Redirect("/dashboard/settings")

    @get("/login")
    async def login_page(self) -> Template:
        return Template("dashboard/login.html", context={"error": None, "email": ""})

    @post("/login")
    async def login(self, request: Request[Any, Any, Any], container: ContainerDep) -> Template | Redirect:
        form = await request.form()
        found = await container.accounts.login(_form_str(form, "email"), _form_str(form, "password"))
        if found is None:
            return Template(
                "dashboard/login.html",
                context={"error": "wrong e-mail or password", "email": _form_str(form, "email")},
                status_code=401,
            )
        request.set_session({"coach_id": str(found[0])})
        return Redirect("/dashboard/documents")

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()
        return Redirect("/login")


class CoachPages(Controller):
    """Pages behind log-in."""

    path = "/dashboard"
    include_in_schema = False
    dependencies = {"coach_id": Provide(provide_dashboard_coach_id, sync_to_thread=False)}
    exception_handlers = {LoginRequired: login_redirect}

    async def _coach(self, container: Container, coach_id: uuid.UUID) -> Coach:
        async with container.tenant(coach_id) as session:
            return await container.accounts.get_coach(session, coach_id)

    async def _documents_page(
        self, container: Container, coach_id: uuid.UUID, error: str | None = None, status_code: int = 200
    ) -> Template:
        docs = await container.documents.list(coach_id)
        return Template(
            "dashboard/documents.html",
            context={
                "coach": await self._coach(container, coach_id),
                "documents": docs,
                "active": any(d.status in ACTIVE_STATUSES for d in docs),
                "error": error,
                "nav": "documents",
            },
            status_code=status_code,
        )

    @get("/documents")
    async def documents(self, coach_id: CoachId, container: ContainerDep) -> Template:
        return await self._documents_page(container, coach_id)

    @get("/documents/table")
    async def documents_table(self, coach_id: CoachId, container: ContainerDep) -> Template:
        """The live status table, polled by htmx every 2 s while a document is queued or processing."""
        docs = await container.documents.list(coach_id)
        return Template(
            "partials/documents_table.html",
            context={"documents": docs, "active": any(d.status in ACTIVE_STATUSES for d in docs)},
        )

    @post("/documents")
    async def upload(
        self, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Template | Redirect:
        try:
            filename, content_type, data = await read_upload(request)
            await container.documents.upload(coach_id, filename, content_type, data)
        except DomainError as exc:
            return await self._documents_page(container, coach_id, exc.message, exc.status_code)
        return Redirect("/dashboard/documents")

    @post("/documents/{document_id:uuid}/delete")
    async def delete_document(self, document_id: PathId, coach_id: CoachId, container: ContainerDep) -> Redirect:
        await container.documents.delete(coach_id, document_id)
        return Redirect("/dashboard/documents")

    @get("/clients")
    async def clients(self, coach_id: CoachId, container: ContainerDep) -> Template:
        async with container.tenant(coach_id) as session:
            coach = await container.accounts.get_coach(session, coach_id)
            clients = await container.accounts.list_clients(session, coach_id)
        rows = [(c, container.accounts.widget_token(c)) for c in clients]
        return Template(
            "dashboard/clients.html",
            context={"coach": coach, "clients": rows, "public_url": container.settings.public_url, "nav": "clients"},
        )

    @post("/clients")
    async def create_client(
        self, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Redirect:
        form = await request.form()
        async with container.tenant(coach_id) as session:
            await container.accounts.create_client(session, coach_id, _form_str(form, "name") or "New client")
        return Redirect("/dashboard/clients")

    async def _client_page(
        self, container: Container, coach_id: uuid.UUID, client_id: uuid.UUID, error: str | None = None
    ) -> Template:
        async with container.tenant(coach_id) as session:
            coach = await container.accounts.get_coach(session, coach_id)
            client = await container.accounts.get_client(session, coach_id, client_id)
            memory = await container.memory.client_memory(session, coach_id, client_id)
        conversations = await container.conversations.list_conversations(coach_id, client_id)
        return Template(
            "dashboard/client.html",
            context={
                "coach": coach,
                "client": client,
                "token": container.accounts.widget_token(client),
                "public_url": container.settings.public_url,
                "conversations": conversations,
                "memory": memory,
                "client_id": client.id,
                "profile": memory.profile,
                "profile_lists": PROFILE_LISTS,
                "kinds": InsightKind.ALL,
                "statuses": InsightStatus.VISIBLE,
                "page_error": error,
                "nav": "clients",
            },
            status_code=400 if error else 200,
        )

    @get("/clients/{client_id:uuid}")
    async def client_page(self, client_id: PathId, coach_id: CoachId, container: ContainerDep) -> Template:
        """One client: widget link, conversations, and memory (profile, insights, session summaries)."""
        return await self._client_page(container, coach_id, client_id)

    @post("/clients/{client_id:uuid}/profile", status_code=200)
    async def save_profile(
        self, client_id: PathId, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Template | Redirect:
        """Save the profile form (one list entry per line); htmx gets the profile card back."""
        form = await request.form()
        changes: dict[str, Any] = {name: _form_lines(form, name) for name, _ in PROFILE_LISTS}
        changes["tone"] = _form_str(form, "tone")
        try:
            async with container.tenant(coach_id) as session:
                profile = await container.memory.edit_profile(session, coach_id, client_id, changes)
        except InvalidInput as exc:
            if not _is_htmx(request):
                return await self._client_page(container, coach_id, client_id, exc.message)
            async with container.tenant(coach_id) as session:
                memory = await container.memory.client_memory(session, coach_id, client_id)
            return Template(
                "partials/client_profile.html",
                context={
                    "client_id": client_id,
                    "profile": memory.profile,
                    "profile_lists": PROFILE_LISTS,
                    "error": exc.message,
                    "saved": False,
                },
                status_code=exc.status_code,
            )
        if not _is_htmx(request):
            return Redirect(f"/dashboard/clients/{client_id}")
        return Template(
            "partials/client_profile.html",
            context={
                "client_id": client_id,
                "profile": profile,
                "profile_lists": PROFILE_LISTS,
                "error": None,
                "saved": True,
            },
        )

    @post("/clients/{client_id:uuid}/insights/{insight_id:uuid}", status_code=200)
    async def save_insight(
        self,
        client_id: PathId,
        insight_id: PathId,
        request: Request[Any, Any, Any],
        coach_id: CoachId,
        container: ContainerDep,
    ) -> Template | Redirect:
        """Save an insight's text, kind, importance and status; htmx gets the item back (with the error, 400)."""
        form = await request.form()
        error = None
        try:
            async with container.tenant(coach_id) as session:
                insight = await container.memory.edit_insight(
                    session,
                    coach_id,
                    client_id,
                    insight_id,
                    text=_form_str(form, "text"),
                    kind=_form_str(form, "kind") or None,
                    importance=_form_int(form, "importance", 0, 10),
                    status=_form_str(form, "status") or None,
                )
        except InvalidInput as exc:
            if not _is_htmx(request):
                return await self._client_page(container, coach_id, client_id, exc.message)
            error = exc.message
            async with container.tenant(coach_id) as session:
                memory = await container.memory.client_memory(session, coach_id, client_id)
            found = [i for i in memory.insights if i.id == insight_id]
            if not found:
                raise
            insight = found[0]
        if not _is_htmx(request):
            return Redirect(f"/dashboard/clients/{client_id}")
        return Template(
            "partials/insight.html",
            context={
                "client_id": client_id,
                "insight": insight,
                "kinds": InsightKind.ALL,
                "statuses": InsightStatus.VISIBLE,
                "error": error,
            },
            status_code=400 if error else 200,
        )

    @post("/clients/{client_id:uuid}/insights/{insight_id:uuid}/delete", status_code=200)
    async def delete_insight(
        self,
        client_id: PathId,
        insight_id: PathId,
        request: Request[Any, Any, Any],
        coach_id: CoachId,
        container: ContainerDep,
    ) -> Response[str] | Redirect:
        """Delete an insight; htmx gets an empty body, which removes the item from the page."""
        await container.memory.delete_insight(coach_id, client_id, insight_id)
        if _is_htmx(request):
            return Response("", media_type="text/html")
        return Redirect(f"/dashboard/clients/{client_id}")

    @get("/conversations")
    async def conversations(self, coach_id: CoachId, container: ContainerDep) -> Template:
        return Template(
            "dashboard/conversations.html",
            context={
                "coach": await self._coach(container, coach_id),
                "rows": await container.conversations.list_conversations(coach_id),
                "nav": "conversations",
            },
        )

    @get("/conversations/{conversation_id:uuid}")
    async def conversation(self, conversation_id: PathId, coach_id: CoachId, container: ContainerDep) -> Template:
        """The transcript with the handoff panel (state, brief, take over / hand back, pending drafts) and the
        coach's composer; ``static/dashboard.js`` appends new messages live."""
        return await self._conversation_page(container, coach_id, conversation_id)

    async def _conversation_page(
        self,
        container: Container,
        coach_id: uuid.UUID,
        conversation_id: uuid.UUID,
        error: str | None = None,
        status_code: int = 200,
        text: str = "",
    ) -> Template:
        conversation, messages = await container.conversations.get_conversation(coach_id, conversation_id)
        async with container.tenant(coach_id) as session:
            coach = await container.accounts.get_coach(session, coach_id)
            client = await container.accounts.get_client(session, coach_id, conversation.client_id)
        context = await self._panel_context(container, coach_id, conversation_id)
        return Template(
            "dashboard/conversation.html",
            context=context
            | {
                "coach": coach,
                "conversation": conversation,
                "client": client,
                "messages": messages,
                "error": error,
                "text": text,
                "nav": "conversations",
            },
            status_code=status_code,
        )

    async def _panel_context(
        self, container: Container, coach_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> dict[str, Any]:
        handoff, drafts = await container.handoffs.conversation_state(coach_id, conversation_id)
        item = await container.handoffs.get(coach_id, handoff.id) if handoff is not None else None
        return {
            "conversation_id": conversation_id,
            "item": item,
            "drafts": drafts,
            "reason_labels": HandoffReason.LABELS,
        }

    @get("/conversations/{conversation_id:uuid}/handoff")
    async def handoff_panel(self, conversation_id: PathId, coach_id: CoachId, container: ContainerDep) -> Template:
        """The conversation's handoff panel alone (refreshed live by ``static/dashboard.js``)."""
        return Template(
            "partials/handoff_panel.html", context=await self._panel_context(container, coach_id, conversation_id)
        )

    @post("/conversations/{conversation_id:uuid}/takeover")
    async def takeover(self, conversation_id: PathId, coach_id: CoachId, container: ContainerDep) -> Redirect:
        """Take the conversation over (the AI pauses until handback); back to the conversation."""
        await container.handoffs.takeover(coach_id, conversation_id)
        return Redirect(f"/dashboard/conversations/{conversation_id}")

    @post("/conversations/{conversation_id:uuid}/handback")
    async def handback(
        self, conversation_id: PathId, coach_id: CoachId, container: ContainerDep, reply: FromQuery[bool] = True
    ) -> Template | Redirect:
        """Hand the conversation back to the AI, which answers the client's unanswered message unless
        ``?reply=false``; the page with the error (409) when it is not handed off."""
        try:
            await container.handoffs.handback(coach_id, conversation_id, reply=reply)
        except DomainError as exc:
            return await self._conversation_page(container, coach_id, conversation_id, exc.message, exc.status_code)
        return Redirect(f"/dashboard/conversations/{conversation_id}")

    @post("/conversations/{conversation_id:uuid}/messages")
    async def send_message(
        self, conversation_id: PathId, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Template | Redirect:
        """Write to the client as the coach (takes the conversation over first); 400 page for an empty or too
        long text, which is kept in the composer."""
        form = await request.form()
        text = _form_str(form, "text")
        try:
            await container.handoffs.send(coach_id, conversation_id, text)
        except DomainError as exc:
            if exc.status_code == 404:
                raise
            return await self._conversation_page(
                container, coach_id, conversation_id, exc.message, exc.status_code, text
            )
        return Redirect(f"/dashboard/conversations/{conversation_id}")

    @post("/drafts/{draft_id:uuid}/approve")
    async def approve_draft(
        self, draft_id: PathId, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Template | Redirect:
        """Send a pending draft, as written or with the coach's edit (``text``, when it differs)."""
        form = await request.form()
        text = _form_str(form, "text") if "text" in form else None
        conversation_id = _form_str(form, "conversation_id")
        try:
            message = await container.handoffs.approve_draft(coach_id, draft_id, text)
        except DomainError as exc:
            if exc.status_code == 404 or not conversation_id:
                raise
            return await self._conversation_page(
                container, coach_id, uuid.UUID(conversation_id), exc.message, exc.status_code
            )
        return Redirect(_next(form, f"/dashboard/conversations/{message.conversation_id}"))

    @post("/drafts/{draft_id:uuid}/discard")
    async def discard_draft(
        self, draft_id: PathId, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Redirect:
        """Drop a pending draft without sending anything."""
        form = await request.form()
        draft = await container.handoffs.discard_draft(coach_id, draft_id)
        return Redirect(_next(form, f"/dashboard/conversations/{draft.conversation_id}"))

    # ------------------------------------------------------------------ handoff queue and live events

    async def _queue_context(self, container: Container, coach_id: uuid.UUID) -> dict[str, Any]:
        items: list[QueueItem] = []
        for status in (HandoffStatus.OPEN, HandoffStatus.CLAIMED):
            items += await container.handoffs.list_handoffs(coach_id, status)
        drafts = await container.handoffs.list_drafts(coach_id, DraftStatus.PENDING)
        names = {c.id: name for c, name, _ in await container.conversations.list_conversations(coach_id)}
        return {
            "open_items": [i for i in items if i.handoff.status == HandoffStatus.OPEN],
            "claimed_items": [i for i in items if i.handoff.status == HandoffStatus.CLAIMED],
            "drafts": [draft_dict(d, names.get(d.conversation_id)) for d in drafts],
            "reason_labels": HandoffReason.LABELS,
        }

    @get("/learning")
    async def learning(self, coach_id: CoachId, container: ContainerDep, days: FromQuery[int] = 30) -> Template:
        """The learning dashboard (the figures of ``GET /api/v1/learning/dashboard`` with SVG charts)."""
        figures = await container.learning_dashboard.figures(coach_id, days=days)
        return Template(
            "dashboard/learning.html",
            context={
                "coach": await self._coach(container, coach_id),
                "nav": "learning",
                "f": figures,
                "charts": dashboard_charts(figures),
            },
        )

    @get("/handoffs")
    async def handoffs(self, coach_id: CoachId, container: ContainerDep) -> Template:
        """The live handoff queue: open handoffs (overdue ones highlighted), those the coach holds, and the
        AI drafts waiting for review."""
        context = await self._queue_context(container, coach_id)
        context |= {"coach": await self._coach(container, coach_id), "nav": "handoffs"}
        return Template("dashboard/handoffs.html", context=context)

    @get("/handoffs/queue")
    async def handoff_queue(self, coach_id: CoachId, container: ContainerDep) -> Template:
        """The queue fragment (``#queue``), re-fetched on every live ``handoff`` / ``draft`` event."""
        return Template("partials/handoff_queue.html", context=await self._queue_context(container, coach_id))

    @get("/handoffs/summary")
    async def handoff_summary(self, coach_id: CoachId, container: ContainerDep) -> dict[str, Any]:
        """For the nav badge and the crisis banner on every page: ``{"open": n, "claimed": n, "drafts": n,
        "crisis": [{"handoff_id", "conversation_id", "client_name"}]}`` (crisis: open crisis handoffs)."""
        open_items = await container.handoffs.list_handoffs(coach_id, HandoffStatus.OPEN)
        claimed = await container.handoffs.list_handoffs(coach_id, HandoffStatus.CLAIMED)
        drafts = await container.handoffs.list_drafts(coach_id, DraftStatus.PENDING)
        return {
            "open": len(open_items),
            "claimed": len(claimed),
            "drafts": len(drafts),
            "crisis": [
                {
                    "handoff_id": str(i.handoff.id),
                    "conversation_id": str(i.handoff.conversation_id),
                    "client_name": i.client_name,
                }
                for i in open_items
                if i.handoff.reason == HandoffReason.CRISIS
            ],
        }

    @get("/events", media_type="text/event-stream")
    async def events(self, coach_id: CoachId, channels: NamedDependency[ChannelsPlugin]) -> ServerSentEvent:
        """Server-Sent Events of the coach's live channel (see :func:`coach_event_stream`): ``handoff``,
        ``alert``, ``message``, ``draft``; log-in required (a redirect to ``/login`` otherwise)."""
        return ServerSentEvent(coach_event_stream(channels, coach_id), headers={"Cache-Control": "no-cache"})

    @get("/settings")
    async def settings_page(
        self, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Template:
        new_api_key = request.session.pop("new_api_key", None)
        if new_api_key:
            request.set_session(dict(request.session))
        coach = await self._coach(container, coach_id)
        return Template("dashboard/settings.html", context=self._settings_context(container, coach, new_api_key, None))

    @post("/settings")
    async def save_settings(
        self, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Template:
        form = await request.form()
        error = None
        try:
            recent_messages = _form_int(form, "recent_messages", *RECENT_MESSAGES_RANGE)
            session_idle_minutes = _form_int(form, "session_idle_minutes", *SESSION_IDLE_MINUTES_RANGE)
            handoff = handoff_form_settings(form)
            learning = learning_form_settings(form)
            async with container.tenant(coach_id) as session:
                coach = await container.accounts.update_settings(
                    session,
                    coach_id,
                    name=_form_str(form, "name"),
                    persona=_form_str(form, "persona"),
                    llm_provider=_form_str(form, "llm_provider") or "local",
                    llm_model=_form_str(form, "llm_model"),
                    llm_base_url=_form_str(form, "llm_base_url"),
                    # an empty key field keeps the stored key; "clear" removes it
                    llm_api_key=("" if form.get("clear_key") else (_form_str(form, "llm_api_key") or None)),
                    recent_messages=recent_messages,
                    session_idle_minutes=session_idle_minutes,
                    **handoff,
                )
                apply_learning_settings(coach, **learning)
        except DomainError as exc:
            error = exc.message
            coach = await self._coach(container, coach_id)
        context = self._settings_context(container, coach, None, error)
        context["saved"] = error is None
        return Template("dashboard/settings.html", context=context, status_code=400 if error else 200)

    def _settings_context(
        self, container: ContainerDep, coach: Coach, new_api_key: str | None, error: str | None
    ) -> dict[str, Any]:
        key = container.registry.decrypt_key(coach.llm_api_key_encrypted)
        return {
            "coach": coach,
            "key_hint": mask_secret(key) if key else None,
            "webhook_secret": container.registry.decrypt_key(coach.alert_webhook_secret_encrypted),
            "handoff_modes": HANDOFF_MODES,
            "day_names": list(enumerate(DAY_NAMES)),
            "new_api_key": new_api_key,
            "error": error,
            "saved": False,
            "nav": "settings",
        }
