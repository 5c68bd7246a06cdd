"""REST API: the memory controls. The coach reads and corrects what the clone remembers about a client
(``/api/v1/clients/{client_id}/memory``); the client sees and deletes what is remembered about them
(``/api/v1/widget/memory``, widget token or session cookie) and downloads their data (``/api/v1/widget/export``).
Either side can end the chat session in progress.

Ids in paths are parsed here rather than by the router, so a malformed id answers 400 ``Invalid UUID``
instead of a bare 404; another coach's (or client's) ids answer 404 like missing ones.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import JSONBody

from app.accounts.disclosure import accept_disclosure
from app.auth import CLIENT_DEPENDENCIES, COACH_DEPENDENCIES, TEXT_BODY_MAX_BYTES
from app.core.errors import InvalidInput, NotFound
from app.deps import (
    PAGE,
    ClientIdentityDep,
    CoachId,
    ContainerDep,
    PathId,
    Uow,
    WantedPage,
    next_page_link,
)
from app.memory.client_view import RememberedOut, SessionState, remembered_out, session_state
from app.memory.controls import ClientMemory
from app.memory.models import ChatSession, ClientProfile, Insight, SessionStatus
from app.memory.schemas import SessionSummary
from app.web.api.accounts import EXPORT_HEADERS

SUMMARY_FIELDS = tuple(SessionSummary.model_fields)
"""Keys of a stored summary the API shows (bookkeeping keys that jobs add are left out)."""


class ProfileOut(msgspec.Struct):
    """The L4 relationship profile; all lists empty and both times ``null`` while nothing is known."""

    communication_preferences: list[str]
    what_works: list[str]
    what_doesnt_work: list[str]
    tone: str
    sensitive_topics: list[str]
    updated_at: datetime | None
    coach_edited_at: datetime | None


class InsightOut(msgspec.Struct):
    """One L3 insight as the coach sees it: ``importance`` 0–10, ``effectiveness`` 0–1 (``null`` until
    scored), ``mentions`` how often the client restated it, ``source_message_ids`` its evidence."""

    id: uuid.UUID
    kind: str
    text: str
    importance: int
    status: str
    effectiveness: float | None
    mentions: int
    source_message_ids: list[uuid.UUID]
    first_seen_at: datetime
    last_seen_at: datetime
    edited_by_coach: bool


class SummaryOut(msgspec.Struct):
    """One ended L2 session: ``summary`` (``summary``, ``topics``, ``insights``, ``action_items``,
    ``emotional_state``, ``message_count``, ``started_at``, ``ended_at``) when ``summarized``, ``error`` when
    ``failed``. ``id`` is the session id."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    status: str
    started_at: datetime
    ended_at: datetime | None
    message_count: int
    summary: dict[str, Any] | None
    error: str | None


class ClientMemoryOut(msgspec.Struct):
    profile: ProfileOut
    insights: list[InsightOut]
    summaries: list[SummaryOut]


class InsightPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A coach's correction; omitted fields stay as they are."""

    text: str | None = None
    kind: str | None = None
    importance: int | None = None
    status: str | None = None


class SessionEnded(msgspec.Struct):
    """The id of the session just ended (its summary is on the way), or ``null`` when none was open."""

    session_id: uuid.UUID | None


class DisclosureAccept(msgspec.Struct, forbid_unknown_fields=True):
    """The version of the AI disclosure the widget showed (``data-version`` of the chat page's notice)."""

    version: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


class DisclosureAccepted(msgspec.Struct):
    """The accepted version and when it was first accepted."""

    version: str
    accepted_at: datetime


def profile_out(profile: ClientProfile | None) -> ProfileOut:
    """Serialise a profile; ``None`` gives the empty shape."""
    if profile is None:
        return ProfileOut([], [], [], "", [], None, None)
    return ProfileOut(
        list(profile.communication_preferences),
        list(profile.what_works),
        list(profile.what_doesnt_work),
        profile.tone,
        list(profile.sensitive_topics),
        profile.updated_at,
        profile.coach_edited_at,
    )


def insight_out(insight: Insight) -> InsightOut:
    """Serialise an insight for the coach."""
    return InsightOut(
        insight.id,
        insight.kind,
        insight.text,
        insight.importance,
        insight.status,
        insight.effectiveness,
        insight.mentions,
        list(insight.source_message_ids),
        insight.first_seen_at,
        insight.last_seen_at,
        insight.edited_by_coach,
    )


