"""The chat turn (the hot path) and conversation reads.

A turn: persist the client message (committed first, so nothing is lost) into its chat session → retrieve
the coach's passages and the client's memory → assemble the prompt within the token budget → stream the
reply from the coach's provider → persist the AI message with citations and attribution metadata (which
memory items were used) → queue insight extraction. A provider failure or timeout yields an apology that
is persisted like any reply, with the error in its metadata. A message at crisis risk
(:func:`app.handoff.crisis.needs_crisis_protocol`) flags the conversation urgent and gets the crisis reply
at once, without the model — so it arrives even when the provider is down.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Client, Coach, HandoffMode
from app.accounts.service import AccountService
from app.chat.prompt import assemble_prompt
from app.conversations.handoffs import Draft, DraftStatus, Handoff, HandoffReason
from app.conversations.metadata import helpful
from app.conversations.models import Conversation, Message, SenderType
from app.core.config import Settings
from app.core.errors import InvalidInput, NotFound
from app.db import jobs
from app.db.engine import tenant_session
from app.handoff.confidence import Confidence, score_confidence
from app.handoff.crisis import DEFAULT_CRISIS_RESOURCES, crisis_reply, needs_crisis_protocol, risk_metadata
from app.handoff.risk import RiskAssessment, RiskDetector
from app.handoff.service import HandoffService
from app.handoff.signals import TurnSignals, retrieval_support, token_confidence, turn_signals
from app.learning.cache import ResponseCache
from app.learning.experiments import Assignment, ExperimentService
from app.learning.interventions import FewShotExample, InterventionService
from app.learning.models import ModelVersion
from app.learning.style import style_lines
from app.learning.versions import ModelVersionService
from app.llm.base import ProviderError, Usage
from app.llm.registry import ProviderRegistry
from app.memory.messages import store_message
from app.memory.retrieval import context_for
from app.rag.retrieval import RetrievedChunk, retrieve

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 4000
MAX_FEEDBACK_CHARS = 2000
APOLOGY = (
    "I'm sorry — I couldn't put together an answer just now. Your message is saved and your coach can "
    "see it. Please try again in a moment."
)
TEMPERATURE = 0.3
SIGNAL_WINDOW_MESSAGES = 20
"""Earlier messages read for the signals (repeated questions, sentiment trend, thumbs-down streak)."""


@dataclass(frozen=True)
class TurnResult:
    """The outcome of a turn: ids, the full reply, its citations and attribution metadata.

    ``message_id`` is ``None`` and ``reply`` empty when nothing was sent to the client: the AI is paused
    (a handoff is active) or its reply waits for the coach's approval (draft mode). ``handoff`` is then, or
    when this turn handed the conversation to the coach, ``{"status", "reason", "confidence"}`` with status
    ``open`` | ``claimed`` | ``draft_pending``.
    """

    conversation_id: uuid.UUID
    client_message_id: uuid.UUID
    message_id: uuid.UUID | None
    reply: str
    citations: list[dict[str, Any]]
    metadata: dict[str, Any]
    handoff: dict[str, Any] | None = None


_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """Cut a reply that hit the token limit back to its last complete sentence (unchanged if it has none)."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else text


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


@dataclass
class _TurnState:
    """What the first transaction of a turn learned, for the steps after it."""

    coach: Coach
    conversation: Conversation
    client_message: Message
    client_name: str
    history: list[Message]
    risk: RiskAssessment
    signals: TurnSignals
    resumed: Handoff | None
    answers_coach: bool
    """The previous message was the human coach's: this turn is an outcome of an intervention."""


