"""Clients: the list (with widget links), a new client, and one client's page with their memory, the widget
token's rotation and revocation, the data export and the client's erasure. Memory edits are htmx posts
answered with the changed fragment (a 400 fragment carries the error; ``base.html`` lets htmx swap 400s);
without htmx the same forms redirect back to the page."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from app.accounts.models import Client, Coach
from app.accounts.tone import CONFIRM_1, GIVEN, INTENSITY_NAMES, WITHDRAWN
from app.accounts.unit_of_work import UnitOfWork
from app.auth import TEXT_BODY_MAX_BYTES
from app.container import Container
from app.conversations.service import ClientActivity
from app.core.errors import DomainError, InvalidInput
from app.core.pagination import PageRequest, page_query
from app.deps import PAGE, CoachId, ContainerDep, PathId, Uow, WantedPage
from app.memory.models import InsightKind, InsightStatus
from app.web.api.accounts import EXPORT_HEADERS
from app.web.dashboard.auth import CoachPage
from app.web.dashboard.forms import form_int, form_lines, form_str, is_htmx

PROFILE_LISTS = (
    ("communication_preferences", "Communication preferences"),
    ("what_works", "What works"),
    ("what_doesnt_work", "What does not work"),
    ("sensitive_topics", "Handle with care"),
)
"""The profile's list fields and their labels, in the order the client page shows them."""
CONSENT_EVENTS = {CONFIRM_1: "first of two confirmations", GIVEN: "agreed", WITHDRAWN: "withdrew"}
"""How the client page words each event of the tone consent log."""


async def _client_page(
    container: Container,
    uow: UnitOfWork,
    client_id: uuid.UUID,
    error: str | None = None,
    sessions: PageRequest = PageRequest(),  # noqa: B008 - immutable: the newest sessions
) -> Template:
    """The client page, with the ``sessions`` page of their ended sessions (an "Earlier sessions" link to the
    next page while there is one, and a "Newest sessions" link back from an older page)."""
    coach = await uow.coach()
    client = await container.accounts.get_client(uow, client_id)
    memory = await container.memory.client_memory(uow.session, uow.coach_id, client_id, sessions)
    conversations = await container.conversations.list_conversations(uow, PageRequest(), client_id)
    tone = await container.tone.client_state(uow, client_id, datetime.now(UTC))
    return Template(
        "dashboard/client.html",
        context={
            "coach": coach,
            "client": client,
            "token": container.accounts.widget_token(client),
            "public_url": container.settings.public_url,
            "conversations": conversations.items,
            "more_conversations": conversations.next is not None,
            "memory": memory,
            "earlier_sessions": page_query(sessions, memory.more_summaries),
            "older_sessions_page": sessions.after is not None,
            "client_id": client.id,
            "profile": memory.profile,
            "profile_lists": PROFILE_LISTS,
            "kinds": InsightKind.ALL,
            "statuses": InsightStatus.VISIBLE,
            "tone": tone,
            "tone_in_force": tone.in_force(),
            "tone_log": await container.tone.consent_log(uow, client_id),
            "tone_labels": {m.key: m.label for m in tone.settings.modes},
            "intensity_names": INTENSITY_NAMES,
            "consent_events": CONSENT_EVENTS,
            "page_error": error,
            "nav": "clients",
        },
        status_code=400 if error else 200,
    )


@dataclass(frozen=True)
class ClientRow:
    """One line of the clients table: ``status`` is ``needs-you`` (a handoff open or claimed), ``revoked`` (no
    chat link), ``active`` (has written) or ``new`` (never wrote); ``label`` words it; ``token``: the widget token
    (``None`` while revoked); ``preview``: the coach's own preview client."""

    client: Client
    token: str | None
    last_seen: datetime | None
    status: str
    label: str
    preview: bool


def client_row(client: Client, token: str | None, activity: ClientActivity | None, coach: Coach) -> ClientRow:
    """A client's line of the table from their widget token and activity (see :class:`ClientRow`)."""
    last_seen = activity.last_seen if activity else None
    if activity is not None and activity.needs_you:
        status, label = "needs-you", "Needs you"
    elif token is None:
        status, label = "revoked", "Chat link revoked"
    elif last_seen is not None:
        status, label = "active", "Chatting"
    else:
        status, label = "new", "Not started yet"
    return ClientRow(client, token, last_seen, status, label, client.id == coach.preview_client_id)


