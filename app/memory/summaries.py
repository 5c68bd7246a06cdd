"""The L2 summary job: a schema-checked summary of an ended session, grounded in its messages and embedded
for recall. Invalid model output, or output that copies the transcript's lines or the Assistant's words as the
client's (:func:`_refusal`), is retried with fresh samples, then the
session is marked ``failed`` with the reason — never stored half-valid. A failed summary is queued again by the
worker's sweep (:meth:`SummaryService.retry_failed`) after an exponential back-off, up to :data:`SUMMARY_JOBS` jobs in
all: a model endpoint that was down, or answered junk, for a while still gets the session summarised once it is
back. A session whose messages were all forgotten, or without a client message, gets none (it ends ``deleted``).
Idempotent: a summarised (or still open) session is left alone."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo

from redis.backoff import ExponentialBackoff
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.availability import coach_zone
from app.accounts.models import Client
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.conversations.models import Message, SenderType
from app.core.config import Settings
from app.db import jobs
from app.llm.base import ChatProvider, Embedder
from app.llm.registry import ProviderRegistry
from app.llm.schema import InvalidModelOutput, generate_structured
from app.memory.models import ChatSession, SessionStatus
from app.memory.prompts import (
    ECHO_UNSTATED,
    EXAMPLE_SUMMARY,
    EXAMPLE_TRANSCRIPT,
    SUMMARY_ECHOES,
    SUMMARY_INSTRUCTIONS,
    echoes,
    few_shot_prompt,
    input_tokens,
)
from app.memory.retrieval import summary_text
from app.memory.schemas import SessionSummary, SessionSummaryOutput
from app.memory.sessions import session_messages
from app.memory.transcript import (
    TRANSCRIPT_STAMP,
    content_words,
    copies,
    format_messages,
    ground,
    sentences,
    shares_words,
    windows,
)

log = logging.getLogger(__name__)

SUMMARY_MAX_TOKENS = 450
SUMMARY_MIN_GROUNDED = 0.5
"""Share of a summary's sentences that must be grounded in the session's messages; below it the answer is
rejected like invalid JSON (small models echo their instructions or invent)."""
OTHERS_WEIGHT = 0.5
"""What a summary sentence grounded only in the Assistant's or the Coach's messages counts towards
:data:`SUMMARY_MIN_GROUNDED` (one grounded in the client's own counts 1): a summary is about the client, and a small
model retells the reply as what the client said."""
LISTS = ("topics", "insights", "action_items")
"""The list fields of a summary, each entry grounded by the words it shares with the session (:func:`_lists_kept`)."""
SUMMARY_JOBS = 10
"""Summary jobs a session gets before its failure stands: the one its end queued and up to nine more that the sweep
queues (:meth:`SummaryService.retry_failed`). Each job has its own tries against a provider out of reach
(``app.worker.MEMORY_JOB_TRIES``)."""
RETRY_BACKOFF = ExponentialBackoff(cap=24 * 3600, base=600)
"""The wait, in seconds, before the sweep queues a failed summary again: ``min(1 day, 10 min × 2^(n − 1))`` after
its ``n``-th failed job (redis-py's :class:`~redis.backoff.ExponentialBackoff`): 10 min, 20 min, 40 min … 1 day; the
last of the :data:`SUMMARY_JOBS` about 2.8 days after the first failed, so an endpoint down over a weekend still
gets the session summarised, while one that never answers usefully costs ten jobs, not one every sweep."""
RETRIES_PER_RUN = 100
"""Failed summaries one sweep queues again at most (the longest due first); the rest wait for the next run."""


def summary_vector_text(summary: str, topics: Sequence[str]) -> str:
    """The text a session summary is embedded as (its ``chat_sessions.embedding``): the summary and its topics."""
    return f"{summary} Topics: {', '.join(topics)}."


def _lists_kept(output: SessionSummaryOutput, messages: Sequence[Message], name: str) -> SessionSummaryOutput:
    """``output`` (about the client ``name``) without what is not the session's: topics, insights and action items
    that repeat the worked example (:func:`~app.memory.prompts.echoes` of :data:`SUMMARY_ECHOES`) or share no word
    with ``messages`` (:func:`~app.memory.transcript.shares_words`) dropped, such an ``emotional_state`` replaced by
    :data:`ECHO_UNSTATED`. (An answer whose prose repeats the example, or whose lists are mostly not the session's,
    is rejected before: :func:`_refusal`.)"""
    words = content_words(" ".join(message.text for message in messages), name)
    kept: dict[str, object] = {
        field: [
            line
            for line in getattr(output, field)
            if not echoes(line, SUMMARY_ECHOES, name) and shares_words(line, words, name)
        ]
        for field in LISTS
    }
    if echoes(output.emotional_state, SUMMARY_ECHOES, name):
        kept["emotional_state"] = ECHO_UNSTATED
    return output.model_copy(update=kept)


def _refusal(output: SessionSummaryOutput, part: Sequence[Message], name: str) -> str | None:
    """Why a summary of ``part`` (messages of the client ``name``) is not kept, judged by its words alone; ``None``
    when nothing is wrong. Refused: a transcript line's date and time in any field
    (:data:`~app.memory.transcript.TRANSCRIPT_STAMP`), and prose that repeats the worked example or the Assistant's
    or the Coach's words as spoken (:func:`~app.memory.transcript.copies`). List entries that share no word with the
    session are dropped, not refused (:func:`_lists_kept`): a strong model's topic may abstract what was said
    ("work-life balance"), and one such entry must not fail the whole summary. (Found with SmolLM2: "Maria Lopez
    (2026-12-07 21:13): I'm so sorry to hear that your brother…" as the summary, the reply credited to the client,
    and the topic "Soccer player (2019-3-8 17:56)" in a session about swimming.)"""
    fields = [output.summary, *(line for field in LISTS for line in getattr(output, field)), output.emotional_state]
    stamped = next((text for text in fields if TRANSCRIPT_STAMP.search(text)), None)
    if stamped is not None:
        return f"copies a transcript line's 'Name (date time):' ({stamped!r})"
    said = sentences(output.summary)
    copied = next((sentence for sentence in said if echoes(sentence, SUMMARY_ECHOES, name)), None)
    if copied is not None:
        return f"summary: repeats the worked example ({copied!r})"
    theirs = [message.text for message in part if message.sender_type != SenderType.CLIENT]
    own = [message.text for message in part if message.sender_type == SenderType.CLIENT]
    copied = next((sentence for sentence in said if copies(sentence, theirs, own)), None)
    if copied is not None:
        return f"summary: gives the Assistant's or the Coach's words as the client's ({copied!r})"
    return None


NOTHING_TO_SUMMARISE = "nothing to summarise: every message was forgotten"
"""The summary job's result for a session whose messages were all forgotten (the session ends ``deleted``)."""
NO_CLIENT_MESSAGE = "nothing to summarise: no client message"
"""The summary job's result for a session without a (remembered) client message, such as the coach's check-in the
client has not answered (the session ends ``deleted``)."""


class SummaryFailed(Exception):
    """A session summary could not be produced (stored on the session as ``failed`` with this reason)."""


class SummaryService:
    """Writes L2 session summaries (the ``summarize_session`` job) and records why one failed."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        accounts: AccountService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._accounts = accounts

    async def summarize_session(self, coach_id: uuid.UUID, session_id: uuid.UUID, *, queue_profile: bool = True) -> str:
        """Job: write the L2 summary of an ended session, ground it in the session's messages, embed it,
        then queue the L4 profile update (unless ``queue_profile=False``: the caller runs it itself). Returns
        a status word for arq's result. A session without a message left (every one forgotten) gets no summary:
        it ends ``deleted`` (neither listed nor recalled) and the job returns :data:`NOTHING_TO_SUMMARISE`; so does
        one without a client message (only the coach's or the AI's: :data:`NO_CLIENT_MESSAGE`), no model asked.

        The summary's vector is stored only with the coach's embedding model in use
        (:meth:`~app.llm.registry.ProviderRegistry.store_embedded`). Raises ``SummaryFailed`` (after marking the
        session ``failed``) when the model's answers never validate; ``ProviderError`` and ``EmbedderSwitched``
        propagate so arq retries the job.
        """
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            chat_session = await session.get(ChatSession, session_id)
            if chat_session is None:
                return "gone"
            if chat_session.status in (SessionStatus.OPEN, SessionStatus.SUMMARIZED, SessionStatus.DELETED):
                return chat_session.status
            messages = await session_messages(session, session_id)
            coach = await uow.coach()
            client = await session.get_one(Client, chat_session.client_id)
            if not messages:
                # every message of it was forgotten (the forget erased its summary and queued this job): nothing
                # to remember, and nothing failed
                chat_session.erase_summary(SessionStatus.DELETED)
                log.info("session %s not summarised: every message of it was forgotten", session_id)
                return NOTHING_TO_SUMMARISE
            if not any(message.sender_type == SenderType.CLIENT for message in messages):
                # only the coach's (or the AI's) words, e.g. a check-in the client has not answered: nothing the
                # client said to remember (extraction skips such a session too), and nothing failed
                chat_session.erase_summary(SessionStatus.DELETED)
                log.info("session %s not summarised: the client said nothing in it", session_id)
                return NO_CLIENT_MESSAGE
            chat_session.summary_attempts += 1
        provider = await self._registry.chat_for(coach)
        embedder = await self._registry.embedder_for(coach)
        try:
            output = await self._summarize(provider, embedder, messages, client.name, coach_zone(coach.availability))
        except InvalidModelOutput as exc:
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                await self.fail_summary(uow, session_id, str(exc))
            raise SummaryFailed(str(exc)) from exc
        summary = SessionSummary(
            **_lists_kept(output, messages, client.name).model_dump(),
            message_count=len(messages),
            started_at=messages[0].created_at,
            ended_at=messages[-1].created_at,
        )
        statements = [*sentences(summary.summary), *summary.topics, *summary.insights, *summary.action_items]
        sources = (await ground(embedder, statements, messages)).sources(messages)

        stale: list[str] = []

        async def store(uow: UnitOfWork, vectors: list[list[float]], embedding_model: str) -> None:
            # the client may have forgotten some of these messages, or deleted the summary, while it was written:
            # then it is not stored (a forget queues the session's summary again)
            chat_session = await uow.session.get_one(ChatSession, session_id, with_for_update=True)
            summarised = [message.id for message in messages]
            forgotten = select(Message.id).where(Message.id.in_(summarised), Message.forgotten_at.is_not(None))
            if chat_session.status in (SessionStatus.OPEN, SessionStatus.DELETED):
                stale.append(chat_session.status)
            elif await uow.session.scalar(forgotten.limit(1)) is not None:
                stale.append("stale: messages forgotten meanwhile")
            if stale:
                return
            chat_session.summary = summary.model_dump(mode="json")
            chat_session.source_message_ids = sources
            chat_session.embedding = vectors[0]
            chat_session.embedding_model = embedding_model
            chat_session.status = SessionStatus.SUMMARIZED
            chat_session.summary_error = None
            chat_session.summary_failures = 0
            chat_session.summary_retry_at = None
            if queue_profile:
                jobs.update_profile(uow.session, coach_id, session_id, summary=chat_session.summary_attempts)

        text = summary_vector_text(summary.summary, summary.topics)
        await self._registry.store_embedded(self._sessionmaker, coach_id, embedder, [text], store)
        return stale[0] if stale else SessionStatus.SUMMARIZED

    async def _summarize(
        self, provider: ChatProvider, embedder: Embedder, messages: list[Message], name: str, zone: tzinfo
    ) -> SessionSummaryOutput:
        """Map-reduce when the session does not fit: summarise each window (dated in ``zone``, the coach's), then
        summarise the summaries. Each window's summary must pass :func:`_refusal` and be grounded in that window:
        its sentences, those grounded in the client's own messages counting 1 and those grounded only in the
        others' :data:`OTHERS_WEIGHT` (:func:`~app.memory.transcript.ground`, the client's name left out; all count 1
        in a window without a client message), must reach ``SUMMARY_MIN_GROUNDED`` on average. Another answer is
        sampled for one that does not."""
        instructions = SUMMARY_INSTRUCTIONS.format(name=name)

        def grounded_in(part: Sequence[Message]) -> Callable[[SessionSummaryOutput], Awaitable[str | None]]:
            clients = {i for i, message in enumerate(part) if message.sender_type == SenderType.CLIENT}

            async def check(output: SessionSummaryOutput) -> str | None:
                refusal = _refusal(output, part, name)
                if refusal is not None:
                    return refusal
                grounding = await ground(embedder, sentences(output.summary), part, name=name)
                share = grounding.share(clients, OTHERS_WEIGHT)
                if share < SUMMARY_MIN_GROUNDED:
                    return (
                        f"summary: only {share:.0%} grounded in the messages (a sentence grounded in the client's "
                        f"own counts 1, in the Assistant's or the Coach's only {OTHERS_WEIGHT})"
                    )
                return None

            return check

        parts = windows(messages, input_tokens(self._settings, SUMMARY_MAX_TOKENS))
        outputs = [
            await generate_structured(
                provider,
                few_shot_prompt(instructions, EXAMPLE_TRANSCRIPT, EXAMPLE_SUMMARY, format_messages(part, name, zone)),
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
            few_shot_prompt(
                instructions, EXAMPLE_TRANSCRIPT, EXAMPLE_SUMMARY, f"Summaries of the session's parts:\n{partial}"
            ),
            SessionSummaryOutput,
            max_tokens=SUMMARY_MAX_TOKENS,
            check=grounded_in(messages),
        )

    async def fail_summary(self, uow: UnitOfWork, session_id: uuid.UUID, reason: str) -> None:
        """Mark an ended session's summary ``failed`` with ``reason`` (nothing else is stored) and count the failed
        job (``summary_failures``): the sweep queues it again after :data:`RETRY_BACKOFF` of that count
        (``summary_retry_at``), unless it was the :data:`SUMMARY_JOBS`-th, whose failure stands."""
        session = uow.session
        chat_session = await session.get(ChatSession, session_id)
        if chat_session is None or chat_session.status != SessionStatus.ENDED:
            return
        chat_session.status = SessionStatus.FAILED
        chat_session.summary_error = reason
        failures = chat_session.summary_failures = chat_session.summary_failures + 1
        if failures < SUMMARY_JOBS:
            wait = timedelta(seconds=RETRY_BACKOFF.compute(failures - 1))
            chat_session.summary_retry_at = datetime.now(UTC) + wait
            log.warning(
                "summary of session %s failed (job %d, tried again in %s): %s", session_id, failures, wait, reason
            )
        else:
            chat_session.summary_retry_at = None
            log.error("summary of session %s failed for good after %d jobs: %s", session_id, failures, reason)

    async def retry_failed(self, *, limit: int = RETRIES_PER_RUN) -> int:
        """Cron (worker): queue again the summaries of up to ``limit`` failed sessions whose retry is due
        (``summary_retry_at`` passed; the longest due first), each set ``ended`` (pending) with its
        ``summarize_session`` job (id ``…:retry:<failed jobs>``) in one transaction. Returns how many.

        Runs before any tenant is known: candidates come from the ``failed_summaries_due()`` SECURITY DEFINER
        function (migration 0064); each is then checked again (still failed and due: another sweep may have queued
        it meanwhile) inside its own tenant's transaction."""
        async with self._sessionmaker() as session:
            candidates = (
                await session.execute(
                    text("SELECT coach_id, session_id FROM failed_summaries_due(:limit)"), {"limit": limit}
                )
            ).all()
        queued = 0
        for coach_id, session_id in candidates:
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                chat_session = await uow.session.get(ChatSession, session_id, with_for_update=True)
                if (
                    chat_session is None
                    or chat_session.status != SessionStatus.FAILED
                    or chat_session.summary_retry_at is None
                    or chat_session.summary_retry_at > datetime.now(UTC)
                ):
                    continue
                chat_session.status = SessionStatus.ENDED
                chat_session.summary_retry_at = None
                jobs.summarize_session(
                    uow.session, coach_id, session_id, cause=f"retry:{chat_session.summary_failures}"
                )
            queued += 1
        if queued:
            log.info("%d failed session summaries queued again", queued)
        return queued
