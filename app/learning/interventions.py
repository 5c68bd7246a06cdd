"""Interventions: the human coach's messages during a takeover or a draft edit, their analysis, and what
they teach (the client's profile, the coach's style profile, cross-coach patterns, few-shot examples).

Flow: :meth:`InterventionService.record` stores the intervention with the coach's message (same
transaction); after commit the caller queues ``analyse_intervention`` → :meth:`InterventionService.analyse`
(technique, tone, formality, key phrases; the situation's embedding). The client's next message and any
thumbs queue ``score_interventions`` → :meth:`InterventionService.score_outcomes`. Both then refresh the
three levels it teaches: the client's L4 ``what_works`` (a line per strategy that helped the client, withdrawn
when the last intervention supporting it is judged a failure after all) and ``what_doesnt_work`` (a line per
strategy that failed and is not among what works, withdrawn when it helps), the coach's ``style_profile`` and the
anonymised :class:`~app.learning.models.InterventionPattern` counts. :meth:`InterventionService.similar` finds the
coach's own past interventions nearest to a new client message for the prompt (:mod:`app.chat.prompt`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, String, and_, bindparam, column, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Client, Coach
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.conversations.handoffs import Handoff, HandoffReason
from app.conversations.metadata import helpful
from app.conversations.models import REMEMBERED, Conversation, Message, SenderType
from app.core.text import one_line, sentiment
from app.db import jobs
from app.db.vectors import query_distance
from app.learning.analysis import analyse_message, mood
from app.learning.models import Intervention, InterventionPattern, InterventionPatternCoach, InterventionSource
from app.learning.pii import redact_echoes, scrub_names, scrub_pii, scrub_proper_nouns
from app.learning.strategy import CATCH_ALL
from app.learning.style import StyleSample, build_style_profile
from app.llm.registry import ProviderRegistry
from app.memory.controls import MemoryControls
from app.memory.models import ClientProfile
from app.memory.profile import PROFILE_LIST_MAX, locked_profile, profile_for_update
from app.memory.retrieval import profile_lines

MIN_SIMILARITY = 0.35
"""MiniLM cosine below which a past intervention is not "a similar situation" (unrelated messages score
around 0–0.2 with all-MiniLM-L6-v2, paraphrases 0.6+)."""

EXAMPLE_CHARS = 300
"""A few-shot example's coach reply is cut to this many characters."""

SUCCESS_CHANGE = 0.05
"""Rise in the client's VADER compound from the situation to their next message that counts as success."""

MEMORY_INSIGHTS = 8

