"""The coach's actions on a conversation: take it over (the AI pauses), write to the client as the coach
(sender ``human_coach``, metadata ``is_handoff``, ``handoff_reason``, ``ai_confidence_before``; recorded as a
``takeover`` intervention), and hand it back to the AI (``closed``, ``human_duration_minutes``)."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Client, Coach
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork
from app.conversations.handoffs import Handoff, HandoffReason, HandoffStatus
from app.conversations.metadata import HANDED_BACK
from app.conversations.models import Message, SenderType
from app.conversations.service import unanswered_client_message
from app.core.errors import Conflict, InvalidInput
from app.db import jobs
from app.handoff.queue import coach_conversation
from app.handoff.service import HandoffService
from app.learning.interventions import InterventionService
from app.learning.models import InterventionSource
from app.memory.messages import store_message

MAX_COACH_MESSAGE_CHARS = 4000
CONFIRM_CRISIS = "confirm_crisis"
"""The refusal code (and the API's query parameter, the dashboard's form field) of a crisis handoff handed back
without a reply unconfirmed (:meth:`CoachActions.handback`)."""
CONFIRM_CRISIS_MESSAGE = "a crisis handoff handed back without a reply needs confirming: send confirm_crisis=true"


def coach_text(text: str | None) -> str:
    """A message the coach wrote, stripped. Raises ``InvalidInput`` when it is empty or longer than
    ``MAX_COACH_MESSAGE_CHARS``."""
    text = (text or "").strip()
    if not text:
        raise InvalidInput("text must not be empty")
    if len(text) > MAX_COACH_MESSAGE_CHARS:
        raise InvalidInput(f"text is longer than {MAX_COACH_MESSAGE_CHARS} characters")
    return text


_HANDOFF_NOTICES = ("handoff", "sla")
"""``metadata.notice`` of what a handoff itself tells the client: its notice and the SLA's holding message."""


async def _taken_from_the_ai(session: AsyncSession, handoff: Handoff) -> Message | None:
    """The client message a low-confidence ``handoff`` took from the AI (its trigger, answered by its notice)
    while nothing but that handoff's notices came after it in the conversation (no client message, no reply, no
    coach message), and it is not forgotten; else ``None``."""
    if handoff.reason != HandoffReason.LOW_CONFIDENCE or handoff.trigger_message_id is None:
        return None
    trigger = await session.get(Message, handoff.trigger_message_id)
    if trigger is None or trigger.forgotten_at is not None or trigger.answered_at is None:
        return None
    after = await session.execute(
        select(Message.sender_type, Message.meta).where(
            Message.conversation_id == trigger.conversation_id, Message.created_at > trigger.created_at
        )
    )
    notices_only = all(
        sender == SenderType.AI and (meta or {}).get("notice") in _HANDOFF_NOTICES for sender, meta in after.all()
    )
    return trigger if notices_only else None


