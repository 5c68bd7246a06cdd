"""The coach's handoff queue: handoffs with their waiting time against the SLA, one conversation's handoff
state, and the JSON shapes of handoffs and drafts shared by the API, the dashboard and the live events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Client
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork
from app.conversations.handoffs import Draft, DraftStatus, Handoff, HandoffReason, HandoffStatus
from app.conversations.models import Conversation
from app.core.errors import InvalidInput, NotFound
from app.core.pagination import EVERY_ROW, Keyset, Page, PageRequest
from app.handoff.crisis import CrisisReason, crisis_reasons


@dataclass(frozen=True)
class QueueItem:
    """A handoff as the coach's queue shows it: ``waiting_minutes`` since it opened (until claimed) and
    whether that is past the coach's SLA."""

    handoff: Handoff
    client_name: str
    waiting_minutes: float
    sla_minutes: int

    @property
    def overdue(self) -> bool:
        """Still open after the SLA."""
        return self.handoff.status == HandoffStatus.OPEN and self.waiting_minutes > self.sla_minutes

    @property
    def crisis_reasons(self) -> list[CrisisReason] | None:
        """Of a crisis handoff: the detector's reasons its ``detail`` names (:func:`crisis_reasons`), labelled
        for the dashboard; ``None`` for any other detail, shown as it is."""
        return crisis_reasons(self.handoff.detail) if self.handoff.reason == HandoffReason.CRISIS else None

    @property
    def duration_minutes(self) -> float | None:
        """Of a closed handoff: minutes from opening to closing (``None`` while active)."""
        closed = self.handoff.closed_at
        return None if closed is None else (closed - self.handoff.created_at).total_seconds() / 60

    @property
    def outcome(self) -> str | None:
        """How a closed handoff ended, in the dashboard's words (``None`` while active): dismissed while still
        open, handed back with the AI answering afterwards, or handed back (the AI waits for the client)."""
        handoff = self.handoff
        if handoff.status != HandoffStatus.CLOSED:
            return None
        if handoff.claimed_at is None:
            return "Dismissed without taking over"
        if handoff.resumed_message_id is not None:
            return "Handed back; the AI answered"
        return "Handed back"


def handoff_event(handoff: Handoff, client_name: str, *, sla_minutes: int) -> dict[str, Any]:
    """The ``handoff`` live event (the same fields as the API's handoff objects)."""
    return {"type": "handoff", "handoff": handoff_dict(handoff, client_name, sla_minutes=sla_minutes)}


def handoff_dict(handoff: Handoff, client_name: str, *, sla_minutes: int) -> dict[str, Any]:
    """A handoff as JSON: id, conversation, client, status, reason (and its label), confidence, brief, times."""
    return {
        "id": str(handoff.id),
        "conversation_id": str(handoff.conversation_id),
        "client_id": str(handoff.client_id),
        "client_name": client_name,
        "status": handoff.status,
        "reason": handoff.reason,
        "reason_label": HandoffReason.LABELS.get(handoff.reason, handoff.reason),
        "detail": handoff.detail,
        "confidence": handoff.confidence,
        "brief": handoff.brief,
        "created_at": handoff.created_at.isoformat(),
        "claimed_at": handoff.claimed_at.isoformat() if handoff.claimed_at else None,
        "closed_at": handoff.closed_at.isoformat() if handoff.closed_at else None,
        "sla_minutes": sla_minutes,
    }


def draft_dict(draft: Draft, client_name: str | None = None) -> dict[str, Any]:
    """A draft as JSON: id, conversation, text, status, the AI's confidence, the client's name when known."""
    return {
        "id": str(draft.id),
        "conversation_id": str(draft.conversation_id),
        "text": draft.text,
        "status": draft.status,
        "confidence": draft.reply_meta.ai_confidence_before,
        "client_name": client_name,
        "created_at": draft.created_at.isoformat(),
    }


HANDOFF_LOCK: dict[str, Any] = {"key_share": True}
"""``with_for_update`` arguments of the conversation row lock (``FOR NO KEY UPDATE``), taken by every
transaction that stores a message in the conversation or opens a handoff in it: the client's message stored,
the turn's load, reply and low-confidence handoff, the coach's takeover, message and draft approval, the SLA's
holding message. (A handback closes a handoff and settles at most one message row: it needs no lock order.)

- Whoever may open a handoff takes it before looking for the active one: two never both find none and both
  open one (the second would break the one-active-handoff index and fail). The turn's reply takes it after
  its claim of the client's message and then looks for the active handoff, so a takeover still to commit
  when the claim began is seen once it has: the AI's reply never follows the coach's message (it did, when
  the takeover's transaction overlapped the reply's).
- One lock order for all of them: the client's message being answered (the turn's load, reply and handoff), then the
  conversation, then its chat session, drafts and new messages. A message insert also updates the
  conversation (the ``messages_added`` trigger, migration 0031), after the chat session
  (:func:`app.memory.messages.store_message`): a client's message stored while the coach wrote, a crisis turn
  ran or a draft was approved took them the other way round, a deadlock that failed one side."""


