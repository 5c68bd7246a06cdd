"""Client memory in four layers, and the jobs that keep it.

- L1 recent turns: the conversation's last ``Coach.recent_messages`` messages (read by the chat turn).
- L2 sessions: a message joins the conversation's open session; after ``Coach.session_idle_minutes`` of
  silence (next message or the minute sweep) or on request the session ends and ``summarize_session`` writes
  a schema-checked summary. Invalid model output is retried with fresh samples, then the session is marked
  ``failed`` with the reason — never stored half-valid.
- L3 insights: ``extract_insights`` reads unread messages in windows, asks the model for typed insights and
  reconciles each against the client's stored items (see :meth:`MemoryService._plan`).
- L4 profile: ``update_profile`` merges what a summarised session says about how to work with the client.

Jobs are idempotent (arq runs a job at least once): summaries skip finished sessions, extraction keeps a
per-conversation watermark under a Redis lock, profile updates are keyed by session. Model calls happen
outside database transactions.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Client, Coach
from app.accounts.service import AccountService
from app.conversations.models import Conversation, Message, SenderType
from app.core.config import Settings
from app.core.errors import InvalidInput, NotFound
from app.db import jobs
from app.db.engine import tenant_session
from app.llm.base import ChatMessage, ChatProvider, Embedder
from app.llm.registry import ProviderRegistry
from app.llm.schema import InvalidModelOutput, generate_structured
from app.memory.models import ChatSession, ClientProfile, Insight, InsightKind, InsightStatus, SessionStatus
from app.memory.retrieval import MemoryContext, profile_lines, recall, summary_text
from app.memory.schemas import (
    ExtractedInsight,
    InsightExtraction,
    MatchDecision,
    ProfileOutput,
    SessionSummary,
    SessionSummaryOutput,
)
from app.memory.transcript import format_messages, ground, sentences, windows

log = logging.getLogger(__name__)

INSIGHT_BATCH = 4
"""Client messages that trigger a mid-session extraction; a session's end extracts whatever is left."""
MEMORY_ITEMS = 8
"""Recalled L2/L3 items offered to the prompt (the token budget may cut more)."""
PROMPT_SHARE = 0.6
"""Share of the context the memory jobs' input text may use; the rest is instructions and the answer."""
DUPLICATE_SIMILARITY = 0.88
"""Cosine at or above which an extracted insight is the same as a stored one (merged without asking)."""
RELATED_SIMILARITY = 0.7
"""From here up to ``DUPLICATE_SIMILARITY`` the model decides: same, updated, or different."""
TOMBSTONE_SIMILARITY = 0.85
"""An extracted insight this close to a deleted one is dropped: deleted memories do not come back."""
PROFILE_LIST_CAP = 8
SUMMARY_MAX_TOKENS = 450
EXTRACT_MAX_TOKENS = 450
PROFILE_MAX_TOKENS = 300
DECISION_MAX_TOKENS = 16
LOCK_SECONDS = 1800


class SummaryFailed(Exception):
    """A session summary could not be produced (stored on the session as ``failed`` with this reason)."""


@dataclass(frozen=True)
class ClientMemory:
    """Everything remembered about a client, for the coach's and the client's views."""

    profile: ClientProfile | None
    insights: list[Insight]
    summaries: list[ChatSession]


@dataclass(frozen=True)
class _Planned:
    """What to do with one extracted insight: ``insert``, ``merge`` into or ``update`` ``target``, or ``skip``."""

    action: str
    extracted: ExtractedInsight
    embedding: list[float]
    sources: list[uuid.UUID]
    seen_at: datetime
    target: uuid.UUID | None = None


SUMMARY_MIN_GROUNDED = 0.5
"""Share of a summary's sentences that must be grounded in the session's messages; below it the answer is
rejected like invalid JSON (small models echo their instructions or invent)."""

SUMMARY_INSTRUCTIONS = (
    "You write a coach's private notes. Summarise the chat session with the client {name} as JSON: the "
    "concrete facts (events, people, places, dates, numbers), the topics, what was learned about {name}, "
    "the next steps, and {name}'s mood. Use only what the messages say."
)
EXTRACT_INSTRUCTIONS = (
    "You write a coach's private notes about the client {name}. From the new messages, list what is worth "
    "remembering about {name} in later sessions: goals, blockers, breakthroughs, preferences, achievements, "
    "patterns, milestones, commitments. Each one: a short statement about {name} with its concrete details, "
    "importance 0-10, status (active, achieved or dropped), and the numbers of the messages it comes from. "
    "Use only what the messages say; an empty list is fine."
)
DECISION_INSTRUCTIONS = (
    "Two notes about the same client. Answer 'same' if the new note says the same as the stored one, "
    "'update' if it changes or corrects it, 'different' if it is about something else."
)
PROFILE_INSTRUCTIONS = (
    "You write a coach's private notes on how to work with the client {name}: how {name} likes to "
    "communicate, what helps and what does not, the tone to use, topics to handle with care. Only new "
    "observations from this session; empty lists when it shows nothing."
)

