"""REST API of the handoff queue (coach key): handoffs, drafts, takeover, coach messages, handback."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromQuery, JSONBody

from app.auth import COACH_DEPENDENCIES
from app.channels.telegram.delivery import undelivered_reason
from app.conversations.handoffs import Draft
from app.conversations.schemas import MessageOut, message_out
from app.deps import PAGE, ContainerDep, PathId, Uow, WantedPage, page_response
from app.handoff.actions import MAX_COACH_MESSAGE_CHARS
from app.handoff.queue import QueueItem, draft_dict, handoff_dict


class HandoffOut(msgspec.Struct):
    """A handoff in the coach's queue: why (``reason``, ``detail``), the AI's ``confidence`` before it
    (``null`` for an unprompted takeover), the ``brief`` from memory, and ``waiting_minutes`` (until the
    coach took over) against ``sla_minutes`` (``overdue`` past it while still open)."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    client_id: uuid.UUID
    client_name: str
    status: str
    reason: str
    reason_label: str
    detail: str
    confidence: float | None
    brief: str
    created_at: str
    claimed_at: str | None
    closed_at: str | None
    sla_minutes: int
    waiting_minutes: float
    overdue: bool


def handoff_out(item: QueueItem) -> HandoffOut:
    """Serialise a queue item."""
    fields: dict[str, Any] = handoff_dict(item.handoff, item.client_name, sla_minutes=item.sla_minutes)
    return HandoffOut(**fields, waiting_minutes=round(item.waiting_minutes, 1), overdue=item.overdue)


class DraftOut(msgspec.Struct):
    """An AI reply waiting for (or decided by) the coach."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    text: str
    status: str
    confidence: float | None
    created_at: str


def draft_out(draft: Draft) -> DraftOut:
    """Serialise a draft."""
    fields = draft_dict(draft)
    del fields["client_name"]
    return DraftOut(**fields)


class SentMessageOut(MessageOut):
    """A message the coach wrote: ``delivered`` false when it is stored in the transcript only and does not reach
    the client, ``undelivered_reason`` saying why (:func:`~app.channels.telegram.delivery.undelivered_reason`)."""

    delivered: bool = True
    undelivered_reason: str | None = None


class CoachMessage(msgspec.Struct, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_COACH_MESSAGE_CHARS)]


class DraftApproval(msgspec.Struct, forbid_unknown_fields=True):
    """``text`` replaces the draft (the coach's edit); omitted: the draft is sent as written."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_COACH_MESSAGE_CHARS)] | None = None


class HandoffController(Controller):
    path = "/api/v1"
    tags = ["handoffs"]
    dependencies = COACH_DEPENDENCIES

    @get("/handoffs", dependencies=PAGE)
    async def list_handoffs(
        self,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
        page: WantedPage,
        status: FromQuery[str | None] = None,
    ) -> Response[list[HandoffOut]]:
        """The coach's handoffs, newest first, a page at a time (``?limit=``, the ``Link`` header's next page:
        :func:`app.deps.page_response`); ``?status=open|claimed|closed`` filters (400 otherwise, and for a bad cursor
        or limit)."""
        return page_response(request, await container.handoff_queue.list_handoffs(uow, status, page), handoff_out)

    @post("/conversations/{conversation_id:str}/takeover", status_code=200)
    async def takeover(self, conversation_id: PathId, uow: Uow, container: ContainerDep) -> HandoffOut:
        """Take the conversation over (its open handoff, or unprompted): the AI is paused until handback."""
        handoff = await container.coach_actions.takeover(uow, conversation_id)
        return handoff_out(await container.handoff_queue.get(uow, handoff.id))

    @post("/conversations/{conversation_id:str}/messages", status_code=201)
    async def send(
        self, conversation_id: PathId, data: JSONBody[CoachMessage], uow: Uow, container: ContainerDep
    ) -> SentMessageOut:
        """Write to the client as the human coach (takes the conversation over first if needed); the
        message reaches the widget live, and the client's Telegram chat unless ``delivered`` is false (the client
        blocked the bot, no bot is connected…: the message is stored in the transcript only)."""
        message = await container.coach_actions.send(uow, conversation_id, data.text)
        reason = await undelivered_reason(uow.session, conversation_id)
        fields = msgspec.structs.asdict(message_out(message))
        return SentMessageOut(**fields, delivered=reason is None, undelivered_reason=reason)

    @post("/conversations/{conversation_id:str}/handback", status_code=200)
    async def handback(
        self,
        conversation_id: PathId,
        uow: Uow,
        container: ContainerDep,
        reply: FromQuery[bool] = True,
        confirm_crisis: FromQuery[bool] = False,
    ) -> HandoffOut:
        """Hand the conversation back to the AI (409 when it is not handed off). The AI then answers the
        client's message the coach left unanswered, unless ``?reply=false`` (hand back without a reply), which a
        crisis handoff takes only with ``&confirm_crisis=true`` (400 otherwise, nothing changed:
        :meth:`~app.handoff.actions.CoachActions.handback`)."""
        handoff = await container.coach_actions.handback(
            uow, conversation_id, reply=reply, confirm_crisis=confirm_crisis
        )
        return handoff_out(await container.handoff_queue.get(uow, handoff.id))

    @get("/drafts", dependencies=PAGE)
    async def list_drafts(
        self,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
        page: WantedPage,
        status: FromQuery[str | None] = None,
    ) -> Response[list[DraftOut]]:
        """The coach's drafts, oldest first, a page at a time (``?limit=``, the ``Link`` header's next page:
        :func:`app.deps.page_response`); ``?status=pending|approved|discarded`` filters (400 otherwise, and for a bad
        cursor or limit)."""
        drafts = await container.drafts.list_drafts(uow, status, page)
        return page_response(request, drafts, lambda row: draft_out(row[0]))

    @post("/drafts/{draft_id:str}/approve", status_code=201)
    async def approve(
        self, draft_id: PathId, uow: Uow, container: ContainerDep, data: JSONBody[DraftApproval | None] = None
    ) -> MessageOut:
        """Send a pending draft to the client, as written or with the coach's ``text`` (409 if decided)."""
        text = data.text if data is not None else None
        return message_out(await container.drafts.approve_draft(uow, draft_id, text))

    @post("/drafts/{draft_id:str}/discard", status_code=200)
    async def discard(self, draft_id: PathId, uow: Uow, container: ContainerDep) -> DraftOut:
        """Drop a pending draft; nothing is sent (409 if decided)."""
        return draft_out(await container.drafts.discard_draft(uow, draft_id))