@dataclass(frozen=True)
class _Learned:
    """The learning loop's part of a turn. An experiment's variant overrides persona, model and temperature;
    otherwise the coach's production model version serves (``None``: the coach's base model)."""

    coach: Coach
    assignment: Assignment | None
    version: ModelVersion | None
    examples: list[FewShotExample]

    @property
    def persona(self) -> str:
        """The system persona: the variant's, else the coach's."""
        variant = self.assignment.persona if self.assignment is not None else None
        return self.coach.persona if variant is None else variant

    @property
    def temperature(self) -> float:
        """Sampling temperature: the variant's, else :data:`TEMPERATURE`."""
        variant = self.assignment.temperature if self.assignment is not None else None
        return TEMPERATURE if variant is None else variant

    @property
    def model(self) -> str | None:
        """The model name to serve on the coach's endpoint: the variant's, else the production version's,
        else ``None`` (the coach's configured model)."""
        if self.assignment is not None and self.assignment.model:
            return self.assignment.model
        return self.version.model if self.version is not None else None


class ChatService:
    """Runs chat turns for a client of a coach and reads conversations for the coach."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        accounts: AccountService,
        handoffs: HandoffService,
        *,
        interventions: InterventionService,
        model_versions: ModelVersionService,
        cache: ResponseCache,
        experiments: ExperimentService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._accounts = accounts
        self._handoffs = handoffs
        self._interventions = interventions
        self._model_versions = model_versions
        self._cache = cache
        self._experiments = experiments
        self._risk = RiskDetector()

    async def turn(
        self,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        text: str,
        *,
        conversation_id: uuid.UUID | None = None,
        channel: str = "widget",
    ) -> AsyncIterator[str | TurnResult]:
        """Run one turn; yields reply text deltas as they are generated, then one ``TurnResult``.

        Before the model: a crisis gets the crisis reply (always, even during a takeover); an active handoff
        means the AI is paused (no reply); an explicit ask for a human, an always-escalate topic or
        ``human_only`` mode hand the conversation to the coach. After retrieval, confidence
        (:mod:`app.handoff.confidence`) below the coach's threshold hands off in ``auto`` mode; in ``draft``
        mode the reply is generated but kept as a draft for the coach (nothing is streamed).

        Raises (before anything is stored) ``InvalidInput`` for an empty or over-long message and
        ``NotFound`` for a conversation that is not this client's.
        """
        text = (text or "").strip()
        if not text:
            raise InvalidInput("text must not be empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise InvalidInput(f"text is longer than {MAX_MESSAGE_CHARS} characters")
        started = time.perf_counter()

        # 1. persist the client message first, with the turn's signals; crisis protocol and handoff rules
        reply_message: Message | None = None
        handoff: Handoff | None = None
        announce = False
        async with tenant_session(self._sessionmaker, coach_id) as session:
            coach = await self._accounts.get_coach(session, coach_id)
            conversation = await self._conversation_for(session, coach_id, client_id, conversation_id, channel)
            now = datetime.now(UTC)
            client_message, _ = await store_message(session, coach, conversation.id, SenderType.CLIENT, text, at=now)
            state = await self._load_state(session, coach, conversation, client_message)
            if state.answers_coach:  # the client's answer is the outcome of the coach's intervention
                jobs.score_interventions(session, coach_id, conversation.id, trigger=f"client:{client_message.id}")
            risk, signals = state.risk, state.signals
            active = await self._handoffs.active_for(session, conversation.id)
            if needs_crisis_protocol(risk):
                conversation.urgent_at = now
                conversation.urgent_reason = f"crisis: {', '.join(risk.matched[:3])}"
                if active is None:
                    handoff = await self._handoffs.open(
                        session,
                        coach,
                        conversation,
                        reason=HandoffReason.CRISIS,
                        detail=conversation.urgent_reason,
                        confidence=0.0,
                        signals=signals.as_dict(),
                        trigger_message_id=client_message.id,
                    )
                else:  # a crisis during a handoff makes it urgent; the coach is alerted live again
                    handoff = active
                    handoff.reason = HandoffReason.CRISIS
                    handoff.detail = conversation.urgent_reason
                announce = True
                reply_message, _ = await store_message(
                    session,
                    coach,
                    conversation.id,
                    SenderType.AI,
                    crisis_reply(coach.name, tuple(coach.crisis_resources) or DEFAULT_CRISIS_RESOURCES),
                    at=datetime.now(UTC),
                    meta={
                        "crisis": True,
                        "handoff_reason": HandoffReason.CRISIS,
                        "handoff_id": str(handoff.id),
                        "ai_confidence_before": 0.0,
                        "signals": signals.as_dict(),
                        "risk": risk_metadata(risk),
                    },
                )
            elif active is not None:
                handoff = active  # the AI is paused: the coach has the conversation
            else:
                rule = self._handoff_rule(coach, signals)
                if rule is not None:
                    reason, detail = rule
                    handoff = await self._handoffs.open(
                        session,
                        coach,
                        conversation,
                        reason=reason,
                        detail=detail,
                        confidence=None,
                        signals=signals.as_dict(),
                        trigger_message_id=client_message.id,
                    )
                    announce = True
                    reply_message = await self._notice(session, coach, conversation, handoff, signals, None)
        if handoff is None:
            await self._handoffs.publish_message(coach_id, client_id, client_message, to_client=False)
            # 2. retrieve, score confidence, generate (or draft), persist
            async for item in self._answer(state, started):
                yield item
            return

        # the reply (crisis or notice) and the handoff are stored: the client gets the reply first, and a
        # queue or live update failing after that (Redis down) is logged rather than costing the reply
        if reply_message is not None:
            yield reply_message.text
        try:
            await self._handoffs.publish_message(coach_id, client_id, client_message, to_client=False)
            if announce:
                await self._handoffs.announce(coach, handoff, state.client_name)
            if reply_message is not None:
                await self._handoffs.publish_message(coach_id, client_id, reply_message, to_client=False)
        except Exception:
            log.exception("follow-ups of the handoff turn in conversation %s failed", conversation.id)
        yield self._result(client_message, reply_message, handoff, started)

    async def _load_state(
        self, session: AsyncSession, coach: Coach, conversation: Conversation, client_message: Message
    ) -> _TurnState:
        """L1 history and the pre-generation signals (all but retrieval support and token confidence)."""
        earlier = list(
            reversed(
                (
                    await session.scalars(
                        select(Message)
                        .where(
                            Message.conversation_id == conversation.id,
                            Message.id != client_message.id,
                        )
                        .order_by(Message.created_at.desc())
                        .limit(max(coach.recent_messages, SIGNAL_WINDOW_MESSAGES))
                    )
                ).all()
            )
        )
        history = earlier[-coach.recent_messages :] if coach.recent_messages else []
        client_texts = [msg.text for msg in earlier if msg.sender_type == SenderType.CLIENT]
        ai_feedback = [
            helpful(msg.meta)
            for msg in reversed(earlier)
            if msg.sender_type == SenderType.AI and not msg.meta.get("notice")
        ]
        risk = self._risk.assess(client_message.text)
        signals = turn_signals(
            client_message.text,
            risk=risk,
            earlier_client_messages=client_texts,
            high_stakes_topics=coach.high_stakes_topics,
            escalate_topics=coach.always_escalate_topics,
            helpful_newest_first=ai_feedback,
            coach_name=coach.name,
        )
        client = await self._accounts.get_client(session, coach.id, conversation.client_id)
        resumed = await self._handoffs.resumed(session, conversation.id)
        answers_coach = bool(earlier) and earlier[-1].sender_type == SenderType.HUMAN_COACH
        return _TurnState(
            coach, conversation, client_message, client.name, history, risk, signals, resumed, answers_coach
        )

    def _handoff_rule(self, coach: Coach, signals: TurnSignals) -> tuple[str, str] | None:
        """The escalation rule this turn meets before any retrieval, as ``(reason, detail)``, or ``None``."""
        if signals.human_request:
            return HandoffReason.HUMAN_REQUEST, "the client asked for a human"
        if signals.escalate_topics:
            return HandoffReason.ESCALATE_TOPIC, ", ".join(signals.escalate_topics)
        if coach.handoff_mode == HandoffMode.HUMAN_ONLY:
            return HandoffReason.HUMAN_ONLY, ""
        return None

    async def _notice(
        self,
        session: AsyncSession,
        coach: Coach,
        conversation: Conversation,
        handoff: Handoff,
        signals: TurnSignals,
        confidence: Confidence | None,
    ) -> Message:
        """Store the message telling the client the coach was asked to join."""
        meta: dict[str, Any] = {
            "notice": "handoff",
            "handoff_id": str(handoff.id),
            "handoff_reason": handoff.reason,
            "ai_confidence_before": None if confidence is None else confidence.value,
            "signals": signals.as_dict(),
        }
        if confidence is not None:
            meta["confidence"] = confidence.as_dict()
        now = datetime.now(UTC)
        message, _ = await store_message(
            session,
            coach,
            conversation.id,
            SenderType.AI,
            self._handoffs.notice(coach, handoff.reason, now),
            at=now,
            meta=meta,
        )
        return message

    def _result(
        self,
        client_message: Message,
        reply_message: Message | None,
        handoff: Handoff | None,
        started: float,
        *,
        draft: Draft | None = None,
    ) -> TurnResult:
        metadata = dict(reply_message.meta) if reply_message is not None else {}
        metadata["latency_ms"] = _ms(time.perf_counter() - started)
        status: dict[str, Any] | None = None
        if draft is not None:
            status = {
                "status": "draft_pending",
                "reason": "draft_mode",
                "confidence": draft.meta.get("ai_confidence_before"),
            }
        elif handoff is not None:
            status = {"status": handoff.status, "reason": handoff.reason, "confidence": handoff.confidence}
        return TurnResult(
            client_message.conversation_id,
            client_message.id,
            reply_message.id if reply_message is not None else None,
            reply_message.text if reply_message is not None else "",
            reply_message.citations if reply_message is not None else [],
            metadata,
            status,
        )

    async def _answer(self, state: _TurnState, started: float) -> AsyncIterator[str | TurnResult]:
        """Retrieve, score confidence, then generate (streamed in ``auto`` mode, kept as a draft in ``draft``
        mode) or hand off when confidence is below the coach's threshold."""
        coach, conversation, text = state.coach, state.conversation, state.client_message.text
        drafting = coach.handoff_mode == HandoffMode.DRAFT
        timings: dict[str, float] = {}
        passages: list[RetrievedChunk] = []
        base = self._registry.chat_for(coach)
        metadata: dict[str, Any] = {"provider": base.provider, "model": base.model, "mode": coach.handoff_mode}
        reply_parts: list[str] = []
        signals = state.signals
        before: Confidence | None = None
        cache_key: str | None = None
        usage: Usage | None = None
        try:
            # one deadline for retrieval (the query embedding may be remote) and generation
            async with asyncio.timeout(self._settings.llm_timeout_seconds):
                t0 = time.perf_counter()
                embedder = self._registry.embedder_for(coach)
                [query_embedding] = await embedder.embed([text])
                async with tenant_session(self._sessionmaker, coach.id) as session:
                    passages = await retrieve(
                        session,
                        coach.id,
                        query=text,
                        query_embedding=query_embedding,
                        embedding_model=embedder.model,
                        k=self._settings.retrieval_top_k,
                    )
                    memory = await context_for(
                        session,
                        coach,
                        conversation.client_id,
                        query_embedding=query_embedding,
                        embedding_model=embedder.model,
                        exclude_session_id=state.client_message.session_id,
                    )
                    learned = await self._learned(session, coach, conversation, query_embedding, embedder.model)
                timings["retrieval_ms"] = _ms(time.perf_counter() - t0)
                if learned.assignment is not None:
                    metadata["experiment"] = learned.assignment.as_meta()
                if learned.version is not None:
                    metadata["model_version_id"] = str(learned.version.id)

                # no passages: the coach has no material yet, so coverage is not measured (not zero)
                if passages:
                    signals = replace(signals, retrieval_support=retrieval_support([p.score for p in passages]))
                before = score_confidence(signals)
                metadata["ai_confidence_before"] = before.value
                metadata["confidence_threshold"] = coach.confidence_threshold
                if not drafting and before.value < coach.confidence_threshold:
                    async for item in self._hand_off_low_confidence(state, signals, before, started):
                        yield item
                    return

                t0 = time.perf_counter()
                prompt = assemble_prompt(
                    persona=learned.persona,
                    passages=passages,
                    memory=memory,
                    history=state.history,
                    user_text=text,
                    budget_tokens=self._settings.llm_context_tokens - self._settings.llm_max_tokens,
                    examples=learned.examples,
                    style=style_lines(coach.style_profile),
                    coach_name=coach.name,
                )
                passages = prompt.passages
                timings["prompt_ms"] = _ms(time.perf_counter() - t0)
                metadata["history_messages"] = prompt.history_used
                metadata["memory"] = prompt.memory_used()
                metadata["few_shot"] = [str(example.id) for example in prompt.examples]
                provider = self._registry.chat_for(coach, model=learned.model)
                metadata["model"] = provider.model

                cached = None
                if coach.response_cache_ttl_seconds > 0:
                    cache_key = self._cache.key(
                        coach_id=coach.id,
                        cache_epoch=coach.cache_epoch,
                        model=provider.model,
                        model_version_id=metadata.get("model_version_id"),
                        persona=learned.persona,
                        temperature=learned.temperature,
                        messages=prompt.messages,
                    )
                    cached = await self._cache.get(coach.id, cache_key)
                    metadata["cache"] = "miss" if cached is None else "hit"

                t0 = time.perf_counter()
                if cached is not None:
                    reply_parts.append(cached.reply)
                    if not drafting:
                        yield cached.reply
                else:
                    # the serving model (a fine-tuned version, an experiment's model) falls back to the
                    # coach's base model when it fails before sending anything
                    candidates = [provider] if provider is base else [provider, base]
                    for attempt, current in enumerate(candidates):
                        try:
                            async for chunk in current.stream(
                                prompt.messages,
                                max_tokens=self._settings.llm_max_tokens,
                                temperature=learned.temperature,
                            ):
                                if isinstance(chunk, Usage):
                                    usage = chunk
                                    continue
                                if not reply_parts:
                                    timings["first_token_ms"] = _ms(time.perf_counter() - t0)
                                reply_parts.append(chunk)
                                if not drafting:
                                    yield chunk
                            break
                        except ProviderError as exc:
                            if reply_parts or attempt == len(candidates) - 1:
                                raise
                            log.warning(
                                "model %s failed for coach %s, using the base model: %s", current.model, coach.id, exc
                            )
                            metadata["model_fallback"] = {"from": current.model, "error": str(exc)}
                            metadata["model"] = base.model
                timings["generation_ms"] = _ms(time.perf_counter() - t0)
            if usage is not None:
                metadata["prompt_tokens"] = usage.prompt_tokens
                metadata["completion_tokens"] = usage.completion_tokens
                if usage.token_logprobs:
                    signals = replace(signals, token_confidence=token_confidence(usage.token_logprobs))
            reply = "".join(reply_parts).strip()
            if usage is not None and usage.completion_tokens >= self._settings.llm_max_tokens:
                reply = trim_to_sentence(reply)
                metadata["truncated"] = True
            if not reply:
                raise ProviderError("the model returned an empty reply")
        except (ProviderError, TimeoutError) as exc:
            error = (
                f"timed out after {self._settings.llm_timeout_seconds:g} s"
                if isinstance(exc, TimeoutError)
                else str(exc)
            )
            log.warning("chat turn for coach %s failed: %s", coach.id, error)
            metadata["error"] = error
            metadata["partial_reply"] = "".join(reply_parts)
            streamed = bool(reply_parts) and not drafting
            reply, passages, drafting = APOLOGY, [], False  # an apology is not the AI's content: never a draft
            yield ("\n\n" if streamed else "") + APOLOGY
        confidence = score_confidence(signals)
        metadata["confidence"] = confidence.as_dict()
        metadata["signals"] = signals.as_dict()
        metadata.update(timings)
        citations = [p.citation() for p in passages]

        # 3. persist the reply (or the draft)
        t0 = time.perf_counter()
        draft: Draft | None = None
        reply_message: Message | None = None
        async with tenant_session(self._sessionmaker, coach.id) as session:
            now = datetime.now(UTC)
            if drafting:
                draft = Draft(
                    coach_id=coach.id,
                    conversation_id=conversation.id,
                    client_message_id=state.client_message.id,
                    status=DraftStatus.PENDING,
                    text=reply,
                    citations=citations,
                    meta=metadata,
                    edited=False,
                    created_at=now,
                )
                session.add(draft)
                await session.flush()
            else:
                if state.resumed is not None:
                    metadata["is_handback"] = True
                    metadata["human_duration_minutes"] = state.resumed.human_duration_minutes
                reply_message, _ = await store_message(
                    session,
                    coach,
                    conversation.id,
                    SenderType.AI,
                    reply,
                    at=now,
                    citations=citations,
                    meta=metadata,
                )
                if state.resumed is not None:
                    await session.execute(
                        update(Handoff)
                        .where(Handoff.id == state.resumed.id)
                        .values(resumed_message_id=reply_message.id)
                    )
                # follow-ups: L3 extraction once enough client messages are unread
                jobs.extract_insights(session, coach.id, conversation.id, after_message_id=reply_message.id)
        metadata["persist_ms"] = _ms(time.perf_counter() - t0)
        if cache_key is not None and metadata.get("cache") == "miss" and "error" not in metadata:
            await self._cache.put(coach.id, cache_key, reply, citations, coach.response_cache_ttl_seconds)
        client_id = conversation.client_id
        if draft is not None:
            await self._handoffs.announce_draft(coach.id, draft, state.client_name)
        if reply_message is not None:
            await self._handoffs.publish_message(coach.id, client_id, reply_message, to_client=False)
        yield self._result(state.client_message, reply_message, None, started, draft=draft)

    async def _learned(
        self,
        session: AsyncSession,
        coach: Coach,
        conversation: Conversation,
        query_embedding: list[float],
        embedding_model: str,
    ) -> _Learned:
        """What the learning loop brings to this turn: the client's experiment variant, the coach's production
        model version and the coach's own past interventions in similar situations (other conversations)."""
        assignment = await self._experiments.assign(session, coach.id, conversation.client_id)
        version = await self._model_versions.production(session, coach.id)
        examples = await self._interventions.similar(
            session, coach.id, query_embedding, embedding_model, exclude_conversation_id=conversation.id
        )
        return _Learned(coach, assignment, version, examples)

    async def _hand_off_low_confidence(
        self, state: _TurnState, signals: TurnSignals, confidence: Confidence, started: float
    ) -> AsyncIterator[str | TurnResult]:
        """Confidence below the coach's threshold in ``auto`` mode: hand off instead of answering."""
        coach = state.coach
        async with tenant_session(self._sessionmaker, coach.id) as session:
            conversation = await session.get_one(Conversation, state.conversation.id)
            handoff = await self._handoffs.active_for(session, conversation.id)
            if handoff is None:
                handoff = await self._handoffs.open(
                    session,
                    coach,
                    conversation,
                    reason=HandoffReason.LOW_CONFIDENCE,
                    detail=f"confidence {confidence.value:.2f} < {coach.confidence_threshold:.2f}"
                    + (f", mostly {confidence.reason.replace('_', ' ')}" if confidence.reason else ""),
                    confidence=confidence.value,
                    signals=signals.as_dict(),
                    trigger_message_id=state.client_message.id,
                )
                notice: Message | None = await self._notice(session, coach, conversation, handoff, signals, confidence)
            else:  # the coach took over meanwhile
                notice = None
        if notice is not None:
            await self._handoffs.announce(coach, handoff, state.client_name)
            yield notice.text
            await self._handoffs.publish_message(coach.id, conversation.client_id, notice, to_client=False)
        yield self._result(state.client_message, notice, handoff, started)

    async def record_feedback(
        self,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        message_id: uuid.UUID,
        *,
        helpful: bool,
        rating: int | None = None,
        comment: str | None = None,
    ) -> dict[str, Any]:
        """The client's thumbs up/down (optional 1–5 ``rating`` and ``comment``) on an AI or human-coach reply
        in one of their conversations, stored as ``metadata.feedback`` ``{"helpful", "rating", "text", "at"}``.
        A new call replaces the previous feedback (idempotent). It feeds the learning loop: the
        conversation's training examples are rebuilt and its interventions' outcomes rescored (arq jobs), and
        thumbs-down streaks lower the next turn's confidence (:mod:`app.handoff.confidence`, factor
        ``frustration``). Raises ``NotFound`` (not a reply in this client's conversation) and
        ``InvalidInput`` (rating outside 1–5, comment over 2,000 characters)."""
        if rating is not None and not 1 <= rating <= 5:
            raise InvalidInput("rating must be a whole number from 1 to 5")
        comment = (comment or "").strip() or None
        if comment is not None and len(comment) > MAX_FEEDBACK_CHARS:
            raise InvalidInput(f"text is longer than {MAX_FEEDBACK_CHARS} characters")
        async with tenant_session(self._sessionmaker, coach_id) as session:
            message = await session.scalar(
                select(Message)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(
                    Message.id == message_id,
                    Message.sender_type.in_((SenderType.AI, SenderType.HUMAN_COACH)),
                    Conversation.client_id == client_id,
                )
                .with_for_update(of=Message)
            )
            if message is None:
                raise NotFound("message not found")
            at = datetime.now(UTC).isoformat()
            feedback = {"helpful": helpful, "rating": rating, "text": comment, "at": at}
            message.meta = dict(message.meta) | {"feedback": feedback}
            trigger = f"feedback:{message_id}:{at}"
            jobs.refresh_training_data(session, coach_id, message.conversation_id, trigger=trigger)
            jobs.score_interventions(session, coach_id, message.conversation_id, trigger=trigger)
        return feedback

    async def _conversation_for(
        self,
        session: AsyncSession,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        conversation_id: uuid.UUID | None,
        channel: str,
    ) -> Conversation:
        if conversation_id is not None:
            conversation = await session.scalar(
                select(Conversation).where(
                    Conversation.id == conversation_id,
                    Conversation.coach_id == coach_id,
                    Conversation.client_id == client_id,
                )
            )
            if conversation is None:
                raise NotFound("conversation not found")
            return conversation
        conversation = Conversation(coach_id=coach_id, client_id=client_id, channel=channel)
        session.add(conversation)
        await session.flush()
        return conversation

    async def list_conversations(
        self, coach_id: uuid.UUID, client_id: uuid.UUID | None = None
    ) -> list[tuple[Conversation, str, int]]:
        """The coach's conversations, most recent first, as ``(conversation, client name, message count)``."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            stmt = (
                select(Conversation, Client.name, func.count(Message.id))
                .join(Client, Client.id == Conversation.client_id)
                .outerjoin(Message, Message.conversation_id == Conversation.id)
                .where(Conversation.coach_id == coach_id)
                .group_by(Conversation.id, Client.name)
                .order_by(Conversation.last_message_at.desc())
            )
            if client_id is not None:
                stmt = stmt.where(Conversation.client_id == client_id)
            return [(c, name, int(n)) for c, name, n in (await session.execute(stmt)).all()]

    async def get_conversation(
        self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, client_id: uuid.UUID | None = None
    ) -> tuple[Conversation, list[Message]]:
        """A conversation and its messages (oldest first). With ``client_id``, only that client's.

        Raises ``NotFound`` (also for another coach's or another client's conversation).
        """
        async with tenant_session(self._sessionmaker, coach_id) as session:
            stmt = select(Conversation).where(Conversation.id == conversation_id, Conversation.coach_id == coach_id)
            if client_id is not None:
                stmt = stmt.where(Conversation.client_id == client_id)
            conversation = await session.scalar(stmt)
            if conversation is None:
                raise NotFound("conversation not found")
            messages = (
                await session.scalars(
                    select(Message)
                    .where(Message.conversation_id == conversation_id)
                    .order_by(Message.created_at, Message.id)
                )
            ).all()
        return conversation, list(messages)