async def coach_conversation(
    session: AsyncSession, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, lock: bool = False
) -> Conversation:
    """The coach's conversation ``conversation_id``; with ``lock``, its row locked for the transaction
    (:data:`HANDOFF_LOCK`). Raises ``NotFound`` (also for another coach's)."""
    query = select(Conversation).where(Conversation.id == conversation_id, Conversation.coach_id == coach_id)
    conversation = await session.scalar(query.with_for_update(**HANDOFF_LOCK) if lock else query)
    if conversation is None:
        raise NotFound("conversation not found")
    return conversation


_QUEUE = select(Handoff, Client.name).join(Client, Client.id == Handoff.client_id)
"""Handoffs with their client's name, the rows of :class:`QueueItem`."""


class HandoffQueue:
    """Reads the coach's handoffs. Every method takes the tenant (``coach_id``) explicitly; another coach's
    ids are ``NotFound``."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], accounts: AccountService) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts

    async def list_handoffs(
        self, uow: UnitOfWork, status: str | None = None, page: PageRequest = EVERY_ROW
    ) -> Page[QueueItem]:
        """The coach's handoffs, newest first, optionally of one status: one ``page`` of them (all by default:
        the dashboard's open and held ones, the coach's work queue). Raises ``InvalidInput`` for an unknown
        status."""
        if status is not None and status not in HandoffStatus.ALL:
            raise InvalidInput(f"status must be one of {', '.join(HandoffStatus.ALL)}")
        stmt = _QUEUE.where(Handoff.coach_id == uow.coach_id)
        if status is not None:
            stmt = stmt.where(Handoff.status == status)
        stmt = page.apply(stmt, Handoff.created_at, Handoff.id, newest_first=True)
        return page.page(await self._items(uow, stmt), lambda i: Keyset(i.handoff.created_at, i.handoff.id))

    async def count_handoffs(self, uow: UnitOfWork) -> dict[str, int]:
        """How many of the coach's handoffs are in each status, ``{status: n}`` (absent: none)."""
        stmt = select(Handoff.status, func.count()).where(Handoff.coach_id == uow.coach_id).group_by(Handoff.status)
        return {status: int(n) for status, n in (await uow.session.execute(stmt)).all()}

    async def get(self, uow: UnitOfWork, handoff_id: uuid.UUID) -> QueueItem:
        """One handoff as a queue item. Raises ``NotFound``."""
        found = await self._items(uow, _QUEUE.where(Handoff.coach_id == uow.coach_id, Handoff.id == handoff_id))
        if not found:
            raise NotFound("handoff not found")
        return found[0]

    @staticmethod
    async def _items(uow: UnitOfWork, stmt: Select[Handoff, str]) -> list[QueueItem]:
        """The rows of ``stmt`` (a :data:`_QUEUE` select) as queue items."""
        coach = await uow.coach()
        now = datetime.now(UTC)
        return [
            QueueItem(
                handoff,
                name,
                ((handoff.claimed_at or handoff.closed_at or now) - handoff.created_at).total_seconds() / 60,
                coach.handoff_sla_minutes,
            )
            for handoff, name in (await uow.session.execute(stmt)).all()
        ]

    async def conversation_state(
        self, uow: UnitOfWork, conversation_id: uuid.UUID
    ) -> tuple[Handoff | None, list[Draft]]:
        """The conversation's active handoff and its pending drafts (for the dashboard's conversation page)."""
        session, coach_id = uow.session, uow.coach_id
        await coach_conversation(session, coach_id, conversation_id)
        handoff = await session.scalar(
            select(Handoff).where(Handoff.conversation_id == conversation_id, Handoff.status.in_(HandoffStatus.ACTIVE))
        )
        drafts = (
            await session.scalars(
                select(Draft)
                .where(Draft.conversation_id == conversation_id, Draft.status == DraftStatus.PENDING)
                .order_by(Draft.created_at)
            )
        ).all()
        return handoff, list(drafts)
