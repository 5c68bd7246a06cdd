"""Recall of L2 session summaries and L3 insights for a query, and the L4 profile as prompt lines.

Score of a memory item (one formula for both layers, in the spirit of Generative Agents' retrieval
function — Park et al., UIST 2023 — but multiplicative, so an irrelevant item never wins on importance or
recency alone)::

    score = relevance × importance_weight × recency_weight
    relevance         = max(0, cosine(query, item))
    importance_weight = (1 + importance) / 11                   importance 0–10; summaries count as 6
    recency_weight    = 0.5 + 0.5 × 2^(−age_days / 30)          age since last seen (insights) or session end

Recency halves the *extra* weight every 30 days and never drops below half, so a months-old goal still
comes back when it is relevant. Dropped and deleted insights are never recalled; summaries of the session
in progress are not either (its turns are in L1).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Coach
from app.memory.models import ChatSession, ClientProfile, Insight, InsightStatus, SessionStatus

HALF_LIFE_DAYS = 30.0
SUMMARY_IMPORTANCE = 6
CANDIDATES = 50
"""Nearest neighbours per layer fetched by cosine before the full score re-ranks them."""
MEMORY_ITEMS = 8
"""Recalled L2/L3 items offered to the prompt (the token budget may cut more)."""


def importance_weight(importance: int) -> float:
    """(1 + importance) / 11: 0.09 for trivia (0) up to 1.0 (10)."""
    return (1 + importance) / 11


def recency_weight(age_days: float) -> float:
    """0.5 + 0.5 × 2^(−age/30 days): 1.0 now, 0.75 after 30 days, → 0.5."""
    return 0.5 + 0.5 * 2 ** (-max(age_days, 0.0) / HALF_LIFE_DAYS)


def memory_score(relevance: float, importance: int, age_days: float) -> float:
    """The recall score above."""
    return max(relevance, 0.0) * importance_weight(importance) * recency_weight(age_days)


@dataclass(frozen=True)
class MemoryItem:
    """A recalled item: ``layer`` is ``insight`` or ``summary``; ``label`` is the insight kind (with its
    status when not active) or the session date; ``source_message_ids`` the messages it is grounded in."""

    layer: str
    id: uuid.UUID
    label: str
    text: str
    score: float
    relevance: float
    source_message_ids: tuple[uuid.UUID, ...]

    def line(self) -> str:
        """The item as one prompt line."""
        return f"- [{self.label}] {self.text}"


@dataclass(frozen=True)
class MemoryContext:
    """What memory contributes to one prompt: L4 profile lines and recalled L2/L3 items, best first."""

    profile_lines: list[str] = field(default_factory=list)
    items: list[MemoryItem] = field(default_factory=list)


def summary_text(summary: dict[str, Any]) -> str:
    """A stored summary as prompt text: the summary, then its action items."""
    text = str(summary.get("summary", ""))
    actions = summary.get("action_items") or []
    return f"{text} Action items: {'; '.join(actions)}." if actions else text


def profile_lines(profile: ClientProfile | None) -> list[str]:
    """Non-empty profile fields as ``Label: a; b`` lines."""
    if profile is None:
        return []
    fields = [
        ("Communication preferences", profile.communication_preferences),
        ("What works", profile.what_works),
        ("What does not work", profile.what_doesnt_work),
        ("Tone", [profile.tone] if profile.tone else []),
        ("Handle with care", profile.sensitive_topics),
    ]
    return [f"{label}: {'; '.join(values)}" for label, values in fields if values]


async def recall(
    session: AsyncSession,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    *,
    query_embedding: list[float],
    embedding_model: str,
    now: datetime,
    limit: int,
    exclude_session_id: uuid.UUID | None = None,
) -> list[MemoryItem]:
    """The ``limit`` best insights and summaries of one client for the query, by :func:`memory_score`.

    Exact cosine over the client's own items (a client has hundreds, not millions); only vectors of
    ``embedding_model`` are compared. Must run inside a tenant transaction.
    """
    items: list[MemoryItem] = []
    insight_distance = Insight.embedding.cosine_distance(query_embedding)
    insights = await session.execute(
        select(Insight, insight_distance)
        .where(
            Insight.coach_id == coach_id,
            Insight.client_id == client_id,
            Insight.status.in_((InsightStatus.ACTIVE, InsightStatus.ACHIEVED)),
            Insight.embedding_model == embedding_model,
        )
        .order_by(insight_distance)
        .limit(CANDIDATES)
    )
    for insight, distance in insights.all():
        relevance = 1.0 - float(distance)
        age = (now - insight.last_seen_at).total_seconds() / 86400
        label = insight.kind if insight.status == InsightStatus.ACTIVE else f"{insight.kind}, {insight.status}"
        items.append(
            MemoryItem(
                "insight",
                insight.id,
                label,
                insight.text,
                memory_score(relevance, insight.importance, age),
                relevance,
                tuple(insight.source_message_ids),
            )
        )
    summary_distance = ChatSession.embedding.cosine_distance(query_embedding)
    stmt = (
        select(ChatSession, summary_distance)
        .where(
            ChatSession.coach_id == coach_id,
            ChatSession.client_id == client_id,
            ChatSession.status == SessionStatus.SUMMARIZED,
            ChatSession.embedding_model == embedding_model,
        )
        .order_by(summary_distance)
        .limit(CANDIDATES)
    )
    if exclude_session_id is not None:
        stmt = stmt.where(ChatSession.id != exclude_session_id)
    for chat_session, distance in (await session.execute(stmt)).all():
        relevance = 1.0 - float(distance)
        ended = chat_session.ended_at or chat_session.last_message_at
        age = (now - ended).total_seconds() / 86400
        items.append(
            MemoryItem(
                "summary",
                chat_session.id,
                f"session of {chat_session.started_at:%Y-%m-%d}",
                summary_text(chat_session.summary or {}),
                memory_score(relevance, SUMMARY_IMPORTANCE, age),
                relevance,
                tuple(chat_session.source_message_ids),
            )
        )
    items.sort(key=lambda item: item.score, reverse=True)
    return items[:limit]


async def context_for(
    session: AsyncSession,
    coach: Coach,
    client_id: uuid.UUID,
    *,
    query_embedding: list[float],
    embedding_model: str,
    exclude_session_id: uuid.UUID | None,
    now: datetime | None = None,
) -> MemoryContext:
    """L4 profile lines and the ``MEMORY_ITEMS`` best L2/L3 items for this turn (see :func:`recall` for the
    score). Must run inside the coach's tenant transaction."""
    profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
    items = await recall(
        session,
        coach.id,
        client_id,
        query_embedding=query_embedding,
        embedding_model=embedding_model,
        now=now or datetime.now(UTC),
        limit=MEMORY_ITEMS,
        exclude_session_id=exclude_session_id,
    )
    return MemoryContext(profile_lines(profile), items)
