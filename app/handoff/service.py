"""The handoff queue, takeover and handback, drafts, and the SLA holding message.

A handoff is opened by the chat turn (crisis, an explicit ask for a human, an always-escalate topic, low
confidence, ``human_only`` mode) or by the coach taking over unprompted. While it is active the AI is
paused: the client's messages reach the coach only. The coach takes over (``claimed``), writes to the
client (``sender_type`` ``human_coach``, metadata ``is_handoff``, ``handoff_reason``,
``ai_confidence_before``) and hands back (``closed``, ``human_duration_minutes``); the AI then answers
again with the coach's turns in its context (they are ordinary messages of the conversation). All state is
in PostgreSQL, so it survives a restart; live updates go out through :class:`app.handoff.live.LiveEvents`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.availability import describe_return, is_available
from app.accounts.models import Client, Coach
from app.accounts.service import AccountService
from app.conversations.handoffs import Draft, DraftStatus, Handoff, HandoffReason, HandoffStatus
from app.conversations.metadata import client_view
from app.conversations.models import Conversation, Message, SenderType
from app.conversations.service import unanswered_client_message
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.text import one_line
from app.db import jobs
from app.db.engine import tenant_session
from app.handoff.live import LiveEvents, message_event
from app.learning.interventions import InterventionService
from app.learning.models import InterventionSource
from app.memory.messages import store_message
from app.memory.models import InsightStatus, SessionStatus
from app.memory.service import MemoryService

log = logging.getLogger(__name__)

MAX_COACH_MESSAGE_CHARS = 4000
BRIEF_INSIGHTS = 4
BRIEF_CLIENT_MESSAGES = 3
BRIEF_LINE_CHARS = 200


def _now() -> datetime:
    return datetime.now(UTC)


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


class HandoffService:
    """Opens handoffs from the chat turn and carries out the coach's takeover, messages, handback and draft
    decisions. Every method takes the tenant (``coach_id``) explicitly; another coach's ids are ``NotFound``."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        accounts: AccountService,
        memory: MemoryService,
        live: LiveEvents,
        interventions: InterventionService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts
        self._memory = memory
        self._live = live
        self._interventions = interventions

    # ------------------------------------------------------------------ used by the chat turn

    async def active_for(self, session: AsyncSession, conversation_id: uuid.UUID) -> Handoff | None:
        """The conversation's open or claimed handoff, locked for this transaction, or ``None``."""
        return await session.scalar(
            select(Handoff)
            .where(Handoff.conversation_id == conversation_id, Handoff.status.in_(HandoffStatus.ACTIVE))
            .with_for_update()
        )

    async def open(
        self,
        session: AsyncSession,
        coach: Coach,
        conversation: Conversation,
        *,
        reason: str,
        detail: str = "",
        confidence: float | None = None,
        signals: dict[str, Any] | None = None,
        trigger_message_id: uuid.UUID | None = None,
        status: str = HandoffStatus.OPEN,
    ) -> Handoff:
        """Open a handoff (flushed) with a brief from the client's memory. The caller checked that none is
        active; after commit it calls :meth:`announce`."""
        now = _now()
        try:  # the brief is a courtesy: a failure reading memory must not cost the client their reply
            async with session.begin_nested():
                brief = await self._brief(session, coach.id, conversation, reason, detail)
        except Exception:
            log.exception("could not build the handoff brief for conversation %s", conversation.id)
            brief = f"Why: {HandoffReason.LABELS.get(reason, reason)}" + (f" ({detail})" if detail else "")
        handoff = Handoff(
            coach_id=coach.id,
            conversation_id=conversation.id,
            client_id=conversation.client_id,
            status=status,
            reason=reason,
            detail=detail,
            confidence=confidence,
            signals=signals or {},
            brief=brief,
            trigger_message_id=trigger_message_id,
            claimed_at=now if status == HandoffStatus.CLAIMED else None,
            alerts={},
            created_at=now,
        )
        session.add(handoff)
        await session.flush()
        if reason != HandoffReason.COACH_TAKEOVER and (coach.alert_webhook_url or coach.alert_email):
            # in the handoff's own transaction: the alert goes out even if Redis is down right now
            jobs.deliver_alert(session, coach.id, handoff.id)
        return handoff

    async def announce(self, coach: Coach, handoff: Handoff, client_name: str) -> None:
        """After commit: show the handoff in the coach's live queue and raise the crisis alert there (the
        webhook / e-mail alert was queued with the handoff by :meth:`open`)."""
        await self._live.publish(
            handoff_event(handoff, client_name, sla_minutes=coach.handoff_sla_minutes), coach_id=coach.id
        )
        if handoff.reason == HandoffReason.CRISIS:
            await self._live.publish(
                {
                    "type": "alert",
                    "handoff_id": str(handoff.id),
                    "conversation_id": str(handoff.conversation_id),
                    "client_name": client_name,
                    "reason": handoff.reason,
                    "detail": handoff.detail,
                    "at": handoff.created_at.isoformat(),
                },
                coach_id=coach.id,
            )

    def notice(self, coach: Coach, reason: str, at: datetime) -> str:
        """What the client reads when the conversation is handed to the coach (not for crises, which get
        the crisis reply)."""
        opening = (
            f"Of course — I've asked {coach.name} to join this conversation."
            if reason == HandoffReason.HUMAN_REQUEST
            else f"This is one for {coach.name} personally, so I've asked them to join this conversation."
        )
        if is_available(coach.availability, at):
            timing = f"They usually reply here within {coach.handoff_sla_minutes} minutes."
        else:
            timing = f"They're away right now and back {describe_return(coach.availability, at)}."
        return f"{opening} {timing} Your message is saved, and anything you add here goes straight to them."

    async def resumed(self, session: AsyncSession, conversation_id: uuid.UUID) -> Handoff | None:
        """The latest handback whose first AI reply has not been written yet (that reply records
        ``is_handback`` and sets ``resumed_message_id``)."""
        return await session.scalar(
            select(Handoff)
            .where(
                Handoff.conversation_id == conversation_id,
                Handoff.status == HandoffStatus.CLOSED,
                Handoff.claimed_at.is_not(None),
                Handoff.resumed_message_id.is_(None),
            )
            .order_by(Handoff.closed_at.desc())
            .limit(1)
        )

    # ------------------------------------------------------------------ the coach's queue and actions

    async def list_handoffs(
        self, coach_id: uuid.UUID, status: str | None = None, *, handoff_id: uuid.UUID | None = None
    ) -> list[QueueItem]:
        """The coach's handoffs, newest first, optionally of one status (or the one ``handoff_id``). Raises
        ``InvalidInput`` for an unknown status."""
        if status is not None and status not in HandoffStatus.ALL:
            raise InvalidInput(f"status must be one of {', '.join(HandoffStatus.ALL)}")
        async with tenant_session(self._sessionmaker, coach_id) as session:
            coach = await self._accounts.get_coach(session, coach_id)
            stmt = (
                select(Handoff, Client.name)
                .join(Client, Client.id == Handoff.client_id)
                .where(Handoff.coach_id == coach_id)
                .order_by(Handoff.created_at.desc())
            )
            if status is not None:
                stmt = stmt.where(Handoff.status == status)
            if handoff_id is not None:
                stmt = stmt.where(Handoff.id == handoff_id)
            rows = (await session.execute(stmt)).all()
        now = _now()
        return [
            QueueItem(
                handoff,
                name,
                ((handoff.claimed_at or handoff.closed_at or now) - handoff.created_at).total_seconds() / 60,
                coach.handoff_sla_minutes,
            )
            for handoff, name in rows
        ]

    async def get(self, coach_id: uuid.UUID, handoff_id: uuid.UUID) -> QueueItem:
        """One handoff as a queue item. Raises ``NotFound``."""
        found = await self.list_handoffs(coach_id, handoff_id=handoff_id)
        if not found:
            raise NotFound("handoff not found")
        return found[0]

    async def conversation_state(
        self, coach_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> tuple[Handoff | None, list[Draft]]:
        """The conversation's active handoff and its pending drafts (for the dashboard's conversation page)."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            await self._conversation(session, coach_id, conversation_id)
            handoff = await session.scalar(
                select(Handoff).where(
                    Handoff.conversation_id == conversation_id, Handoff.status.in_(HandoffStatus.ACTIVE)
                )
            )
            drafts = (
                await session.scalars(
                    select(Draft)
                    .where(Draft.conversation_id == conversation_id, Draft.status == DraftStatus.PENDING)
                    .order_by(Draft.created_at)
                )
            ).all()
        return handoff, list(drafts)

    async def takeover(self, coach_id: uuid.UUID, conversation_id: uuid.UUID) -> Handoff:
        """The coach takes the conversation: its open handoff is claimed, or (unprompted) a claimed one is
        opened. Idempotent for an already claimed conversation. The AI stays paused until handback.
        Raises ``NotFound``."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            coach, handoff, client, joined = await self._claim(session, coach_id, conversation_id)
        if joined:
            await self._publish_change(coach, handoff, client, "coach_joined")
        return handoff

    async def send(self, coach_id: uuid.UUID, conversation_id: uuid.UUID, text: str) -> Message:
        """A message from the human coach to the client; takes the conversation over first (in the same
        transaction) when the coach has not yet, and is recorded as a ``takeover`` intervention (with the
        conversation's pending AI draft, if any; analysed by an arq job after commit). Raises
        ``InvalidInput`` (empty or too long: nothing is stored) and ``NotFound``."""
        text = (text or "").strip()
        if not text:
            raise InvalidInput("text must not be empty")
        if len(text) > MAX_COACH_MESSAGE_CHARS:
            raise InvalidInput(f"text is longer than {MAX_COACH_MESSAGE_CHARS} characters")
        async with tenant_session(self._sessionmaker, coach_id) as session:
            coach, handoff, client, joined = await self._claim(session, coach_id, conversation_id)
            message, _ = await store_message(
                session,
                self._memory,
                coach,
                conversation_id,
                SenderType.HUMAN_COACH,
                text,
                at=_now(),
                meta={
                    "is_handoff": True,
                    "handoff_id": str(handoff.id),
                    "handoff_reason": handoff.reason,
                    "ai_confidence_before": handoff.confidence,
                },
            )
            pending = await session.scalar(
                select(Draft.text)
                .where(Draft.conversation_id == conversation_id, Draft.status == DraftStatus.PENDING)
                .order_by(Draft.created_at.desc())
                .limit(1)
            )
            await self._interventions.record(
                session, coach, message, source=InterventionSource.TAKEOVER, handoff_id=handoff.id, ai_draft=pending
            )
        if joined:
            await self._publish_change(coach, handoff, client, "coach_joined")
        await self.publish_message(coach_id, client.id, message)
        return message

    async def _claim(
        self, session: AsyncSession, coach_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> tuple[Coach, Handoff, Client, bool]:
        """Claim the conversation's handoff for the coach (opening a ``coach_takeover`` one when none is
        active). Returns the coach, the claimed handoff, the client and whether it was claimed just now
        (the caller then announces ``coach_joined`` after commit). Raises ``NotFound``."""
        coach = await self._accounts.get_coach(session, coach_id)
        conversation = await self._conversation(session, coach_id, conversation_id)
        client = await self._accounts.get_client(session, coach_id, conversation.client_id)
        handoff = await self.active_for(session, conversation_id)
        if handoff is not None and handoff.status == HandoffStatus.CLAIMED:
            return coach, handoff, client, False
        if handoff is None:
            handoff = await self.open(
                session, coach, conversation, reason=HandoffReason.COACH_TAKEOVER, status=HandoffStatus.CLAIMED
            )
        else:
            handoff.status = HandoffStatus.CLAIMED
            handoff.claimed_at = _now()
        return coach, handoff, client, True

    async def handback(self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, reply: bool = True) -> Handoff:
        """Give the conversation back to the AI: the active handoff is closed (an open one is dismissed);
        ``human_duration_minutes`` is the time since the takeover. With ``reply`` (the default) the AI answers
        the client's message the coach left unanswered, if any (an ``answer_pending`` job queued in the same
        transaction). Raises ``NotFound`` and ``Conflict`` when no handoff is active."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            coach = await self._accounts.get_coach(session, coach_id)
            conversation = await self._conversation(session, coach_id, conversation_id)
            handoff = await self.active_for(session, conversation_id)
            if handoff is None:
                raise Conflict("the conversation is not handed off")
            now = _now()
            handoff.status = HandoffStatus.CLOSED
            handoff.closed_at = now
            if handoff.claimed_at is not None:
                handoff.human_duration_minutes = round((now - handoff.claimed_at).total_seconds() / 60, 2)
            client = await self._accounts.get_client(session, coach_id, conversation.client_id)
            pending = await unanswered_client_message(session, conversation_id) if reply else None
            if pending is not None:
                jobs.answer_pending(session, coach_id, pending)
        await self._publish_change(coach, handoff, client, "coach_left")
        return handoff

    # ------------------------------------------------------------------ drafts

    async def list_drafts(self, coach_id: uuid.UUID, status: str | None = None) -> list[Draft]:
        """The coach's drafts, oldest first (the order to review them in). Raises ``InvalidInput``."""
        if status is not None and status not in DraftStatus.ALL:
            raise InvalidInput(f"status must be one of {', '.join(DraftStatus.ALL)}")
        async with tenant_session(self._sessionmaker, coach_id) as session:
            stmt = select(Draft).where(Draft.coach_id == coach_id).order_by(Draft.created_at)
            if status is not None:
                stmt = stmt.where(Draft.status == status)
            return list((await session.scalars(stmt)).all())

    async def approve_draft(self, coach_id: uuid.UUID, draft_id: uuid.UUID, text: str | None = None) -> Message:
        """Send a pending draft to the client, as written (an ``ai`` message) or edited by the coach (a
        ``human_coach`` message that keeps the AI draft in ``metadata.ai_draft``, recorded as a ``draft_edit``
        intervention and analysed by an arq job after commit). Raises ``NotFound``,
        ``Conflict`` (already decided) and ``InvalidInput`` (empty or too long edit)."""
        edited_text = None if text is None else text.strip()
        if edited_text is not None and not edited_text:
            raise InvalidInput("text must not be empty")
        if edited_text is not None and len(edited_text) > MAX_COACH_MESSAGE_CHARS:
            raise InvalidInput(f"text is longer than {MAX_COACH_MESSAGE_CHARS} characters")
        async with tenant_session(self._sessionmaker, coach_id) as session:
            coach = await self._accounts.get_coach(session, coach_id)
            draft = await self._pending_draft(session, coach_id, draft_id)
            edited = edited_text is not None and edited_text != draft.text
            meta = dict(draft.meta) | {"draft_id": str(draft.id), "approved_by_coach": True}
            if edited:
                meta |= {"edited": True, "ai_draft": draft.text}
            message, _ = await store_message(
                session,
                self._memory,
                coach,
                draft.conversation_id,
                SenderType.HUMAN_COACH if edited else SenderType.AI,
                edited_text if edited and edited_text else draft.text,
                at=_now(),
                citations=[] if edited else draft.citations,
                meta=meta,
            )
            draft.status = DraftStatus.APPROVED
            draft.edited = edited
            draft.decided_at = message.created_at
            draft.sent_message_id = message.id
            conversation = await self._conversation(session, coach_id, draft.conversation_id)
            if edited:
                handoff = await self.active_for(session, draft.conversation_id)
                await self._interventions.record(
                    session,
                    coach,
                    message,
                    source=InterventionSource.DRAFT_EDIT,
                    handoff_id=handoff.id if handoff is not None else None,
                    ai_draft=draft.text,
                )
        await self.publish_message(coach_id, conversation.client_id, message)
        return message

    async def discard_draft(self, coach_id: uuid.UUID, draft_id: uuid.UUID) -> Draft:
        """Drop a pending draft without sending anything. Raises ``NotFound`` and ``Conflict``."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            draft = await self._pending_draft(session, coach_id, draft_id)
            draft.status = DraftStatus.DISCARDED
            draft.decided_at = _now()
        return draft

    # ------------------------------------------------------------------ SLA

    async def send_sla_notices(self) -> int:
        """Cron: for every handoff still open past its coach's SLA, send the client one holding message.
        Returns how many were sent. Each runs in its own tenant transaction and re-checks the handoff."""
        async with self._sessionmaker() as session:
            overdue = (await session.execute(text("SELECT coach_id, handoff_id FROM overdue_handoffs()"))).all()
        sent = 0
        for coach_id, handoff_id in overdue:
            async with tenant_session(self._sessionmaker, coach_id) as session:
                handoff = await session.get(Handoff, handoff_id, with_for_update=True)
                if handoff is None or handoff.status != HandoffStatus.OPEN or handoff.sla_notified_at:
                    continue
                coach = await self._accounts.get_coach(session, coach_id)
                now = _now()
                message, _ = await store_message(
                    session,
                    self._memory,
                    coach,
                    handoff.conversation_id,
                    SenderType.AI,
                    self.holding_message(coach, now),
                    at=now,
                    meta={"notice": "sla", "handoff_id": str(handoff.id)},
                )
                handoff.sla_notified_at = now
                client_id = handoff.client_id
            await self.publish_message(coach_id, client_id, message)
            sent += 1
        return sent

    def holding_message(self, coach: Coach, at: datetime) -> str:
        """The holding message sent when the coach has not taken over within the SLA."""
        if is_available(coach.availability, at):
            when = "as soon as they can"
        else:
            when = f"when they're back, {describe_return(coach.availability, at)}"
        return (
            f"Thank you for waiting — {coach.name} hasn't been able to join yet and will reply here {when}. "
            "If things feel urgent or unsafe, please contact your local emergency number or a crisis line."
        )

    # ------------------------------------------------------------------ helpers

    async def publish_message(
        self, coach_id: uuid.UUID, client_id: uuid.UUID, message: Message, *, to_client: bool = True
    ) -> None:
        """Send a new message live to the coach's dashboard and, unless ``to_client`` is false (the client's
        own turn already delivers it), to the client's widget with only ``client_view`` of its metadata."""
        await self._live.publish(message_event(message), coach_id=coach_id)
        if to_client:
            await self._live.publish(message_event(message, client_view=client_view(message.meta)), client_id=client_id)

    async def _publish_change(self, coach: Coach, handoff: Handoff, client: Client, client_event: str) -> None:
        """A takeover or handback: the coach's queue gets the handoff, the client's widget ``client_event``."""
        await self._live.publish(
            handoff_event(handoff, client.name, sla_minutes=coach.handoff_sla_minutes), coach_id=coach.id
        )
        await self._live.publish(
            {"type": client_event, "conversation_id": str(handoff.conversation_id), "coach_name": coach.name},
            client_id=client.id,
        )

    async def announce_draft(self, coach_id: uuid.UUID, draft: Draft, client_name: str) -> None:
        """Show a new draft in the coach's live queue."""
        await self._live.publish({"type": "draft", "draft": draft_dict(draft, client_name)}, coach_id=coach_id)

    async def _conversation(
        self, session: AsyncSession, coach_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> Conversation:
        conversation = await session.scalar(
            select(Conversation).where(Conversation.id == conversation_id, Conversation.coach_id == coach_id)
        )
        if conversation is None:
            raise NotFound("conversation not found")
        return conversation

    async def _pending_draft(self, session: AsyncSession, coach_id: uuid.UUID, draft_id: uuid.UUID) -> Draft:
        draft = await session.scalar(
            select(Draft).where(Draft.id == draft_id, Draft.coach_id == coach_id).with_for_update()
        )
        if draft is None:
            raise NotFound("draft not found")
        if draft.status != DraftStatus.PENDING:
            raise Conflict(f"the draft was already {draft.status}")
        return draft

    async def _brief(
        self, session: AsyncSession, coach_id: uuid.UUID, conversation: Conversation, reason: str, detail: str
    ) -> str:
        """A few lines for the coach: why, who the client is (profile, top insights, last session) and what
        they just wrote. Built from stored memory without a model call, so it is instant and never invented."""
        memory = await self._memory.client_memory(session, coach_id, conversation.client_id)
        lines = [f"Why: {HandoffReason.LABELS.get(reason, reason)}" + (f" ({detail})" if detail else "")]
        profile = memory.profile
        if profile is not None:
            if profile.what_works:
                lines.append("What works: " + one_line("; ".join(profile.what_works), BRIEF_LINE_CHARS))
            if profile.sensitive_topics:
                lines.append("Handle with care: " + one_line("; ".join(profile.sensitive_topics), BRIEF_LINE_CHARS))
            if profile.tone:
                lines.append("Tone: " + one_line(profile.tone, BRIEF_LINE_CHARS))
        active = [i for i in memory.insights if i.status == InsightStatus.ACTIVE][:BRIEF_INSIGHTS]
        lines.extend(f"{i.kind.capitalize()}: {one_line(i.text, BRIEF_LINE_CHARS)}" for i in active)
        summarized = [s for s in memory.summaries if s.status == SessionStatus.SUMMARIZED and s.summary]
        if summarized and summarized[0].summary:
            lines.append("Last session: " + one_line(str(summarized[0].summary.get("summary", "")), BRIEF_LINE_CHARS))
        recent = (
            await session.scalars(
                select(Message.text)
                .where(
                    Message.conversation_id == conversation.id,
                    Message.sender_type == SenderType.CLIENT,
                )
                .order_by(Message.created_at.desc())
                .limit(BRIEF_CLIENT_MESSAGES)
            )
        ).all()
        lines.extend(f"Client said: “{one_line(t, BRIEF_LINE_CHARS)}”" for t in reversed(recent))
        count = await session.scalar(select(func.count(Handoff.id)).where(Handoff.client_id == conversation.client_id))
        if count:
            lines.append(f"Earlier handoffs with this client: {count}")
        return "\n".join(lines)
