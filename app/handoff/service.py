"""Handoffs as the chat turn opens them, and the live events of handoffs and messages.

A handoff is opened by the chat turn (crisis, an explicit ask for a human, an always-escalate topic, low
confidence, ``human_only`` mode) or by the coach taking over unprompted (:mod:`app.handoff.actions`). While
it is active the AI is paused: the client's messages reach the coach only. The coach takes over
(``claimed``), writes to the client and hands back (``closed``); the AI then answers again with the coach's
turns in its context (they are ordinary messages of the conversation). All state is in PostgreSQL, so it
survives a restart; live updates go out through :class:`app.handoff.live.LiveEvents`.

The rest of the handoff package: the coach's queue (:mod:`app.handoff.queue`), takeover, messages and
handback (:mod:`app.handoff.actions`), drafts (:mod:`app.handoff.drafts`), the SLA holding message
(:mod:`app.handoff.sla`), the brief (:mod:`app.handoff.brief`) and alerts (:mod:`app.handoff.alerts`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.availability import away_until
from app.accounts.models import Client, Coach
from app.conversations.handoffs import Draft, DraftStatus, Handoff, HandoffReason, HandoffStatus
from app.conversations.metadata import CRISIS_NOTICE, client_view
from app.conversations.models import Conversation, Message, SenderType
from app.db import jobs
from app.handoff.alerts import crisis_event
from app.handoff.brief import brief_without_forgotten, handoff_brief, why_line
from app.handoff.catalogue import handoff_notice
from app.handoff.crisis import CRISIS_ACK_INTERVAL, crisis_reasons_text
from app.handoff.live import LiveEvents, message_event
from app.handoff.queue import draft_dict, handoff_event
from app.memory.controls import MemoryControls

log = logging.getLogger(__name__)


ClientSink = Callable[[uuid.UUID, uuid.UUID, dict[str, Any]], Awaitable[None]]
"""``await sink(coach_id, client_id, event)``: a channel adapter's delivery of a client's live event (the
Telegram channel sends it to the client's chat). Called after the event is published; must not raise."""


def alert_event(handoff: Handoff, client_name: str, message: Message) -> dict[str, Any]:
    """The coach's live crisis ``alert`` event for the client's ``message`` in ``handoff``'s conversation:
    ``{"type": "alert", "handoff_id", "conversation_id", "message_id", "client_name", "reason", "detail",
    "detail_text", "handoff_status", "at"}`` (ids as strings, ``at`` the message's ISO time; ``detail_text`` the
    crisis reasons in words, :func:`~app.handoff.crisis.crisis_reasons_text`, for the dashboard's desktop
    notification, else ``detail``). ``message_id`` keys the
    dashboard's notice (``static/dashboard.js``): one tone and notification per crisis message, also for a
    second crisis in the same handoff or one the coach already holds (``handoff_status`` ``claimed``)."""
    return {
        "type": "alert",
        "handoff_id": str(handoff.id),
        "conversation_id": str(handoff.conversation_id),
        "message_id": str(message.id),
        "client_name": client_name,
        "reason": handoff.reason,
        "detail": handoff.detail,
        "detail_text": crisis_reasons_text(handoff.detail) or handoff.detail,
        "handoff_status": handoff.status,
        "at": message.created_at.isoformat(),
    }


_ACTIVE = (
    select(Handoff)
    .where(Handoff.conversation_id == bindparam("conversation_id"), Handoff.status.in_(HandoffStatus.ACTIVE))
    .with_for_update()
)
_UNRESUMED = and_(
    Handoff.status == HandoffStatus.CLOSED, Handoff.claimed_at.is_not(None), Handoff.resumed_message_id.is_(None)
)
"""A handback whose first AI reply has not been written yet."""
_ACTIVE_OR_UNRESUMED = (
    select(Handoff)
    .where(
        Handoff.conversation_id == bindparam("conversation_id"),
        or_(Handoff.status.in_(HandoffStatus.ACTIVE), _UNRESUMED),
    )
    .with_for_update()
)
""":meth:`HandoffService.active_for` and :meth:`~HandoffService.active_and_resumed`, read on every chat turn:
built once and run with bound parameters, so SQLAlchemy reuses their cache keys and compiled forms."""

_TAKEN_FROM = select(
    exists().where(
        Handoff.conversation_id == Message.conversation_id,
        Handoff.status.in_(HandoffStatus.ACTIVE),
        Handoff.trigger_message_id.is_distinct_from(Message.id),
    )
).where(Message.id == bindparam("message_id"))


async def taken_from(session: AsyncSession, message_id: uuid.UUID) -> bool:
    """Whether the conversation of client message ``message_id`` has an open or claimed handoff that this message
    did not open: the coach took the conversation, or a later message's crisis protocol gave it to the coach. For
    a message the AI answers (its turn found no handoff), this tells the channel that the answer in progress is no
    longer to show (its reply will not be stored). A plain read, locking nothing; ``False`` for a message gone."""
    return bool(await session.scalar(_TAKEN_FROM, {"message_id": message_id}))


COACH_PRESENT_WINDOW = timedelta(minutes=15)
"""How long the coach counts as present in a conversation after they took it over or wrote in it (the default
``handoff_sla_minutes``): meanwhile no message to the client says the coach is away (:func:`coach_away_until`)."""


async def coach_away_until(
    session: AsyncSession, coach: Coach, conversation_id: uuid.UUID, at: datetime, language: str
) -> str | None:
    """When the coach is back, for a message to the client of ``conversation_id`` at ``at`` (the crisis reply and
    acknowledgement, the handoff notice, the holding message): :func:`app.accounts.availability.away_until` in
    ``language`` when ``at`` is outside the coach's hours, else ``None``; ``None`` too while the coach is in the
    conversation, outside their hours or not: they took it over (``claimed_at`` of its claimed handoff) or wrote in
    it within :data:`COACH_PRESENT_WINDOW` before ``at``. Reads the database only outside the coach's hours."""
    back = away_until(coach.availability, at, language)
    if back is None:
        return None
    since = at - COACH_PRESENT_WINDOW
    wrote = exists().where(
        Message.conversation_id == conversation_id,
        Message.sender_type == SenderType.HUMAN_COACH,
        Message.created_at > since,
    )
    took = exists().where(
        Handoff.conversation_id == conversation_id,
        Handoff.status == HandoffStatus.CLAIMED,
        Handoff.claimed_at > since,
    )
    return None if await session.scalar(select(or_(wrote, took))) else back


class HandoffService:
    """What the chat turn asks of handoffs (the active one, opening and announcing one, the client's notice,
    the first reply after a handback) and the live events the coach's actions share. Methods that take a
    ``session`` run inside the caller's tenant transaction."""

    def __init__(self, memory: MemoryControls, live: LiveEvents) -> None:
        self._memory = memory
        self._live = live
        self.client_sinks: list[ClientSink] = []
        """Channel adapters that deliver client events outside the widget (added by the web app and worker)."""

    async def _to_client(self, coach_id: uuid.UUID, client_id: uuid.UUID, event: dict[str, Any]) -> None:
        """Publish ``event`` on the client's live channel and hand it to every :attr:`client_sinks`."""
        await self._live.publish(event, client_id=client_id)
        for sink in self.client_sinks:
            try:
                await sink(coach_id, client_id, event)
            except Exception:  # a channel's failure never fails the coach's committed change
                log.exception("a channel could not take a live %s event", event.get("type"))

    async def active_for(self, session: AsyncSession, conversation_id: uuid.UUID) -> Handoff | None:
        """The conversation's open or claimed handoff, locked for this transaction, or ``None``."""
        active: Handoff | None = await session.scalar(_ACTIVE, {"conversation_id": conversation_id})
        return active

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
        now = datetime.now(UTC)
        brief = await self._brief(session, coach.id, conversation, reason, detail)
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
            jobs.deliver_alert(session, coach.id, handoff.id, reason=reason)
        return handoff

    async def escalate_to_crisis(
        self,
        session: AsyncSession,
        coach: Coach,
        conversation: Conversation,
        handoff: Handoff,
        *,
        detail: str,
        confidence: float,
        message_id: uuid.UUID,
    ) -> None:
        """A crisis message (``message_id``) inside the already active ``handoff`` (open or claimed, of any reason)
        makes it a crisis handoff, as if the crisis had opened it: its reason, ``detail`` (the crisis cues) and
        ``confidence`` become the crisis's, and its brief is written again as :meth:`open` writes it (why: the
        crisis; the client's latest messages, this one included), so the dashboard, the API and the alerts no
        longer show the reason it opened for. The webhook / e-mail alert of the message is queued (in the caller's
        transaction): urgent, and once per message however often its job is retried."""
        handoff.reason, handoff.detail, handoff.confidence = HandoffReason.CRISIS, detail, confidence
        handoff.brief = await self._brief(
            session, coach.id, conversation, HandoffReason.CRISIS, detail, opened_at=handoff.created_at
        )
        if coach.alert_webhook_url or coach.alert_email:
            jobs.deliver_alert(
                session, coach.id, handoff.id, event=crisis_event(message_id), reason=HandoffReason.CRISIS
            )

    async def _brief(
        self,
        session: AsyncSession,
        coach_id: uuid.UUID,
        conversation: Conversation,
        reason: str,
        detail: str,
        *,
        opened_at: datetime | None = None,
    ) -> str:
        """The handoff's brief (:func:`app.handoff.brief.handoff_brief`; ``opened_at`` as there), or only its why
        line when memory cannot be read: the brief is a courtesy, a failure must not cost the client their reply."""
        try:
            async with session.begin_nested():
                return await handoff_brief(session, self._memory, coach_id, conversation, reason, detail, opened_at)
        except Exception:
            log.exception("could not build the handoff brief for conversation %s", conversation.id)
            return why_line(reason, detail)

    async def rebuild_briefs(self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID) -> int:
        """Job body (``rebuild_briefs``): write again, from the client's memory now, the brief of each of the
        client's active handoffs, each locked with its conversation first (the order of the turn's locks), and take
        out of each closed handoff's brief the lines memory no longer holds (:func:`brief_without_forgotten`);
        returns how many active ones. Queued by a forget, whose insight, summary or messages the old briefs may
        quote."""
        conversations = (
            await session.scalars(
                select(Conversation)
                .join(Handoff, Handoff.conversation_id == Conversation.id)
                .where(Handoff.client_id == client_id, Handoff.status.in_(HandoffStatus.ACTIVE))
                .order_by(Conversation.id)
                .with_for_update(of=Conversation, key_share=True)
            )
        ).all()
        for conversation in conversations:
            handoff = await self.active_for(session, conversation.id)
            if handoff is not None:
                handoff.brief = await handoff_brief(
                    session, self._memory, coach_id, conversation, handoff.reason, handoff.detail, handoff.created_at
                )
        closed = await session.execute(
            select(Handoff, Conversation)
            .join(Conversation, Handoff.conversation_id == Conversation.id)
            .where(Handoff.client_id == client_id, Handoff.status == HandoffStatus.CLOSED)
        )
        for handoff, conversation in closed:
            handoff.brief = await brief_without_forgotten(session, self._memory, coach_id, conversation, handoff.brief)
        return len(conversations)

    async def announce(self, coach: Coach, handoff: Handoff, client_name: str, message: Message) -> None:
        """After commit: show the handoff in the coach's live queue and, when it is (now) a crisis, raise the
        crisis alert there: the ``alert`` event of :func:`alert_event` for the client's ``message`` that
        opened the handoff or, inside a handoff already open or claimed, made it a crisis (the webhook /
        e-mail alert was queued by :meth:`open` or :meth:`escalate_to_crisis`). The chat turn calls it once per
        message that opened or escalated a handoff, never for the messages that only reach the coach."""
        await self._live.publish(
            handoff_event(handoff, client_name, sla_minutes=coach.handoff_sla_minutes), coach_id=coach.id
        )
        if handoff.reason == HandoffReason.CRISIS:
            await self._live.publish(alert_event(handoff, client_name, message), coach_id=coach.id)

    async def notice(self, session: AsyncSession, coach: Coach, handoff: Handoff, at: datetime, language: str) -> str:
        """What the client reads when the conversation is handed to the coach at ``at`` (not for crises, which get
        the crisis reply), in ``language`` (:func:`app.handoff.catalogue.handoff_notice`; when the coach is back,
        :func:`coach_away_until`: not while they are in the conversation)."""
        return handoff_notice(
            coach.name,
            language,
            requested=handoff.reason == HandoffReason.HUMAN_REQUEST,
            sla_minutes=coach.handoff_sla_minutes,
            back=await coach_away_until(session, coach, handoff.conversation_id, at, language),
        )

    async def crisis_acknowledgement_due(self, session: AsyncSession, handoff: Handoff, at: datetime) -> str | None:
        """The language of the crisis reply (``en`` when it recorded none) when the client's message at ``at``
        gets the crisis acknowledgement (:func:`app.handoff.crisis.crisis_acknowledgement`), else ``None``: the
        active ``handoff`` is a crisis one, with a crisis reply since it opened, no message of the coach since
        that reply, and no acknowledgement within :data:`~app.handoff.crisis.CRISIS_ACK_INTERVAL` before ``at``."""
        if handoff.reason != HandoffReason.CRISIS:
            return None
        conversation = Message.conversation_id == handoff.conversation_id
        crisis = (
            await session.execute(
                select(Message.created_at, Message.meta["risk"]["language"].astext)
                .where(
                    conversation,
                    Message.sender_type == SenderType.AI,
                    Message.meta.contains({"crisis": True}),
                    Message.created_at >= handoff.created_at,
                )
                .order_by(Message.created_at.desc())
                .limit(1)
            )
        ).one_or_none()
        if crisis is None:
            return None
        coach_replied = and_(Message.sender_type == SenderType.HUMAN_COACH, Message.created_at > crisis[0])
        acknowledged = and_(
            Message.sender_type == SenderType.AI,
            Message.meta.contains({"notice": CRISIS_NOTICE}),
            Message.created_at > at - CRISIS_ACK_INTERVAL,
        )
        if await session.scalar(select(Message.id).where(conversation, or_(coach_replied, acknowledged)).limit(1)):
            return None
        return crisis[1] or "en"

    async def supersede_drafts(self, session: AsyncSession, conversation_id: uuid.UUID) -> str | None:
        """Discard the conversation's pending drafts (in the caller's transaction): the coach answered the
        client by hand, or the crisis protocol answered, so approving one later would send an out-of-date AI
        reply after it. Returns the newest one's text (``None``: there was none)."""
        now = datetime.now(UTC)
        rows = await session.execute(
            update(Draft)
            .where(Draft.conversation_id == conversation_id, Draft.status == DraftStatus.PENDING)
            .values(status=DraftStatus.DISCARDED, decided_at=now)
            .returning(Draft.text, Draft.created_at)
            .execution_options(synchronize_session=False)
        )
        newest = max(rows.all(), key=lambda row: row.created_at, default=None)
        return None if newest is None else newest.text

    async def active_and_resumed(
        self, session: AsyncSession, conversation_id: uuid.UUID
    ) -> tuple[Handoff | None, Handoff | None]:
        """In one statement, the conversation's open or claimed handoff (as :meth:`active_for`) and its latest
        handback whose first AI reply has not been written yet (that reply records ``is_handback`` and sets
        ``resumed_message_id``), each ``None`` when there is none; both locked for this transaction."""
        rows = (await session.scalars(_ACTIVE_OR_UNRESUMED, {"conversation_id": conversation_id})).all()
        active = next((h for h in rows if h.status in HandoffStatus.ACTIVE), None)
        handbacks = [h for h in rows if h.status == HandoffStatus.CLOSED]
        return active, max(handbacks, key=lambda h: h.closed_at or h.created_at, default=None)

    async def publish_message(
        self, coach_id: uuid.UUID, client_id: uuid.UUID, message: Message, *, to_client: bool = True
    ) -> None:
        """Send a new message live to the coach's dashboard and to the client's live channel, with only
        ``client_view`` of its metadata: every open widget tab of the client shows it (the client's own messages and
        the replies to them too; a tab shows each message once, by id). Unless ``to_client`` is false (the client's
        own turn delivers it on its channel: their own message, a reply streamed to them), the other channels'
        :attr:`client_sinks` (a Telegram chat continuing the conversation) get it too."""
        await self._live.publish(message_event(message), coach_id=coach_id)
        event = message_event(message, client_view=client_view(message.meta))
        if to_client:
            await self._to_client(coach_id, client_id, event)
        else:
            await self._live.publish(event, client_id=client_id)

    async def publish_change(self, coach: Coach, handoff: Handoff, client: Client, client_event: str) -> None:
        """A takeover or handback: the coach's queue gets the handoff, the client's widget ``client_event``."""
        await self._live.publish(
            handoff_event(handoff, client.name, sla_minutes=coach.handoff_sla_minutes), coach_id=coach.id
        )
        await self._to_client(
            coach.id,
            client.id,
            {"type": client_event, "conversation_id": str(handoff.conversation_id), "coach_name": coach.name},
        )

    async def publish_draft_discarded(self, coach: Coach, client_id: uuid.UUID, draft: Draft) -> None:
        """The coach discarded a draft: the client's widget stops saying the coach reviews a reply, and a Telegram
        chat is told no reply is coming (``{"type": "draft_discarded", "conversation_id", "coach_name"}``)."""
        event = {"type": "draft_discarded", "conversation_id": str(draft.conversation_id), "coach_name": coach.name}
        await self._to_client(coach.id, client_id, event)

    async def announce_draft(self, coach_id: uuid.UUID, draft: Draft, client_name: str) -> None:
        """Show a new draft in the coach's live queue."""
        await self._live.publish({"type": "draft", "draft": draft_dict(draft, client_name)}, coach_id=coach_id)
