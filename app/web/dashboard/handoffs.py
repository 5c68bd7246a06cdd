"""The handoff queue (open handoffs, overdue ones highlighted, those the coach holds, drafts waiting for
review, closed ones with duration and outcome), its live fragment and nav summary, and the draft decisions."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, get, post
from litestar.response import Redirect, Template

from app.accounts.unit_of_work import UnitOfWork
from app.container import Container
from app.conversations.handoffs import DraftStatus, HandoffReason, HandoffStatus
from app.conversations.inbox import InboxFilter, InboxState, inbox_page
from app.core.errors import DomainError
from app.core.pagination import MAX_PAGE_SIZE, PageRequest
from app.deps import ContainerDep, PathId, Uow
from app.handoff.queue import draft_dict
from app.web.dashboard.auth import CoachPage
from app.web.dashboard.conversations import conversation_page
from app.web.dashboard.forms import form_str, next_path

HISTORY_LIMIT = 50
"""Closed handoffs the queue page lists (the most recent)."""


async def _queue_context(container: Container, uow: UnitOfWork) -> dict[str, Any]:
    queue = container.handoff_queue
    drafts = await container.drafts.list_drafts(uow, DraftStatus.PENDING)
    history = await queue.list_handoffs(uow, HandoffStatus.CLOSED, PageRequest(limit=HISTORY_LIMIT))
    return {
        "history": history.items,
        "open_items": (await queue.list_handoffs(uow, HandoffStatus.OPEN)).items,
        "claimed_items": (await queue.list_handoffs(uow, HandoffStatus.CLAIMED)).items,
        "drafts": [draft_dict(draft, name) for draft, name in drafts.items],
        "reason_labels": HandoffReason.LABELS,
    }


class HandoffPages(CoachPage):
    """The coach's handoff queue and drafts."""

    @get("/handoffs")
    async def handoffs(self, uow: Uow, container: ContainerDep) -> Template:
        """The live handoff queue: open handoffs (overdue ones highlighted), those the coach holds, the AI
        drafts waiting for review, and the history (the last :data:`HISTORY_LIMIT` closed handoffs with their
        duration and outcome)."""
        context = await _queue_context(container, uow)
        context |= {"coach": await uow.coach(), "nav": "handoffs"}
        return Template("dashboard/handoffs.html", context=context)

    @get("/handoffs/queue")
    async def handoff_queue(self, uow: Uow, container: ContainerDep) -> Template:
        """The queue fragment (``#queue``), re-fetched on every live ``handoff`` / ``draft`` event."""
        return Template("partials/handoff_queue.html", context=await _queue_context(container, uow))

    @get("/handoffs/summary")
    async def handoff_summary(self, uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """For the nav badge and the crisis banner on every page: ``{"open": n, "claimed": n, "drafts": n,
        "crisis": [{"conversation_id", "client_name"}]}``; crisis: the conversations the inbox shows as
        ``crisis`` (an open crisis handoff, or one the coach holds with a crisis message not read yet)."""
        handoffs = await container.handoff_queue.count_handoffs(uow)
        crisis = await inbox_page(uow, InboxFilter(state=InboxState.CRISIS, limit=MAX_PAGE_SIZE))
        return {
            "open": handoffs.get(HandoffStatus.OPEN, 0),
            "claimed": handoffs.get(HandoffStatus.CLAIMED, 0),
            "drafts": await container.drafts.count_pending(uow),
            "crisis": [{"conversation_id": str(r.conversation_id), "client_name": r.client_name} for r in crisis.rows],
        }

    @post("/drafts/{draft_id:str}/approve")
    async def approve_draft(
        self, draft_id: PathId, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep
    ) -> Template | Redirect:
        """Send a pending draft, as written or with the coach's edit (``text``, when it differs). A refusal
        (already decided, an empty or too long edit, or sent as written while it draws on a document deleted
        since) shows the draft's conversation with the reason."""
        form = await request.form()
        text = form_str(form, "text") if "text" in form else None
        try:
            async with uow.savepoint():  # a refused change is rolled back alone; the page shows why
                message = await container.drafts.approve_draft(uow, draft_id, text)
        except DomainError as exc:
            return await _draft_refused(container, uow, draft_id, exc)
        return Redirect(next_path(form, f"/dashboard/conversations/{message.conversation_id}"))

    @post("/drafts/{draft_id:str}/discard")
    async def discard_draft(
        self, draft_id: PathId, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep
    ) -> Template | Redirect:
        """Drop a pending draft without sending anything. A refusal (already decided, in another tab) shows the
        draft's conversation with the reason."""
        form = await request.form()
        try:
            async with uow.savepoint():
                draft = await container.drafts.discard_draft(uow, draft_id)
        except DomainError as exc:
            return await _draft_refused(container, uow, draft_id, exc)
        return Redirect(next_path(form, f"/dashboard/conversations/{draft.conversation_id}"))


async def _draft_refused(container: Container, uow: UnitOfWork, draft_id: uuid.UUID, refused: DomainError) -> Template:
    """The draft's conversation page showing why the coach's decision on it was refused, at the refusal's
    status. Raises ``refused`` itself when the draft is not the coach's (404)."""
    if refused.status_code == 404:
        raise refused
    conversation_id = await container.drafts.conversation_of(uow, draft_id)
    return await conversation_page(container, uow, conversation_id, refused.message, refused.status_code)