class CoachActions:
    """Takeover, the coach's messages and handback. Every method takes the tenant (``coach_id``)
    explicitly; another coach's ids are ``NotFound``."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        accounts: AccountService,
        handoffs: HandoffService,
        interventions: InterventionService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts
        self._handoffs = handoffs
        self._interventions = interventions

    async def takeover(self, uow: UnitOfWork, conversation_id: uuid.UUID) -> Handoff:
        """The coach takes the conversation: its open handoff is claimed, or (unprompted) a claimed one is
        opened. Idempotent for an already claimed conversation. The AI stays paused until handback.
        Raises ``NotFound``."""
        coach, handoff, client, joined = await self._claim(uow, conversation_id)
        if joined:
            uow.after_commit(functools.partial(self._handoffs.publish_change, coach, handoff, client, "coach_joined"))
        return handoff

    async def send(self, uow: UnitOfWork, conversation_id: uuid.UUID, text: str) -> Message:
        """A message from the human coach to the client; takes the conversation over first (in the same
        transaction) when the coach has not yet, and is recorded as a ``takeover`` intervention (with the
        conversation's pending AI draft, if any, which the message supersedes: it is discarded; analysed by an
        arq job after commit). Raises
        ``InvalidInput`` (empty or too long: nothing is stored) and ``NotFound``."""
        text = coach_text(text)
        session, coach_id = uow.session, uow.coach_id
        coach, handoff, client, joined = await self._claim(uow, conversation_id)
        message, _ = await store_message(
            session,
            coach,
            conversation_id,
            SenderType.HUMAN_COACH,
            text,
            at=datetime.now(UTC),
            meta={
                "is_handoff": True,
                "handoff_id": str(handoff.id),
                "handoff_reason": handoff.reason,
                "ai_confidence_before": handoff.confidence,
            },
        )
        pending = await self._handoffs.supersede_drafts(session, conversation_id)  # the coach answered instead
        await self._interventions.record(
            session, coach, message, source=InterventionSource.TAKEOVER, handoff_id=handoff.id, ai_draft=pending
        )
        if joined:
            uow.after_commit(functools.partial(self._handoffs.publish_change, coach, handoff, client, "coach_joined"))
        uow.after_commit(functools.partial(self._handoffs.publish_message, coach_id, client.id, message))
        return message

    async def _claim(self, uow: UnitOfWork, conversation_id: uuid.UUID) -> tuple[Coach, Handoff, Client, bool]:
        """Claim the conversation's handoff for the coach (opening a ``coach_takeover`` one when none is
        active). Returns the coach, the claimed handoff, the client and whether it was claimed just now
        (the caller then announces ``coach_joined`` after commit). Raises ``NotFound``."""
        session, coach = uow.session, await uow.coach()
        conversation = await coach_conversation(session, uow.coach_id, conversation_id, lock=True)
        client = await self._accounts.get_client(uow, conversation.client_id)
        handoff = await self._handoffs.active_for(session, conversation_id)
        if handoff is not None and handoff.status == HandoffStatus.CLAIMED:
            return coach, handoff, client, False
        if handoff is None:
            handoff = await self._handoffs.open(
                session, coach, conversation, reason=HandoffReason.COACH_TAKEOVER, status=HandoffStatus.CLAIMED
            )
        else:
            handoff.status = HandoffStatus.CLAIMED
            handoff.claimed_at = datetime.now(UTC)
        return coach, handoff, client, True

    async def handback(
        self, uow: UnitOfWork, conversation_id: uuid.UUID, *, reply: bool = True, confirm_crisis: bool = False
    ) -> Handoff:
        """Give the conversation back to the AI: the active handoff is closed (an open one is dismissed);
        ``human_duration_minutes`` is the time since the takeover. With ``reply`` (the default) the AI answers
        the client's message the coach left unanswered, if any (an ``answer_pending`` job queued in the same
        transaction), the question a low-confidence handoff took from the AI included (only its notices came after
        it: :func:`_taken_from_the_ai`; marked :data:`~app.conversations.metadata.HANDED_BACK`, it is answered
        whatever the AI's confidence, the coach's decision); without, that message is marked answered
        (``answered_at``): the coach settled it, and the stranded-message sweep
        (:meth:`app.chat.turn.ChatService.answer_stranded`) leaves it alone. A crisis handoff handed back without
        ``reply`` needs ``confirm_crisis`` (nothing answers the client's crisis message then: a click too many must
        not do it). Raises ``NotFound``, ``Conflict`` when no handoff is active and ``InvalidInput`` (code
        :data:`CONFIRM_CRISIS`) for a crisis handoff handed back without a reply unconfirmed, changing nothing."""
        session, coach_id = uow.session, uow.coach_id
        coach = await uow.coach()
        conversation = await coach_conversation(session, coach_id, conversation_id)
        handoff = await self._handoffs.active_for(session, conversation_id)
        if handoff is None:
            raise Conflict("the conversation is not handed off")
        if handoff.reason == HandoffReason.CRISIS and not reply and not confirm_crisis:
            raise InvalidInput(CONFIRM_CRISIS_MESSAGE, code=CONFIRM_CRISIS)
        now = datetime.now(UTC)
        handoff.status = HandoffStatus.CLOSED
        handoff.closed_at = now
        if handoff.claimed_at is not None:
            handoff.human_duration_minutes = round((now - handoff.claimed_at).total_seconds() / 60, 2)
        client = await self._accounts.get_client(uow, conversation.client_id)
        pending = await unanswered_client_message(session, conversation_id)
        if pending is None and reply and (taken := await _taken_from_the_ai(session, handoff)) is not None:
            # answered only by the handoff's notices: the AI answers it now, whatever its confidence
            taken.answered_at, taken.meta, pending = None, {**(taken.meta or {}), HANDED_BACK: True}, taken.id
        if pending is not None and reply:
            jobs.answer_pending(session, coach_id, pending, occasion=f"handback:{handoff.id}")
        elif pending is not None:  # the coach's decision: settled, so no sweep answers it later
            await session.execute(
                update(Message).where(Message.id == pending, Message.answered_at.is_(None)).values(answered_at=now)
            )
        # a handoff the coach never took is dismissed: the client was told the coach was asked, not that they joined
        left = "coach_left" if handoff.claimed_at is not None else "coach_dismissed"
        uow.after_commit(functools.partial(self._handoffs.publish_change, coach, handoff, client, left))
        return handoff
