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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.service import AccountService
from app.chat.prompt import assemble_prompt
from app.config import Settings
from app.db import models as m
from app.db.engine import tenant_session
from app.errors import InvalidInput, NotFound
from app.handoff.crisis import crisis_reply, needs_crisis_protocol, risk_metadata
from app.handoff.risk import RiskDetector
from app.jobs import JobQueue
from app.llm.base import ProviderError, Usage
from app.llm.registry import ProviderRegistry
from app.memory.service import MemoryService
from app.rag.retrieval import RetrievedChunk, retrieve

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 4000
APOLOGY = (
    "I'm sorry — I couldn't put together an answer just now. Your message is saved and your coach can "
    "see it. Please try again in a moment."
)
TEMPERATURE = 0.3


@dataclass(frozen=True)
class TurnResult:
    """The outcome of a turn: ids, the full reply, its citations and attribution metadata."""

    conversation_id: uuid.UUID
    client_message_id: uuid.UUID
    message_id: uuid.UUID
    reply: str
    citations: list[dict[str, Any]]
    metadata: dict[str, Any]


_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """Cut a reply that hit the token limit back to its last complete sentence (unchanged if it has none)."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else text


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class ChatService:
    """Runs chat turns for a client of a coach and reads conversations for the coach."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        accounts: AccountService,
        memory: MemoryService,
        jobs: JobQueue,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._accounts = accounts
        self._memory = memory
        self._jobs = jobs
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

        Raises (before anything is stored) ``InvalidInput`` for an empty or over-long message and
        ``NotFound`` for a conversation that is not this client's.
        """
        text = (text or "").strip()
        if not text:
            raise InvalidInput("text must not be empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise InvalidInput(f"text is longer than {MAX_MESSAGE_CHARS} characters")
        timings: dict[str, float] = {}

        # 1. persist the client message first
        async with tenant_session(self._sessionmaker, coach_id) as session:
            coach = await self._accounts.get_coach(session, coach_id)
            conversation = await self._conversation_for(session, coach_id, client_id, conversation_id, channel)
            now = datetime.now(UTC)
            client_message = m.Message(
                coach_id=coach_id,
                conversation_id=conversation.id,
                sender_type=m.SenderType.CLIENT,
                text=text,
                citations=[],
                meta={},
                created_at=now,
            )
            session.add(client_message)
            await session.flush()
            ended = await self._memory.track_message(session, coach, client_message, now)
            risk = self._risk.assess(text)
            if needs_crisis_protocol(risk):
                conversation.urgent_at = now
                conversation.urgent_reason = f"crisis: {', '.join(risk.matched[:3])}"
            history = list(
                reversed(
                    (
                        await session.scalars(
                            select(m.Message)
                            .where(
                                m.Message.conversation_id == conversation.id,
                                m.Message.id != client_message.id,
                            )
                            .order_by(m.Message.created_at.desc())
                            .limit(coach.recent_messages)
                        )
                    ).all()
                )
            )
        if ended is not None:
            await self._memory.session_ended(ended)

        passages: list[RetrievedChunk] = []
        started = time.perf_counter()
        if needs_crisis_protocol(risk):
            # 2. crisis protocol: a safe, caring reply with resources at once, whatever state the model is in
            metadata: dict[str, Any] = {"crisis": True, "handoff_reason": "crisis", "risk": risk_metadata(risk)}
            reply = crisis_reply(coach.name)
            yield reply
        else:
            provider = self._registry.chat_for(coach)
            metadata = {"provider": provider.provider, "model": provider.model}
            reply_parts: list[str] = []
            try:
                # one deadline for retrieval (the query embedding may be remote) and generation
                async with asyncio.timeout(self._settings.llm_timeout_seconds):
                    # 2. retrieve
                    t0 = time.perf_counter()
                    embedder = self._registry.embedder_for(coach)
                    [query_embedding] = await embedder.embed([text])
                    async with tenant_session(self._sessionmaker, coach_id) as session:
                        passages = await retrieve(
                            session,
                            coach_id,
                            query=text,
                            query_embedding=query_embedding,
                            embedding_model=embedder.model,
                            k=self._settings.retrieval_top_k,
                        )
                        memory = await self._memory.context_for(
                            session,
                            coach,
                            client_id,
                            query_embedding=query_embedding,
                            embedding_model=embedder.model,
                            exclude_session_id=client_message.session_id,
                        )
                    timings["retrieval_ms"] = _ms(time.perf_counter() - t0)

                    # 3. assemble
                    t0 = time.perf_counter()
                    prompt = assemble_prompt(
                        persona=coach.persona,
                        passages=passages,
                        memory=memory,
                        history=history,
                        user_text=text,
                        budget_tokens=self._settings.llm_context_tokens - self._settings.llm_max_tokens,
                    )
                    passages = prompt.passages
                    timings["prompt_ms"] = _ms(time.perf_counter() - t0)
                    metadata["history_messages"] = prompt.history_used
                    metadata["memory"] = prompt.memory_used()

                    # 4. generate, streamed
                    t0 = time.perf_counter()
                    usage: Usage | None = None
                    async for item in provider.stream(
                        prompt.messages, max_tokens=self._settings.llm_max_tokens, temperature=TEMPERATURE
                    ):
                        if isinstance(item, Usage):
                            usage = item
                            continue
                        if not reply_parts:
                            timings["first_token_ms"] = _ms(time.perf_counter() - t0)
                        reply_parts.append(item)
                        yield item
                    timings["generation_ms"] = _ms(time.perf_counter() - t0)
                if usage is not None:
                    metadata["prompt_tokens"] = usage.prompt_tokens
                    metadata["completion_tokens"] = usage.completion_tokens
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
                log.warning("chat turn for coach %s failed: %s", coach_id, error)
                metadata["error"] = error
                metadata["partial_reply"] = "".join(reply_parts)
                reply, passages = APOLOGY, []
                yield ("\n\n" if reply_parts else "") + APOLOGY
        metadata["latency_ms"] = _ms(time.perf_counter() - started)
        metadata.update(timings)
        citations = [p.citation() for p in passages]

        # 5. persist the reply
        t0 = time.perf_counter()
        async with tenant_session(self._sessionmaker, coach_id) as session:
            now = datetime.now(UTC)
            ai_message = m.Message(
                coach_id=coach_id,
                conversation_id=conversation.id,
                sender_type=m.SenderType.AI,
                text=reply,
                citations=citations,
                meta=metadata,
                created_at=now,
            )
            session.add(ai_message)
            await session.flush()
            await self._memory.track_message(session, coach, ai_message, now)
            await session.execute(
                update(m.Conversation).where(m.Conversation.id == conversation.id).values(last_message_at=now)
            )
        metadata["persist_ms"] = _ms(time.perf_counter() - t0)
        # 6. follow-ups: L3 extraction once enough client messages are unread
        await self._jobs.extract_insights(coach_id, conversation.id, after_message_id=ai_message.id)
        yield TurnResult(conversation.id, client_message.id, ai_message.id, reply, citations, metadata)

    async def _conversation_for(
        self,
        session: AsyncSession,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        conversation_id: uuid.UUID | None,
        channel: str,
    ) -> m.Conversation:
        if conversation_id is not None:
            conversation = await session.scalar(
                select(m.Conversation).where(
                    m.Conversation.id == conversation_id,
                    m.Conversation.coach_id == coach_id,
                    m.Conversation.client_id == client_id,
                )
            )
            if conversation is None:
                raise NotFound("conversation not found")
            return conversation
        conversation = m.Conversation(coach_id=coach_id, client_id=client_id, channel=channel)
        session.add(conversation)
        await session.flush()
        return conversation

    async def list_conversations(
        self, coach_id: uuid.UUID, client_id: uuid.UUID | None = None
    ) -> list[tuple[m.Conversation, str, int]]:
        """The coach's conversations, most recent first, as ``(conversation, client name, message count)``."""
        async with tenant_session(self._sessionmaker, coach_id) as session:
            stmt = (
                select(m.Conversation, m.Client.name, func.count(m.Message.id))
                .join(m.Client, m.Client.id == m.Conversation.client_id)
                .outerjoin(m.Message, m.Message.conversation_id == m.Conversation.id)
                .where(m.Conversation.coach_id == coach_id)
                .group_by(m.Conversation.id, m.Client.name)
                .order_by(m.Conversation.last_message_at.desc())
            )
            if client_id is not None:
                stmt = stmt.where(m.Conversation.client_id == client_id)
            return [(c, name, int(n)) for c, name, n in (await session.execute(stmt)).all()]

    async def get_conversation(
        self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, client_id: uuid.UUID | None = None
    ) -> tuple[m.Conversation, list[m.Message]]:
        """A conversation and its messages (oldest first). With ``client_id``, only that client's.

        Raises ``NotFound`` (also for another coach's or another client's conversation).
        """
        async with tenant_session(self._sessionmaker, coach_id) as session:
            stmt = select(m.Conversation).where(
                m.Conversation.id == conversation_id, m.Conversation.coach_id == coach_id
            )
            if client_id is not None:
                stmt = stmt.where(m.Conversation.client_id == client_id)
            conversation = await session.scalar(stmt)
            if conversation is None:
                raise NotFound("conversation not found")
            messages = (
                await session.scalars(
                    select(m.Message)
                    .where(m.Message.conversation_id == conversation_id)
                    .order_by(m.Message.created_at, m.Message.id)
                )
            ).all()
        return conversation, list(messages)
