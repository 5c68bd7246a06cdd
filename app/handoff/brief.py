"""The handoff brief: a few lines for the coach about why the chat was handed over, who the client is
(profile, top insights, last session) and what they just wrote. Built from stored memory without a model
call, so it is instant and never invented."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversations.handoffs import Handoff, HandoffReason
from app.conversations.models import REMEMBERED, Conversation, Message, SenderType
from app.core.text import one_line
from app.handoff.crisis import crisis_reasons
from app.memory.controls import MemoryControls

BRIEF_INSIGHTS = 4
BRIEF_CLIENT_MESSAGES = 3
BRIEF_LINE_CHARS = 200


def why_line(reason: str, detail: str) -> str:
    """The brief's first line: ``Why: <reason label> (<detail>)`` (the whole brief when memory fails); a crisis
    handoff's cues are named as the detector's, ``(detector cues: kill myself, burden)``, not as words the
    client wrote (the brief quotes those on its "Client said" lines)."""
    cues = crisis_reasons(detail) if reason == HandoffReason.CRISIS else None
    if cues is not None:
        detail = "detector cues: " + ", ".join(r.cue for r in cues) if cues else "the learned detector"
    return f"Why: {HandoffReason.LABELS.get(reason, reason)}" + (f" ({detail})" if detail else "")


async def handoff_brief(
    session: AsyncSession,
    memory: MemoryControls,
    coach_id: uuid.UUID,
    conversation: Conversation,
    reason: str,
    detail: str,
    opened_at: datetime | None = None,
) -> str:
    """The brief as newline-separated lines: why, the profile's what works / handle with care / tone, the
    ``BRIEF_INSIGHTS`` top active insights, the last session's summary, the client's last
    ``BRIEF_CLIENT_MESSAGES`` messages not forgotten and the count of earlier handoffs (``opened_at``: when the
    brief's own handoff opened, for a brief written again: the handoffs opened before it). Raises ``NotFound``
    for another coach's client."""
    digest = await memory.digest(session, coach_id, conversation.client_id, insights=BRIEF_INSIGHTS)
    lines = [why_line(reason, detail)]
    profile = digest.profile
    if profile is not None:
        if profile.what_works:
            lines.append("What works: " + one_line("; ".join(profile.what_works), BRIEF_LINE_CHARS))
        if profile.sensitive_topics:
            lines.append("Handle with care: " + one_line("; ".join(profile.sensitive_topics), BRIEF_LINE_CHARS))
        if profile.tone:
            lines.append("Tone: " + one_line(profile.tone, BRIEF_LINE_CHARS))
    lines.extend(f"{i.kind.capitalize()}: {one_line(i.text, BRIEF_LINE_CHARS)}" for i in digest.insights)
    if digest.last_summary:
        lines.append("Last session: " + one_line(str(digest.last_summary.get("summary", "")), BRIEF_LINE_CHARS))
    recent = (
        await session.scalars(
            select(Message.text)
            .where(
                Message.conversation_id == conversation.id,
                Message.sender_type == SenderType.CLIENT,
                REMEMBERED,
            )
            .order_by(Message.created_at.desc())
            .limit(BRIEF_CLIENT_MESSAGES)
        )
    ).all()
    lines.extend(f"Client said: “{one_line(t, BRIEF_LINE_CHARS)}”" for t in reversed(recent))
    earlier = select(func.count(Handoff.id)).where(Handoff.client_id == conversation.client_id)
    count = await session.scalar(earlier if opened_at is None else earlier.where(Handoff.created_at < opened_at))
    if count:
        lines.append(f"Earlier handoffs with this client: {count}")
    return "\n".join(lines)