def summary_out(chat_session: ChatSession) -> SummaryOut:
    """Serialise an ended session for the coach."""
    summary = None
    if chat_session.status == SessionStatus.SUMMARIZED and chat_session.summary is not None:
        summary = {k: chat_session.summary[k] for k in SUMMARY_FIELDS if k in chat_session.summary}
    return SummaryOut(
        chat_session.id,
        chat_session.conversation_id,
        chat_session.status,
        chat_session.started_at,
        chat_session.ended_at,
        chat_session.message_count,
        summary,
        chat_session.summary_error if chat_session.status == SessionStatus.FAILED else None,
    )


def client_memory_out(memory: ClientMemory) -> ClientMemoryOut:
    """Serialise everything remembered about a client, for the coach."""
    return ClientMemoryOut(
        profile_out(memory.profile),
        [insight_out(i) for i in memory.insights],
        [summary_out(s) for s in memory.summaries],
    )


class MemoryController(Controller):
    """The coach's view and edits of one client's memory. Auth: the coach's API key."""

    path = "/api/v1/clients/{client_id:str}/memory"
    tags = ["memory"]
    dependencies = COACH_DEPENDENCIES

    @get("/", dependencies=PAGE)
    async def get_memory(
        self,
        request: Request[Any, Any, Any],
        client_id: PathId,
        coach_id: CoachId,
        uow: Uow,
        container: ContainerDep,
        page: WantedPage,
    ) -> Response[ClientMemoryOut]:
        """The client's profile, visible insights (active first, then by importance and recency) and ended
        sessions' summaries (newest first; failed ones with their error), a page of them at a time (``?limit=``,
        1–200, default 50; the older ones at the ``Link`` header's next page). Deleted insights are not listed.
        404 for an unknown or another coach's client; 400 for a bad cursor or limit."""
        memory = await container.memory.client_memory(uow.session, uow.coach_id, client_id, page)
        return Response(client_memory_out(memory), headers=next_page_link(request, memory.more_summaries))

    @patch("/insights/{insight_id:str}")
    async def edit_insight(
        self,
        client_id: PathId,
        insight_id: PathId,
        data: JSONBody[InsightPatch],
        uow: Uow,
        container: ContainerDep,
    ) -> InsightOut:
        """Correct an insight: ``text`` (1–500 characters, re-embedded), ``kind`` (goal, blocker,
        breakthrough, preference, achievement, pattern, milestone, commitment), ``importance`` (0–10),
        ``status`` (active, achieved, dropped). Any field changed marks the insight ``edited_by_coach``: later
        extractions keep what the coach set."""
        insight = await container.memory.edit_insight(
            uow,
            client_id,
            insight_id,
            text=data.text,
            kind=data.kind,
            importance=data.importance,
            status=data.status,
        )
        return insight_out(insight)

    @delete("/insights/{insight_id:str}", status_code=204)
    async def delete_insight(self, client_id: PathId, insight_id: PathId, uow: Uow, container: ContainerDep) -> None:
        """Forget an insight: it leaves every view and prompt; a tombstone keeps it from being re-learnt."""
        await container.memory.delete_insight(uow, client_id, insight_id)

    @delete("/summaries/{session_id:str}", status_code=204)
    async def delete_summary(self, client_id: PathId, session_id: PathId, uow: Uow, container: ContainerDep) -> None:
        """Forget a session summary: it leaves every view and prompt (the transcript stays)."""
        await container.memory.delete_summary(uow, client_id, session_id)

    @patch("/profile", request_max_body_size=TEXT_BODY_MAX_BYTES)
    async def edit_profile(
        self, client_id: PathId, data: JSONBody[dict[str, Any]], coach_id: CoachId, uow: Uow, container: ContainerDep
    ) -> ProfileOut:
        """Edit the relationship profile: any of ``communication_preferences``, ``what_works``,
        ``what_doesnt_work``, ``sensitive_topics`` (lists of strings, replaced whole) and ``tone`` (string).
        Once the coach has set the tone, memory jobs no longer overwrite it."""
        if not data:
            raise InvalidInput("send at least one profile field to change")
        profile = await container.memory.edit_profile(uow, client_id, data)
        return profile_out(profile)


