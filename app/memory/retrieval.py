"""Recall over everything remembered about a client — episodes (single messages, :mod:`app.memory.episodes`),
L2 session summaries and L3 insights in one ranked list — and the L4 profile as prompt lines.

Ranking (hybrid retrieval with Reciprocal Rank Fusion, Cormack, Clarke & Büttcher, SIGIR 2009)::

    dense arm    every candidate (episodes, insights, summaries) by cosine(query, item)
    lexical arm  episodes by BM25 of the query's words (:func:`app.memory.episodes.episode_arms`)
    fused        Σ_arm weight_arm / (RRF_K + rank_arm)             (an arm that missed the item adds 0)
    score        fused × recency_weight(age_days)
    recency      1 − RECENCY_SHARE + RECENCY_SHARE × 2^(−age_days / HALF_LIFE_DAYS)

Age is since the message (episodes), the insight's last mention, or the session's end. The weights and the
recency share were fitted on the dev part of LoCoMo only (see :mod:`app.evals.memory`). A fact is not shown
twice (:func:`without_repeats`): an insight or summary cites its source messages and stands for them, so
those messages are not shown on their own, and the same text (case and whitespace aside) is shown once.
Dropped and deleted insights, summaries of the session in progress, forgotten messages, the product's canned text
(notices, the crisis reply: :data:`app.memory.episodes.CANNED`) and the L1 window (``exclude_message_ids``) are never
recalled.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.availability import coach_zone
from app.accounts.models import Coach
from app.conversations.models import SenderType
from app.db.vectors import query_distance
from app.memory.episodes import EpisodeHit, episode_arms
from app.memory.models import ChatSession, ClientProfile, Insight, InsightStatus, SessionStatus
from app.rag.retrieval import rrf_fuse

HALF_LIFE_DAYS = 30.0
RECENCY_SHARE = 0.05
"""Share of an item's score that recency can take away (0: no recency prior). Fitted on LoCoMo's dev part,
where questions reach back months: 0.5 cost 0.17 of recall@10 there, 0.05 costs 0.007 and still orders
otherwise equal items newest first."""
RRF_K = 20
DENSE_WEIGHT = 1.0
LEXICAL_WEIGHT = 5.0
"""Fitted on LoCoMo's dev part (grid: lexical weight 1–1000, RRF_K 5/20/60, recency share 0–0.5): the
lexical arm carries names, places and dates that the small offline embedder blurs; the dense arm adds
paraphrases."""
CANDIDATES = 50
"""Candidates fetched per layer and arm before fusion."""
MEMORY_ITEMS = 10
"""Recalled items offered to the prompt (the token budget may cut more)."""
SENDER_LABELS = {SenderType.CLIENT: "client", SenderType.AI: "you", SenderType.HUMAN_COACH: "coach"}


def recency_weight(age_days: float, share: float = RECENCY_SHARE) -> float:
    """1 − share + share × 2^(−age/30 days): 1.0 now, 1 − share/2 after 30 days, → 1 − share. A negative
    age (clock skew) counts as now."""
    return 1.0 - share + share * 2 ** (-max(age_days, 0.0) / HALF_LIFE_DAYS)


@dataclass(frozen=True)
class MemoryItem:
    """A recalled item: ``layer`` is ``message`` (an episode: ``id`` is the message id), ``insight`` or
    ``summary``; ``label`` carries the item's date (``YYYY-MM-DD``) — ``client, <day>`` / ``you, <day>`` /
    ``coach, <day>`` for a message, ``<kind>[, <status>], <first mention>`` for an insight (of the fact as it
    reads now: an update to a changed fact moves it), ``session of <start>`` for a summary; ``score`` is the
    fused score (module docstring), ``relevance`` the cosine similarity (−1..1) to the query;
    ``source_message_ids`` the messages it is grounded in; ``age_days`` its age when recalled."""

    layer: str
    id: uuid.UUID
    label: str
    text: str
    score: float
    relevance: float
    source_message_ids: tuple[uuid.UUID, ...]
    age_days: float = 0.0

    def line(self) -> str:
        """The item as one prompt line."""
        return f"- [{self.label}] {self.text}"


@dataclass(frozen=True)
class MemoryContext:
    """What memory contributes to one prompt: L4 profile lines and recalled L2/L3 items, best first."""

    profile_lines: list[str] = field(default_factory=list)
    items: list[MemoryItem] = field(default_factory=list)
    today: str = ""
    """The day of the turn in the coach's time zone, ``"Sunday 2026-12-06"`` (the items' dates are in that zone
    too): what "last week" counts from. Empty: not stated."""


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


def _text_key(text: str) -> str:
    """``text`` as :func:`without_repeats` compares it: case and runs of whitespace ignored."""
    return " ".join(text.split()).casefold()


def without_repeats(items: Sequence[MemoryItem], limit: int) -> list[MemoryItem]:
    """The first ``limit`` of ``items`` (best first) without a message shown twice: an insight or summary
    stands for the messages it cites, so those messages are not shown on their own (one kept before it is
    replaced by it). Insights and summaries are all kept: they are different readings of a conversation.
    Nor is the same text shown twice (case and whitespace ignored: :func:`_text_key`): the same reply sent in
    many sessions, each an episode of its own, is shown once, by the best of them, and the other slots go to other
    memories; the ones left out are not attributed."""
    noted: set[uuid.UUID] = set()
    kept: list[tuple[str, MemoryItem]] = []
    for item in items:
        if len(kept) == limit:
            break
        if item.layer == "message" and item.id in noted:
            continue
        sources = set() if item.layer == "message" else set(item.source_message_ids)
        remaining = [(key, k) for key, k in kept if k.layer != "message" or k.id not in sources]
        key = _text_key(item.text)
        if any(shown == key for shown, _ in remaining):
            continue
        kept = [*remaining, (key, item)]
        noted |= sources
    return [item for _, item in kept]


def day_label(at: datetime, now: datetime) -> str:
    """``at``'s date (``YYYY-MM-DD``) in ``now``'s time zone: a message a client sent at 23:30 in Los Angeles is
    dated that day, not the next day of UTC."""
    return f"{at.astimezone(now.tzinfo):%Y-%m-%d}"


def _episode_item(hit: EpisodeHit, now: datetime, relevance: float) -> MemoryItem:
    """An episode as a recalled item (score 0 until fused); ``relevance`` 0.0 for one only the lexical arm found."""
    who = SENDER_LABELS.get(hit.sender_type, hit.sender_type)
    return MemoryItem(
        "message",
        hit.message_id,
        f"{who}, {day_label(hit.at, now)}",
        hit.text,
        0.0,
        relevance,
        (hit.message_id,),
        (now - hit.at).total_seconds() / 86400,
    )


_INSIGHT_DISTANCE = query_distance(Insight.embedding)
_INSIGHTS = (
    select(
        Insight.id,
        Insight.kind,
        Insight.status,
        Insight.text,
        Insight.source_message_ids,
        Insight.first_seen_at,
        Insight.last_seen_at,
        _INSIGHT_DISTANCE,
    )
    .where(
        Insight.coach_id == bindparam("coach_id"),
        Insight.client_id == bindparam("client_id"),
        Insight.status.in_((InsightStatus.ACTIVE, InsightStatus.ACHIEVED)),
        Insight.embedding_model == bindparam("model"),
    )
    .order_by(_INSIGHT_DISTANCE)
    .limit(CANDIDATES)
)
"""The client's insights nearest to the query. Built once and run with bound parameters (SQLAlchemy reuses its
cache key and compiled form), and only the columns recall shows: not the rows' vectors."""

