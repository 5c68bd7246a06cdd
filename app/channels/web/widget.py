"""The client's chat widget: a full page per client (``/w/<widget_token>``), which the embeddable
``static/widget.js`` snippet opens in an iframe. Messages travel over the ``/ws/chat`` WebSocket.
``/w/<widget_token>/memory`` shows what the coach's assistant remembers about the client; its delete
buttons (``static/memory.js``) call the widget memory API with the same token.

The chat page also shows whether the coach is in the conversation (an active handoff: ``claimed``) or
has been asked to join (``open``); ``static/chat.js`` keeps that up to date from the socket's live events."""

from __future__ import annotations

from litestar import Controller, get
from litestar.response import Template

from app.accounts.unit_of_work import unit_of_work
from app.chat.turn.intake import MAX_MESSAGE_CHARS
from app.conversations.schemas import ClientMessage
from app.deps import ContainerDep, PathStr
from app.memory.client_view import remembered_out

WIDGET_LABELS = {"client": "You", "ai": "AI assistant", "human_coach": "Coach"}
"""How the widget names each sender (``static/chat.js`` uses the same words)."""


class WidgetController(Controller):
    path = "/w"
    include_in_schema = False

    @get("/{token:str}")
    async def widget_page(self, token: PathStr, container: ContainerDep) -> Template:
        """The chat page; 404 page for an unknown token. Shows the client's latest conversation."""
        identity = await container.accounts.client_for_widget_token(token)
        if identity is None:
            return Template("widget/invalid.html", status_code=404)
        # the token is in the path (no ``uow`` dependency here): one unit of work for the page's reads
        async with unit_of_work(container.sessionmaker, identity.coach_id) as uow:
            coach = await uow.coach()
            conversations = await container.conversations.list_conversations(uow, identity.client_id)
            messages: list[ClientMessage] = []
            conversation_id = None
            handoff_status = None
            if conversations:
                conversation_id = conversations[0][0].id
                _, stored = await container.conversations.get_conversation(
                    uow, conversation_id, client_id=identity.client_id
                )
                messages = [ClientMessage.of(msg) for msg in stored]  # the client sees client_view metadata only
                handoff, _drafts = await container.handoff_queue.conversation_state(uow, conversation_id)
                handoff_status = handoff.status if handoff is not None else None
        return Template(
            "widget/chat.html",
            context={
                "coach": coach,
                "token": token,
                "conversation_id": conversation_id,
                "messages": messages,
                "labels": WIDGET_LABELS,
                "handoff_status": handoff_status,
                "max_chars": MAX_MESSAGE_CHARS,
            },
        )

    @get("/{token:str}/memory")
    async def memory_page(self, token: PathStr, container: ContainerDep) -> Template:
        """What my coach's assistant remembers: the client's insights (each deletable) and session summaries."""
        identity = await container.accounts.client_for_widget_token(token)
        if identity is None:
            return Template("widget/invalid.html", status_code=404)
        async with unit_of_work(container.sessionmaker, identity.coach_id) as uow:
            coach = await uow.coach()
            memory = await container.memory.client_memory(uow.session, uow.coach_id, identity.client_id)
        return Template(
            "widget/memory.html", context={"coach": coach, "token": token, "memory": remembered_out(memory)}
        )
