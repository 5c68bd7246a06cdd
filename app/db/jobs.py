"""Background jobs, named in one place and queued through the transactional outbox (:mod:`app.db.outbox`).

Each function adds its job to ``session``'s transaction: the job is sent to arq only once that transaction
commits (and is kept until Redis takes it), so a rolled-back change queues nothing and a Redis outage loses
nothing. Jobs take ids, never ORM objects; every job is idempotent (arq runs a job at least once). A
``_job_id`` names what each job is for, so a trigger that fires twice (a retried request, a second sweep)
runs the work once.
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.outbox import add_job

INGEST_DOCUMENT = "ingest_document"
REHEADER_DOCUMENT = "reheader_document"
SUMMARIZE_SESSION = "summarize_session"
EXTRACT_INSIGHTS = "extract_insights"
UPDATE_PROFILE = "update_profile"
DELIVER_ALERT = "deliver_alert"
CONFIRM_ALERT_EMAIL = "confirm_alert_email"
ANALYSE_INTERVENTION = "analyse_intervention"
SCORE_INTERVENTIONS = "score_interventions"
REFRESH_TRAINING_DATA = "refresh_training_data"
START_FINE_TUNE = "start_fine_tune"
POLL_FINE_TUNE = "poll_fine_tune"
STOP_FINE_TUNES = "stop_fine_tunes"
EVALUATE_MODEL = "evaluate_model"
ANSWER_PENDING = "answer_pending"
PURGE_ERASED_DATA = "purge_erased_data"
EMBED_MESSAGES = "embed_messages"
REEMBED_COACH = "reembed_coach"
TELEGRAM_DELIVER = "telegram_deliver"
REBUILD_BRIEFS = "rebuild_briefs"

EMBED_WINDOW_KEY = "embed_window_s"
"""``session.info`` key (set on the sessionmaker by the container from ``EPISODE_EMBED_WINDOW_SECONDS``): the
window, in seconds, in which a conversation's new messages share one ``embed_messages`` job (absent or 0: a
job per message, at once). See :func:`embed_messages`."""
EMBED_SETTLE_S = 5.0
"""Seconds a window's ``embed_messages`` job waits after its window ends, for the transactions that queued it
to commit."""

ALERTS_QUEUE = "opencoach:queue:alerts"
"""The arq queue of the coach's handoff alerts, served by its own worker (``app.worker._alert_worker``) so
that slow jobs on the default queue (a large PDF, a drip-feeding endpoint) never hold back a crisis alert."""
ERASURE_QUEUE = "opencoach:queue:erasure"
"""The arq queue of the jobs that take erased or forgotten data out of where it lingers after the erasing
transaction (:func:`purge_erased_data`, the :func:`refresh_training_data` of a forget, :func:`rebuild_briefs`),
served by its own worker (``app.worker._erasure_worker``): a client's erasure or forget never waits behind the
model jobs of the default queue (summaries, insights, ingestion, fine-tunes), and its provider calls (training
file deletes) never hold an alert's slot."""


def ingest_document(session: AsyncSession, coach_id: uuid.UUID, document_id: uuid.UUID, *, lost: bool = False) -> None:
    """Queue extraction → chunking → embedding → storage of one document (idempotent job). ``lost``: its job
    again, the first one lost (one id for every such job, so sweeps that meet the same loss queue it once)."""
    job_id = f"{INGEST_DOCUMENT}:{document_id}:lost" if lost else None
    add_job(session, coach_id, INGEST_DOCUMENT, str(coach_id), str(document_id), job_id=job_id)


def reheader_document(
    session: AsyncSession, coach_id: uuid.UUID, document_id: uuid.UUID, *, backfill: bool = False
) -> None:
    """Queue the re-heading of a renamed document's stored chunks (their contextual headers and vectors follow its
    title: :func:`app.rag.headers.reheader_document`; idempotent job, one per rename). ``backfill``: the one of a
    document with chunks stored before their headings were (:func:`app.rag.headers.queue_heading_backfill`), one
    id per document, so a sweep that finds it again while it waits queues it once."""
    job_id = f"{REHEADER_DOCUMENT}:{document_id}:backfill" if backfill else None
    add_job(session, coach_id, REHEADER_DOCUMENT, str(coach_id), str(document_id), job_id=job_id)