class SessionController(Controller):
    """The coach ends a conversation's chat session. Auth: the coach's API key."""

    path = "/api/v1/conversations"
    tags = ["memory"]
    dependencies = COACH_DEPENDENCIES

    @post("/{conversation_id:str}/end-session", status_code=200)
    async def end_session(self, conversation_id: PathId, uow: Uow, container: ContainerDep) -> SessionEnded:
        """End the conversation's open session now and queue its summary; ``session_id`` is ``null`` when
        no session was open."""
        return SessionEnded(await container.sessions.end_session(uow, conversation_id))


class WidgetMemoryController(Controller):
    """The client's side of memory, and the client's data export. Auth: the client's widget token or widget
    session cookie."""

    path = "/api/v1/widget"
    tags = ["widget"]
    dependencies = CLIENT_DEPENDENCIES

    @get("/memory", dependencies=PAGE)
    async def get_memory(
        self,
        request: Request[Any, Any, Any],
        identity: ClientIdentityDep,
        uow: Uow,
        container: ContainerDep,
        page: WantedPage,
    ) -> Response[RememberedOut]:
        """What the coach's assistant remembers about the client: insights and session summaries, newest first,
        a page of sessions at a time (``?limit=``, default 50; the older ones at the ``Link`` header's next page;
        400 for a bad cursor or limit)."""
        memory = await container.memory.client_memory(uow.session, uow.coach_id, identity.client_id, page)
        return Response(remembered_out(memory), headers=next_page_link(request, memory.more_summaries))

    @post("/disclosure", status_code=200)
    async def accept_disclosure(
        self, data: JSONBody[DisclosureAccept], identity: ClientIdentityDep, uow: Uow
    ) -> DisclosureAccepted:
        """Record that the client accepted the widget's AI disclosure ``version`` (the widget sends it with the
        client's first message from the chat page); the first acceptance of a version keeps its time. 400 for a
        version that is not the current one (nothing stored). Listed under ``consent`` in the export."""
        version, at = await accept_disclosure(uow.session, uow.coach_id, identity.client_id, data.version)
        return DisclosureAccepted(version, at)

    @get("/export")
    async def export(self, identity: ClientIdentityDep, uow: Uow, container: ContainerDep) -> Response[dict[str, Any]]:
        """ "Download my data": everything stored about the client as one JSON file (shape:
        :meth:`app.learning.rights.DataRightsService.export_client`), as an attachment."""
        data = await container.rights.export_client(uow, identity.client_id)
        return Response(data, headers=EXPORT_HEADERS)

    @delete("/memory/insights/{insight_id:str}", status_code=204)
    async def delete_insight(
        self, insight_id: PathId, identity: ClientIdentityDep, uow: Uow, container: ContainerDep
    ) -> None:
        """Delete a remembered item; it never enters a prompt again."""
        await container.memory.delete_insight(uow, identity.client_id, insight_id)

    @delete("/memory/summaries/{session_id:str}", status_code=204)
    async def delete_summary(
        self, session_id: PathId, identity: ClientIdentityDep, uow: Uow, container: ContainerDep
    ) -> None:
        """Delete a remembered session summary; it never enters a prompt again."""
        await container.memory.delete_summary(uow, identity.client_id, session_id)

    @get("/sessions/{session_id:str}")
    async def get_session(
        self, session_id: PathId, identity: ClientIdentityDep, uow: Uow, container: ContainerDep
    ) -> SessionState:
        """Where the summary of one of the client's ended sessions stands: ``status`` ``pending`` until its
        summary job has run, then ``summarized`` (shown by ``GET /api/v1/widget/memory``) or ``failed``; what the
        widget polls after "End session". 404 for a session that is not the client's, still open, or deleted."""
        status = await container.memory.session_status(uow.session, identity.client_id, session_id)
        state = session_state(session_id, status)
        if state is None:
            raise NotFound("session not found")
        return state

    @post("/conversations/{conversation_id:str}/end-session", status_code=200)
    async def end_session(
        self, conversation_id: PathId, identity: ClientIdentityDep, uow: Uow, container: ContainerDep
    ) -> SessionEnded:
        """The client ends their chat session (e.g. says goodbye); ``session_id`` is ``null`` when none
        was open."""
        return SessionEnded(await container.sessions.end_session(uow, conversation_id, client_id=identity.client_id))