ERASED_NOTICE = "client_erased"
"""The session key of the clients page's one-time line about a client just deleted."""


def erased_notice(name: str) -> str:
    """What the clients page says once after deleting client ``name`` (:meth:`app.learning.rights.DataRightsService.
    erase_client`)."""
    return (
        f"Deleted {name} and everything stored about them: their conversations, memory, feedback and training "
        "examples. Training files with their words are being deleted at your model provider, and a fine-tune still "
        "training on them is cancelled."
    )


async def _clients_page(
    container: ContainerDep,
    uow: UnitOfWork,
    page: PageRequest,
    query: str,
    *,
    error: DomainError | None = None,
    notice: str | None = None,
) -> Template:
    """The clients page: one ``page`` of the clients whose name contains ``query``; ``error`` (at its status) or
    ``notice`` shown at the top."""
    coach = await uow.coach()
    clients = await container.accounts.list_clients(uow, page, name_contains=query)
    activity = await container.conversations.client_activity(uow, [c.id for c in clients.items])
    rows = [client_row(c, container.accounts.widget_token(c), activity.get(c.id), coach) for c in clients.items]
    context = {
        "coach": coach,
        "rows": rows,
        "query": query,
        "first_page": page.after is None,
        "older": page_query(page, clients.next, q=query),
        "public_url": container.settings.public_url,
        "error": error.message if error else None,
        "notice": notice,
        "nav": "clients",
    }
    return Template("dashboard/clients.html", context=context, status_code=error.status_code if error else 200)


