"""The coach's conversations API: list and read transcripts."""

from __future__ import annotations

from litestar import Controller, get

from app.auth import COACH_DEPENDENCIES
from app.conversations.schemas import ConversationOut, ConversationSummary, message_out
from app.deps import ContainerDep, PathId, Uow


class ConversationController(Controller):
    path = "/api/v1/conversations"
    tags = ["conversations"]
    dependencies = COACH_DEPENDENCIES

    @get("/")
    async def list_conversations(self, uow: Uow, container: ContainerDep) -> list[ConversationSummary]:
        """The coach's conversations, most recent first."""
        rows = await container.conversations.list_conversations(uow)
        return [
            ConversationSummary(c.id, c.client_id, name, c.channel, count, c.last_message_at) for c, name, count in rows
        ]

    @get("/{conversation_id:uuid}")
    async def get_conversation(self, conversation_id: PathId, uow: Uow, container: ContainerDep) -> ConversationOut:
        """A full transcript with citations and attribution metadata."""
        conversation, messages = await container.conversations.get_conversation(uow, conversation_id)
        return ConversationOut(
            conversation.id,
            conversation.client_id,
            conversation.channel,
            conversation.created_at,
            [message_out(msg) for msg in messages],
        )