_SUMMARY_DISTANCE = query_distance(ChatSession.embedding)
_SUMMARIES = (
    select(
        ChatSession.id,
        ChatSession.summary,
        ChatSession.source_message_ids,
        ChatSession.started_at,
        ChatSession.ended_at,
        ChatSession.last_message_at,
        _SUMMARY_DISTANCE,
    )
    .where(
        ChatSession.coach_id == bindparam("coach_id"),
        ChatSession.client_id == bindparam("client_id"),
        ChatSession.status == SessionStatus.SUMMARIZED,
        ChatSession.embedding_model == bindparam("model"),
        ChatSession.id.is_distinct_from(bindparam("exclude_session_id", type_=ChatSession.id.type)),
    )
    .order_by(_SUMMARY_DISTANCE)
    .limit(CANDIDATES)
)
"""The client's session summaries nearest to the query (the current session excluded; ``NULL``: none), built
as :data:`_INSIGHTS` is."""


async def _insight_items(
    session: AsyncSession,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    query_embedding: list[float],
    embedding_model: str,
    now: datetime,
) -> list[MemoryItem]:
    params = {"query": query_embedding, "coach_id": coach_id, "client_id": client_id, "model": embedding_model}
    items = []
    for row in (await session.execute(_INSIGHTS, params)).all():
        kind = row.kind if row.status == InsightStatus.ACTIVE else f"{row.kind}, {row.status}"
        age = (now - row.last_seen_at).total_seconds() / 86400
        label = f"{kind}, {day_label(row.first_seen_at, now)}"
        relevance = 1.0 - float(row[-1])
        items.append(MemoryItem("insight", row.id, label, row.text, 0.0, relevance, tuple(row.source_message_ids), age))
    return items


