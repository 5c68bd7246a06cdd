"""The coach's inbox: every conversation as one row with its state (who has to act), the last message, the
client's unread messages, filtered by state, channel, unread and a search over client names and messages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select, true, update

from app.accounts.models import Client
from app.accounts.unit_of_work import UnitOfWork
from app.conversations.handoffs import Draft, DraftStatus, Handoff, HandoffReason, HandoffStatus
from app.conversations.models import Conversation, Message, SenderType
from app.core.errors import InvalidInput, NotFound

INBOX_LIMIT = 200
"""Most rows one inbox read returns (the ones needing the coach first, then the most recent)."""
PREVIEW_CHARS = 120
"""Longest last-message preview; longer texts end with an ellipsis."""
MAX_QUERY_CHARS = 200


class InboxState:
    """Who has to act in a conversation, most urgent first: ``crisis`` (an open crisis handoff), ``waiting``
    (an open handoff: the AI stopped, nobody took it yet), ``you`` (the coach holds it), ``draft`` (an AI draft
    waits for approval), ``ai`` (the AI answers)."""

    CRISIS = "crisis"
    WAITING = "waiting"
    YOU = "you"
    DRAFT = "draft"
    AI = "ai"
    ALL = (CRISIS, WAITING, YOU, DRAFT, AI)
    LABELS = {
        CRISIS: "Crisis",
        WAITING: "Waiting for you",
        YOU: "You",
        DRAFT: "Draft pending",
        AI: "AI answering",
    }


CHANNELS = {"web": ("widget", "api"), "telegram": ("telegram",)}
"""The inbox's channel filter: the conversations' ``channel`` values each name covers."""


def channel_name(channel: str) -> str:
    """``web`` or ``telegram`` for a conversation's stored ``channel`` (``widget``, ``api``, ``telegram``)."""
    return next((name for name, stored in CHANNELS.items() if channel in stored), channel)


@dataclass(frozen=True)
class InboxFilter:
    """What the coach asked to see; empty values mean "all". Build it with :meth:`parse`."""

    state: str | None = None
    channel: str | None = None
    unread: bool = False
    q: str = ""

    @classmethod
    def parse(cls, state: str | None, channel: str | None, unread: bool, q: str | None) -> InboxFilter:
        """Check the query values. Raises ``InvalidInput`` for an unknown state or channel, or a search over
        :data:`MAX_QUERY_CHARS` characters."""
        state, channel, q = (state or None), (channel or None), (q or "").strip()
        if state is not None and state not in InboxState.ALL:
            raise InvalidInput(f"state must be one of {', '.join(InboxState.ALL)}")
        if channel is not None and channel not in CHANNELS:
            raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}")
        if len(q) > MAX_QUERY_CHARS:
            raise InvalidInput(f"q is longer than {MAX_QUERY_CHARS} characters")
        return cls(state, channel, unread, q)


@dataclass(frozen=True)
class InboxRow:
    """One conversation in the inbox. ``unread``: the client's messages since the coach last opened it;
    ``last_*``: the newest message (``None`` for an empty conversation), ``last_text`` cut to
    :data:`PREVIEW_CHARS`; ``channel`` is ``web`` or ``telegram``."""

    conversation_id: uuid.UUID
    client_id: uuid.UUID
    client_name: str
    channel: str
    state: str
    unread: int
    last_sender: str | None
    last_text: str | None
    last_at: datetime

    @property
    def state_label(self) -> str:
        """The state as the dashboard words it."""
        return InboxState.LABELS[self.state]

    def as_json(self) -> dict[str, Any]:
        """The row as the API returns it (ids and times as strings, plus ``state_label``)."""
        return {
            "conversation_id": str(self.conversation_id),
            "client_id": str(self.client_id),
            "client_name": self.client_name,
            "channel": self.channel,
            "state": self.state,
            "state_label": self.state_label,
            "unread": self.unread,
            "last_sender": self.last_sender,
            "last_text": self.last_text,
            "last_at": self.last_at.isoformat(),
        }


def _like(q: str) -> str:
    """``q`` as an ILIKE pattern matching it anywhere, its own ``%``, ``_`` and ``\\`` taken literally."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[: PREVIEW_CHARS - 1].rstrip() + "…"


async def inbox_rows(uow: UnitOfWork, wanted: InboxFilter) -> list[InboxRow]:
    """The coach's conversations as inbox rows: crisis, then waiting, then draft, then the rest, each most
    recent first; at most :data:`INBOX_LIMIT`. One query (the last message is a lateral join)."""
    handoff_on = and_(Handoff.conversation_id == Conversation.id, Handoff.status.in_(HandoffStatus.ACTIVE))
    has_draft = exists().where(Draft.conversation_id == Conversation.id, Draft.status == DraftStatus.PENDING)
    state = case(
        (and_(Handoff.status == HandoffStatus.OPEN, Handoff.reason == HandoffReason.CRISIS), InboxState.CRISIS),
        (Handoff.status == HandoffStatus.OPEN, InboxState.WAITING),
        (Handoff.status == HandoffStatus.CLAIMED, InboxState.YOU),
        (has_draft, InboxState.DRAFT),
        else_=InboxState.AI,
    )
    unread = (
        select(func.count(Message.id))
        .where(
            Message.conversation_id == Conversation.id,
            Message.sender_type == SenderType.CLIENT,
            or_(Conversation.coach_read_at.is_(None), Message.created_at > Conversation.coach_read_at),
        )
        .scalar_subquery()
    )
    last = (
        select(Message.sender_type, Message.text)
        .where(Message.conversation_id == Conversation.id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
        .lateral("last")
    )
    priority = case(
        (state == InboxState.CRISIS, 0), (state == InboxState.WAITING, 1), (state == InboxState.DRAFT, 2), else_=3
    )
    stmt = (
        select(Conversation, Client.name, state.label("state"), unread.label("unread"), last.c.sender_type, last.c.text)
        .join(Client, Client.id == Conversation.client_id)
        .outerjoin(Handoff, handoff_on)
        .outerjoin(last, true())
        .where(Conversation.coach_id == uow.coach_id)
        .order_by(priority, Conversation.last_message_at.desc(), Conversation.id)
        .limit(INBOX_LIMIT)
    )
    if wanted.state is not None:
        stmt = stmt.where(state == wanted.state)
    if wanted.channel is not None:
        stmt = stmt.where(Conversation.channel.in_(CHANNELS[wanted.channel]))
    if wanted.unread:
        stmt = stmt.where(unread > 0)
    if wanted.q:
        pattern = _like(wanted.q)
        said = exists().where(Message.conversation_id == Conversation.id, Message.text.ilike(pattern, escape="\\"))
        stmt = stmt.where(or_(Client.name.ilike(pattern, escape="\\"), said))
    return [
        InboxRow(
            c.id, c.client_id, name, channel_name(c.channel), state, int(n), sender, _preview(text), c.last_message_at
        )
        for c, name, state, n, sender, text in (await uow.session.execute(stmt)).all()
    ]


async def mark_read(uow: UnitOfWork, conversation_id: uuid.UUID) -> None:
    """The coach has read the conversation through its newest message (its unread count drops to 0; never
    moves back). Raises ``NotFound`` (also for another coach's conversation)."""
    newest = select(func.max(Message.created_at)).where(Message.conversation_id == conversation_id).scalar_subquery()
    result = await uow.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.coach_id == uow.coach_id)
        .values(coach_read_at=func.greatest(Conversation.coach_read_at, newest))
        .returning(Conversation.id)
    )
    if result.first() is None:
        raise NotFound("conversation not found")
