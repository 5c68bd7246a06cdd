"""Data rights: a client's export (GDPR art. 15 and 20: access and portability) and erasure (art. 17) of a
client or of a coach's whole account.

Erasure deletes the ``clients`` (or ``coaches``) row and lets PostgreSQL do the rest: every table holding a
client's words reaches ``clients`` or ``conversations`` through an ``ON DELETE CASCADE`` foreign key
(conversations, messages, chat sessions with their summaries and embeddings, insights, profiles, handoffs,
drafts, interventions, training examples), and every tenant table reaches ``coaches``. What a foreign key
cannot reach is handled here:

- frozen training datasets (the snapshots a fine-tune trained on) lose the erased examples' ids, and the
  coach's style profile is recomputed without the erased interventions, in the same transaction;
- the response cache and the learning dashboard's failure patterns (Redis; they quote clients' messages) and
  the training files already uploaded to the coach's provider for fine-tuning are purged after the commit by
  the ``purge_erased_data`` job (through the outbox, so a Redis outage delays it but loses nothing). A file the
  provider fails to delete is logged and listed in the job's result; it does not stop the rest. When it
  deleted keys, the job then asks Redis to rewrite its append-only file (``BGREWRITEAOF``,
  :func:`app.learning.cache.rewrite_append_only_file`) and to take a new snapshot (``BGSAVE SCHEDULE``,
  :func:`app.learning.cache.save_snapshot_again`): both files otherwise keep the deleted values on disk.

Deleting a coach's account cancels the fine-tunes still training at the provider and deletes the provider files
first and synchronously (the coach's key goes with the account), then the account; the outcome lists the jobs
and files that could not be cancelled or deleted. A purge after an erasure or a forget likewise cancels a fine-tune
still training on the files it deletes (marked :data:`ERASED_WHILE_TRAINING`): it would otherwise deliver a model
of the erased data.

A fine-tuned model already trained on an erased client's examples is not retrained or deleted (the coach can
retire it; see :mod:`app.learning.versions`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.disclosure import consent_out
from app.accounts.models import Coach
from app.accounts.service import AccountService
from app.accounts.tone import consent_entries
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.conversations.metadata import client_citations, client_view, feedback_of
from app.conversations.models import Conversation, Message
from app.core.errors import Conflict, Forbidden
from app.db import jobs
from app.learning.cache import ResponseCache, delete_matching, rewrite_append_only_file, save_snapshot_again
from app.learning.dashboard import FAILURE_PATTERNS_PREFIX
from app.learning.finetune import FineTuneService
from app.learning.interventions import InterventionService
from app.learning.models import FineTuneJob, FineTuneStatus, TrainingExample
from app.learning.training import forget_examples
from app.memory.models import ChatSession, ClientProfile, Insight

log = logging.getLogger(__name__)

EXPORT_FORMAT = "opencoach.client-export.v1"
"""The ``format`` field of an export; a reader checks it before reading the rest."""


@dataclass(frozen=True)
class Purge:
    """What a purge did: Redis keys deleted, provider files deleted, fine-tunes cancelled at the provider (their
    ``ftjob-…`` ids), and ``"<id>: <reason>"`` failures of each."""

    redis_keys: int = 0
    files_deleted: list[str] = field(default_factory=list)
    files_failed: list[str] = field(default_factory=list)
    jobs_cancelled: list[str] = field(default_factory=list)
    jobs_failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form ``{"redis_keys", "files_deleted", "files_failed", "jobs_cancelled", "jobs_failed"}``."""
        return {
            "redis_keys": self.redis_keys,
            "files_deleted": self.files_deleted,
            "files_failed": self.files_failed,
            "jobs_cancelled": self.jobs_cancelled,
            "jobs_failed": self.jobs_failed,
        }


ERASED_WHILE_TRAINING = "cancelled: data it was training on was erased (a client's erasure, or a forgotten memory)"
"""``error`` of a fine-tune cancelled at the provider because its training data was erased while it trained."""


def _training(job: FineTuneJob) -> bool:
    """The fine-tune is training at the provider (started there, not ended): cancelling it stops it."""
    return job.provider_job_id is not None and job.status in FineTuneStatus.ACTIVE


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _message_out(msg: Message) -> dict[str, Any]:
    """A message as exported: what the client was shown of it (``client_view`` metadata, citations without
    retrieval scores) and ``forgotten_at``, when a forget took it out of the AI's memory and training data (it stays
    in the transcript); the coach-only metadata (confidence, risk, model) is not the client's data."""
    return {
        "id": str(msg.id),
        "sender_type": msg.sender_type,
        "text": msg.text,
        "created_at": _iso(msg.created_at),
        "forgotten_at": _iso(msg.forgotten_at),
        "citations": client_citations(msg.citations or []),
        "metadata": client_view(msg.meta),
    }