async def _summary_items(
    session: AsyncSession,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    query_embedding: list[float],
    embedding_model: str,
    now: datetime,
    exclude_session_id: uuid.UUID | None,
) -> list[MemoryItem]:
    params = {
        "query": query_embedding,
        "coach_id": coach_id,
        "client_id": client_id,
        "model": embedding_model,
        "exclude_session_id": exclude_session_id,
    }
    items = []
    for row in (await session.execute(_SUMMARIES, params)).all():
        age = (now - (row.ended_at or row.last_message_at)).total_seconds() / 86400
        items.append(
            MemoryItem(
                "summary",
                row.id,
                f"session of {day_label(row.started_at, now)}",
                summary_text(row.summary or {}),
                0.0,
                1.0 - float(row[-1]),
                tuple(row.source_message_ids),
                age,
            )
        )
    return items


async def recall(
    session: AsyncSession,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    *,
    query: str,
    query_embedding: list[float],
    embedding_model: str,
    now: datetime,
    limit: int,
    exclude_session_id: uuid.UUID | None = None,
    exclude_message_ids: Sequence[uuid.UUID] = (),
) -> list[MemoryItem]:
    """The ``limit`` best items (episodes, insights, summaries) of one client for the query, ranked and
    de-duplicated as the module docstring says. Exact cosine over the client's own rows (a client has
    thousands, not millions); only vectors of ``embedding_model`` are compared. Must run inside the coach's
    tenant transaction (row-level security scopes every read to the coach)."""
    arms = await episode_arms(
        session,
        coach_id,
        client_id,
        query,
        query_embedding,
        embedding_model=embedding_model,
        limit=CANDIDATES,
        exclude_message_ids=exclude_message_ids,
    )
    lexical = arms.lexical
    by_id = {hit.message_id: _episode_item(hit, now, hit.score) for hit in arms.dense}
    for hit in lexical:
        if hit.message_id not in by_id:
            by_id[hit.message_id] = _episode_item(hit, now, 0.0)
    for item in await _insight_items(session, coach_id, client_id, query_embedding, embedding_model, now):
        by_id[item.id] = item
    for item in await _summary_items(
        session, coach_id, client_id, query_embedding, embedding_model, now, exclude_session_id
    ):
        by_id[item.id] = item
    dense_ranking = sorted(
        (item for item in by_id.values() if item.layer != "message" or item.relevance != 0.0),
        key=lambda item: item.relevance,
        reverse=True,
    )
    fused = rrf_fuse(
        [[item.id for item in dense_ranking], [hit.message_id for hit in lexical]],
        [DENSE_WEIGHT, LEXICAL_WEIGHT],
        RRF_K,
    )
    scores = {
        item.id: fused.get(item.id, 0.0) * recency_weight(item.age_days, RECENCY_SHARE) for item in by_id.values()
    }
    ranked = sorted(by_id.values(), key=lambda item: scores[item.id], reverse=True)
    # the score is written only into the items kept (a dataclass copy each): about 100 candidates, 10 kept
    return [replace(item, score=scores[item.id]) for item in without_repeats(ranked, limit)]


_PROFILE = select(ClientProfile).where(ClientProfile.client_id == bindparam("client_id"))
"""Read on every chat turn: built once, run with a bound parameter (SQLAlchemy reuses its cache key)."""


async def context_for(
    session: AsyncSession,
    coach: Coach,
    client_id: uuid.UUID,
    *,
    query: str,
    query_embedding: list[float],
    embedding_model: str,
    exclude_session_id: uuid.UUID | None,
    exclude_message_ids: Sequence[uuid.UUID] = (),
    now: datetime | None = None,
) -> MemoryContext:
    """L4 profile lines and the ``MEMORY_ITEMS`` best recalled items for this turn (see :func:`recall`;
    ``exclude_message_ids`` is the turn's L1 window and its new message), dated in the coach's time zone
    (:func:`~app.accounts.availability.coach_zone`; ``now`` defaults to the present). Must run inside the coach's
    tenant transaction."""
    now = (now or datetime.now(UTC)).astimezone(coach_zone(coach.availability))
    profile = await session.scalar(_PROFILE, {"client_id": client_id})
    items = await recall(
        session,
        coach.id,
        client_id,
        query=query,
        query_embedding=query_embedding,
        embedding_model=embedding_model,
        now=now,
        limit=MEMORY_ITEMS,
        exclude_session_id=exclude_session_id,
        exclude_message_ids=exclude_message_ids,
    )
    return MemoryContext(profile_lines(profile), items, f"{now:%A %Y-%m-%d}")
