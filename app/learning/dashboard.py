"""The learning dashboard's figures for one coach (the page ``/dashboard/learning`` and
``GET /api/v1/learning/dashboard`` show the same dictionary).

- **Approval rate**: thumbs-up / rated AI replies in the window, overall, per UTC day, per mode (``auto``:
  sent at once; ``draft``: approved by the coach before sending) and per topic. A reply's *topic* is the title
  of the coach's document it cited first (``no material`` when it cited none): it says which part of the
  coach's material the clients are (un)happy with. The coach's own preview chat ("Preview (you)") counts in no
  figure of this page (:func:`~app.conversations.models.outside_preview`): the coach trying the clone is no
  client.
- **Health** of the approval rate: ``excellent`` ≥ 85 %, ``good`` 75–85 %, ``needs_improvement`` below.
- **Failure patterns**: the thumbs-down replies grouped by what the client had asked — the client messages
  are embedded with the coach's embedder and clustered by average-linkage agglomerative clustering on cosine
  distance (scikit-learn) with :data:`CLUSTER_DISTANCE` as the cut; each cluster is labelled by its YAKE key
  phrases, largest first. The result is kept in Redis under a hash of its inputs for
  :data:`PATTERNS_CACHE_TTL_S`, so the page only embeds again when a thumbs-down came in or changed.
- **Handoffs**: handoffs / client messages, per reason and per day.
- Training readiness and data, fine-tune jobs, model versions, the response cache's hit rate, experiments
  and interventions, from their services.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from redis.asyncio import Redis
from sklearn.cluster import AgglomerativeClustering
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from app.accounts.models import Coach
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork
from app.conversations import metadata_sql as meta_sql
from app.conversations.handoffs import Handoff, HandoffReason
from app.conversations.models import REMEMBERED, Message, SenderType, outside_preview
from app.core.errors import InvalidInput
from app.db.outbox import UNAVAILABLE
from app.learning.analysis import key_phrases
from app.learning.cache import ResponseCache
from app.learning.experiments import ExperimentService
from app.learning.finetune import FineTuneService, fine_tune_dict
from app.learning.interventions import shared_patterns
from app.learning.models import Intervention
from app.learning.training import TrainingDataService
from app.learning.versions import ModelVersionService, model_version_dict
from app.llm.base import ProviderError
from app.llm.registry import ProviderRegistry

log = logging.getLogger(__name__)

EXCELLENT, GOOD = 0.85, 0.75
"""Health thresholds of the approval rate."""
MAX_DAYS = 365
FAILURES_READ = 200
"""Most recent thumbs-down replies read for the failure patterns."""
CLUSTER_DISTANCE = 0.7
"""Average cosine distance at which clusters of complaints stop merging. Measured on all-MiniLM-L6-v2 with
the test's complaints: the same worry in other words 0.3–0.7, different worries (sleep vs. money) ≥ 0.8."""
PATTERNS_SHOWN = 5
PATTERNS_CACHE_TTL_S = 3600
FAILURE_PATTERNS_PREFIX = "opencoach:learning:failure-patterns"
"""Redis keys ``<prefix>:<coach id>:<digest>`` of cached failure patterns (they quote clients' messages)."""
NO_MATERIAL = "no material"


def health(rate: float | None) -> str | None:
    """``excellent`` (≥ 0.85), ``good`` (≥ 0.75), ``needs_improvement``; ``None`` when nothing was rated."""
    if rate is None:
        return None
    if rate >= EXCELLENT:
        return "excellent"
    return "good" if rate >= GOOD else "needs_improvement"


def _rate(up: int, rated: int) -> dict[str, Any]:
    return {"rated": rated, "thumbs_up": up, "rate": up / rated if rated else None}


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


def cluster_failures(texts: list[str], vectors: list[list[float]]) -> list[list[int]]:
    """Indices of ``texts`` grouped into clusters (largest first) by average-linkage agglomerative
    clustering on cosine distance, cut at :data:`CLUSTER_DISTANCE`. One text is one cluster."""
    if len(texts) < 2:
        return [list(range(len(texts)))] if texts else []
    labels = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=CLUSTER_DISTANCE
    ).fit_predict(np.asarray(vectors))
    groups: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[int(label)].append(index)
    return sorted(groups.values(), key=lambda group: (-len(group), group[0]))