def _memory_out(profile: ClientProfile | None, insights: list[Insight], sessions: list[ChatSession]) -> dict[str, Any]:
    return {
        "profile": None
        if profile is None
        else {
            "communication_preferences": profile.communication_preferences,
            "what_works": profile.what_works,
            "what_doesnt_work": profile.what_doesnt_work,
            "tone": profile.tone,
            "sensitive_topics": profile.sensitive_topics,
            "updated_at": _iso(profile.updated_at),
        },
        "insights": [
            {
                "id": str(i.id),
                "kind": i.kind,
                "text": i.text,
                "status": i.status,
                "importance": i.importance,
                "first_seen_at": _iso(i.first_seen_at),
                "last_seen_at": _iso(i.last_seen_at),
            }
            for i in insights
        ],
        "session_summaries": [
            {
                "id": str(s.id),
                "conversation_id": str(s.conversation_id),
                "status": s.status,
                "started_at": _iso(s.started_at),
                "ended_at": _iso(s.ended_at),
                "summary": s.summary,
            }
            for s in sessions
        ],
    }


class DataRightsService:
    """Export and erasure of a client's data, and deletion of a coach's account (see the module docstring)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        accounts: AccountService,
        interventions: InterventionService,
        fine_tunes: FineTuneService,
        cache: ResponseCache,
        redis: Redis,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts
        self._interventions = interventions
        self._fine_tunes = fine_tunes
        self._cache = cache
        self._redis = redis

    async def export_client(self, uow: UnitOfWork, client_id: uuid.UUID) -> dict[str, Any]:
        """Everything stored about one client, as JSON: ``{"format", "exported_at", "client": {"id", "name",
        "created_at"}, "conversations": [{"id", "channel", "created_at", "messages": [...]}], "feedback":
        [{"message_id", "helpful", "rating", "text", "at"}], "memory": {"profile", "insights" (every status,
        deleted ones included while stored), "session_summaries"}, "consent": {"ai_disclosure", "tone"}}`` (consent:
        :func:`app.accounts.disclosure.consent_out`, :func:`app.accounts.tone.consent_entries`). Raises
        ``NotFound`` (also for another coach's client)."""
        session = uow.session
        client = await self._accounts.get_client(uow, client_id)
        coach = await uow.coach()
        # One statement, so one snapshot: a conversation started while the export runs is either in it with its
        # messages or not at all (two reads could see its message and not it).
        transcript = (
            await session.execute(
                select(Conversation, Message)
                .outerjoin(Message, Message.conversation_id == Conversation.id)
                .where(Conversation.client_id == client_id)
                .order_by(Conversation.created_at, Conversation.id, Message.created_at, Message.id)
            )
        ).all()
        profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
        insights = (
            await session.scalars(select(Insight).where(Insight.client_id == client_id).order_by(Insight.first_seen_at))
        ).all()
        sessions = (
            await session.scalars(
                select(ChatSession).where(ChatSession.client_id == client_id).order_by(ChatSession.started_at)
            )
        ).all()
        conversations: dict[Conversation, list[Message]] = {}
        for conversation, msg in transcript:
            msgs = conversations.setdefault(conversation, [])
            if msg is not None:  # the outer join's row of a conversation without messages
                msgs.append(msg)
        feedback = []
        for msg in sorted((m for ms in conversations.values() for m in ms), key=lambda m: (m.created_at, m.id)):
            rated = feedback_of(msg.meta)
            if rated is not None:
                feedback.append({"message_id": str(msg.id), "helpful": rated.helpful, "rating": rated.rating,
                                 "text": rated.text, "at": rated.at})  # fmt: skip
        return {
            "format": EXPORT_FORMAT,
            "exported_at": datetime.now(UTC).isoformat(),
            "client": {"id": str(client.id), "name": client.name, "created_at": _iso(client.created_at)},
            "conversations": [
                {
                    "id": str(c.id),
                    "channel": c.channel,
                    "created_at": _iso(c.created_at),
                    "messages": [_message_out(m) for m in msgs],
                }
                for c, msgs in conversations.items()
            ],
            "feedback": feedback,
            "memory": _memory_out(profile, list(insights), list(sessions)),
            "consent": consent_out(client, coach.name) | {"tone": await consent_entries(session, client_id)},
        }

    async def erase_client(self, uow: UnitOfWork, client_id: uuid.UUID) -> None:
        """Erase a client and everything derived from them, in one transaction (cascading foreign keys, dataset
        snapshots, the style profile), and queue the purge of Redis caches and provider files after the commit.
        Raises ``NotFound`` (also for another coach's client)."""
        session, coach_id = uow.session, uow.coach_id
        await self._accounts.get_client(uow, client_id)
        example_ids = set(
            (
                await session.scalars(
                    select(TrainingExample.id)
                    .join(Conversation, Conversation.id == TrainingExample.conversation_id)
                    .where(Conversation.client_id == client_id)
                )
            ).all()
        )
        conversations = (
            await session.scalars(select(Conversation.id).where(Conversation.client_id == client_id))
        ).all()
        file_ids = await forget_examples(session, coach_id, example_ids, conversations, erased=True)
        await self._accounts.delete_client(uow, client_id)
        await session.flush()
        await self._interventions.refresh_style(session, coach_id)
        jobs.purge_erased_data(session, coach_id, file_ids, reason=f"client:{client_id}")

    async def delete_account(
        self, coach_id: uuid.UUID, password: str, *, disconnect: Callable[[], Awaitable[None]] | None = None
    ) -> Purge:
        """Delete the coach's whole account after checking ``password`` against one of its dashboard users
        (``Forbidden`` otherwise): the provider's training files first (the key is stored with the account), then
        ``disconnect`` (the channels' goodbyes that need the account's credentials: the Telegram bot's
        ``deleteWebhook``), then the account and, by cascade, every tenant row; the Redis purge is queued after the
        commit. Returns the provider files deleted and the ones that failed (the account is deleted either way).
        Two units of work of its own around the provider calls, so no transaction waits on the provider."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            if not await self._accounts.check_password(uow, password):
                raise Forbidden("the password is not correct")
            coach = await uow.coach()
            fine_tunes = (await uow.session.scalars(select(FineTuneJob).where(FineTuneJob.coach_id == coach_id))).all()
            file_ids = sorted({f for job in fine_tunes for f in (job.training_file_id, job.validation_file_id) if f})
        stopped = await self._cancel_training(coach, [job for job in fine_tunes if _training(job)])
        files = await self._delete_files(coach, file_ids)
        if disconnect is not None:
            await disconnect()
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            await self._accounts.delete_coach(uow)
            jobs.purge_erased_data(uow.session, coach_id, [], reason="account")
        return Purge(0, files.files_deleted, files.files_failed, stopped.jobs_cancelled, stopped.jobs_failed)

    async def _cancel_training(self, coach: Coach, fine_tunes: list[FineTuneJob]) -> Purge:
        """Cancel ``fine_tunes`` at the provider (:meth:`FineTuneService.cancel_provider_jobs`); what it did."""
        if not fine_tunes:
            return Purge()
        pairs = [(job.id, job.provider_job_id) for job in fine_tunes if job.provider_job_id]
        try:
            cancelled, failed = await self._fine_tunes.cancel_provider_jobs(coach, pairs)
        except Conflict as exc:
            cancelled, failed = [], [f"{provider_job_id}: {exc.message}" for _, provider_job_id in pairs]
        for failure in failed:
            log.warning("coach %s: fine-tune not cancelled at the provider: %s", coach.id, failure)
        return Purge(jobs_cancelled=cancelled, jobs_failed=failed)

    async def _delete_files(self, coach: Coach, file_ids: list[str]) -> Purge:
        if not file_ids:
            return Purge()
        try:
            deleted, failed = await self._fine_tunes.delete_files(coach, file_ids)
        except Conflict as exc:
            deleted, failed = [], [f"{file_id}: {exc.message}" for file_id in file_ids]
        for failure in failed:
            log.warning("coach %s: training file not deleted at the provider: %s", coach.id, failure)
        return Purge(files_deleted=deleted, files_failed=failed)

    async def purge(self, coach_id: uuid.UUID, file_ids: list[str]) -> Purge:
        """Job (idempotent): delete the coach's cached replies and failure patterns in Redis (all of them: a
        cache key is a hash and names no client) and, when the account still exists, ``file_ids`` at the
        provider, forgetting them on the fine-tune jobs. With the account gone, its cache counters go too."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            coach = await uow.session.get(Coach, coach_id)  # None once the account is deleted
        keys = await self._cache.invalidate(coach_id, with_stats=coach is None)
        keys += await delete_matching(self._redis, f"{FAILURE_PATTERNS_PREFIX}:{coach_id}:*")
        if keys:  # the deleted values stay in Redis's files on disk until they are written again
            aof = await rewrite_append_only_file(self._redis)
            snapshot = await save_snapshot_again(self._redis)  # after the rewrite: SCHEDULE waits for it
            log.info(
                "coach %s: %d Redis keys purged; append-only file: %s; snapshot: %s", coach_id, keys, aof, snapshot
            )
        if coach is None:
            return Purge(redis_keys=keys, files_failed=[f"{f}: the account is deleted" for f in file_ids])
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            training = [
                job
                for job in await uow.session.scalars(select(FineTuneJob).where(FineTuneJob.coach_id == coach_id))
                if _training(job) and {job.training_file_id, job.validation_file_id} & set(file_ids)
            ]
        stopped = await self._cancel_training(coach, training)
        files = await self._delete_files(coach, file_ids)
        if files.files_deleted or stopped.jobs_cancelled:  # (else nothing to mark on the jobs)
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                for job in await uow.session.scalars(select(FineTuneJob).where(FineTuneJob.coach_id == coach_id)):
                    if job.training_file_id in files.files_deleted:
                        job.training_file_id = None
                    if job.validation_file_id in files.files_deleted:
                        job.validation_file_id = None
                    if job.provider_job_id in stopped.jobs_cancelled and job.status not in FineTuneStatus.FINAL:
                        job.status, job.finished_at, job.error = (
                            FineTuneStatus.CANCELLED,
                            datetime.now(UTC),
                            ERASED_WHILE_TRAINING,
                        )
        return Purge(keys, files.files_deleted, files.files_failed, stopped.jobs_cancelled, stopped.jobs_failed)