# One worked example per job (few-shot prompting, Brown et al. 2020): small models follow an example's
# form far better than a description of it. The example client is "Sam"; the real client's name differs.
EXAMPLE_TRANSCRIPT = (
    "[1] Sam (2026-03-02 18:00): I finally signed up for the 10k run in June!\n"
    "[2] Coach (2026-03-02 18:01): That is great news. How do you feel about it?\n"
    "[3] Sam (2026-03-02 18:02): Nervous. My knee still hurts after long runs, so I will see a physio on Friday."
)
EXAMPLE_SUMMARY = (
    '{"summary": "Sam signed up for a 10k run in June. Sam is nervous because the knee hurts after long runs '
    'and will see a physiotherapist on Friday.", "topics": ["10k run in June", "knee pain"], "insights": '
    '["Sam is training for a 10k run"], "action_items": ["Sam sees a physiotherapist on Friday"], '
    '"emotional_state": "nervous but motivated"}'
)
EXAMPLE_INSIGHTS = (
    '{"insights": [{"kind": "goal", "text": "Sam wants to run a 10k race in June", "importance": 7, '
    '"status": "active", "evidence": [1]}, {"kind": "blocker", "text": "Sam\'s knee hurts after long runs", '
    '"importance": 6, "status": "active", "evidence": [3]}, {"kind": "commitment", "text": "Sam will see a '
    'physiotherapist on Friday", "importance": 5, "status": "active", "evidence": [3]}]}'
)
EXAMPLE_PROFILE = (
    '{"communication_preferences": ["shares news with enthusiasm"], "what_works": ["asking how Sam feels"], '
    '"what_doesnt_work": [], "tone": "warm and encouraging", "sensitive_topics": ["knee injury"]}'
)


def _prompt(instructions: str, example_input: str, example_output: str, actual_input: str) -> list[ChatMessage]:
    """System instructions, one worked example as a user/assistant exchange, then the real input."""
    return [
        {"role": "system", "content": instructions},
        {"role": "user", "content": example_input},
        {"role": "assistant", "content": example_output},
        {"role": "user", "content": actual_input},
    ]


def _now() -> datetime:
    return datetime.now(UTC)


def _idle(chat_session: ChatSession, coach: Coach, at: datetime) -> bool:
    """Whether ``at`` comes more than the coach's idle gap after the session's last message."""
    return at - chat_session.last_message_at > timedelta(minutes=coach.session_idle_minutes)


def _end(chat_session: ChatSession) -> None:
    """Mark an open session ended at its last message (its jobs are queued by the caller, after commit)."""
    chat_session.status = SessionStatus.ENDED
    chat_session.ended_at = chat_session.last_message_at


def _merge_list(current: Sequence[str], new: Sequence[str]) -> list[str]:
    """``current`` plus the entries of ``new`` not already there (case-insensitive), newest last, capped."""
    seen = {entry.casefold() for entry in current}
    merged = list(current)
    for entry in new:
        if entry.casefold() not in seen:
            seen.add(entry.casefold())
            merged.append(entry)
    return merged[-PROFILE_LIST_CAP:]


