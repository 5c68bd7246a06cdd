"""The client's chat widget: a full page per client (``/w/<widget_token>``), which the embeddable
``static/widget.js`` snippet opens in an iframe. Messages travel over the ``/ws/chat`` WebSocket.
``/w/<widget_token>/memory`` shows what the coach's assistant remembers about the client; its delete
buttons (``static/memory.js``) call the widget memory API with the same token.

Both pages may be framed only by the coach's ``widget_allowed_origins`` (their own
``Content-Security-Policy``, :func:`app.core.headers.content_security_policy`); every other page of the app
refuses to be framed.

The chat page also shows whether the coach is in the conversation (an active handoff: ``claimed``) or
has been asked to join (``open``); ``static/chat.js`` keeps that up to date from the socket's live events."""

from __future__ import annotations

from litestar import Controller, get
from litestar.response import Template

from app.accounts.models import Coach
from app.chat.turn.intake import MAX_MESSAGE_CHARS
from app.conversations.schemas import ClientMessage
from app.core.headers import content_security_policy
from app.deps import ContainerDep, PathStr
from app.memory.client_view import remembered_out

WIDGET_LABELS = {"client": "You", "ai": "AI assistant", "human_coach": "Coach"}
"""How the widget names each sender (``static/chat.js`` uses the same words)."""


def _frame_policy(coach: Coach) -> dict[str, str]:
    """The widget page's CSP: the app's policy with the coach's origins as ``frame-ancestors``."""
    return {"Content-Security-Policy": content_security_policy(coach.widget_allowed_origins)}


class WidgetController(Controller):
    path = "/w"
    include_in_schema = False

    @get("/{token:str}")
    async def widget_page(self, token: PathStr, container: ContainerDep) -> Template:
        """The chat page; 404 page for an unknown token. Shows the client's latest conversation."""
        identity = await container.accounts.client_for_widget_token(token)
        if identity is None:
            return Template("widget/invalid.html", status_code=404)
        async with container.tenant(identity.coach_id) as session:
            coach = await container.accounts.get_coach(session, identity.coach_id)
        conversations = await container.conversations.list_conversations(identity.coach_id, identity.client_id)
        messages: list[ClientMessage] = []
        conversation_id = None
        handoff_status = None
        if conversations:
            conversation_id = conversations[0][0].id
            _, stored = await container.conversations.get_conversation(
                identity.coach_id, conversation_id, client_id=identity.client_id
            )
            messages = [ClientMessage.of(msg) for msg in stored]  # the client sees client_view metadata only
            handoff, _drafts = await container.handoff_queue.conversation_state(identity.coach_id, conversation_id)
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
            headers=_frame_policy(coach),
        )

    @get("/{token:str}/memory")
    async def memory_page(self, token: PathStr, container: ContainerDep) -> Template:
        """What my coach's assistant remembers: the client's insights (each deletable) and session summaries."""
        identity = await container.accounts.client_for_widget_token(token)
        if identity is None:
            return Template("widget/invalid.html", status_code=404)
        async with container.tenant(identity.coach_id) as session:
            coach = await container.accounts.get_coach(session, identity.coach_id)
            memory = await container.memory.client_memory(session, identity.coach_id, identity.client_id)
        return Template(
            "widget/memory.html",
            context={"coach": coach, "token": token, "memory": remembered_out(memory)},
            headers=_frame_policy(coach),
        )
