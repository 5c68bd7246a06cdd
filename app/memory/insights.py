"""The L3 insight job: read a conversation's unread messages in windows, ask the model for typed insights
and reconcile each against the client's stored items (see :meth:`InsightService._plan`). One extraction of a
conversation runs at a time, under a short lease in Redis, and serves the requests made meanwhile when it ends
(:meth:`InsightService.extract_insights`); the conversation's watermark makes it idempotent."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.availability import coach_zone
from app.accounts.models import Client
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.conversations.models import REMEMBERED, Conversation, Message, SenderType
from app.core.config import Settings
from app.db.leases import leased
from app.llm.base import ChatProvider, Embedder
from app.llm.local import LOCAL_EMBEDDING_MODEL
from app.llm.registry import ProviderRegistry
from app.llm.schema import InvalidModelOutput, generate_structured
from app.memory.models import Insight, InsightStatus
from app.memory.prompts import (
    DECISION_INSTRUCTIONS,
    EXAMPLE_INSIGHTS,
    EXAMPLE_TRANSCRIPT,
    EXTRACT_INSTRUCTIONS,
    INSIGHT_ECHOES,
    echoes,
    few_shot_prompt,
    input_tokens,
)
from app.memory.schemas import ExtractedInsight, InsightExtraction, MatchDecision
from app.memory.transcript import format_messages, ground, windows

log = logging.getLogger(__name__)

INSIGHT_BATCH = 4
"""Client messages that trigger a mid-session extraction; a session's end extracts whatever is left."""
DUPLICATE_SIMILARITY = 0.88
"""Cosine at or above which an extracted insight is the same as a stored one (merged without asking)."""
RELATED_SIMILARITY = 0.7
"""From here up to ``DUPLICATE_SIMILARITY`` the model decides: same, updated, or different."""
TOMBSTONE_SIMILARITY = 0.85
"""An extracted insight this close to a deleted one is dropped: deleted memories do not come back."""
EXTRACT_MAX_TOKENS = 450
DECISION_MAX_TOKENS = 16
REQUEST_TTL_S = 24 * 3600
"""Seconds a request for a conversation's extraction that no job served (its last try failed) is kept for the
next job of the conversation."""


def _requests_key(conversation_id: uuid.UUID) -> str:
    """Where the conversation's pending extraction request lives in Redis: ``0``, or ``1`` when forced."""
    return f"opencoach:insights:{conversation_id}:requested"


def extraction_due(latest: Sequence[Message], watermark: datetime | None, *, reaches_watermark: bool) -> bool:
    """Whether :meth:`InsightService.extract_insights` (not forced) would extract now, judged from a
    conversation's ``latest`` messages (oldest first, the newest client message included) and its
    ``insights_extracted_through`` ``watermark``: ``True`` when they hold :data:`INSIGHT_BATCH` unread client
    messages (after the watermark, not forgotten), or when there may be more unread ones than they show
    (``reaches_watermark`` false: older messages after the watermark were not read). The turn queues the job
    only then; the job checks again."""
    unread = sum(
        message.sender_type == SenderType.CLIENT
        and message.forgotten_at is None
        and (watermark is None or message.created_at > watermark)
        for message in latest
    )
    return unread >= INSIGHT_BATCH or not reaches_watermark


@dataclass(frozen=True)
class _Planned:
    """What to do with one extracted insight: ``insert``, ``merge`` into or ``update`` ``target``, or ``skip``."""

    action: str
    extracted: ExtractedInsight
    embedding: list[float]
    sources: list[uuid.UUID]
    seen_at: datetime
    target: uuid.UUID | None = None
    offline_embedding: list[float] | None = None
    """The text's all-MiniLM-L6-v2 vector, for the tombstone check (:func:`_tombstone_near`)."""