class MemoryService:
    """Sessions, memory jobs, recall for the prompt, and the memory controls of coach and client."""

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

    # ------------------------------------------------------------------ sessions (L2 boundaries)

    async def track_message(
        self, session: AsyncSession, coach: Coach, message: Message, at: datetime, *, queue_jobs: bool = True
    ) -> ChatSession | None:
        """Put ``message`` (sent at ``at``) into its conversation's open session, opening one when there is
        none or the open one has been idle longer than the coach's gap. Returns the session this closed, if
        any, whose jobs are queued in the same transaction (unless ``queue_jobs=False``: the evaluation runs
        them itself)."""
        open_session = await self._open_session(session, message.conversation_id)
        closed = None
        if open_session is not None and _idle(open_session, coach, at):
            _end(open_session)
            closed, open_session = open_session, None
            if queue_jobs:
                self.session_ended(session, closed)
        if open_session is None:
            conversation = await session.get_one(Conversation, message.conversation_id)
            open_session = ChatSession(
                coach_id=coach.id,
                client_id=conversation.client_id,
                conversation_id=conversation.id,
                status=SessionStatus.OPEN,
                started_at=at,
                last_message_at=at,
                message_count=0,
                source_message_ids=[],
            )
            session.add(open_session)
            await session.flush()
        open_session.last_message_at = max(open_session.last_message_at, at)
        open_session.message_count += 1
        message.session_id = open_session.id
        return closed

    def session_ended(self, session: AsyncSession, chat_session: ChatSession) -> None:
        """Queue, in ``session``'s transaction, the jobs of an ended session: the rest of its insights, then
        its summary."""
        last = (chat_session.ended_at or chat_session.last_message_at).isoformat()
        jobs.extract_insights(
            session,
            chat_session.coach_id,
            chat_session.conversation_id,
            after_message_id=uuid.uuid5(chat_session.id, last),
            force=True,
        )
        jobs.summarize_session(session, chat_session.coach_id, chat_session.id)

    async def end_session(
        self,
        coach_id: uuid.UUID,
        conversation_id: uuid.UUID,
        *,
        client_id: uuid.UUID | None = None,
        queue_jobs: bool = True,
    ) -> uuid.UUID | None:
        """End the conversation's open session now (the client or coach said goodbye) and queue its jobs
        (``queue_jobs=False``: the caller runs them itself, as the evaluation does). Returns its id, or
        ``None`` when no session was open. Raises ``NotFound`` for a conversation that is not the coach's
        (or, with ``client_id``, not that client's)."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            stmt = select(Conversation).where(Conversation.id == conversation_id, Conversation.coach_id == coach_id)
            if client_id is not None:
                stmt = stmt.where(Conversation.client_id == client_id)
            if await session.scalar(stmt) is None:
                raise NotFound("conversation not found")
            open_session = await self._open_session(session, conversation_id)
            if open_session is None:
                return None
            _end(open_session)
            if queue_jobs:
                self.session_ended(session, open_session)
        return open_session.id

    async def close_idle_sessions(self) -> int:
        """End every open session idle past its coach's gap (the worker's minute cron). Returns how many.

        Runs before any tenant is known: candidates come from the ``idle_chat_sessions()`` SECURITY DEFINER
        function; each is then re-checked (still open, still idle: a message may have arrived meanwhile)
        and closed inside its own tenant's transaction."""
        async with self._sessionmaker() as session:
            candidates = (await session.execute(text("SELECT coach_id, session_id FROM idle_chat_sessions()"))).all()
        closed = 0
        for coach_id, session_id in candidates:
            async with tenant_session(self._sessionmaker, coach_id) as session:
                chat_session = await session.get(ChatSession, session_id, with_for_update=True)
                coach = await self._accounts.get_coach(session, coach_id)
                if (
                    chat_session is None
                    or chat_session.status != SessionStatus.OPEN
                    or not _idle(chat_session, coach, _now())
                ):
                    continue
                _end(chat_session)
                self.session_ended(session, chat_session)
            closed += 1
        return closed

    # ------------------------------------------------------------------ L2 summary job

    async def summarize_session(self, coach_id: uuid.UUID, session_id: uuid.UUID, *, queue_profile: bool = True) -> str:
        """Job: write the L2 summary of an ended session, ground it in the session's messages, embed it,
        then queue the L4 profile update (unless ``queue_profile=False``: the caller runs it itself). Returns
        a status word for arq's result.

        Raises ``SummaryFailed`` (after marking the session ``failed``) when the model's answers never
        validate; ``ProviderError`` propagates so arq retries the job.
        """
        async with tenant_session(self._sessionmaker, coach_id) as session:
            chat_session = await session.get(ChatSession, session_id)
            if chat_session is None:
                return "gone"
            if chat_session.status in (SessionStatus.OPEN, SessionStatus.SUMMARIZED):
                return chat_session.status
            messages = await self._session_messages(session, session_id)
            coach = await self._accounts.get_coach(session, coach_id)
            client = await session.get_one(Client, chat_session.client_id)
            chat_session.summary_attempts += 1
        if not messages:
            await self.fail_summary(coach_id, session_id, "the session has no messages")
            raise SummaryFailed("the session has no messages")
        provider = self._registry.chat_for(coach)
        embedder = self._registry.embedder_for(coach)
        try:
            output = await self._summarize(provider, embedder, messages, client.name)
        except InvalidModelOutput as exc:
            await self.fail_summary(coach_id, session_id, str(exc))
            raise SummaryFailed(str(exc)) from exc
        summary = SessionSummary(
            **output.model_dump(),
            message_count=len(messages),
            started_at=messages[0].created_at,
            ended_at=messages[-1].created_at,
        )
        statements = [*sentences(summary.summary), *summary.topics, *summary.insights, *summary.action_items]
        sources = (await ground(embedder, statements, messages)).sources(messages)
        [vector] = await embedder.embed([f"{summary.summary} Topics: {', '.join(summary.topics)}."])
        async with tenant_session(self._sessionmaker, coach_id) as session:
            chat_session = await session.get_one(ChatSession, session_id)
            chat_session.summary = summary.model_dump(mode="json")
            chat_session.source_message_ids = sources
            chat_session.embedding = vector
            chat_session.embedding_model = embedder.model
            chat_session.status = SessionStatus.SUMMARIZED
            chat_session.summary_error = None
            if queue_profile:
                jobs.update_profile(session, coach_id, session_id)
        return SessionStatus.SUMMARIZED

    async def _summarize(
        self, provider: ChatProvider, embedder: Embedder, messages: list[Message], name: str
    ) -> SessionSummaryOutput:
        """Map-reduce when the session does not fit: summarise each window, then summarise the summaries.
        Each window's summary must be grounded in that window (``SUMMARY_MIN_GROUNDED``)."""
        instructions = SUMMARY_INSTRUCTIONS.format(name=name)

        def grounded_in(part: Sequence[Message]) -> Callable[[SessionSummaryOutput], Awaitable[str | None]]:
            async def check(output: SessionSummaryOutput) -> str | None:
                share = (await ground(embedder, sentences(output.summary), part)).share()
                if share < SUMMARY_MIN_GROUNDED:
                    return f"summary: only {share:.0%} of its sentences are grounded in the messages"
                return None

            return check

        parts = windows(messages, self._input_tokens(SUMMARY_MAX_TOKENS))
        outputs = [
            await generate_structured(
                provider,
                _prompt(instructions, EXAMPLE_TRANSCRIPT, EXAMPLE_SUMMARY, format_messages(part, name)),
                SessionSummaryOutput,
                max_tokens=SUMMARY_MAX_TOKENS,
                check=grounded_in(part),
            )
            for part in parts
        ]
        if len(outputs) == 1:
            return outputs[0]
        partial = "\n".join(f"Part {i}: {summary_text(o.model_dump())}" for i, o in enumerate(outputs, start=1))
        return await generate_structured(
            provider,
            _prompt(instructions, EXAMPLE_TRANSCRIPT, EXAMPLE_SUMMARY, f"Summaries of the session's parts:\n{partial}"),
            SessionSummaryOutput,
            max_tokens=SUMMARY_MAX_TOKENS,
            check=grounded_in(messages),
        )

    async def fail_summary(self, coach_id: uuid.UUID, session_id: uuid.UUID, reason: str) -> None:
        """Mark an ended session's summary ``failed`` with ``reason`` (nothing else is stored)."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            chat_session = await session.get(ChatSession, session_id)
            if chat_session is None or chat_session.status != SessionStatus.ENDED:
                return
            chat_session.status = SessionStatus.FAILED
            chat_session.summary_error = reason
        log.warning("summary of session %s failed: %s", session_id, reason)

    # ------------------------------------------------------------------ L3 insight job

    async def extract_insights(self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, force: bool) -> str:
        """Job: read the conversation's messages after its watermark, window by window, and reconcile the
        insights the model finds. Without ``force`` it waits for ``INSIGHT_BATCH`` unread client messages.
        Serialised per conversation by a Redis lock; returns a status for arq's result."""
        async with self._redis.lock(
            f"lock:{conversation_id}:insights", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS
        ):
            async with tenant_session(self._sessionmaker, coach_id) as session:
                conversation = await session.get(Conversation, conversation_id)
                if conversation is None:
                    return "gone"
                stmt = select(Message).where(Message.conversation_id == conversation_id)
                if conversation.insights_extracted_through is not None:
                    stmt = stmt.where(Message.created_at > conversation.insights_extracted_through)
                unread = list((await session.scalars(stmt.order_by(Message.created_at, Message.id))).all())
                coach = await self._accounts.get_coach(session, coach_id)
                client = await session.get_one(Client, conversation.client_id)
            client_messages = sum(msg.sender_type == SenderType.CLIENT for msg in unread)
            if client_messages == 0 or (not force and client_messages < INSIGHT_BATCH):
                return f"waiting ({client_messages} unread client messages)"
            provider = self._registry.chat_for(coach)
            embedder = self._registry.embedder_for(coach)
            stored = 0
            for window in windows(unread, self._input_tokens(EXTRACT_MAX_TOKENS)):
                stored += await self._extract_window(provider, embedder, coach_id, client, window)
            return f"{stored} insights stored or updated"

    async def _extract_window(
        self,
        provider: ChatProvider,
        embedder: Embedder,
        coach_id: uuid.UUID,
        client: Client,
        window: list[Message],
    ) -> int:
        async with tenant_session(self._sessionmaker, coach_id) as session:
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
        if any(msg.sender_type == SenderType.CLIENT for msg in window):
            try:
                found = (
                    await generate_structured(
                        provider,
                        _prompt(
                            EXTRACT_INSTRUCTIONS.format(name=client.name),
                            f"Already noted:\n(nothing yet)\n\nNew messages:\n{EXAMPLE_TRANSCRIPT}",
                            EXAMPLE_INSIGHTS,
                            f"Already noted:\n{known_block}\n\nNew messages:\n{format_messages(window, client.name)}",
                        ),
                        InsightExtraction,
                        max_tokens=EXTRACT_MAX_TOKENS,
                    )
                ).insights
            except InvalidModelOutput as exc:
                log.warning("insight extraction for client %s skipped a window: %s", client.id, exc)
        plans = await self._plan(provider, embedder, coach_id, client.id, found, window) if found else []
        async with tenant_session(self._sessionmaker, coach_id) as session:
            for plan in plans:
                await self._apply(session, coach_id, client.id, embedder.model, plan)
            conversation = await session.get_one(Conversation, window[0].conversation_id, with_for_update=True)
            conversation.insights_extracted_through = window[-1].created_at
        return sum(plan.action != "skip" for plan in plans)

    async def _plan(
        self,
        provider: ChatProvider,
        embedder: Embedder,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        found: list[ExtractedInsight],
        window: list[Message],
    ) -> list[_Planned]:
        """Decide add / merge / update / skip for each extracted insight against the client's stored ones:

        - cosine ≥ ``TOMBSTONE_SIMILARITY`` to a deleted item → skip (never re-learn what was deleted);
        - cosine ≥ ``DUPLICATE_SIMILARITY`` to a stored item → merge (a restatement: count, sources, status);
        - ``RELATED_SIMILARITY`` ≤ cosine < ``DUPLICATE_SIMILARITY``, same kind → the model decides
          same (merge) / update (new text replaces the old) / different (insert);
        - otherwise insert. Items of the same batch are checked against each other the same way.

        An insight grounded in none of the window's messages (embedding attribution) is skipped as invented.
        Sources: the messages the model cited by number if the text is grounded in one of them, else the
        messages it is grounded in.
        """
        grounding = await ground(embedder, [f.text for f in found], window)
        # every stored neighbour in one read, before any decision is asked of the model
        neighbours = []
        async with tenant_session(self._sessionmaker, coach_id) as session:
            for vector in grounding.vectors:
                distance = Insight.embedding.cosine_distance(vector)
                neighbours.append(
                    (
                        await session.execute(
                            select(Insight.id, Insight.kind, Insight.status, Insight.text, distance)
                            .where(Insight.client_id == client_id, Insight.embedding_model == embedder.model)
                            .order_by(distance)
                            .limit(3)
                        )
                    ).all()
                )
        planned: list[_Planned] = []
        for extracted, vector, matches, nearest in zip(
            found, grounding.vectors, grounding.matches, neighbours, strict=True
        ):
            if not matches:
                planned.append(_Planned("skip", extracted, vector, [], window[-1].created_at))
                continue
            cited = [i - 1 for i in dict.fromkeys(extracted.evidence) if 1 <= i <= len(window)]
            chosen = cited if set(cited) & set(matches) else matches
            sources = [window[i].id for i in chosen]
            seen_at = max(window[i].created_at for i in chosen)
            action, target = "insert", None
            for insight_id, kind, status, stored_text, dist in nearest:
                similarity = 1.0 - float(dist)
                if status == InsightStatus.DELETED:
                    if similarity >= TOMBSTONE_SIMILARITY:
                        action, target = "skip", insight_id
                        break
                    continue
                if similarity >= DUPLICATE_SIMILARITY:
                    action, target = "merge", insight_id
                elif similarity >= RELATED_SIMILARITY and kind == extracted.kind:
                    decision = await self._decide(provider, stored_text, extracted.text)
                    if decision != "different":
                        action, target = ("merge" if decision == "same" else "update"), insight_id
                break
            if action == "insert":
                for earlier in planned:
                    if earlier.action == "insert" and float(np.dot(earlier.embedding, vector)) >= DUPLICATE_SIMILARITY:
                        action = "skip"
                        break
            planned.append(_Planned(action, extracted, vector, sources, seen_at, target))
        return planned

    async def _decide(self, provider: ChatProvider, stored: str, new: str) -> str:
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
        extracted = plan.extracted
        target = await session.get(Insight, plan.target, with_for_update=True) if plan.target is not None else None
        if plan.action in ("merge", "update") and target is not None and target.status != InsightStatus.DELETED:
            target.mentions += 1
            target.last_seen_at = max(target.last_seen_at, plan.seen_at)
            target.source_message_ids = list(dict.fromkeys([*target.source_message_ids, *plan.sources]))
            target.importance = max(target.importance, extracted.importance)
            target.status = extracted.status
            if plan.action == "update" and not target.edited_by_coach:
                target.text = extracted.text
                target.embedding = plan.embedding
            return
        if plan.action == "skip":
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

    # ------------------------------------------------------------------ L4 profile job

    async def update_profile(self, coach_id: uuid.UUID, session_id: uuid.UUID) -> str:
        """Job: merge what a summarised session shows about working with the client into the L4 profile.
        Lists gain new entries (case-insensitive de-duplication, newest kept); ``tone`` is set only while the
        coach has not edited the profile. Idempotent per session (``profile_updated`` mark in the summary)."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            chat_session = await session.get(ChatSession, session_id)
            if chat_session is None or chat_session.status != SessionStatus.SUMMARIZED or not chat_session.summary:
                return "not summarised"
            if chat_session.summary.get("profile_updated"):
                return "done already"
            messages = await self._session_messages(session, session_id)
            coach = await self._accounts.get_coach(session, coach_id)
            client = await session.get_one(Client, chat_session.client_id)
            summary = summary_text(chat_session.summary)
        client_turns = [msg for msg in messages if msg.sender_type == SenderType.CLIENT]
        budget = self._input_tokens(PROFILE_MAX_TOKENS)
        recent = windows(client_turns, budget // 2)[-1] if client_turns else []
        try:
            output = await generate_structured(
                self._registry.chat_for(coach),
                _prompt(
                    PROFILE_INSTRUCTIONS.format(name=client.name),
                    EXAMPLE_TRANSCRIPT,
                    EXAMPLE_PROFILE,
                    f"Session summary: {summary}\n\n{client.name}'s messages:\n{format_messages(recent, client.name)}",
                ),
                ProfileOutput,
                max_tokens=PROFILE_MAX_TOKENS,
            )
        except InvalidModelOutput as exc:
            log.warning("profile update from session %s skipped: %s", session_id, exc)
            return "invalid model output"
        async with tenant_session(self._sessionmaker, coach_id) as session:
            profile = await self.profile_for_update(session, coach_id, client.id)
            profile.communication_preferences = _merge_list(
                profile.communication_preferences, output.communication_preferences
            )
            profile.what_works = _merge_list(profile.what_works, output.what_works)
            profile.what_doesnt_work = _merge_list(profile.what_doesnt_work, output.what_doesnt_work)
            profile.sensitive_topics = _merge_list(profile.sensitive_topics, output.sensitive_topics)
            if output.tone and profile.coach_edited_at is None:
                profile.tone = output.tone
            profile.updated_at = _now()
            chat_session = await session.get_one(ChatSession, session_id)
            chat_session.summary = {**(chat_session.summary or {}), "profile_updated": True}
        return "updated"

    async def profile_for_update(
        self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID
    ) -> ClientProfile:
        """The client's L4 profile (a new, empty one added to ``session`` when there is none), under a
        transaction-scoped advisory lock on the client's profile so concurrent writers take turns."""
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"profile:{client_id}"})
        profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
        if profile is None:
            profile = ClientProfile(
                coach_id=coach_id,
                client_id=client_id,
                communication_preferences=[],
                what_works=[],
                what_doesnt_work=[],
                tone="",
                sensitive_topics=[],
            )
            session.add(profile)
        return profile

    # ------------------------------------------------------------------ recall for the prompt

    async def context_for(
        self,
        session: AsyncSession,
        coach: Coach,
        client_id: uuid.UUID,
        *,
        query_embedding: list[float],
        embedding_model: str,
        exclude_session_id: uuid.UUID | None,
        now: datetime | None = None,
    ) -> MemoryContext:
        """L4 profile lines and the ``MEMORY_ITEMS`` best L2/L3 items for this turn (see
        :mod:`app.memory.retrieval` for the score). Must run inside the coach's tenant transaction."""
        profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
        items = await recall(
            session,
            coach.id,
            client_id,
            query_embedding=query_embedding,
            embedding_model=embedding_model,
            now=now or _now(),
            limit=MEMORY_ITEMS,
            exclude_session_id=exclude_session_id,
        )
        return MemoryContext(profile_lines(profile), items)

    # ------------------------------------------------------------------ controls (coach and client)

    async def client_memory(self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID) -> ClientMemory:
        """A client's profile, visible insights (active first, then by importance and recency) and session
        summaries (newest first, failed ones included with their error). Raises ``NotFound``."""
        await self._accounts.get_client(session, coach_id, client_id)
        profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
        insights = (
            await session.scalars(
                select(Insight)
                .where(Insight.client_id == client_id, Insight.status.in_(InsightStatus.VISIBLE))
                .order_by(
                    (Insight.status == InsightStatus.ACTIVE).desc(),
                    Insight.importance.desc(),
                    Insight.last_seen_at.desc(),
                )
            )
        ).all()
        summaries = (
            await session.scalars(
                select(ChatSession)
                .where(
                    ChatSession.client_id == client_id,
                    ChatSession.status.in_(SessionStatus.FINISHED),
                )
                .order_by(ChatSession.started_at.desc())
            )
        ).all()
        return ClientMemory(profile, list(insights), list(summaries))

    async def _visible_insight(
        self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, insight_id: uuid.UUID
    ) -> Insight:
        insight = await session.scalar(
            select(Insight)
            .where(
                Insight.id == insight_id,
                Insight.coach_id == coach_id,
                Insight.client_id == client_id,
                Insight.status.in_(InsightStatus.VISIBLE),
            )
            .with_for_update()
        )
        if insight is None:
            raise NotFound("insight not found")
        return insight

    async def edit_insight(
        self,
        session: AsyncSession,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        insight_id: uuid.UUID,
        *,
        text: str | None = None,
        kind: str | None = None,
        importance: int | None = None,
        status: str | None = None,
    ) -> Insight:
        """The coach corrects an insight; ``None`` leaves a field as is. A new text is re-embedded and kept
        from being overwritten by later extractions. Raises ``InvalidInput`` for an empty text, an unknown
        kind or status, importance outside 0–10; ``NotFound`` for an unknown or deleted insight.
        ``edited_by_coach`` is set only when the text actually changes."""
        insight = await self._visible_insight(session, coach_id, client_id, insight_id)
        if kind is not None:
            if kind not in InsightKind.ALL:
                raise InvalidInput(f"kind must be one of {', '.join(InsightKind.ALL)}")
            insight.kind = kind
        if importance is not None:
            if not 0 <= importance <= 10:
                raise InvalidInput("importance must be between 0 and 10")
            insight.importance = importance
        if status is not None:
            if status not in InsightStatus.VISIBLE:
                raise InvalidInput(f"status must be one of {', '.join(InsightStatus.VISIBLE)}")
            insight.status = status
        if text is not None:
            cleaned = text.strip()
            if not cleaned:
                raise InvalidInput("text must not be empty")
            if len(cleaned) > 500:
                raise InvalidInput("text is longer than 500 characters")
            if cleaned != insight.text:
                coach = await self._accounts.get_coach(session, coach_id)
                embedder = self._registry.embedder_for(coach)
                [insight.embedding] = await embedder.embed([cleaned])
                insight.embedding_model = embedder.model
                insight.text = cleaned
                insight.edited_by_coach = True
        await session.flush()
        return insight

    async def delete_insight(self, coach_id: uuid.UUID, client_id: uuid.UUID, insight_id: uuid.UUID) -> None:
        """Forget an insight: its text is erased and it never enters a prompt again. The row stays as a
        tombstone: its embedding stops the same fact from being re-extracted, and the ids of the messages
        it came from are left out of every later summary — the summaries built on them are cleared and
        written again without them (queued after commit). Raises ``NotFound``."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            insight = await self._visible_insight(session, coach_id, client_id, insight_id)
            insight.status = InsightStatus.DELETED
            insight.text = ""
            affected = (
                await session.scalars(
                    select(ChatSession)
                    .where(
                        ChatSession.client_id == client_id,
                        ChatSession.status.in_(SessionStatus.FINISHED),
                        ChatSession.id.in_(
                            select(Message.session_id).where(Message.id.in_(insight.source_message_ids))
                        ),
                    )
                    .with_for_update()
                )
            ).all()
            for chat_session in affected:
                chat_session.status = SessionStatus.ENDED
                chat_session.summary = None
                chat_session.summary_error = None
                chat_session.source_message_ids = []
                chat_session.embedding = None
                jobs.summarize_session(session, coach_id, chat_session.id, cause=f"forget:{insight_id}")

    async def delete_summary(
        self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, session_id: uuid.UUID
    ) -> None:
        """Forget a session summary: summary, sources and vector are erased, so it is neither listed nor
        recalled again (the session's messages stay in the transcript). Raises ``NotFound``."""
        chat_session = await session.scalar(
            select(ChatSession)
            .where(
                ChatSession.id == session_id,
                ChatSession.coach_id == coach_id,
                ChatSession.client_id == client_id,
                ChatSession.status.in_(SessionStatus.FINISHED),
            )
            .with_for_update()
        )
        if chat_session is None:
            raise NotFound("session summary not found")
        chat_session.status = SessionStatus.DELETED
        chat_session.summary = None
        chat_session.summary_error = None
        chat_session.source_message_ids = []
        chat_session.embedding = None
        await session.flush()

    async def edit_profile(
        self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, changes: dict[str, Any]
    ) -> ClientProfile:
        """The coach edits the L4 profile: ``changes`` maps list fields to lists of statements and ``tone`` to
        a string; anything else is ``InvalidInput``. Raises ``NotFound`` for another coach's client."""
        await self._accounts.get_client(session, coach_id, client_id)
        profile = await self.profile_for_update(session, coach_id, client_id)
        lists = ("communication_preferences", "what_works", "what_doesnt_work", "sensitive_topics")
        for name, value in changes.items():
            if name == "tone":
                if not isinstance(value, str) or len(value) > 200:
                    raise InvalidInput("tone must be a string of at most 200 characters")
                profile.tone = value.strip()
            elif name in lists:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise InvalidInput(f"{name} must be a list of strings")
                entries = [v.strip() for v in value if v.strip()]
                if len(entries) > 20 or any(len(v) > 300 for v in entries):
                    raise InvalidInput(f"{name} takes at most 20 entries of at most 300 characters")
                setattr(profile, name, entries)
            else:
                raise InvalidInput(f"unknown profile field {name!r}")
        profile.coach_edited_at = _now()
        await session.flush()
        return profile

    # ------------------------------------------------------------------ helpers

    async def _open_session(self, session: AsyncSession, conversation_id: uuid.UUID) -> ChatSession | None:
        """The conversation's open session, locked for this transaction (``None`` when there is none)."""
        return await session.scalar(
            select(ChatSession)
            .where(ChatSession.conversation_id == conversation_id, ChatSession.status == SessionStatus.OPEN)
            .with_for_update()
        )

    async def _session_messages(self, session: AsyncSession, session_id: uuid.UUID) -> list[Message]:
        """The session's messages, oldest first, without those a deleted insight came from (forgotten)."""
        forgotten = (
            select(func.unnest(Insight.source_message_ids))
            .where(
                Insight.client_id == ChatSession.client_id,
                ChatSession.id == session_id,
                Insight.status == InsightStatus.DELETED,
            )
            .scalar_subquery()
        )
        return list(
            (
                await session.scalars(
                    select(Message)
                    .where(Message.session_id == session_id, Message.id.not_in(forgotten))
                    .order_by(Message.created_at, Message.id)
                )
            ).all()
        )

    def _input_tokens(self, max_tokens: int) -> int:
        """Transcript tokens a memory prompt may carry: a share of the context after the answer's room."""
        return int((self._settings.llm_context_tokens - max_tokens) * PROMPT_SHARE)