def summarize_session(
    session: AsyncSession, coach_id: uuid.UUID, session_id: uuid.UUID, *, cause: str = "ended"
) -> None:
    """Queue the L2 summary of an ended session (then, from the job, its L4 update). ``cause`` names why
    (``ended``, or ``forget:<insight id>`` for a rewrite), so a rewrite is not mistaken for a duplicate."""
    add_job(
        session,
        coach_id,
        SUMMARIZE_SESSION,
        str(coach_id),
        str(session_id),
        job_id=f"{SUMMARIZE_SESSION}:{session_id}:{cause}",
    )


def extract_insights(
    session: AsyncSession,
    coach_id: uuid.UUID,
    conversation_id: uuid.UUID,
    *,
    after_message_id: uuid.UUID,
    force: bool = False,
) -> None:
    """Queue L3 extraction over the conversation's unread messages (triggered by ``after_message_id``);
    without ``force`` the job waits until enough client messages have piled up."""
    add_job(
        session,
        coach_id,
        EXTRACT_INSIGHTS,
        str(coach_id),
        str(conversation_id),
        force,
        job_id=f"{EXTRACT_INSIGHTS}:{after_message_id}:{force}",
    )


def update_profile(session: AsyncSession, coach_id: uuid.UUID, session_id: uuid.UUID, *, summary: int) -> None:
    """Queue the L4 profile update from one summarised session; ``summary`` numbers the summary written (its
    ``summary_attempts``), so the update from a summary written again (after a forget) is not refused as the
    first one's duplicate (arq keeps a job id an hour)."""
    job_id = f"{UPDATE_PROFILE}:{session_id}:{summary}"
    add_job(session, coach_id, UPDATE_PROFILE, str(coach_id), str(session_id), job_id=job_id)


def deliver_alert(
    session: AsyncSession,
    coach_id: uuid.UUID,
    handoff_id: uuid.UUID,
    *,
    event: str = "opened",
    reason: str | None = None,
) -> None:
    """Queue the coach's webhook and e-mail alerts for one escalation event of a handoff (once per ``event``:
    ``opened``, or ``crisis:<client message id>`` for a crisis inside an active handoff; see
    :mod:`app.handoff.alerts`). ``reason`` is the handoff's reason at the event (``None``: read at delivery).
    Goes to :data:`ALERTS_QUEUE`."""
    add_job(
        session,
        coach_id,
        DELIVER_ALERT,
        str(coach_id),
        str(handoff_id),
        event,
        reason,
        job_id=f"{DELIVER_ALERT}:{handoff_id}:{event}",
        queue=ALERTS_QUEUE,
    )


def confirm_alert_email(session: AsyncSession, coach_id: uuid.UUID, email: str) -> None:
    """Queue the e-mail asking ``email``'s owner to confirm it as the coach's alert address (see
    :mod:`app.accounts.alert_email`; the job sends nothing once another address is pending). Each call sends
    its own message (the coach's "Resend"). Goes to :data:`ALERTS_QUEUE`."""
    add_job(session, coach_id, CONFIRM_ALERT_EMAIL, str(coach_id), email, queue=ALERTS_QUEUE)


def analyse_intervention(session: AsyncSession, coach_id: uuid.UUID, intervention_id: uuid.UUID) -> None:
    """Queue the analysis of one intervention (technique, tone, formality, key phrases) and the profile
    updates it feeds (once per intervention)."""
    add_job(
        session,
        coach_id,
        ANALYSE_INTERVENTION,
        str(coach_id),
        str(intervention_id),
        job_id=f"{ANALYSE_INTERVENTION}:{intervention_id}",
    )


def score_interventions(
    session: AsyncSession, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, trigger: str
) -> None:
    """Queue the outcome scoring of the conversation's interventions (the client's next turn, thumbs);
    ``trigger`` (a message id and event) names why, so the same event queues it once."""
    add_job(
        session,
        coach_id,
        SCORE_INTERVENTIONS,
        str(coach_id),
        str(conversation_id),
        job_id=f"{SCORE_INTERVENTIONS}:{conversation_id}:{trigger}",
    )


