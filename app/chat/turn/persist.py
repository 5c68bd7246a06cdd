"""Persist a turn's outcome: the crisis reply or a handoff notice with its handoff, the AI's reply (or its
draft) with attribution metadata, the handback bookkeeping and the follow-up jobs, each in the transaction
that marks the client's message answered (so a message is answered once, however often it is retried)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.chat.turn.decide import After, Before, BeforeModel, after_retrieval
from app.chat.turn.honesty import Honesty, disclosure
from app.chat.turn.state import Reply, Turn, TurnResult
from app.chat.turn.timing import ms_since
from app.conversations.handoffs import Draft, DraftStatus, Handoff, HandoffReason, HandoffStatus
from app.conversations.metadata import CRISIS_NOTICE
from app.conversations.models import Conversation, Message, SenderType
from app.db import jobs
from app.handoff.confidence import Confidence, score_confidence
from app.handoff.crisis import crisis_acknowledgement, crisis_detail, crisis_reply, resources_for, risk_metadata
from app.handoff.languages import written_language
from app.handoff.normalise import normalise
from app.handoff.queue import HANDOFF_LOCK
from app.handoff.service import HandoffService, coach_away_until
from app.handoff.signals import TurnSignals, ai_question_language, human_request_language
from app.handoff.sla import told_language
from app.memory.messages import store_message


@dataclass(frozen=True)
class Outcome:
    """What a turn stored: the ``reply`` message sent to the client (``None``: nothing was sent), the
    ``draft`` kept for the coach, the ``handoff`` the conversation is in, and whether that handoff is new or
    newly urgent (``announce``: the coach's queue and alerts hear of it after commit)."""

    reply: Message | None = None
    draft: Draft | None = None
    handoff: Handoff | None = None
    announce: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


class Persister:
    """Writes turn outcomes; every write that answers the client's message marks it answered."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], handoffs: HandoffService) -> None:
        self._sessionmaker = sessionmaker
        self._handoffs = handoffs

    async def before_model(self, session: AsyncSession, turn: Turn, decision: BeforeModel) -> Outcome:
        """Carry out a decision made before the model, in the turn's first transaction (the client's message
        and the active handoff are locked in it): the crisis protocol, the paused AI, a rule's handoff, or the
        disclosure that the client talks to the coach's AI assistant (in the language of their question when it is
        not English, else of their message)."""
        coach, conversation, signals = turn.coach, turn.conversation, turn.signals
        if decision.action is Before.DISCLOSE:  # "am I talking to a real person?": the product answers
            said: dict[str, Any] = {"honesty": Honesty.ASKED, "mode": coach.handoff_mode, "signals": signals.as_dict()}
            asked = ai_question_language(turn.message.text, coach_name=coach.name)  # "¿eres un bot?" is short
            language = asked if asked is not None and asked != "en" else turn.risk.language
            reply = await self._store_ai(session, coach, conversation.id, disclosure(coach.name, language), meta=said)
            turn.message.answered_at = reply.created_at
            return Outcome(reply)
        if decision.action is Before.PAUSED or decision.reason is None:  # the message waits for the coach
            return await self._paused(session, turn)
        if decision.action is Before.CRISIS:
            detail = crisis_detail(turn.risk.matched)
            conversation.urgent_at, conversation.urgent_reason = _now(), detail
            handoff = turn.active
            if handoff is None:
                handoff = await self._open(session, turn, decision.reason, detail, 0.0)
            else:  # a crisis during a handoff makes it urgent, with the crisis's brief; the coach is alerted live
                await self._handoffs.escalate_to_crisis(  # (announce) and by webhook/e-mail
                    session, coach, conversation, handoff, detail=detail, confidence=0.0, message_id=turn.message.id
                )
            await self._handoffs.supersede_drafts(session, conversation.id)  # no AI draft goes out after this
            meta = {
                "crisis": True,
                "handoff_reason": HandoffReason.CRISIS,
                "handoff_id": str(handoff.id),
                "ai_confidence_before": 0.0,
                "signals": signals.as_dict(),
                "risk": risk_metadata(turn.risk),
            }
            language = turn.risk.language  # the crisis reply is in the language the client wrote in
            # outside the coach's hours, unless they are in the conversation: when they are back
            back = await coach_away_until(session, coach, conversation.id, _now(), language)
            text = crisis_reply(coach.name, _resources(coach, language), language, back)
            reply = await self._store_ai(session, coach, conversation.id, text, meta=meta)
            turn.message.answered_at = reply.created_at
            return Outcome(reply, handoff=handoff, announce=True)
        handoff = await self._open(session, turn, decision.reason, decision.detail, None)
        notice = await self._notice(session, turn, handoff, signals, None)
        turn.message.answered_at = notice.created_at
        return Outcome(notice, handoff=handoff, announce=True)

    async def _paused(self, session: AsyncSession, turn: Turn) -> Outcome:
        """The AI is paused (the coach has the conversation): the message waits for the coach. While a crisis
        handoff waits for the coach's first reply, the message gets the crisis acknowledgement (which answers it),
        at most one per :data:`~app.handoff.crisis.CRISIS_ACK_INTERVAL`: the client is never left with silence (told
        when the coach is back outside their hours, unless the coach is in the conversation:
        :func:`~app.handoff.service.coach_away_until`)."""
        handoff, now = turn.active, _now()
        language = None if handoff is None else await self._handoffs.crisis_acknowledgement_due(session, handoff, now)
        if handoff is None or language is None:
            return Outcome(handoff=handoff)
        coach = turn.coach
        back = await coach_away_until(session, coach, turn.conversation.id, now, language)
        text = crisis_acknowledgement(coach.name, _resources(coach, language), language, back)
        meta = {"notice": CRISIS_NOTICE, "handoff_id": str(handoff.id), "handoff_reason": handoff.reason}
        notice = await self._store_ai(session, coach, turn.conversation.id, text, meta=meta)
        turn.message.answered_at = notice.created_at
        return Outcome(notice, handoff=handoff)

    async def low_confidence(self, turn: Turn, signals: TurnSignals, *, confidence: Confidence, detail: str) -> Outcome:
        """Hand off instead of answering (confidence below the threshold): open the handoff and tell the
        client; nothing when the coach took the conversation meanwhile (the message then waits for them)."""
        async with unit_of_work(self._sessionmaker, turn.coach.id) as uow:
            session = uow.session
            claimed = await _claim_answer(session, turn.message.id)
            if claimed is None:  # answered meanwhile
                return Outcome(handoff=await self._handoffs.active_for(session, turn.conversation.id))
            # then the conversation (the lock order of HANDOFF_LOCK), before looking for the active handoff
            turn.conversation = await session.get_one(Conversation, turn.conversation.id, with_for_update=HANDOFF_LOCK)
            if (active := await self._handoffs.active_for(session, turn.conversation.id)) is not None:
                await session.execute(_UNCLAIM, {"message_id": claimed})
                return Outcome(handoff=active)
            handoff = await self._open(session, turn, HandoffReason.LOW_CONFIDENCE, detail, confidence.value, signals)
            notice = await self._notice(session, turn, handoff, signals, confidence)
        return Outcome(notice, handoff=handoff, announce=True)

    async def reply(self, turn: Turn, reply: Reply) -> Outcome:
        """Store the AI's reply (or, drafting, the draft) with its final confidence and signals; a first reply
        after a handback records ``is_handback``; L3 insight extraction is queued. A sent reply whose final
        confidence (with the reply's token probability, known only after it was streamed) is under the coach's
        threshold opens a ``low_confidence`` handoff beside it (``auto`` mode): the coach is asked to look.
        Nothing is stored when the message was answered meanwhile (another connection answered the same
        message), nor when the coach took the conversation while the model was answering (the message then
        waits for the coach; the outcome carries the handoff)."""
        coach, conversation = turn.coach, turn.conversation
        confidence = score_confidence(reply.signals)
        reply.metadata["confidence"] = confidence.as_dict()
        reply.metadata["signals"] = reply.signals.as_dict()
        t0 = time.perf_counter()
        async with unit_of_work(self._sessionmaker, coach.id) as uow:
            session = uow.session
            claimed = await _claim_answer(session, turn.message.id, unless_handed_off=True)
            if claimed is None:
                return Outcome(handoff=await self._handoffs.active_for(session, conversation.id))
            # then the conversation (the lock order of HANDOFF_LOCK, after the message as the turn's load takes
            # them): a takeover that was still to commit when the claim began is seen now, and wins
            await session.execute(_LOCK_CONVERSATION, {"conversation_id": conversation.id})
            active, resumed = await self._handoffs.active_and_resumed(session, conversation.id)
            if active is not None:
                await session.execute(_UNCLAIM, {"message_id": claimed})
                return Outcome(handoff=active)
            if reply.drafting:
                draft = Draft(
                    coach_id=coach.id,
                    conversation_id=conversation.id,
                    client_message_id=claimed,
                    status=DraftStatus.PENDING,
                    text=reply.text,
                    citations=reply.citations,
                    meta=reply.metadata,
                    edited=False,
                    created_at=_now(),
                )
                session.add(draft)
                await session.flush()
                outcome = Outcome(draft=draft)
            else:
                outcome = Outcome(await self._store_reply(session, turn, reply, resumed))
                after = after_retrieval(
                    mode=coach.handoff_mode,
                    confidence=confidence,
                    threshold=coach.confidence_threshold,
                    handed_back=turn.handed_back,
                )
                if after.action is After.HAND_OFF:  # the reply's token probability, known once it was streamed
                    detail = f"{after.detail} (after the reply was sent)"
                    handoff = await self._open(
                        session, turn, HandoffReason.LOW_CONFIDENCE, detail, confidence.value, reply.signals
                    )
                    outcome = Outcome(outcome.reply, handoff=handoff, announce=True)
            await _note_model_health(session, coach, reply)
        reply.metadata["persist_ms"] = ms_since(t0)
        return outcome

    async def _store_reply(self, session: AsyncSession, turn: Turn, reply: Reply, resumed: Handoff | None) -> Message:
        """Store the AI's reply; ``resumed``, the handback it is the first reply after, records it."""
        if resumed is not None:
            reply.metadata["is_handback"] = True
            reply.metadata["human_duration_minutes"] = resumed.human_duration_minutes
        stored = await self._store_ai(
            session, turn.coach, turn.conversation.id, reply.text, meta=dict(reply.metadata), citations=reply.citations
        )
        if resumed is not None:
            await session.execute(update(Handoff).where(Handoff.id == resumed.id).values(resumed_message_id=stored.id))
        if turn.insights_due:  # the follow-up: L3 extraction, once enough client messages are unread
            jobs.extract_insights(session, turn.coach.id, turn.conversation.id, after_message_id=stored.id)
        return stored

    async def _open(
        self,
        session: AsyncSession,
        turn: Turn,
        reason: str,
        detail: str,
        confidence: float | None,
        signals: TurnSignals | None = None,
    ) -> Handoff:
        return await self._handoffs.open(
            session,
            turn.coach,
            turn.conversation,
            reason=reason,
            detail=detail,
            confidence=confidence,
            signals=(signals or turn.signals).as_dict(),
            trigger_message_id=turn.message.id,
        )

    async def _notice(
        self, session: AsyncSession, turn: Turn, handoff: Handoff, signals: TurnSignals, confidence: Confidence | None
    ) -> Message:
        """Store the message telling the client the coach was asked to join, in the language of the client's
        message (as the crisis reply), or of their ask for a person when that was not English
        (:func:`app.handoff.signals.human_request_language`: a short ask reads as English to the detector). A
        message that tells no language (the ``/human`` command, "ok") gets the conversation's
        (:func:`app.handoff.sla.told_language`: its latest notice's, else its client's latest messages', else the
        language of the client's app), else English."""
        meta: dict[str, Any] = {
            "notice": "handoff",
            "handoff_id": str(handoff.id),
            "handoff_reason": handoff.reason,
            "ai_confidence_before": None if confidence is None else confidence.value,
            "signals": signals.as_dict(),
        }
        if confidence is not None:
            meta["confidence"] = confidence.as_dict()
        asked = None
        if handoff.reason == HandoffReason.HUMAN_REQUEST:
            asked = human_request_language(turn.message.text, coach_name=turn.coach.name)
        if asked is not None and asked != "en":
            language: str = asked
        elif written_language(normalise(turn.message.text)) is None:  # "/human", "ok": the conversation's language
            language = await told_language(session, turn.conversation.id) or "en"
        else:
            language = turn.risk.language
        meta["language"] = language  # the SLA holding message of this handoff speaks it too
        text = await self._handoffs.notice(session, turn.coach, handoff, _now(), language)
        return await self._store_ai(session, turn.coach, turn.conversation.id, text, meta=meta)

    async def _store_ai(
        self,
        session: AsyncSession,
        coach: Coach,
        conversation_id: uuid.UUID,
        text: str,
        *,
        meta: dict[str, Any],
        citations: list[dict[str, Any]] | None = None,
    ) -> Message:
        """Store an AI message in the conversation."""
        message, _ = await store_message(
            session,
            coach,
            conversation_id,
            SenderType.AI,
            text,
            at=_now(),
            citations=citations,
            meta=meta,
        )
        return message


def _resources(coach: Coach, language: str) -> tuple[str, ...]:
    """The coach's crisis resources for a reply in ``language`` (:func:`app.handoff.crisis.resources_for`)."""
    return resources_for(language, tuple(coach.crisis_resources), coach.crisis_resources_by_language)


async def _note_model_health(session: AsyncSession, coach: Coach, reply: Reply) -> None:
    """Count a reply the model failed to write (the apology) on the coach (``model_failures``, since when, why), so
    the dashboard tells the coach on every page: a refused key or a used-up quota otherwise reached only the
    clients. The model's next reply clears it (a cache hit says nothing of the model). One ``UPDATE`` only on a
    failure or on the first reply after one; ``coach`` is the turn's copy, read at its start."""
    if reply.failed:
        await session.execute(
            update(Coach)
            .where(Coach.id == coach.id)
            .values(
                model_failures=Coach.model_failures + 1,
                model_failing_since=func.coalesce(Coach.model_failing_since, func.now()),
                model_failure=str(reply.metadata.get("error", "")),
            )
        )
    elif coach.model_failures and reply.metadata.get("cache") != "hit":
        await session.execute(
            update(Coach)
            .where(Coach.id == coach.id)
            .values(model_failures=0, model_failing_since=None, model_failure=None)
        )


_LOCK_CONVERSATION = (
    select(Conversation.id).where(Conversation.id == bindparam("conversation_id")).with_for_update(**HANDOFF_LOCK)
)
_CLAIM = (
    update(Message)
    .where(Message.id == bindparam("message_id"), Message.answered_at.is_(None))
    .values(answered_at=bindparam("now", type_=DateTime(timezone=True)))
    .returning(Message.id)
    .execution_options(synchronize_session=False)
)
_CLAIM_UNLESS_HANDED_OFF = _CLAIM.where(
    ~exists().where(Handoff.conversation_id == Message.conversation_id, Handoff.status.in_(HandoffStatus.ACTIVE))
)
_UNCLAIM = (
    update(Message)
    .where(Message.id == bindparam("message_id"))
    .values(answered_at=None)
    .execution_options(synchronize_session=False)
)
"""Built once and run with bound parameters (SQLAlchemy reuses their cache keys and compiled forms)."""


async def _claim_answer(
    session: AsyncSession, message_id: uuid.UUID, *, unless_handed_off: bool = False
) -> uuid.UUID | None:
    """Mark the client's message answered now, in one statement that also locks it for this transaction:
    its id, or ``None`` when it was answered already (or is gone), or with ``unless_handed_off`` when its
    conversation has an open or claimed handoff (committed before this statement began). A concurrent claim
    waits for this transaction and then finds the message answered (PostgreSQL re-checks the ``WHERE`` on the
    updated row)."""
    statement = _CLAIM_UNLESS_HANDED_OFF if unless_handed_off else _CLAIM
    claimed: uuid.UUID | None = await session.scalar(statement, {"message_id": message_id, "now": _now()})
    return claimed


def handoff_status(handoff: Handoff) -> dict[str, Any]:
    """A handoff as a :class:`TurnResult` gives it: ``{"status", "reason", "confidence"}``."""
    return {"status": handoff.status, "reason": handoff.reason, "confidence": handoff.confidence}


def result(turn: Turn, outcome: Outcome, started: float, *, persist_ms: float | None = None) -> TurnResult:
    """The :class:`TurnResult` of a turn that stored ``outcome``; ``latency_ms`` counts from ``started``
    (``time.perf_counter()``); a stored reply's metadata also shows ``persist_ms``."""
    reply = outcome.reply
    metadata = dict(reply.meta) if reply is not None else {}
    if reply is not None and persist_ms is not None:
        metadata["persist_ms"] = persist_ms
    metadata["latency_ms"] = ms_since(started)
    status: dict[str, Any] | None = None
    if outcome.draft is not None:
        confidence = outcome.draft.meta.get("ai_confidence_before")
        status = {"status": "draft_pending", "reason": "draft_mode", "confidence": confidence}
    elif outcome.handoff is not None:
        status = handoff_status(outcome.handoff)
    return TurnResult(
        turn.conversation.id,
        turn.message.id,
        reply.id if reply is not None else None,
        reply.text if reply is not None else "",
        reply.citations if reply is not None else [],
        metadata,
        status,
        reply.created_at if reply is not None else None,
    )
