"""The handoff brief: a few lines for the coach about why the chat was handed over, who the client is
(profile, top insights, last session) and what they just wrote. Built from stored memory without a model
call, so it is instant and never invented."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversations.handoffs import Handoff, HandoffReason
from app.conversations.models import REMEMBERED, Conversation, Message, SenderType
from app.core.text import one_line
from app.handoff.crisis import crisis_reasons
from app.memory.controls import MemoryControls
from app.memory.models import ChatSession, ClientProfile, Insight, InsightStatus

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
    lines = [why_line(reason, detail), *_profile_lines(digest.profile)]
    lines.extend(_insight_line(insight.kind, insight.text) for insight in digest.insights)
    if digest.last_summary:
        lines.append(_summary_line(digest.last_summary))
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
    lines.extend(_said_line(text) for text in reversed(recent))
    earlier = select(func.count(Handoff.id)).where(Handoff.client_id == conversation.client_id)
    count = await session.scalar(earlier if opened_at is None else earlier.where(Handoff.created_at < opened_at))
    if count:
        lines.append(f"{_EARLIER_HANDOFFS}{count}")
    return "\n".join(lines)


async def brief_without_forgotten(
    session: AsyncSession, memory: MemoryControls, coach_id: uuid.UUID, conversation: Conversation, brief: str
) -> str:
    """A closed handoff's ``brief`` as it was written, less every line the client's memory could no longer write:
    a deleted insight's, a deleted summary's, a forgotten message's, a profile line since removed. The history of
    a closed handoff is not rewritten from today's memory (that would show what was learnt after it), but no copy
    of what the client had forgotten stays in it. The first line (why) and the count of earlier handoffs stay.
    Raises ``NotFound`` for another coach's client."""
    held = await _lines_held(session, memory, coach_id, conversation)
    lines = brief.splitlines()
    kept = lines[:1] + [line for line in lines[1:] if line in held or line.startswith(_EARLIER_HANDOFFS)]
    return "\n".join(kept)


async def _lines_held(
    session: AsyncSession, memory: MemoryControls, coach_id: uuid.UUID, conversation: Conversation
) -> set[str]:
    """Every brief line the client's memory holds now, whichever a brief picked: the profile's, each insight's
    (deleted ones excepted), each summary's and each remembered message the client wrote in ``conversation``."""
    profile = (await memory.digest(session, coach_id, conversation.client_id, insights=0)).profile
    insights = await session.execute(
        select(Insight.kind, Insight.text).where(
            Insight.client_id == conversation.client_id, Insight.status.in_(InsightStatus.VISIBLE)
        )
    )
    summaries = await session.scalars(
        select(ChatSession.summary).where(
            ChatSession.client_id == conversation.client_id, ChatSession.summary.is_not(None)
        )
    )
    said = await session.scalars(
        select(Message.text).where(
            Message.conversation_id == conversation.id, Message.sender_type == SenderType.CLIENT, REMEMBERED
        )
    )
    return {
        *_profile_lines(profile),
        *(_insight_line(kind, text) for kind, text in insights),
        *(_summary_line(summary) for summary in summaries if summary),
        *(_said_line(text) for text in said),
    }


_EARLIER_HANDOFFS = "Earlier handoffs with this client: "


def _profile_lines(profile: ClientProfile | None) -> list[str]:
    """The brief's lines from the L4 profile: what works, what to handle with care, the tone."""
    if profile is None:
        return []
    lines = []
    if profile.what_works:
        lines.append("What works: " + one_line("; ".join(profile.what_works), BRIEF_LINE_CHARS))
    if profile.sensitive_topics:
        lines.append("Handle with care: " + one_line("; ".join(profile.sensitive_topics), BRIEF_LINE_CHARS))
    if profile.tone:
        lines.append("Tone: " + one_line(profile.tone, BRIEF_LINE_CHARS))
    return lines


def _insight_line(kind: str, text: str) -> str:
    return f"{kind.capitalize()}: {one_line(text, BRIEF_LINE_CHARS)}"


def _summary_line(summary: dict[str, Any]) -> str:
    return "Last session: " + one_line(str(summary.get("summary", "")), BRIEF_LINE_CHARS)


def _said_line(text: str) -> str:
    return f"Client said: “{one_line(text, BRIEF_LINE_CHARS)}”"