def refresh_training_data(
    session: AsyncSession, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, trigger: str, erase: bool = False
) -> None:
    """Queue the rebuild of one conversation's training examples; ``trigger`` (a message id and event)
    names why, so the same event queues it once. ``erase``: messages were forgotten, so the examples the
    rebuild removes are erased from dataset snapshots and provider files too
    (:meth:`app.learning.training.TrainingDataService.refresh`), and the job goes to :data:`ERASURE_QUEUE`."""
    args = (str(coach_id), str(conversation_id), *((True,) if erase else ()))
    add_job(
        session,
        coach_id,
        REFRESH_TRAINING_DATA,
        *args,
        job_id=f"{REFRESH_TRAINING_DATA}:{conversation_id}:{trigger}",
        queue=ERASURE_QUEUE if erase else None,
    )


def start_fine_tune(session: AsyncSession, coach_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Queue the upload of a fine-tune job's files and its creation at the provider."""
    add_job(session, coach_id, START_FINE_TUNE, str(coach_id), str(job_id), job_id=f"{START_FINE_TUNE}:{job_id}")


def poll_fine_tune(session: AsyncSession, coach_id: uuid.UUID, job_id: uuid.UUID, *, defer_s: float = 0) -> None:
    """Queue one status poll of a running fine-tune job (``defer_s`` seconds from now)."""
    add_job(
        session,
        coach_id,
        POLL_FINE_TUNE,
        str(coach_id),
        str(job_id),
        defer_until=datetime.now(UTC) + timedelta(seconds=defer_s) if defer_s else None,
    )


def stop_fine_tunes(session: AsyncSession, coach_id: uuid.UUID) -> None:
    """Queue the end of the coach's active fine-tunes now (the coach switched to the local offline model, which
    cannot be fine-tuned): each is polled, and the poll cancels it (:meth:`app.learning.finetune.FineTuneService.
    poll`) instead of waiting for the next sweep."""
    add_job(session, coach_id, STOP_FINE_TUNES, str(coach_id))


def evaluate_model(session: AsyncSession, coach_id: uuid.UUID, version_id: uuid.UUID) -> None:
    """Queue the promotion gate for a staging model version (once per version)."""
    add_job(session, coach_id, EVALUATE_MODEL, str(coach_id), str(version_id), job_id=f"{EVALUATE_MODEL}:{version_id}")


def answer_pending(session: AsyncSession, coach_id: uuid.UUID, message_id: uuid.UUID, *, occasion: str) -> None:
    """Queue the AI's answer to a client message left unanswered: ``occasion`` ``handback:<handoff id>`` (the coach
    handed the conversation back) or ``live`` (its live answer failed). Once per message and occasion: arq refuses
    a job id it holds a result of for an hour, so an id per message alone made a second handback within the hour
    queue nothing, after a first one whose job found the AI paused again. The job does nothing if the message was
    answered or followed by another meanwhile, and a message is answered once whatever runs."""
    job_id = f"{ANSWER_PENDING}:{message_id}:{occasion}"
    add_job(session, coach_id, ANSWER_PENDING, str(coach_id), str(message_id), job_id=job_id)


def telegram_deliver(session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """Queue the delivery of stored message ``message_id`` to the client's Telegram chat, for a message the chat's
    own outbox in Redis could not take when it was stored (once per message; the chat's dedupe key keeps a
    message that did get there from being sent twice)."""
    job_id = f"{TELEGRAM_DELIVER}:{message_id}"
    add_job(session, coach_id, TELEGRAM_DELIVER, str(coach_id), str(client_id), str(message_id), job_id=job_id)


def purge_erased_data(session: AsyncSession, coach_id: uuid.UUID, file_ids: list[str], *, reason: str) -> None:
    """Queue the purge that follows an erasure (``reason``: ``client:<id>``, ``account``, or ``forget:<insight
    id>`` when messages are forgotten): the coach's Redis caches that may quote the erased messages, and the
    training files ``file_ids`` at the coach's provider. The job id names the coach and the reason: arq refuses
    an id it has queued or holds a result of (an hour), so one shared by two coaches' erasures skips the second.
    Goes to :data:`ERASURE_QUEUE`."""
    job_id = f"{PURGE_ERASED_DATA}:{coach_id}:{reason}"
    add_job(session, coach_id, PURGE_ERASED_DATA, str(coach_id), file_ids, job_id=job_id, queue=ERASURE_QUEUE)


def rebuild_briefs(session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, *, reason: str) -> None:
    """Queue the rebuild of the briefs of the client's active handoffs (``reason``, e.g. ``forget:<insight
    id>``): a brief is written when its handoff opens, from the memory of the moment, and what the client has
    forgotten since must leave it (the dashboard and every later alert show it). Goes to :data:`ERASURE_QUEUE`."""
    job_id = f"{REBUILD_BRIEFS}:{client_id}:{reason}"
    add_job(session, coach_id, REBUILD_BRIEFS, str(coach_id), str(client_id), job_id=job_id, queue=ERASURE_QUEUE)


def embed_messages(
    session: AsyncSession, coach_id: uuid.UUID, conversation_id: uuid.UUID, message_id: uuid.UUID, at: datetime
) -> None:
    """Queue the episodic embedding of the conversation's messages that have none, for its new message
    ``message_id`` sent at ``at`` (:meth:`app.memory.episodes.EpisodeService.embed_messages`), up to a time:
    a later client message is left to its own turn, which stores its episode with the vector it computes anyway.

    With an embedding window (``session.info[EMBED_WINDOW_KEY]`` seconds, > 0), the messages queued in one
    window of the wall clock share one job (its ``_job_id`` names the conversation and the window: arq refuses
    the copies while it is queued), for the messages sent up to the window's end, deferred to that end plus
    :data:`EMBED_SETTLE_S`, when they have committed: one job and one batch of embeddings per conversation and
    window instead of one per reply. A message whose transaction commits later than that (its job ran before it
    could see it) is embedded at the latest when its session ends (:func:`embed_session`). Without a window: a
    job per message, at once, up to ``at``."""
    window_s = float(session.info.get(EMBED_WINDOW_KEY) or 0.0)
    job_id, until, defer_until = f"{EMBED_MESSAGES}:{message_id}", at, None
    if window_s > 0:
        window = math.floor(time.time() / window_s)
        job_id = f"{EMBED_MESSAGES}:{conversation_id}:{window_s:g}s:{window}"
        until = datetime.fromtimestamp((window + 1) * window_s, UTC)
        defer_until = until + timedelta(seconds=EMBED_SETTLE_S)
    _embed(session, coach_id, conversation_id, until, job_id=job_id, defer_until=defer_until)


def embed_session(
    session: AsyncSession, coach_id: uuid.UUID, conversation_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    """Queue the episodic embedding of every message of the conversation that has none when its chat session
    ``session_id`` ends, at once: whatever a window's job could not see is embedded by then."""
    _embed(session, coach_id, conversation_id, None, job_id=f"{EMBED_MESSAGES}:session:{session_id}")


def _embed(
    session: AsyncSession,
    coach_id: uuid.UUID,
    conversation_id: uuid.UUID,
    until: datetime | None,
    *,
    job_id: str,
    defer_until: datetime | None = None,
) -> None:
    """Queue the conversation's ``embed_messages`` job for its messages sent up to ``until`` (``None``: all of
    them), passed to the job as ISO 8601."""
    args = (str(coach_id), str(conversation_id), until.isoformat() if until is not None else None)
    add_job(session, coach_id, EMBED_MESSAGES, *args, job_id=job_id, defer_until=defer_until)


def reembed_coach(session: AsyncSession, coach_id: uuid.UUID, request_id: uuid.UUID) -> None:
    """Queue the re-embedding of every vector of the coach with its requested embedder, then the switch
    (:meth:`app.chat.embeddings.EmbeddingService.run`; once per request)."""
    add_job(session, coach_id, REEMBED_COACH, str(coach_id), str(request_id), job_id=f"{REEMBED_COACH}:{request_id}")
