"""The SLA holding message: a client whose handoff is still open past the coach's SLA, or whose message waits
that long for the coach who took the conversation, gets a message saying when the coach will reply (and where
to turn if it is urgent), in the language of the handoff's notice (:func:`notice_language`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, or_, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.service import AccountService
from app.accounts.unit_of_work import unit_of_work
from app.conversations.handoffs import Handoff, HandoffReason, HandoffStatus
from app.conversations.models import Conversation, Message, SenderType
from app.handoff.catalogue import holding_message
from app.handoff.crisis import resources_for
from app.handoff.languages import tag_language, written_language
from app.handoff.normalise import normalise
from app.handoff.queue import HANDOFF_LOCK
from app.handoff.service import HandoffService, coach_away_until
from app.memory.messages import store_message

_STILL_OVERDUE = text("SELECT EXISTS (SELECT 1 FROM overdue_handoffs() WHERE handoff_id = :handoff_id)")
"""Whether the handoff is overdue (``overdue_handoffs()``, migrations 0048 and 0054), read again in the tenant's
transaction once its rows are locked."""

LANGUAGE_MESSAGES = 3
"""How many of the client's latest messages :func:`told_language` reads."""


class SlaNotices:
    """Sends the holding messages of overdue handoffs (the worker's cron)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], accounts: AccountService, handoffs: HandoffService
    ) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts
        self._handoffs = handoffs

    async def send_sla_notices(self) -> int:
        """Cron: send the client a holding message for every handoff past its coach's SLA: still open (once), or
        claimed with a client message written since the takeover (and since the last holding message) that waits
        for the coach's reply (the coach took the conversation and left it; the AI stays paused). The message
        (:func:`app.handoff.catalogue.holding_message`) says when the coach is back outside their hours, unless they
        are in the conversation (:func:`~app.handoff.service.coach_away_until`). Returns how many were sent. Each
        runs in its own tenant transaction and re-checks the handoff under its lock. A crisis handoff's message lists
        the coach's crisis lines for the client's language (:func:`app.handoff.crisis.resources_for`)."""
        async with self._sessionmaker() as session:
            overdue = (await session.execute(text("SELECT coach_id, handoff_id FROM overdue_handoffs()"))).all()
        sent = 0
        for coach_id, handoff_id in overdue:
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                session = uow.session
                # the conversation first (the lock order of HANDOFF_LOCK); gone meanwhile (deleted), nothing to do
                conversation = await session.scalar(
                    select(Conversation)
                    .join(Handoff, Handoff.conversation_id == Conversation.id)
                    .where(Handoff.id == handoff_id)
                    .with_for_update(of=Conversation, **HANDOFF_LOCK)
                )
                if conversation is None:
                    continue
                handoff = await session.get(Handoff, handoff_id, with_for_update=True)
                # overdue still, under the locks: not replied to, claimed or notified by another run meanwhile
                if handoff is None or not await session.scalar(_STILL_OVERDUE, {"handoff_id": handoff_id}):
                    continue
                coach = await uow.coach()
                now = datetime.now(UTC)
                language = await notice_language(session, handoff.conversation_id, handoff.id)
                # outside the coach's hours, unless they are in the conversation: when they are back
                back = await coach_away_until(session, coach, handoff.conversation_id, now, language)
                joined = handoff.status == HandoffStatus.CLAIMED
                # a crisis handoff's message lists the crisis lines again, those of the crisis reply
                lines = (
                    resources_for(language, coach.crisis_resources, coach.crisis_resources_by_language)
                    if handoff.reason == HandoffReason.CRISIS
                    else ()
                )
                message, _ = await store_message(
                    session,
                    coach,
                    handoff.conversation_id,
                    SenderType.AI,
                    holding_message(coach.name, language, joined=joined, back=back, resources=lines),
                    at=now,
                    meta={"notice": "sla", "handoff_id": str(handoff.id)},
                )
                handoff.sla_notified_at = now
                client_id = handoff.client_id
            await self._handoffs.publish_message(coach_id, client_id, message)
            sent += 1
        return sent


async def notice_language(
    session: AsyncSession, conversation_id: uuid.UUID, handoff_id: uuid.UUID | None = None
) -> str:
    """The language the client reads the conversation's handoffs in (the holding message, the widget's presence
    line, Telegram's joined/left lines): :func:`told_language`, ``en`` when the conversation does not tell one."""
    return await told_language(session, conversation_id, handoff_id) or "en"


async def told_language(
    session: AsyncSession, conversation_id: uuid.UUID, handoff_id: uuid.UUID | None = None
) -> str | None:
    """The language the conversation tells: that of its latest handoff notice (``metadata.language``) or crisis
    reply (``metadata.risk.language``), of handoff ``handoff_id`` when given, so a lone short ask ("¿humano?",
    answered in Spanish) is not followed by English; when there is none (the coach took the conversation unasked),
    the one the client writes in: :func:`app.handoff.languages.written_language` over their latest
    :data:`LANGUAGE_MESSAGES` messages together; when those are too few words ("hola", ``/human``), the language
    the client's app is set to, kept with their latest message that has one (``metadata.app_language``: the
    widget's page or browser, Telegram's ``language_code``). ``None`` when none tells (no message yet)."""
    said = await session.scalar(
        select(func.coalesce(Message.meta["language"].astext, Message.meta["risk"]["language"].astext))
        .where(
            Message.conversation_id == conversation_id,
            Message.sender_type == SenderType.AI,
            Message.meta.contains({"handoff_id": str(handoff_id)}) if handoff_id is not None else true(),
            or_(Message.meta.contains({"notice": "handoff"}), Message.meta.contains({"crisis": True})),
        )
        .order_by(Message.created_at.desc())
        .limit(1)
    )
    if said:
        return str(said)
    latest = (
        await session.execute(
            select(Message.text, Message.meta["app_language"].astext)
            .where(
                Message.conversation_id == conversation_id,
                Message.sender_type == SenderType.CLIENT,
                Message.forgotten_at.is_(None),
            )
            .order_by(Message.created_at.desc())
            .limit(LANGUAGE_MESSAGES)
        )
    ).all()
    written = written_language(normalise(" ".join(text for text, _ in latest)))
    return written or next((tagged for _, app in latest if (tagged := tag_language(app))), None)