class LearningDashboard:
    """Computes the learning dashboard for one coach."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        accounts: AccountService,
        training: TrainingDataService,
        fine_tunes: FineTuneService,
        versions: ModelVersionService,
        cache: ResponseCache,
        experiments: ExperimentService,
        registry: ProviderRegistry,
        redis: Redis,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts
        self._training = training
        self._fine_tunes = fine_tunes
        self._versions = versions
        self._cache = cache
        self._experiments = experiments
        self._registry = registry
        self._redis = redis

    async def figures(self, uow: UnitOfWork, *, days: int = 30) -> dict[str, Any]:
        """Every figure of the dashboard over the last ``days`` UTC days (today included), JSON-ready.
        Raises ``InvalidInput`` for ``days`` outside 1–365."""
        if not 1 <= days <= MAX_DAYS:
            raise InvalidInput(f"days must be a whole number from 1 to {MAX_DAYS}")
        today = datetime.now(UTC).date()
        since = today - timedelta(days=days - 1)
        start = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
        session, coach_id = uow.session, uow.coach_id
        coach = await uow.coach()
        approval = await self._approval(session, coach_id, start, _days(since, today))
        failures = await self._failure_rows(session, coach_id, start)
        handoffs = await self._handoffs(session, coach_id, start, _days(since, today))
        interventions = await self._interventions(session, coach_id)
        return {
            "days": days,
            "since": since.isoformat(),
            "approval": approval,
            "health": health(approval["overall"]["rate"]),
            "failure_patterns": await self._failure_patterns(coach, failures),
            "handoffs": handoffs,
            "training": await self._training.stats(uow),
            "readiness": (await self._fine_tunes.readiness(uow)).as_dict(),
            "fine_tunes": [fine_tune_dict(job) for job in await self._fine_tunes.list_jobs(uow)],
            "model_versions": [model_version_dict(v) for v in await self._versions.list_versions(uow)],
            "cache": (await self._cache.stats(coach_id, days=days)).as_dict(),
            "experiments": [results.as_dict() for results in await self._experiments.list_results(uow)],
            "interventions": interventions | {"style_profile": coach.style_profile},
        }

    async def _approval(
        self, session: AsyncSession, coach_id: uuid.UUID, start: datetime, days: list[date]
    ) -> dict[str, Any]:
        rows = (
            await session.execute(
                select(
                    Message.created_at,
                    meta_sql.mode(),
                    meta_sql.approved_by_coach(),
                    Message.citations,
                    meta_sql.approves(),
                ).where(
                    Message.coach_id == coach_id,
                    Message.sender_type == SenderType.AI,
                    Message.created_at >= start,
                    meta_sql.rated(),
                    meta_sql.ai_content(),
                    outside_preview(Message.conversation_id),
                )
            )
        ).all()
        overall: Counter[str] = Counter()
        per_day: dict[date, Counter[str]] = {day: Counter() for day in days}
        per_mode: dict[str, Counter[str]] = defaultdict(Counter)
        per_topic: dict[str, Counter[str]] = defaultdict(Counter)
        for created_at, mode, approved, citations, helpful in rows:
            mode = "draft" if approved else (mode or "auto")
            topic = str(citations[0].get("title") or NO_MATERIAL) if citations else NO_MATERIAL
            buckets: Iterable[Counter[str]] = (
                overall,
                per_day.setdefault(created_at.astimezone(UTC).date(), Counter()),
                per_mode[mode],
                per_topic[topic],
            )
            for bucket in buckets:
                bucket["rated"] += 1
                bucket["up"] += bool(helpful)
        return {
            "overall": _rate(overall["up"], overall["rated"]),
            "per_day": [{"day": day.isoformat(), **_rate(c["up"], c["rated"])} for day, c in sorted(per_day.items())],
            "per_mode": {mode: _rate(c["up"], c["rated"]) for mode, c in sorted(per_mode.items())},
            "per_topic": {
                topic: _rate(c["up"], c["rated"])
                for topic, c in sorted(per_topic.items(), key=lambda item: -item[1]["rated"])
            },
        }

    async def _failure_rows(
        self, session: AsyncSession, coach_id: uuid.UUID, start: datetime
    ) -> list[tuple[str, str, str | None]]:
        """``(client message, reply, client's comment)`` of the latest thumbs-down replies. A forgotten message
        (:data:`~app.conversations.models.REMEMBERED`) stays out, and so does the reply to a forgotten question
        (it answers it)."""
        asked = aliased(Message)
        latest_question = (
            select(asked.text)
            .where(
                asked.conversation_id == Message.conversation_id,
                asked.sender_type == SenderType.CLIENT,
                asked.created_at <= Message.created_at,
            )
            .order_by(asked.created_at.desc())
            .limit(1)
        )
        question = latest_question.scalar_subquery()
        question_forgotten_at = latest_question.with_only_columns(asked.forgotten_at).scalar_subquery()
        rows = await session.execute(
            select(question, Message.text, meta_sql.feedback_text())
            .where(
                Message.coach_id == coach_id,
                Message.sender_type == SenderType.AI,
                Message.created_at >= start,
                meta_sql.approves().is_(False),
                meta_sql.ai_content(),
                REMEMBERED,
                question_forgotten_at.is_(None),
                outside_preview(Message.conversation_id),
            )
            .order_by(Message.created_at.desc())
            .limit(FAILURES_READ)
        )
        return [(asked_text or "", reply, comment) for asked_text, reply, comment in rows.all()]

    async def _failure_patterns(
        self, coach: Coach, rows: list[tuple[str, str, str | None]]
    ) -> list[dict[str, Any]] | None:
        """The thumbs-down replies clustered (cached in Redis); ``None`` when the coach's embedder cannot be
        reached (the page says so; the rest of the dashboard still shows). Redis out of reach: not cached."""
        if not rows:
            return []
        texts = [" ".join(filter(None, (asked, comment))) or reply for asked, reply, comment in rows]
        embedder = await self._registry.embedder_for(coach)
        digest = hashlib.sha256(json.dumps([embedder.model, rows], ensure_ascii=False).encode()).hexdigest()
        key = f"{FAILURE_PATTERNS_PREFIX}:{coach.id}:{digest}"
        with contextlib.suppress(*UNAVAILABLE):
            if (cached := await self._redis.get(key)) is not None:
                stored: list[dict[str, Any]] = json.loads(cached)
                return stored
        try:
            vectors = await embedder.embed(texts)
        except ProviderError as exc:
            log.warning("failure patterns of coach %s not clustered, the embedder failed: %s", coach.id, exc)
            return None
        patterns = []
        for group in cluster_failures(texts, vectors)[:PATTERNS_SHOWN]:
            asked, reply, comment = rows[group[0]]
            patterns.append(
                {
                    "size": len(group),
                    "share": len(group) / len(rows),
                    "key_phrases": key_phrases(" ".join(texts[i] for i in group))[:3],
                    "example": {"client": asked, "reply": reply, "comment": comment},
                }
            )
        with contextlib.suppress(*UNAVAILABLE):
            await self._redis.set(key, json.dumps(patterns), ex=PATTERNS_CACHE_TTL_S)
        return patterns

    async def _handoffs(
        self, session: AsyncSession, coach_id: uuid.UUID, start: datetime, days: list[date]
    ) -> dict[str, Any]:
        client_messages = await session.scalar(
            select(func.count()).where(
                Message.coach_id == coach_id,
                Message.sender_type == SenderType.CLIENT,
                Message.created_at >= start,
                outside_preview(Message.conversation_id),
            )
        )
        rows = (
            await session.execute(
                select(Handoff.created_at, Handoff.reason).where(
                    Handoff.coach_id == coach_id,
                    Handoff.created_at >= start,
                    outside_preview(Handoff.conversation_id),
                )
            )
        ).all()
        reasons = Counter(reason for _, reason in rows)
        per_day = Counter(created_at.astimezone(UTC).date() for created_at, _ in rows)
        total = len(rows)
        return {
            "total": total,
            "client_messages": int(client_messages or 0),
            "rate": total / client_messages if client_messages else None,
            "reasons": [
                {"reason": reason, "label": HandoffReason.LABELS.get(reason, reason), "count": count}
                for reason, count in reasons.most_common()
            ],
            "per_day": [{"day": day.isoformat(), "handoffs": per_day.get(day, 0)} for day in days],
        }

    async def _interventions(self, session: AsyncSession, coach_id: uuid.UUID) -> dict[str, Any]:
        rows = (
            await session.execute(
                select(Intervention.source, Intervention.success, func.count())
                .where(Intervention.coach_id == coach_id, outside_preview(Intervention.conversation_id))
                .group_by(Intervention.source, Intervention.success)
            )
        ).all()
        by_source: Counter[str] = Counter()
        scored = succeeded = 0
        for source, success, count in rows:
            by_source[source] += count
            if success is not None:
                scored += count
                succeeded += count if success else 0
        return {
            "total": sum(by_source.values()),
            "by_source": dict(by_source),
            "success_rate": succeeded / scored if scored else None,
            "cross_coach_patterns": await shared_patterns(session),
        }
