"""The coach's conversations API: list and read transcripts, mark one read, and the inbox."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post

from app.auth import COACH_DEPENDENCIES
from app.channels.telegram.delivery import undelivered_reason
from app.conversations.inbox import inbox_page, mark_read
from app.conversations.schemas import ConversationOut, ConversationSummary, conversation_summary, message_out
from app.deps import (
    INBOX_FILTER,
    PAGE,
    ContainerDep,
    PathId,
    Uow,
    WantedInbox,
    WantedPage,
    next_page_link,
    page_response,
)


class ConversationController(Controller):
    path = "/api/v1/conversations"
    tags = ["conversations"]
    dependencies = COACH_DEPENDENCIES

    @get("/", dependencies=PAGE)
    async def list_conversations(
        self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep, page: WantedPage
    ) -> Response[list[ConversationSummary]]:
        """The coach's conversations, most recent first, a page at a time (``?limit=``, the ``Link`` header's
        next page: :func:`app.deps.page_response`; 400 for a bad cursor or limit)."""
        rows = await container.conversations.list_conversations(uow, page)
        return page_response(request, rows, lambda row: conversation_summary(*row))

    @get("/{conversation_id:str}", dependencies=PAGE)
    async def get_conversation(
        self,
        request: Request[Any, Any, Any],
        conversation_id: PathId,
        uow: Uow,
        container: ContainerDep,
        page: WantedPage,
    ) -> Response[ConversationOut]:
        """A transcript with citations and attribution metadata, its messages a page at a time, oldest first
        (``?limit=``, 1–200, default 50; the ``Link`` header's next page: :func:`app.deps.next_page_link`). 404
        for an unknown or another coach's conversation; 400 for a bad cursor or limit. ``undelivered_reason``: why
        the coach's messages are stored here only (:func:`~app.channels.telegram.delivery.undelivered_reason`)."""
        conversation, found = await container.conversations.history(uow, conversation_id, page, oldest_first=True)
        out = ConversationOut(
            conversation.id,
            conversation.client_id,
            conversation.channel,
            conversation.created_at,
            [message_out(row.message, row.citations) for row in found.items],
            await undelivered_reason(uow.session, conversation_id),
        )
        return Response(out, headers=next_page_link(request, found.next))

    @post("/{conversation_id:str}/read", status_code=204)
    async def mark_read(self, conversation_id: PathId, uow: Uow) -> None:
        """The coach has read the conversation: its unread count in the inbox drops to 0. 404 for an unknown id."""
        await mark_read(uow, conversation_id)


class InboxController(Controller):
    path = "/api/v1/inbox"
    tags = ["conversations"]
    dependencies = COACH_DEPENDENCIES

    @get("/", dependencies=INBOX_FILTER)
    async def inbox(self, uow: Uow, wanted: WantedInbox) -> dict[str, Any]:
        """The inbox, a page at a time: ``{"rows": [...], "next": "<cursor>" | null}``, one row per conversation
        (see :class:`app.conversations.inbox.InboxRow`) with its state (``crisis``, ``waiting``, ``you``,
        ``draft``, ``ai``), channel (``widget``, ``api``, ``telegram``: the conversation's, as the conversations
        list gives it), unread count and last message, the ones needing the
        coach first. Filters: ``state``, ``channel``, ``unread=true``, ``q`` (client name or message text,
        case-insensitive). Pages: ``limit`` rows (1–200, default 50); ``cursor=<next>`` reads the page after.
        400 for an unknown state or channel, a bad cursor or limit."""
        return (await inbox_page(uow, wanted)).as_json()