class ClientPages(CoachPage):
    """The coach's clients and their memory (profile, insights, session summaries)."""

    @get("/clients", dependencies=PAGE)
    async def clients(
        self,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
        page: WantedPage,
        q: FromQuery[str] = "",
    ) -> Template:
        """The clients as a table, newest first, a page at a time (an "Older clients" link to the next page,
        ``cursor``; 400 page for a bad cursor or limit): name, last seen (their latest message), status (needs
        you, chatting, not yet started, link revoked) and chat link with copy buttons; ``q`` keeps the clients
        whose name contains it (case-insensitive). Says once what a client's deletion just erased."""
        notice = request.session.pop(ERASED_NOTICE, None)
        if notice:
            request.set_session(dict(request.session))
        return await _clients_page(container, uow, page, q.strip()[:200], notice=notice)

    @post("/clients")
    async def create_client(
        self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep
    ) -> Template | Redirect:
        """Add a client (an empty name: "New client"); a refused name (too long) shows the clients page with the
        reason (400), nothing stored."""
        form = await request.form()
        try:
            async with uow.savepoint():
                await container.accounts.create_client(uow, form_str(form, "name").strip() or "New client")
        except DomainError as exc:
            return await _clients_page(container, uow, PageRequest(), "", error=exc)
        return Redirect("/dashboard/clients")

    @get("/clients/{client_id:str}", dependencies=PAGE)
    async def client_page(self, client_id: PathId, uow: Uow, container: ContainerDep, page: WantedPage) -> Template:
        """One client: widget link, conversations, and memory (profile, insights, session summaries: a page of
        them, newest first, ``cursor`` the next; 400 page for a bad cursor or limit)."""
        return await _client_page(container, uow, client_id, sessions=page)

    @post("/clients/{client_id:str}/widget-token")
    async def rotate_widget_token(self, client_id: PathId, uow: Uow, container: ContainerDep) -> Redirect:
        """New widget token (the old link and its widget sessions stop working); back to the client page."""
        await container.accounts.rotate_widget_token(uow, client_id)
        return Redirect(f"/dashboard/clients/{client_id}")

    @post("/clients/{client_id:str}/widget-token/revoke")
    async def revoke_widget_token(self, client_id: PathId, uow: Uow, container: ContainerDep) -> Redirect:
        """Revoke the widget token (no chat link works until a new one is made); back to the client page."""
        await container.accounts.revoke_widget_token(uow, client_id)
        return Redirect(f"/dashboard/clients/{client_id}")

    @get("/clients/{client_id:str}/export")
    async def export_client(self, client_id: PathId, uow: Uow, container: ContainerDep) -> Response[dict[str, Any]]:
        """The client's data as a JSON download (as ``GET /api/v1/clients/{id}/export``)."""
        return Response(await container.rights.export_client(uow, client_id), headers=EXPORT_HEADERS)

    @post("/clients/{client_id:str}/delete")
    async def delete_client(
        self, request: Request[Any, Any, Any], client_id: PathId, uow: Uow, container: ContainerDep
    ) -> Redirect:
        """Erase the client and all their data (the form asks for confirmation first); back to the list, which says
        what went."""
        name = (await container.accounts.get_client(uow, client_id)).name
        await container.rights.erase_client(uow, client_id)
        request.set_session({**request.session, ERASED_NOTICE: erased_notice(name)})
        return Redirect("/dashboard/clients")

    @post("/clients/{client_id:str}/profile", status_code=200, request_max_body_size=TEXT_BODY_MAX_BYTES)
    async def save_profile(
        self, client_id: PathId, request: Request[Any, Any, Any], coach_id: CoachId, uow: Uow, container: ContainerDep
    ) -> Template | Redirect:
        """Save the profile form (one list entry per line); htmx gets the profile card back."""
        form = await request.form()
        changes: dict[str, Any] = {name: form_lines(form, name) for name, _ in PROFILE_LISTS}
        changes["tone"] = form_str(form, "tone")
        try:
            async with uow.savepoint():  # a refused change is rolled back alone; the page shows why
                profile = await container.memory.edit_profile(uow, client_id, changes)
        except InvalidInput as exc:
            if not is_htmx(request):
                return await _client_page(container, uow, client_id, exc.message)
            memory = await container.memory.client_memory(uow.session, uow.coach_id, client_id)
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
        if not is_htmx(request):
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

    @post("/clients/{client_id:str}/insights/{insight_id:str}", status_code=200)
    async def save_insight(
        self,
        client_id: PathId,
        insight_id: PathId,
        request: Request[Any, Any, Any],
        coach_id: CoachId,
        uow: Uow,
        container: ContainerDep,
    ) -> Template | Redirect:
        """Save an insight's text, kind, importance and status; htmx gets the item back (with the error, 400)."""
        form = await request.form()
        error = None
        try:
            async with uow.savepoint():  # a refused change is rolled back alone; the page shows why
                insight = await container.memory.edit_insight(
                    uow,
                    client_id,
                    insight_id,
                    text=form_str(form, "text"),
                    kind=form_str(form, "kind") or None,
                    importance=form_int(form, "importance", 0, 10),
                    status=form_str(form, "status") or None,
                )
        except InvalidInput as exc:
            if not is_htmx(request):
                return await _client_page(container, uow, client_id, exc.message)
            error = exc.message
            memory = await container.memory.client_memory(uow.session, uow.coach_id, client_id)
            found = [i for i in memory.insights if i.id == insight_id]
            if not found:
                raise
            insight = found[0]
        if not is_htmx(request):
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

    @post("/clients/{client_id:str}/insights/{insight_id:str}/delete", status_code=200)
    async def delete_insight(
        self,
        client_id: PathId,
        insight_id: PathId,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
    ) -> Response[str] | Redirect:
        """Delete an insight; htmx gets an empty body, which removes the item from the page."""
        await container.memory.delete_insight(uow, client_id, insight_id)
        if is_htmx(request):
            return Response("", media_type="text/html")
        return Redirect(f"/dashboard/clients/{client_id}")

    @post("/clients/{client_id:str}/sessions/{session_id:str}/delete", status_code=200)
    async def delete_summary(
        self,
        client_id: PathId,
        session_id: PathId,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
    ) -> Response[str] | Redirect:
        """Forget a session summary (:meth:`~app.memory.controls.MemoryControls.delete_summary`; 404 for another
        coach's or another client's session); htmx gets an empty body, which removes it from the page."""
        await container.memory.delete_summary(uow, client_id, session_id)
        if is_htmx(request):
            return Response("", media_type="text/html")
        return Redirect(f"/dashboard/clients/{client_id}#sessions")
