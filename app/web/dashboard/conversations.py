"""Conversations: the inbox (every conversation with its state and unread count, filters, search), one
transcript with its handoff panel (state, brief, take over / hand back), drafts and the coach's composer."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from litestar import Request, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from app.accounts.unit_of_work import UnitOfWork
from app.channels.telegram.delivery import undelivered_reason
from app.container import Container
from app.conversations.handoffs import HandoffReason
from app.conversations.inbox import CHANNELS, InboxCursor, InboxFilter, InboxState, channel_label, inbox_page, mark_read
from app.conversations.models import Conversation
from app.conversations.schemas import ShownMessage
from app.core.errors import DomainError
from app.core.pagination import PageRequest, page_query
from app.deps import INBOX_FILTER, PAGE, ContainerDep, PathId, Uow, WantedInbox, WantedPage
from app.handoff.actions import CONFIRM_CRISIS
from app.handoff.crisis import crisis_reasons
from app.web.dashboard.auth import CoachPage
from app.web.dashboard.forms import form_str, is_htmx

CONFIRM_CRISIS_PAGE = (
    "This is a crisis handoff: confirm below that you hand it back without a reply (the AI then leaves the"
    " client's last message unanswered), or hand back with a reply."
)
"""What the conversation page says when a crisis handoff was handed back without a reply unconfirmed."""


async def conversation_page(
    container: Container,
    uow: UnitOfWork,
    conversation_id: uuid.UUID,
    error: str | None = None,
    status_code: int = 200,
    text: str = "",
    *,
    confirm_crisis: bool = False,
) -> Template:
    """The conversation page, with ``error`` (and the coach's unsent ``text``) shown at ``status_code``; the
    coach has now read the conversation (its unread count in the inbox drops to 0). ``confirm_crisis``: the
    handoff panel asks to confirm handing the crisis handoff back without a reply (:func:`pane_context`)."""
    context = await pane_context(container, uow, conversation_id, error=error, text=text, confirm_crisis=confirm_crisis)
    return Template(
        "dashboard/conversation.html",
        context=context | {"coach": await uow.coach(), "nav": "inbox"},
        status_code=status_code,
    )


async def pane_context(
    container: Container,
    uow: UnitOfWork,
    conversation_id: uuid.UUID,
    *,
    error: str | None = None,
    text: str = "",
    confirm_crisis: bool = False,
) -> dict[str, Any]:
    """What ``partials/conversation_pane.html`` shows: the conversation, its client, channel (its label, as the
    inbox shows it: :func:`~app.conversations.inbox.channel_label`), its last messages (:func:`_transcript_page`),
    handoff panel and pending drafts, why the coach's messages do not reach the client (``undelivered_reason``:
    :func:`~app.channels.telegram.delivery.undelivered_reason`), an ``error`` and the coach's unsent ``text``;
    ``confirm_crisis``: its "Hand back without a reply" of a crisis handoff is the confirming one (the request
    without the confirmation was refused: :meth:`ConversationPages.handback`). Marks the conversation read. Raises
    ``NotFound``."""
    conversation, transcript = await _transcript_page(container, uow, conversation_id, PageRequest())
    client = await container.accounts.get_client(uow, conversation.client_id)
    await mark_read(uow, conversation_id)
    return (
        await _panel_context(container, uow, conversation_id, confirm_crisis=confirm_crisis)
        | transcript
        | {
            "conversation": conversation,
            "client": client,
            "channel": channel_label(conversation.channel),
            "urgent_reasons": crisis_reasons(conversation.urgent_reason),
            "undelivered_reason": await undelivered_reason(uow.session, conversation_id),
            "error": error,
            "text": text,
        }
    )


async def _transcript_page(
    container: Container, uow: UnitOfWork, conversation_id: uuid.UUID, page: PageRequest
) -> tuple[Conversation, dict[str, Any]]:
    """The conversation and what ``partials/transcript_page.html`` shows: one page of its messages read back
    from the end (``page``), oldest first, and the query of the page before them (``earlier``; ``None``: this
    page starts at the first message). Raises ``NotFound``."""
    conversation, found = await container.conversations.history(uow, conversation_id, page)
    messages = [ShownMessage.for_coach(listed) for listed in reversed(found.items)]
    return conversation, {"messages": messages, "earlier": page_query(page, found.next)}


async def _panel_context(
    container: Container, uow: UnitOfWork, conversation_id: uuid.UUID, *, confirm_crisis: bool = False
) -> dict[str, Any]:
    handoff, drafts = await container.handoff_queue.conversation_state(uow, conversation_id)
    item = await container.handoff_queue.get(uow, handoff.id) if handoff is not None else None
    return {
        "conversation_id": conversation_id,
        "item": item,
        "drafts": drafts,
        "reason_labels": HandoffReason.LABELS,
        "confirm_crisis": confirm_crisis,
    }


def _inbox_query_string(wanted: InboxFilter, selected: uuid.UUID | None, cursor: InboxCursor | None = None) -> str:
    """The inbox's query string for these filters, the ``selected`` conversation and a page ``cursor`` (empty
    values left out; the page size is the default): the "Load more" and "Back to the newest" links."""
    params = {
        "q": wanted.q,
        "state": wanted.state or "",
        "channel": wanted.channel or "",
        "unread": "true" if wanted.unread else "",
        "conversation": str(selected) if selected else "",
        "cursor": cursor.encode() if cursor else "",
    }
    return urlencode({key: value for key, value in params.items() if value})


async def _inbox_context(uow: UnitOfWork, wanted: WantedInbox, selected: uuid.UUID | None) -> dict[str, Any]:
    page = await inbox_page(uow, wanted)
    return {
        "rows": page.rows,
        "more_query": _inbox_query_string(wanted, selected, page.next) if page.next else None,
        "top_query": _inbox_query_string(wanted, selected),
        "wanted": wanted,
        "selected": selected,
        "states": InboxState.LABELS,
        "channels": CHANNELS,
    }


class ConversationPages(CoachPage):
    """The coach's conversations and their handoff actions."""

    @get(["/inbox", "/conversations"], dependencies=INBOX_FILTER)
    async def inbox(
        self, uow: Uow, container: ContainerDep, wanted: WantedInbox, conversation: FromQuery[uuid.UUID | None] = None
    ) -> Template:
        """The inbox: every conversation with its state, last message and unread count (filters ``state``,
        ``channel``, ``unread``, search ``q``; a page at a time, ``cursor`` the page after the "Load more" link's
        when JavaScript is off; 400 for an unknown state or channel or a bad cursor) beside the ``conversation``
        chosen (its transcript, handoff panel, drafts and composer). ``static/dashboard.js`` keeps both live."""
        pane = await pane_context(container, uow, conversation) if conversation is not None else {}
        context = await _inbox_context(uow, wanted, conversation) | pane  # the list after the pane marked it read
        return Template("dashboard/inbox.html", context=context | {"coach": await uow.coach(), "nav": "inbox"})

    @get("/inbox/list", dependencies=INBOX_FILTER)
    async def inbox_list(
        self, uow: Uow, wanted: WantedInbox, conversation: FromQuery[uuid.UUID | None] = None
    ) -> Template:
        """The inbox's list alone (``#inbox-list``), re-fetched when a filter changes or a live event arrives."""
        context = await _inbox_context(uow, wanted, conversation)
        return Template("partials/inbox_list.html", context=context)

    @get("/inbox/rows", dependencies=INBOX_FILTER)
    async def inbox_rows(
        self, uow: Uow, wanted: WantedInbox, conversation: FromQuery[uuid.UUID | None] = None
    ) -> Template:
        """The next page of the inbox's rows alone (``<li>`` elements, the last one its own "Load more"),
        fetched by the "Load more" button (htmx) in place of itself; 400 for a bad cursor."""
        context = await _inbox_context(uow, wanted, conversation)
        return Template("partials/inbox_rows.html", context=context)

    @post("/conversations/{conversation_id:str}/read", status_code=204)
    async def read(self, conversation_id: PathId, uow: Uow) -> None:
        """The coach read the conversation's new messages (sent by ``static/dashboard.js`` when a message
        arrives in the conversation open on screen)."""
        await mark_read(uow, conversation_id)

    @get("/conversations/{conversation_id:str}")
    async def conversation(self, conversation_id: PathId, uow: Uow, container: ContainerDep) -> Template:
        """The transcript with the handoff panel (state, brief, take over / hand back, pending drafts) and the
        coach's composer; ``static/dashboard.js`` appends new messages live."""
        return await conversation_page(container, uow, conversation_id)

    @get("/conversations/{conversation_id:str}/earlier", dependencies=PAGE)
    async def earlier(
        self,
        conversation_id: PathId,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
        page: WantedPage,
    ) -> Template:
        """The transcript's page before the messages shown (``cursor``): for the "Earlier messages" link's htmx
        request, the messages (with their pending drafts) and the link to the page before them, which take the
        link's place; without JavaScript, a page of its own. 404 for another coach's conversation; 400 for a bad
        cursor or limit."""
        conversation, context = await _transcript_page(container, uow, conversation_id, page)
        _handoff, drafts = await container.handoff_queue.conversation_state(uow, conversation_id)
        context |= {"conversation_id": conversation_id, "drafts": drafts}
        if is_htmx(request):
            return Template("partials/earlier_messages.html", context=context)
        client = await container.accounts.get_client(uow, conversation.client_id)
        context |= {"coach": await uow.coach(), "nav": "inbox", "client": client}
        return Template("dashboard/earlier_messages.html", context=context)

    @get("/conversations/{conversation_id:str}/handoff")
    async def handoff_panel(self, conversation_id: PathId, uow: Uow, container: ContainerDep) -> Template:
        """The conversation's handoff panel alone (refreshed live by ``static/dashboard.js``)."""
        return Template("partials/handoff_panel.html", context=await _panel_context(container, uow, conversation_id))

    @post("/conversations/{conversation_id:str}/takeover")
    async def takeover(self, conversation_id: PathId, uow: Uow, container: ContainerDep) -> Redirect:
        """Take the conversation over (the AI pauses until handback); back to the conversation."""
        await container.coach_actions.takeover(uow, conversation_id)
        return Redirect(f"/dashboard/conversations/{conversation_id}")

    @post("/conversations/{conversation_id:str}/handback")
    async def handback(
        self,
        conversation_id: PathId,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
        reply: FromQuery[bool] = True,
    ) -> Template | Redirect:
        """Hand the conversation back to the AI, which answers the client's unanswered message unless
        ``?reply=false``; the page with the error (409) when it is not handed off. A crisis handoff handed back
        without a reply needs the form's ``confirm_crisis=true`` (sent by htmx once the coach confirmed the
        dialog); without it, the page (400, nothing changed) asks to confirm with a button that sends it."""
        confirm_crisis = form_str(await request.form(), CONFIRM_CRISIS) == "true"
        try:
            async with uow.savepoint():  # a refused change is rolled back alone; the page shows why
                await container.coach_actions.handback(uow, conversation_id, reply=reply, confirm_crisis=confirm_crisis)
        except DomainError as exc:
            if exc.code == CONFIRM_CRISIS:
                return await conversation_page(
                    container, uow, conversation_id, CONFIRM_CRISIS_PAGE, exc.status_code, confirm_crisis=True
                )
            return await conversation_page(container, uow, conversation_id, exc.message, exc.status_code)
        return Redirect(f"/dashboard/conversations/{conversation_id}")

    @post("/conversations/{conversation_id:str}/messages")
    async def send_message(
        self,
        conversation_id: PathId,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
    ) -> Template | Redirect:
        """Write to the client as the coach (takes the conversation over first); 400 page for an empty or too
        long text, which is kept in the composer. The page it goes back to says when the message is stored only,
        not delivered (``undelivered_reason``: :func:`pane_context`)."""
        form = await request.form()
        text = form_str(form, "text")
        try:
            async with uow.savepoint():  # a refused change is rolled back alone; the page shows why
                await container.coach_actions.send(uow, conversation_id, text)
        except DomainError as exc:
            if exc.status_code == 404:
                raise
            return await conversation_page(container, uow, conversation_id, exc.message, exc.status_code, text)
        return Redirect(f"/dashboard/conversations/{conversation_id}")