def _tombstone_near(
    client_id: uuid.UUID, embedding_model: str, vector: list[float], offline_vector: list[float]
) -> Select[uuid.UUID]:
    """The client's deleted insights at least :data:`TOMBSTONE_SIMILARITY` (cosine) from an extracted one: by
    their offline-model vector (:attr:`Insight.tombstone_embedding`, ``offline_vector``), which a switch of the
    coach's embedder leaves comparable; a tombstone without one (deleted before migration 0041 under another
    model) by its own model's vector (``vector``, made by ``embedding_model``)."""
    within = 1.0 - TOMBSTONE_SIMILARITY
    return select(Insight.id).where(
        Insight.client_id == client_id,
        Insight.status == InsightStatus.DELETED,
        or_(
            Insight.tombstone_embedding.cosine_distance(offline_vector) <= within,
            and_(
                Insight.tombstone_embedding.is_(None),
                Insight.embedding_model == embedding_model,
                Insight.embedding.cosine_distance(vector) <= within,
            ),
        ),
    )


class InsightService:
    """Extracts L3 insights from a conversation (the ``extract_insights`` job)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        accounts: AccountService,
        redis: Redis,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._accounts = accounts
        self._redis = redis

    async def extract_insights(self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, force: bool) -> str:
        """Job: read the conversation's messages after its watermark, window by window, and reconcile the
        insights the model finds. Without ``force`` it waits for ``INSIGHT_BATCH`` unread client messages.
        Returns a status for arq's result.

        One extraction of a conversation runs at a time, under its lease (:meth:`_lease`). The job first records
        its request in Redis (:meth:`_request`); finding the lease taken, it ends at once and leaves the request to
        the holder: each holder, once it has released the lease, serves the requests made meanwhile (messages that
        arrived while it read) before it ends. So no job waits in a worker slot or queues another, and each
        message is read once its batch is due. A failed extraction leaves its request for its retry (or the
        conversation's next job)."""
        requested = _requests_key(conversation_id)
        await self._request(conversation_id, force=force)
        status = "extracted by another job"
        while await self._redis.exists(requested):  # after the lease's release: no request made meanwhile is missed
            async with leased(self._lease(conversation_id)) as held:
                if not held:
                    return "another extraction of the conversation is running; it serves this request next"
                asked = await self._redis.getdel(requested)
                if asked is None:  # served by a holder between the check and the lease
                    continue
                forced = asked == b"1"
                try:
                    status = await self._extract_unread(coach_id, conversation_id, force=forced)
                except BaseException:
                    await self._request(conversation_id, force=forced)
                    raise
        return status

    def _lease(self, conversation_id: uuid.UUID) -> Lock:
        """The conversation's extraction lease: half of ``WORKER_LEASE_SECONDS``, renewed while its holder runs, so
        that a killed worker's has lapsed by the time arq runs its job again (arq's claim on a running job lasts
        ``WORKER_LEASE_SECONDS``, ``app.worker.OutageTolerantWorker``)."""
        return self._redis.lock(f"lock:{conversation_id}:insights", timeout=self._settings.worker_lease_seconds / 2)

    async def _request(self, conversation_id: uuid.UUID, *, force: bool) -> None:
        """Ask for an extraction of the conversation: ``force`` replaces a plain request, never the reverse; kept
        :data:`REQUEST_TTL_S` unless served."""
        await self._redis.set(_requests_key(conversation_id), int(force), ex=REQUEST_TTL_S, nx=not force)

    async def _extract_unread(self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, force: bool) -> str:
        """Extract from the conversation's unread messages (under its lease): see :meth:`extract_insights`."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:
                return "gone"
            stmt = select(Message).where(Message.conversation_id == conversation_id, REMEMBERED)
            if conversation.insights_extracted_through is not None:
                stmt = stmt.where(Message.created_at > conversation.insights_extracted_through)
            unread = list((await session.scalars(stmt.order_by(Message.created_at, Message.id))).all())
            coach = await uow.coach()
            client = await session.get_one(Client, conversation.client_id)
        client_messages = sum(msg.sender_type == SenderType.CLIENT for msg in unread)
        # the turn queues this job by the same rule (``unread`` is after the watermark already)
        if client_messages == 0 or (not force and not extraction_due(unread, None, reaches_watermark=True)):
            return f"waiting ({client_messages} unread client messages)"
        provider = await self._registry.chat_for(coach)
        embedder = await self._registry.embedder_for(coach)
        stored, zone = 0, coach_zone(coach.availability)
        for window in windows(unread, input_tokens(self._settings, EXTRACT_MAX_TOKENS)):
            stored += await self._extract_window(provider, embedder, coach_id, client, zone, window)
        return f"{stored} insights stored or updated"

    async def _extract_window(
        self,
        provider: ChatProvider,
        embedder: Embedder,
        coach_id: uuid.UUID,
        client: Client,
        zone: tzinfo,
        window: list[Message],
    ) -> int:
        """Extract, reconcile (:meth:`_plan`) and store the insights of one ``window`` of unread messages, shown to
        the model dated in ``zone`` (the coach's), and move the conversation's watermark past it. Returns how many
        insights were stored or updated."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            known = (
                await session.scalars(
                    select(Insight.text)
                    .where(Insight.client_id == client.id, Insight.status == InsightStatus.ACTIVE)
                    .order_by(Insight.last_seen_at.desc())
                    .limit(8)
                )
            ).all()
        known_block = "\n".join(f"- {t}" for t in known) or "(nothing yet)"
        found: list[ExtractedInsight] = []
        transcript = format_messages(window, client.name, zone)
        if any(msg.sender_type == SenderType.CLIENT for msg in window):
            try:
                found = (
                    await generate_structured(
                        provider,
                        few_shot_prompt(
                            EXTRACT_INSTRUCTIONS.format(name=client.name),
                            f"Already noted:\n(nothing yet)\n\nNew messages:\n{EXAMPLE_TRANSCRIPT}",
                            EXAMPLE_INSIGHTS,
                            f"Already noted:\n{known_block}\n\nNew messages:\n{transcript}",
                        ),
                        InsightExtraction,
                        max_tokens=EXTRACT_MAX_TOKENS,
                    )
                ).insights
            except InvalidModelOutput as exc:
                log.warning("insight extraction for client %s skipped a window: %s", client.id, exc)
        found = [item for item in found if not echoes(item.text, INSIGHT_ECHOES, client.name)]  # the example's
        plans = await self._plan(provider, embedder, coach_id, client, found, window) if found else []

        async def store(uow: UnitOfWork, vectors: list[list[float]], embedding_model: str) -> None:
            for plan, vector in zip(plans, vectors, strict=True):
                await self._apply(uow.session, coach_id, client.id, embedding_model, replace(plan, embedding=vector))
            conversation = await uow.session.get_one(Conversation, window[0].conversation_id, with_for_update=True)
            conversation.insights_extracted_through = window[-1].created_at

        texts = [plan.extracted.text for plan in plans]
        vectors = [plan.embedding for plan in plans]
        await self._registry.store_embedded(self._sessionmaker, coach_id, embedder, texts, store, vectors=vectors)
        return sum(plan.action != "skip" for plan in plans)

    async def _plan(
        self,
        provider: ChatProvider,
        embedder: Embedder,
        coach_id: uuid.UUID,
        client: Client,
        found: list[ExtractedInsight],
        window: list[Message],
    ) -> list[_Planned]:
        """Decide add / merge / update / skip for each extracted insight against the client's stored ones:

        - cosine ≥ ``TOMBSTONE_SIMILARITY`` to a deleted item → skip (never re-learn what was deleted), compared
          in the offline model's space (:func:`_tombstone_near`);
        - cosine ≥ ``DUPLICATE_SIMILARITY`` to a stored item → merge (a restatement: count, sources, status);
        - ``RELATED_SIMILARITY`` ≤ cosine < ``DUPLICATE_SIMILARITY``, same kind → the model decides
          same (merge) / update (new text replaces the old) / different (insert);
        - otherwise insert. Items of the same batch are checked against each other the same way.

        An insight must be grounded (embedding attribution, the client's name left out: :func:`ground`) in the
        client's own messages of the window, else it is skipped as not the client's: the AI's messages are its
        own words (a clone's "I'd love to discuss your writing" became the client's goal), and the coach's are
        questions and suggestions, not what the client said of themselves (the coach writes those facts on the
        client's memory page). Sources: the client's messages the model cited by number if the text is grounded
        in one of them, else the client's messages it is grounded in.
        """
        texts = [f.text for f in found]
        own = [i for i, message in enumerate(window) if message.sender_type == SenderType.CLIENT]
        grounding = await ground(embedder, texts, [window[i] for i in own], name=client.name)
        offline = (
            grounding.vectors
            if embedder.model == LOCAL_EMBEDDING_MODEL
            else await self._registry.local_embedder().embed(texts)
        )
        neighbours = await self._neighbours(coach_id, client.id, embedder.model, grounding.vectors, offline)
        planned: list[_Planned] = []
        for extracted, vector, offline_vector, matches, (tombstone, nearest) in zip(
            found, grounding.vectors, offline, grounding.matches, neighbours, strict=True
        ):
            if not matches:
                planned.append(_Planned("skip", extracted, vector, [], window[-1].created_at))
                continue
            grounded = [own[j] for j in matches]
            cited = [i - 1 for i in dict.fromkeys(extracted.evidence) if i - 1 in own]
            chosen = cited if set(cited) & set(grounded) else grounded
            sources = [window[i].id for i in chosen]
            seen_at = max(window[i].created_at for i in chosen)
            action, target = ("skip", tombstone) if tombstone else await self._match(provider, extracted, nearest)
            if action == "insert" and any(
                earlier.action == "insert" and float(np.dot(earlier.embedding, vector)) >= DUPLICATE_SIMILARITY
                for earlier in planned
            ):
                action = "skip"
            planned.append(_Planned(action, extracted, vector, sources, seen_at, target, offline_vector))
        return planned

    async def _neighbours(
        self,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        embedding_model: str,
        vectors: list[list[float]],
        offline_vectors: list[list[float]],
    ) -> list[tuple[uuid.UUID | None, list[Any]]]:
        """For each vector (``offline_vectors``: the same texts' all-MiniLM-L6-v2 vectors): a tombstone it is as
        close as :data:`TOMBSTONE_SIMILARITY` to (:func:`_tombstone_near`; ``None``: none) and the client's three
        nearest live insights as rows of ``(id, kind, text, cosine distance)``, all read before any
        decision is asked of the model."""
        neighbours = []
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            for vector, offline_vector in zip(vectors, offline_vectors, strict=True):
                tombstone = await session.scalar(
                    _tombstone_near(client_id, embedding_model, vector, offline_vector).limit(1)
                )
                distance = Insight.embedding.cosine_distance(vector)
                nearest = (
                    await session.execute(
                        select(Insight.id, Insight.kind, Insight.text, distance)
                        .where(
                            Insight.client_id == client_id,
                            Insight.embedding_model == embedding_model,
                            Insight.status != InsightStatus.DELETED,
                        )
                        .order_by(distance)
                        .limit(3)
                    )
                ).all()
                neighbours.append((tombstone, list(nearest)))
        return neighbours

    async def _match(
        self, provider: ChatProvider, extracted: ExtractedInsight, nearest: list[Any]
    ) -> tuple[str, uuid.UUID | None]:
        """The action for ``extracted`` against its nearest live stored insights (see :meth:`_plan`) and the
        insight it applies to: the nearest one decides."""
        for insight_id, kind, stored_text, dist in nearest:
            similarity = 1.0 - float(dist)
            if similarity >= DUPLICATE_SIMILARITY:
                return "merge", insight_id
            if similarity >= RELATED_SIMILARITY and kind == extracted.kind:
                decision = await self._decide(provider, stored_text, extracted.text)
                if decision != "different":
                    return ("merge" if decision == "same" else "update"), insight_id
            break
        return "insert", None

    async def _decide(self, provider: ChatProvider, stored: str, new: str) -> str:
        """The model's verdict on two notes: ``same``, ``update`` or ``different`` (also on invalid output)."""
        try:
            answer = await generate_structured(
                provider,
                [
                    {"role": "system", "content": DECISION_INSTRUCTIONS},
                    {"role": "user", "content": f"Stored note: {stored}\nNew note: {new}"},
                ],
                MatchDecision,
                max_tokens=DECISION_MAX_TOKENS,
            )
        except InvalidModelOutput:
            return "different"
        return answer.decision

    async def _apply(
        self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, embedding_model: str, plan: _Planned
    ) -> None:
        """Carry out one plan: merge into / update its target, insert, or skip. The client may have forgotten
        something since the plan was made (the model's calls take a while): a plan whose target was deleted, one
        built on a message forgotten since, and an insert a tombstone now stops are skipped (else a forgotten
        insight came straight back, as a new active one).

        A merge or update counts the mention (``mentions``, ``last_seen_at``, sources). Into an insight the coach
        edited (``edited_by_coach``) that is all: the coach's text, importance and status stand. Otherwise a merge
        raises the importance to the new one's and takes its status; an update also takes its text and vector, and
        ``first_seen_at`` moves to when the changed fact was said (the date recall labels it with)."""
        if plan.action == "skip" or await self._forgotten_since(session, client_id, embedding_model, plan):
            return
        extracted = plan.extracted
        target = await session.get(Insight, plan.target, with_for_update=True) if plan.target is not None else None
        if plan.action in ("merge", "update"):
            if target is None or target.status == InsightStatus.DELETED:
                return
            target.mentions += 1
            target.last_seen_at = max(target.last_seen_at, plan.seen_at)
            target.source_message_ids = list(dict.fromkeys([*target.source_message_ids, *plan.sources]))
            if target.edited_by_coach:  # the coach's text, kind, importance and status stand
                return
            target.importance = max(target.importance, extracted.importance)
            target.status = extracted.status
            if plan.action == "update" and extracted.text != target.text:
                # a changed fact: dated when it was said (the label recall shows), not when the old one was
                target.text = extracted.text
                target.embedding = plan.embedding
                target.first_seen_at = plan.seen_at
            return
        session.add(
            Insight(
                coach_id=coach_id,
                client_id=client_id,
                kind=extracted.kind,
                text=extracted.text,
                importance=extracted.importance,
                status=extracted.status,
                mentions=1,
                source_message_ids=plan.sources,
                first_seen_at=plan.seen_at,
                last_seen_at=plan.seen_at,
                embedding=plan.embedding,
                embedding_model=embedding_model,
            )
        )

    @staticmethod
    async def _forgotten_since(
        session: AsyncSession, client_id: uuid.UUID, embedding_model: str, plan: _Planned
    ) -> bool:
        """Whether the client forgot something ``plan`` would bring back since it was made: one of its source
        messages (an insight built on them was deleted), or, for an insert or an update (which writes its text
        into another insight), a deleted insight as close as :data:`TOMBSTONE_SIMILARITY` to it."""
        forgotten = select(Message.id).where(Message.id.in_(plan.sources), Message.forgotten_at.is_not(None))
        if await session.scalar(forgotten.limit(1)) is not None:
            return True
        if plan.action not in ("insert", "update") or plan.offline_embedding is None:
            return False
        tombstone = _tombstone_near(client_id, embedding_model, plan.embedding, plan.offline_embedding)
        return await session.scalar(tombstone.limit(1)) is not None
