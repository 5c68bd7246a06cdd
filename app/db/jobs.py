"""Enqueueing background jobs on arq. Jobs take ids, never ORM objects; enqueue only after commit."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis

INGEST_DOCUMENT = "ingest_document"
SUMMARIZE_SESSION = "summarize_session"
EXTRACT_INSIGHTS = "extract_insights"
UPDATE_PROFILE = "update_profile"
DELIVER_ALERT = "deliver_alert"
ANALYSE_INTERVENTION = "analyse_intervention"
SCORE_INTERVENTIONS = "score_interventions"
REFRESH_TRAINING_DATA = "refresh_training_data"
START_FINE_TUNE = "start_fine_tune"
POLL_FINE_TUNE = "poll_fine_tune"
EVALUATE_MODEL = "evaluate_model"


class JobQueue:
    """Thin, typed front of the arq pool so services name jobs in one place.

    Every memory job gets a ``_job_id`` naming what it is for, so a trigger that fires twice (a retried
    request, a second sweep) queues the work once.
    """

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

    async def ingest_document(self, coach_id: uuid.UUID, document_id: uuid.UUID) -> None:
        """Queue extraction → chunking → embedding → storage of one document (idempotent job)."""
        await self.redis.enqueue_job(INGEST_DOCUMENT, str(coach_id), str(document_id))

    async def summarize_session(self, coach_id: uuid.UUID, session_id: uuid.UUID, *, cause: str = "ended") -> None:
        """Queue the L2 summary of an ended session (then, from the job, its L4 update). ``cause`` names why
        (``ended``, or ``forget:<insight id>`` for a rewrite), so a rewrite is not mistaken for a duplicate."""
        await self.redis.enqueue_job(
            SUMMARIZE_SESSION, str(coach_id), str(session_id), _job_id=f"{SUMMARIZE_SESSION}:{session_id}:{cause}"
        )

    async def extract_insights(
        self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, after_message_id: uuid.UUID, force: bool = False
    ) -> None:
        """Queue L3 extraction over the conversation's unread messages (triggered by ``after_message_id``);
        without ``force`` the job waits until enough client messages have piled up."""
        await self.redis.enqueue_job(
            EXTRACT_INSIGHTS,
            str(coach_id),
            str(conversation_id),
            force,
            _job_id=f"{EXTRACT_INSIGHTS}:{after_message_id}:{force}",
        )

    async def update_profile(self, coach_id: uuid.UUID, session_id: uuid.UUID) -> None:
        """Queue the L4 profile update from one summarised session."""
        await self.redis.enqueue_job(
            UPDATE_PROFILE, str(coach_id), str(session_id), _job_id=f"{UPDATE_PROFILE}:{session_id}"
        )

    async def deliver_alert(self, coach_id: uuid.UUID, handoff_id: uuid.UUID) -> None:
        """Queue the coach's webhook and e-mail alerts for a new handoff (once per handoff)."""
        await self.redis.enqueue_job(
            DELIVER_ALERT, str(coach_id), str(handoff_id), _job_id=f"{DELIVER_ALERT}:{handoff_id}"
        )

    async def analyse_intervention(self, coach_id: uuid.UUID, intervention_id: uuid.UUID) -> None:
        """Queue the analysis of one intervention (technique, tone, formality, key phrases) and the profile
        updates it feeds (once per intervention)."""
        await self.redis.enqueue_job(
            ANALYSE_INTERVENTION,
            str(coach_id),
            str(intervention_id),
            _job_id=f"{ANALYSE_INTERVENTION}:{intervention_id}",
        )

    async def score_interventions(self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, trigger: str) -> None:
        """Queue the outcome scoring of the conversation's interventions (the client's next turn, thumbs);
        ``trigger`` (a message id and event) names why, so the same event queues it once."""
        await self.redis.enqueue_job(
            SCORE_INTERVENTIONS,
            str(coach_id),
            str(conversation_id),
            _job_id=f"{SCORE_INTERVENTIONS}:{conversation_id}:{trigger}",
        )

    async def refresh_training_data(self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, trigger: str) -> None:
        """Queue the rebuild of one conversation's training examples; ``trigger`` (a message id and event)
        names why, so the same event queues it once."""
        await self.redis.enqueue_job(
            REFRESH_TRAINING_DATA,
            str(coach_id),
            str(conversation_id),
            _job_id=f"{REFRESH_TRAINING_DATA}:{conversation_id}:{trigger}",
        )

    async def start_fine_tune(self, coach_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Queue the upload of a fine-tune job's files and its creation at the provider."""
        await self.redis.enqueue_job(START_FINE_TUNE, str(coach_id), str(job_id), _job_id=f"{START_FINE_TUNE}:{job_id}")

    async def poll_fine_tune(self, coach_id: uuid.UUID, job_id: uuid.UUID, *, defer_s: float = 0) -> None:
        """Queue one status poll of a running fine-tune job (``defer_s`` seconds from now)."""
        await self.redis.enqueue_job(POLL_FINE_TUNE, str(coach_id), str(job_id), _defer_by=defer_s or None)

    async def evaluate_model(self, coach_id: uuid.UUID, version_id: uuid.UUID) -> None:
        """Queue the promotion gate for a staging model version (once per version)."""
        await self.redis.enqueue_job(
            EVALUATE_MODEL, str(coach_id), str(version_id), _job_id=f"{EVALUATE_MODEL}:{version_id}"
        )