K_ANONYMITY = 5
"""Distinct coaches a cross-coach pattern cell needs before any coach is shown it."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FewShotExample:
    """A past intervention of the coach for the prompt, without a word of the client it was written for:
    ``situation``, an abstract description of what the client brought (:func:`describe_situation`: mood,
    the coach's own topic labels, why the coach stepped in); ``coach_text``, the coach's reply with that
    client's name, e-mails, phone numbers and any run of the client's own words it repeats removed
    (:func:`private_coach_text`), cut to ``EXAMPLE_CHARS``; its ESConv ``strategy``, the cosine
    ``similarity`` of its situation to the current client message, and the ``client_id`` it was written for
    (never shown; the output check reads which texts were written for different clients: ``None``, unknown)."""

    id: uuid.UUID
    situation: str
    coach_text: str
    strategy: str | None
    similarity: float
    client_id: uuid.UUID | None = None


TopicMatcher = Callable[[Coach, str], list[str]]
"""Which of the coach's own topic labels (settings) a client message touches; injected by the container
(:func:`app.handoff.signals.topic_matches` over the coach's high-stakes and always-escalate topics)."""


def describe_situation(client_mood: str | None, topics: Sequence[str] = (), reason: str | None = None) -> str:
    """One line describing an intervention's situation in the platform's own words, never the client's:
    ``"the client's message read negative; it touched on: money; Client asked for a human"``. ``client_mood``
    is a VADER label (:func:`app.learning.analysis.mood`), ``topics`` the coach's topic labels it matched,
    ``reason`` the handoff reason's label."""
    parts = [f"the client's message read {client_mood or 'neutral'}"]
    if topics:
        parts.append("it touched on: " + ", ".join(topics))
    if reason:
        parts.append(reason)
    return "; ".join(parts)


def private_coach_text(text: str, client_texts: Sequence[str], client_name: str) -> str:
    """The coach's reply as another client's prompt may show it: runs of
    :data:`~app.learning.pii.ECHO_WORDS` or more words shared with ``client_texts`` (what that client wrote)
    become ``[…]``, ``client_name`` becomes ``[NAME]``, likely proper nouns and acronyms (a relative's name, a
    place, an employer, a diagnosis written in capitals) ``[…]``, e-mail addresses and phone numbers placeholders
    (:mod:`app.learning.pii`); cut to ``EXAMPLE_CHARS``. Residual risk: a short quote (≤ 3 words), a
    paraphrase, a name that opens a sentence, or a detail written in lower case ("your divorce") still passes."""
    scrubbed = scrub_pii(scrub_proper_nouns(redact_echoes(text, client_texts)))
    return one_line(scrub_names(scrubbed, [client_name]), EXAMPLE_CHARS)


def what_works_line(strategy: str) -> str | None:
    """The L4 ``what_works`` line for a strategy that helped this client; ``None`` for ESConv's catch-all
    label (:data:`~app.learning.strategy.CATCH_ALL`: "Responds well to the coach's others" says nothing)."""
    return None if strategy == CATCH_ALL else f"Responds well to the coach's {strategy.lower()}"


def what_doesnt_work_line(strategy: str) -> str | None:
    """The L4 ``what_doesnt_work`` line for a strategy that failed with this client (and is not among what works
    for them); ``None`` for the catch-all label, as :func:`what_works_line`."""
    return None if strategy == CATCH_ALL else f"Does not respond well to the coach's {strategy.lower()}"


def _holds(lines: Sequence[str], line: str) -> bool:
    return line.casefold() in {held.casefold() for held in lines}


def _add_line(profile: ClientProfile, name: str, line: str) -> None:
    """Add ``line`` to the profile list ``name`` unless it holds it already (case-insensitive) or is full
    (:data:`~app.memory.profile.PROFILE_LIST_MAX` entries, the most the coach may save)."""
    lines = getattr(profile, name)
    if not _holds(lines, line) and len(lines) < PROFILE_LIST_MAX:
        setattr(profile, name, [*lines, line])
        profile.updated_at = _now()


def _remove_line(profile: ClientProfile, name: str, line: str) -> None:
    """Take ``line`` out of the profile list ``name`` (case-insensitive), unless a session the profile job learnt
    it from says it too (:attr:`~app.memory.models.ClientProfile.entry_sessions`)."""
    if line.casefold() in (profile.entry_sessions or {}).get(name, {}):
        return
    kept = [held for held in getattr(profile, name) if held.casefold() != line.casefold()]
    if len(kept) != len(getattr(profile, name)):
        setattr(profile, name, kept)
        profile.updated_at = _now()


async def _teach_profile(session: AsyncSession, coach_id: uuid.UUID, intervention: Intervention) -> None:
    """What a scored intervention teaches the client's L4 profile, under the profile's lock: a success adds its
    strategy's ``what_works`` line and takes out its ``what_doesnt_work`` line; a failure adds the
    ``what_doesnt_work`` line, unless ``what_works`` holds the strategy (another intervention of it helped this
    client, or a session said so: the two lists must not contradict each other). One line per strategy, each list
    bounded (:func:`_add_line`)."""
    strategy = str(intervention.strategy)
    works, fails = what_works_line(strategy), what_doesnt_work_line(strategy)
    if works is None or fails is None:
        return
    profile = await profile_for_update(session, coach_id, intervention.client_id)
    if intervention.success:
        _add_line(profile, "what_works", works)
        _remove_line(profile, "what_doesnt_work", fails)
    elif not _holds(profile.what_works, works):
        _add_line(profile, "what_doesnt_work", fails)


async def _withdraw_what_works(session: AsyncSession, intervention: Intervention) -> None:
    """An intervention judged a success, now a failure (its thumbs changed): remove the ``what_works`` line its
    success added, unless it is still supported: by another successful intervention of the same strategy for the
    same client, or by a session the profile job learnt it from (:func:`_remove_line`). Under the profile's lock,
    taken before looking for support, so two such withdrawals of one client take turns and the second sees the
    first."""
    line = what_works_line(str(intervention.strategy)) if intervention.strategy else None
    profile = await locked_profile(session, intervention.client_id) if line is not None else None
    if line is None or profile is None:
        return
    supported = await session.scalar(
        select(Intervention.id)
        .where(
            Intervention.coach_id == intervention.coach_id,
            Intervention.client_id == intervention.client_id,
            Intervention.strategy == intervention.strategy,
            Intervention.success.is_(True),
            Intervention.id != intervention.id,
        )
        .limit(1)
    )
    if supported is None:
        _remove_line(profile, "what_works", line)


def judge_success(thumbs: bool | None, before: float, after: float) -> bool:
    """Success rule: the client's thumbs on the intervention (or the next AI reply) when given; otherwise the
    client's next message reads better than the situation (VADER compound rises by ≥ ``SUCCESS_CHANGE``) or
    is positive (≥ 0.05)."""
    if thumbs is not None:
        return thumbs
    return after - before >= SUCCESS_CHANGE or mood(after) == "positive"


async def count_pattern(
    session: AsyncSession, coach_id: uuid.UUID, strategy: str, situation: str, *, uses: int, successes: int
) -> None:
    """Add ``uses`` and ``successes`` (either may be negative, a correction; counts never drop below 0) to the
    cross-coach cell (``strategy``, ``situation``) and, for a new use, record that ``coach_id`` contributed to
    it (once per coach and cell, :class:`~app.learning.models.InterventionPatternCoach`), in the caller's
    tenant transaction."""
    stmt = insert(InterventionPattern).values(
        id=uuid.uuid4(),
        strategy=strategy,
        situation=situation,
        uses=max(uses, 0),
        successes=max(successes, 0),
        updated_at=_now(),
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["strategy", "situation"],
            set_={
                "uses": func.greatest(InterventionPattern.uses + uses, 0),
                "successes": func.greatest(InterventionPattern.successes + successes, 0),
                "updated_at": stmt.excluded.updated_at,
            },
        )
    )
    if uses > 0:
        await session.execute(
            insert(InterventionPatternCoach)
            .values(id=uuid.uuid4(), coach_id=coach_id, strategy=strategy, situation=situation)
            .on_conflict_do_nothing(index_elements=["coach_id", "strategy", "situation"])
        )


async def shared_patterns(session: AsyncSession, *, limit: int = 12) -> list[dict[str, Any]]:
    """The cross-coach cells any coach may see, most used first (at most ``limit``): only cells to which at
    least :data:`K_ANONYMITY` distinct coaches contributed (k-anonymity, Sweeney L. 2002, "k-Anonymity: a
    model for protecting privacy", *IJUFKS 10(5)*), so no cell describes one coach's or a few coaches' work.
    Each is ``{"strategy", "situation", "uses", "success_rate"}`` (successes / uses, 0–1). The distinct
    coaches are counted by the ``SECURITY DEFINER`` function ``intervention_pattern_coach_counts()``,
    which returns counts only."""
    counts = (
        func.intervention_pattern_coach_counts()
        .table_valued(column("strategy", String), column("situation", String), column("coaches", Integer))
        .alias("counts")
    )
    patterns = (
        await session.scalars(
            select(InterventionPattern)
            .join(
                counts,
                and_(
                    counts.c.strategy == InterventionPattern.strategy,
                    counts.c.situation == InterventionPattern.situation,
                ),
            )
            .where(InterventionPattern.uses > 0, counts.c.coaches >= K_ANONYMITY)
            .order_by(InterventionPattern.uses.desc(), InterventionPattern.strategy, InterventionPattern.situation)
            .limit(limit)
        )
    ).all()
    return [
        {"strategy": p.strategy, "situation": p.situation, "uses": p.uses, "success_rate": p.successes / p.uses}
        for p in patterns
    ]


_SIMILAR_DISTANCE = query_distance(Intervention.embedding)
_SIMILAR = (
    select(Intervention, Client.name, Handoff.reason, (1 - _SIMILAR_DISTANCE).label("similarity"))
    .join(Message, Message.id == Intervention.message_id)
    .join(Client, Client.id == Intervention.client_id)
    .outerjoin(Handoff, Handoff.id == Intervention.handoff_id)
    .where(
        Intervention.coach_id == bindparam("coach_id"),
        Intervention.embedding_model == bindparam("model"),
        Intervention.embedding.is_not(None),
        Intervention.analysed_at.is_not(None),
        Intervention.success.is_not(False),
        REMEMBERED,
        Intervention.conversation_id.is_distinct_from(
            bindparam("exclude_conversation_id", type_=Intervention.conversation_id.type)
        ),
    )
    .order_by(_SIMILAR_DISTANCE)
    .limit(bindparam("k"))
)
"""The coach's interventions nearest to a situation (:meth:`InterventionService.similar`), built once and run
with bound parameters: SQLAlchemy reuses its cache key and compiled form (building it per call cost about
0.3 ms of CPU on the chat turn's path)."""


class InterventionService:
    """Records and analyses interventions and finds similar past ones for the prompt."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: ProviderRegistry,
        accounts: AccountService,
        memory: MemoryControls,
        topics: TopicMatcher | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._registry = registry
        self._accounts = accounts
        self._memory = memory
        self._topics = topics

    # ------------------------------------------------------------------ record (in the coach's transaction)

    async def record(
        self,
        session: AsyncSession,
        coach: Coach,
        message: Message,
        *,
        source: str,
        handoff_id: uuid.UUID | None,
        ai_draft: str | None,
    ) -> Intervention | None:
        """Store the human-coach ``message`` (flushed, same transaction) as an intervention with its context:
        the conversation before it as chat messages (at most ``coach.recent_messages``, oldest first), the
        client's latest message before it and what memory held about the client: the ids of its top active
        insights and whether its L4 profile held lines, references and not copies, so a forgotten insight or
        profile line leaves no text behind here. ``source``: ``takeover`` or ``draft_edit``. The caller queues
        :meth:`analyse` after commit. Nothing is stored (``None``) in the coach's own preview chat: the coach
        answering themselves teaches no style, few-shot example or shared pattern. Raises ``ValueError`` for an
        unknown source."""
        if source not in InterventionSource.ALL:
            raise ValueError(f"unknown intervention source {source!r}")
        conversation = await session.get_one(Conversation, message.conversation_id)
        if conversation.client_id == coach.preview_client_id:
            return None
        earlier = list(
            (
                await session.scalars(
                    select(Message)
                    .where(Message.conversation_id == conversation.id, Message.id != message.id)
                    .where(Message.created_at <= message.created_at)
                    .order_by(Message.created_at.desc())
                    .limit(max(coach.recent_messages, 1))
                )
            ).all()
        )[::-1]
        context = [
            {"role": "user" if msg.sender_type == SenderType.CLIENT else "assistant", "content": msg.text}
            for msg in earlier
        ]
        client_text = next((msg.text for msg in reversed(earlier) if msg.sender_type == SenderType.CLIENT), "")
        memory = await self._memory.digest(session, coach.id, conversation.client_id, insights=MEMORY_INSIGHTS)
        intervention = Intervention(
            coach_id=coach.id,
            conversation_id=conversation.id,
            client_id=conversation.client_id,
            message_id=message.id,
            handoff_id=handoff_id,
            source=source,
            text=message.text,
            ai_draft=ai_draft,
            client_text=client_text,
            context=context,
            memory={
                "insight_ids": [str(i.id) for i in memory.insights],
                "profile": bool(profile_lines(memory.profile)),
            },
            analysis={},
            outcome={},
            pattern_counted=False,
        )
        session.add(intervention)
        await session.flush()
        # in the same transaction: its analysis and the rebuild of the conversation's training examples
        jobs.analyse_intervention(session, coach.id, intervention.id)
        jobs.refresh_training_data(session, coach.id, conversation.id, trigger=f"coach:{message.id}")
        return intervention

    # ------------------------------------------------------------------ jobs

    async def analyse(self, coach_id: uuid.UUID, intervention_id: uuid.UUID) -> str:
        """arq job: analyse one intervention (:func:`app.learning.analysis.analyse_message`: ESConv strategy,
        tone, formality, key phrases; plus ``topics``, the coach's topic labels the client's message touched),
        embed its situation (``client_text``) with the coach's embedder for :meth:`similar`, then refresh
        what it teaches. Idempotent: ``"already analysed"`` the second time;
        ``"not found"`` for a deleted one. Embeddings are computed outside the transaction; the situation's is
        stored only with the coach's model in use (:meth:`~app.llm.registry.ProviderRegistry.store_embedded`)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            found = await session.get(Intervention, intervention_id)
            if found is None:
                return "not found"
            if found.analysed_at is not None:
                return "already analysed"
            coach = await uow.coach()
            coach_text, client_text = found.text, found.client_text
        local = self._registry.local_embedder()
        vectors = await local.embed([coach_text, client_text] if client_text.strip() else [coach_text])
        analysis = analyse_message(coach_text, client_text, vectors[0])
        embedder = await self._registry.embedder_for(coach)
        situations = [client_text] if client_text.strip() else []

        async def store(uow: UnitOfWork, situation: list[list[float]], embedding_model: str) -> str:
            intervention = await uow.session.get(Intervention, intervention_id, with_for_update=True)
            if intervention is None:
                return "not found"
            if intervention.analysed_at is not None:
                return "already analysed"
            topics = self._topics(coach, client_text) if self._topics is not None and situations else []
            intervention.analysis = analysis.as_dict() | {"topics": topics}
            intervention.strategy = analysis.strategy
            intervention.embedding = situation[0] if situation else None
            intervention.embedding_model = embedding_model if situation else None
            intervention.analysed_at = _now()
            await uow.session.flush()
            await self._learn(uow.session, coach_id, intervention)
            return f"analysed: {analysis.strategy}"

        computed = vectors[1:] if embedder is local else None
        return await self._registry.store_embedded(
            self._sessionmaker, coach_id, embedder, situations, store, vectors=computed
        )

    async def score_outcomes(self, uow: UnitOfWork, conversation_id: uuid.UUID) -> str:
        """arq job: the outcome of each of the conversation's interventions once the client has answered.

        ``outcome``: ``{"next_message_id", "sentiment"`` (VADER compound of the client's next message),
        ``"sentiment_before"`` (of ``client_text``), ``"sentiment_change"``, ``"thumbs"`` (``helpful`` of the
        client's feedback on the intervention's message, else on the first AI reply before the client's second
        message after it; ``None`` when unrated)``}``.
        ``success`` follows :func:`judge_success`. Re-running only changes an intervention whose thumbs
        changed; the pattern counts are corrected, never counted twice. Returns ``"scored N"``."""
        scored = 0
        session, coach_id = uow.session, uow.coach_id
        rows = (
            await session.execute(
                select(Intervention, Message)
                .join(Message, Message.id == Intervention.message_id)
                .where(Intervention.coach_id == coach_id, Intervention.conversation_id == conversation_id)
                .order_by(Message.created_at)
                .with_for_update(of=Intervention)
            )
        ).all()
        for intervention, message in rows:
            later = list(
                (
                    await session.scalars(
                        select(Message)
                        .where(
                            Message.conversation_id == conversation_id,
                            Message.created_at > message.created_at,
                            Message.sender_type.in_((SenderType.CLIENT, SenderType.AI)),
                        )
                        .order_by(Message.created_at)
                        .limit(20)
                    )
                ).all()
            )
            nxt = next((msg for msg in later if msg.sender_type == SenderType.CLIENT), None)
            if nxt is None:
                continue
            clients = [n for n, msg in enumerate(later) if msg.sender_type == SenderType.CLIENT]
            window = later[: clients[1]] if len(clients) > 1 else later  # before the client's second message
            ai_reply = next((msg for msg in window if msg.sender_type == SenderType.AI), None)
            own = helpful(message.meta)
            thumbs = own if own is not None or ai_reply is None else helpful(ai_reply.meta)
            if intervention.success is not None and intervention.outcome.get("thumbs") == thumbs:
                continue
            before, after = sentiment(intervention.client_text), sentiment(nxt.text)
            previous = intervention.success
            intervention.outcome = {
                "next_message_id": str(nxt.id),
                "sentiment": round(after, 4),
                "sentiment_before": round(before, 4),
                "sentiment_change": round(after - before, 4),
                "thumbs": thumbs,
                "at": _now().isoformat(),
            }
            intervention.success = judge_success(thumbs, before, after)
            if intervention.pattern_counted and previous is not None and previous != intervention.success:
                await self._count_pattern(session, intervention, uses=0, successes=1 if intervention.success else -1)
            scored += 1
            await session.flush()
            if previous and not intervention.success:
                await _withdraw_what_works(session, intervention)
            await self._learn(session, coach_id, intervention, refresh_style=False)
        if scored:
            await self.refresh_style(session, coach_id)
        return f"scored {scored}"

    # ------------------------------------------------------------------ what an intervention teaches

    async def _learn(
        self, session: AsyncSession, coach_id: uuid.UUID, intervention: Intervention, *, refresh_style: bool = True
    ) -> None:
        """Once analysed and scored: the pattern count (once), the client's ``what_works`` or ``what_doesnt_work``
        (:func:`_teach_profile`); then the style profile (recomputed from all analysed interventions, so re-running
        is harmless)."""
        known = intervention.strategy is not None and intervention.success is not None
        if known and not intervention.pattern_counted:
            await self._count_pattern(session, intervention, uses=1, successes=int(bool(intervention.success)))
            intervention.pattern_counted = True
        if known and intervention.strategy:
            await _teach_profile(session, coach_id, intervention)
        if refresh_style:
            await self.refresh_style(session, coach_id)

    async def _count_pattern(
        self, session: AsyncSession, intervention: Intervention, *, uses: int, successes: int
    ) -> None:
        situation = str(intervention.analysis.get("client_mood") or mood(sentiment(intervention.client_text)))
        await count_pattern(
            session, intervention.coach_id, str(intervention.strategy), situation, uses=uses, successes=successes
        )

    async def refresh_style(self, session: AsyncSession, coach_id: uuid.UUID) -> None:
        """Recompute ``Coach.style_profile`` from all of the coach's analysed interventions. The coach row is
        locked first, so two jobs finishing together each see the other's committed analysis. The lock is
        ``FOR NO KEY UPDATE``, which waits for another refresh but not for the ``FOR KEY SHARE`` that every
        vector writer holds (:func:`~app.llm.registry.lock_embedding_model`): with ``FOR UPDATE``, two analyses
        of one coach finishing together each waited for the other's key share, a deadlock (one job failed)."""
        await session.execute(
            select(Coach.id).where(Coach.id == coach_id).with_for_update(key_share=True)  # FOR NO KEY UPDATE
        )
        rows = (
            await session.execute(
                select(
                    Intervention.conversation_id,
                    Intervention.strategy,
                    Intervention.analysis,
                    Intervention.success,
                    Intervention.client_id,
                )
                .join(Message, Message.id == Intervention.message_id)
                .where(
                    Intervention.coach_id == coach_id,
                    Intervention.analysed_at.is_not(None),
                    Intervention.strategy.is_not(None),
                )
                .order_by(Intervention.conversation_id, Message.created_at)
            )
        ).all()
        samples = []
        for n, (conversation_id, strategy, analysis, success, client_id) in enumerate(rows):
            same = n > 0 and rows[n - 1][0] == conversation_id
            samples.append(
                StyleSample(
                    strategy=str(strategy),
                    client_mood=str(analysis.get("client_mood", "neutral")),
                    formality=float(analysis.get("formality", 0.5)),
                    tone=float(analysis.get("tone", 0.0)),
                    key_phrases=tuple(analysis.get("key_phrases") or ()),
                    success=success,
                    previous_strategy=str(rows[n - 1][1]) if same else None,
                    client=str(client_id),
                )
            )
        coach = await session.get_one(Coach, coach_id)
        coach.style_profile = build_style_profile(samples) | {"updated_at": _now().isoformat()}

    # ------------------------------------------------------------------ few-shot retrieval

    async def similar(
        self,
        session: AsyncSession,
        coach_id: uuid.UUID,
        query_embedding: list[float],
        embedding_model: str,
        *,
        k: int = 3,
        exclude_conversation_id: uuid.UUID | None = None,
    ) -> list[FewShotExample]:
        """Up to ``k`` of the coach's own analysed interventions whose situation (``client_text``) is nearest
        to ``query_embedding`` (pgvector cosine distance ``<=>``; only vectors of ``embedding_model``;
        cosine ≥ ``MIN_SIMILARITY``), best first, leaving out those that did not work (``success`` false),
        those whose message was forgotten, and ``exclude_conversation_id``. An example carries no text of the
        client it was written for: the situation is described (:func:`describe_situation`) and the coach's
        reply is scrubbed (:func:`private_coach_text`). Must run inside the coach's tenant transaction."""
        params = {
            "query": query_embedding,
            "coach_id": coach_id,
            "model": embedding_model,
            "exclude_conversation_id": exclude_conversation_id,
            "k": k,
        }
        examples = []
        for row, client_name, reason, similarity in (await session.execute(_SIMILAR, params)).all():
            if similarity < MIN_SIMILARITY:
                continue
            said = [row.client_text, *(c["content"] for c in row.context if c.get("role") == "user")]
            situation = describe_situation(
                row.analysis.get("client_mood"),
                row.analysis.get("topics") or (),
                HandoffReason.LABELS.get(reason) if reason and reason != HandoffReason.COACH_TAKEOVER else None,
            )
            examples.append(
                FewShotExample(
                    id=row.id,
                    situation=situation,
                    coach_text=private_coach_text(row.text, said, client_name),
                    strategy=row.strategy,
                    similarity=round(float(similarity), 4),
                    client_id=row.client_id,
                )
            )
        return examples
