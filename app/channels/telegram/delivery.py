"""Whether the coach's messages in a conversation reach the client's Telegram chat, for the coach's pages and API.

A message the coach writes in a Telegram conversation goes to the chat that continues it, if that chat is active
(:meth:`~app.channels.telegram.service.TelegramService.chat_of_conversation`) and the coach's bot is connected;
otherwise it is stored in the transcript only. :func:`undelivered_reason` says so, reading the state only.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.telegram.models import TelegramBot, TelegramChat
from app.conversations.models import Conversation

_SAVED = "your messages are saved here but Telegram does not deliver them."
NO_BOT = f"No Telegram bot is connected: {_SAVED}"
BLOCKED = f"The client blocked the bot: {_SAVED}"
UNLINKED = f"This conversation is no longer linked to the client's Telegram chat: {_SAVED}"


async def undelivered_reason(session: AsyncSession, conversation_id: uuid.UUID) -> str | None:
    """Why the coach's messages in conversation ``conversation_id`` do not reach the client's Telegram chat:
    :data:`NO_BOT` (the coach disconnected the bot), :data:`BLOCKED` (the chat that continues the conversation
    blocked the bot: a 403, or a ``my_chat_member`` "kicked" update) or :data:`UNLINKED` (no chat continues it any
    more). ``None`` when they do, and for a conversation of another channel or none. Read in ``session``, the
    coach's tenant transaction."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.channel != "telegram":
        return None
    bot = await session.scalar(select(TelegramBot.id).where(TelegramBot.coach_id == conversation.coach_id))
    if bot is None:
        return NO_BOT
    chats = await session.scalars(
        select(TelegramChat.active).where(
            TelegramChat.client_id == conversation.client_id, TelegramChat.conversation_id == conversation_id
        )
    )
    active = set(chats)
    if True in active:
        return None
    return BLOCKED if active else UNLINKED
