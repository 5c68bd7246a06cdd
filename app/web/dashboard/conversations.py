"""Conversations: the list, one transcript with its handoff panel (state, brief, take over / hand back,
pending drafts) and the coach's composer."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from app.accounts.unit_of_work import UnitOfWork
from app.container import Container
from app.conversations.handoffs import HandoffReason
from app.core.errors import DomainError
from app.deps import ContainerDep, PathId, Uow
from app.web.dashboard.auth import CoachPage
from app.web.dashboard.forms import form_str


async def conversation_page(
    container: Container,
    uow: UnitOfWork,
    conversation_id: uuid.UUID,
    error: str | None = None,
    status_code: int = 200,
    text: str = "",
) -> Template:
    """The conversation page, with ``error`` (and the coach's unsent ``text``) shown at ``status_code``."""
    conversation, messages = await container.conversations.get_conversation(uow, conversation_id)
    coach = await uow.coach()
    client = await container.accounts.get_client(uow, conversation.client_id)
    context = await _panel_context(container, uow, conversation_id)
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


async def _panel_context(container: Container, uow: UnitOfWork, conversation_id: uuid.UUID) -> dict[str, Any]:
    handoff, drafts = await container.handoff_queue.conversation_state(uow, conversation_id)
    item = await container.handoff_queue.get(uow, handoff.id) if handoff is not None else None
    return {
        "conversation_id": conversation_id,
        "item": item,
        "drafts": drafts,
        "reason_labels": HandoffReason.LABELS,
    }


class ConversationPages(CoachPage):
    """The coach's conversations and their handoff actions."""

    @get("/conversations")
    async def conversations(self, uow: Uow, container: ContainerDep) -> Template:
        return Template(
            "dashboard/conversations.html",
            context={
                "coach": await uow.coach(),
                "rows": await container.conversations.list_conversations(uow),
                "nav": "conversations",
            },
        )

    @get("/conversations/{conversation_id:uuid}")
    async def conversation(self, conversation_id: PathId, uow: Uow, container: ContainerDep) -> Template:
        """The transcript with the handoff panel (state, brief, take over / hand back, pending drafts) and the
        coach's composer; ``static/dashboard.js`` appends new messages live."""
        return await conversation_page(container, uow, conversation_id)

    @get("/conversations/{conversation_id:uuid}/handoff")
    async def handoff_panel(self, conversation_id: PathId, uow: Uow, container: ContainerDep) -> Template:
        """The conversation's handoff panel alone (refreshed live by ``static/dashboard.js``)."""
        return Template("partials/handoff_panel.html", context=await _panel_context(container, uow, conversation_id))

    @post("/conversations/{conversation_id:uuid}/takeover")
    async def takeover(self, conversation_id: PathId, uow: Uow, container: ContainerDep) -> Redirect:
        """Take the conversation over (the AI pauses until handback); back to the conversation."""
        await container.coach_actions.takeover(uow, conversation_id)
        return Redirect(f"/dashboard/conversations/{conversation_id}")

    @post("/conversations/{conversation_id:uuid}/handback")
    async def handback(
        self,
        conversation_id: PathId,
        uow: Uow,
        container: ContainerDep,
        reply: FromQuery[bool] = True,
    ) -> Template | Redirect:
        """Hand the conversation back to the AI, which answers the client's unanswered message unless
        ``?reply=false``; the page with the error (409) when it is not handed off."""
        try:
            async with uow.savepoint():  # a refused change is rolled back alone; the page shows why
                await container.coach_actions.handback(uow, conversation_id, reply=reply)
        except DomainError as exc:
            return await conversation_page(container, uow, conversation_id, exc.message, exc.status_code)
        return Redirect(f"/dashboard/conversations/{conversation_id}")

    @post("/conversations/{conversation_id:uuid}/messages")
    async def send_message(
        self,
        conversation_id: PathId,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
    ) -> Template | Redirect:
        """Write to the client as the coach (takes the conversation over first); 400 page for an empty or too
        long text, which is kept in the composer."""
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
