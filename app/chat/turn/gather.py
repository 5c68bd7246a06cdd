"""Gather a turn's context: the query embedding (stored as the client message's episode, so later turns
recall it, unless intake stored it), the coach's passages (hybrid retrieval), what memory holds about the
client (the L1 window excluded), the learning loop's part (experiment variant, production model version, the
coach's own past interventions as few-shot examples, the client's tone choice), and the confidence before
generation."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.tone import tone_choice
from app.accounts.unit_of_work import unit_of_work
from app.chat.turn.state import Gathered, Learned, Reply, Turn
from app.chat.turn.timing import Stages, ms_since
from app.core.config import Settings
from app.handoff.confidence import score_confidence
from app.handoff.signals import retrieval_support
from app.learning.experiments import ExperimentService
from app.learning.interventions import InterventionService
from app.learning.versions import ModelVersionService
from app.llm.registry import ProviderRegistry
from app.memory.episodes import store_episodes
from app.memory.retrieval import MemoryContext, context_for
from app.rag.retrieval import RetrievedChunk, rerank, retrieve


class Gatherer:
    """Reads everything a turn's prompt and confidence need: passages, memory and the learning loop's part
    concurrently, each in a tenant unit of work (and pooled connection) of its own (one ``AsyncSession`` must
    not run two queries at once). Passages, the learning loop's part and (its episode stored at intake) memory
    only read, independent rows, so their units are in autocommit mode (no ``BEGIN``/``COMMIT`` round trips)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        *,
        interventions: InterventionService,
        model_versions: ModelVersionService,
        experiments: ExperimentService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._interventions = interventions
        self._model_versions = model_versions
        self._experiments = experiments

    async def _passages(
        self, turn: Turn, query_embedding: list[float], model: str, stages: Stages
    ) -> list[RetrievedChunk]:
        """The coach's passages for the message (hybrid retrieval, in a unit of work of their own), reordered by
        the operator's reranker when there is one, once the database connection is back in the pool (a slow
        reranker must not hold the connections every tenant's turns need)."""
        reranker, k = self._registry.reranker(), self._settings.retrieval_top_k
        with stages.time("gather.passages"):
            async with unit_of_work(self._sessionmaker, turn.coach.id, autocommit=True) as uow:
                passages = await retrieve(
                    uow.session,
                    turn.coach.id,
                    query=turn.message.text,
                    query_embedding=query_embedding,
                    embedding_model=model,
                    k=k,
                    for_reranking=reranker is not None,
                )
            return passages if reranker is None else await rerank(reranker, turn.message.text, passages, k)

    async def _memory(self, turn: Turn, query_embedding: list[float], model: str, stages: Stages) -> MemoryContext:
        """What memory recalls about the client (the L1 window excluded). The message's episode was stored at
        intake when its vector came from there (the recall then only reads: an autocommit unit of work);
        otherwise it is stored here, after the recall, in the recall's transaction."""
        coach, client_id = turn.coach, turn.conversation.client_id
        stored = turn.query_embedding is not None
        async with unit_of_work(self._sessionmaker, coach.id, autocommit=stored) as uow:
            with stages.time("gather.memory"):
                memory = await context_for(
                    uow.session,
                    coach,
                    client_id,
                    query=turn.message.text,
                    query_embedding=query_embedding,
                    embedding_model=model,
                    exclude_session_id=turn.message.session_id,
                    exclude_message_ids=[turn.message.id, *(m.id for m in turn.history)],
                )
            if not stored:
                with stages.time("gather.episodes"):
                    await store_episodes(uow.session, coach.id, client_id, [turn.message], [query_embedding], model)
        return memory

    async def _learned(self, turn: Turn, query_embedding: list[float], model: str, stages: Stages) -> Learned:
        """The learning loop's part (experiment variant, production version, few-shot interventions), in a
        unit of work of its own."""
        coach, conversation = turn.coach, turn.conversation
        with stages.time("gather.learning"):
            async with unit_of_work(self._sessionmaker, coach.id, autocommit=True) as uow:
                session = uow.session
                return Learned(
                    coach,
                    await self._experiments.assign(session, coach.id, conversation.client_id),
                    await self._model_versions.production(session, coach.id),
                    await self._interventions.similar(
                        session, coach.id, query_embedding, model, exclude_conversation_id=conversation.id
                    ),
                    await tone_choice(session, coach, conversation.client_id, datetime.now(UTC)),
                )

    async def gather(self, turn: Turn, reply: Reply) -> Gathered:
        """The turn's context. Records ``retrieval_ms``, the ``experiment``,
        ``ai_confidence_before`` and ``confidence_threshold`` in ``reply.metadata`` and adds retrieval support
        to ``reply.signals`` (not measured when the coach has no material yet). Raises ``ProviderError``
        (the query embedding)."""
        coach, text, stages = turn.coach, turn.message.text, reply.stages
        t0 = time.perf_counter()
        embedder = await self._registry.query_embedder(coach)
        # the crisis screen's vector when it serves retrieval too (the message is embedded once per turn)
        if turn.query_embedding is not None:
            query_embedding = turn.query_embedding
        else:
            with stages.time("gather.embed"):
                [query_embedding] = await embedder.embed([text])
        passages, memory, learned = await asyncio.gather(
            self._passages(turn, query_embedding, embedder.model, stages),
            self._memory(turn, query_embedding, embedder.model, stages),
            self._learned(turn, query_embedding, embedder.model, stages),
        )
        reply.metadata["retrieval_ms"] = ms_since(t0)
        if learned.assignment is not None:
            reply.metadata["experiment"] = learned.assignment.as_meta()
        if passages:
            reply.signals = replace(reply.signals, retrieval_support=retrieval_support([p.score for p in passages]))
        before = score_confidence(reply.signals)
        reply.metadata["ai_confidence_before"] = before.value
        reply.metadata["confidence_threshold"] = coach.confidence_threshold
        reply.passages = passages
        return Gathered(passages, memory, learned, before)
