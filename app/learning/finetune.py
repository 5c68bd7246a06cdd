"""Fine-tune jobs through the OpenAI fine-tuning API with the coach's own key.

Lifecycle (each step an idempotent arq job): :meth:`FineTuneService.create_job` freezes the coach's examples
as a dataset and queues :meth:`~FineTuneService.start`, which uploads the train and validation JSONL
(``POST /v1/files``, ``purpose=fine-tune``) and creates the job (``POST /v1/fine_tuning/jobs``); file and job
ids are stored as soon as they exist, so a retried start never uploads or creates twice. Then
:meth:`~FineTuneService.poll` (``GET /v1/fine_tuning/jobs/{id}``) records OpenAI's status, trained tokens,
the error and a cost estimate; a succeeded job yields a ``staging`` model version and queues the promotion
gate (:mod:`app.learning.versions`). The first poll is queued right after the job is created; later ones come
from the five-minute ``learning_sweep`` cron (:meth:`~FineTuneService.sweep`), which also starts a job for
every coach whose readiness rule holds, and takes up a job still ``preparing`` after its start's every try could
have ended (the start was killed by its timeout or with its worker): the provider job it may have created is
adopted (found by its metadata), or else the job fails with the reason. (A self-requeued poll with a delay
would keep a burst worker alive until it is due and duplicates what the cron does.)

API reference: https://platform.openai.com/docs/api-reference/fine-tuning and .../files.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast

import openai
from openai.types.fine_tuning import FineTuningJob, job_create_params
from sqlalchemy import and_, false, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Coach
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.core.config import Settings
from app.core.egress import EgressRefused
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.text import one_line
from app.db import jobs
from app.learning.models import (
    ExampleKind,
    FineTuneJob,
    FineTuneStatus,
    ModelVersion,
    ModelVersionStatus,
    Split,
    TrainingDataset,
)
from app.learning.training import TrainingDataService, example_line
from app.llm.base import ProviderError
from app.llm.openai_compat import MISMATCH, describe_error, reading_response, retry_after
from app.llm.registry import ProviderRegistry

log = logging.getLogger(__name__)

METHODS = {"supervised": ExampleKind.SFT, "dpo": ExampleKind.PREFERENCE}
"""Fine-tuning methods (OpenAI ``method.type``) and the example kind each trains on."""
TRAINING_PRICE_USD_PER_1M_TOKENS: dict[str, float] = {
    "gpt-4o-mini-2024-07-18": 3.00,
    "gpt-4o-mini": 3.00,
    "gpt-4o-2024-08-06": 25.00,
    "gpt-4o": 25.00,
    "gpt-4.1-2025-04-14": 25.00,
    "gpt-4.1-mini-2025-04-14": 5.00,
    "gpt-4.1-nano-2025-04-14": 1.50,
    "gpt-3.5-turbo-0125": 8.00,
    "gpt-3.5-turbo": 8.00,
}
"""Training price per million trained tokens by base model, USD: OpenAI's pricing page
(https://openai.com/api/pricing, "Fine-tuning" table, as published mid-2025). An unknown base model gets no
estimate (``null``)."""
STALLED_START = (
    "its start did not finish (the upload or the job's creation ran past its deadline, or its worker was "
    "stopped), and the provider has no job of it; start the fine-tune again"
)

SWITCHED_TO_LOCAL = "cancelled: the coach switched to the local offline model, which cannot be fine-tuned"
"""The start of a job's ``error`` once the coach switched to the local model, whether it ran at the provider
(:func:`_cancel_for_local`) or was still ``preparing`` (:func:`stop_unstarted`)."""
NOT_STARTED = "no provider job had been created"
"""The rest of a ``preparing`` job's ``error`` when the switch to the local model cancels it."""


class SnapshotChanging(Exception):
    """Erasures kept changing a fine-tune's snapshot while its files uploaded (:meth:`FineTuneService._upload`)."""


UPLOAD_TRIES = 3
"""Uploads of one split in one try of a start while erasures keep changing its snapshot (:meth:`_upload`)."""
MAX_ERROR_CHARS = 300
"""Length limit of ``fine_tune_jobs.error``: a status code and a short reason, never a response body."""
PROVIDER_STATUSES = frozenset(
    (
        FineTuneStatus.VALIDATING_FILES,
        FineTuneStatus.QUEUED,
        FineTuneStatus.RUNNING,
        FineTuneStatus.SUCCEEDED,
        FineTuneStatus.FAILED,
        FineTuneStatus.CANCELLED,
    )
)


PROVIDER_ID_MAX_CHARS = 100
"""The longest file or job id a provider may give (the ``fine_tune_jobs`` id columns' size; OpenAI's are under 40)."""
MODEL_NAME_MAX_CHARS = 200
"""The longest fine-tuned model name a provider may give (``fine_tuned_model``, ``model_versions.model``)."""
PROVIDER_STATUS_MAX_CHARS = 40
"""A sanity bound on a job's ``status`` (OpenAI's longest, ``validating_files``, has 16); only the names in
:data:`PROVIDER_STATUSES` are stored."""
MAX_INT32 = 2**31 - 1
"""The largest ``trained_tokens`` the column holds."""
LAST_UNIX_SECOND = 253_402_300_799
"""9999-12-31T23:59:59Z: the last ``finished_at`` a Python ``datetime`` can hold."""


@dataclass(frozen=True)
class RemoteJob:
    """The fields of a provider's fine-tuning job that :meth:`FineTuneService.poll` records, checked: ``status``
    (OpenAI's name), ``trained_tokens``, ``finished_at`` (Unix seconds), ``fine_tuned_model`` and the job's own
    ``error_message`` (``None`` when absent)."""

    status: str
    trained_tokens: int | None
    finished_at: int | None
    fine_tuned_model: str | None
    error_message: str | None


def _provider_text(value: object, max_chars: int, *, optional: bool = False) -> str | None:
    """``value`` if it is a non-empty string of at most ``max_chars`` characters (or ``None`` when ``optional``);
    otherwise ``ProviderError(MISMATCH)``: the answer does not match the fine-tuning API."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_chars:
        raise ProviderError(MISMATCH)
    return value


def _whole(value: object, high: int) -> int | None:
    """``value`` if it is ``None`` or an integer (not a bool) from 0 to ``high``; otherwise
    ``ProviderError(MISMATCH)``."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high):
        return value
    raise ProviderError(MISMATCH)


def provider_id(answer: object) -> str:
    """The ``id`` of a file or job object the provider answered with (``POST /v1/files``,
    ``POST /v1/fine_tuning/jobs``). The openai SDK checks no answer: a web page comes back as ``str`` and any JSON
    object becomes the model. Raises ``ProviderError(MISMATCH)`` unless the id is a non-empty string of at most
    :data:`PROVIDER_ID_MAX_CHARS` characters."""
    with reading_response():
        value = cast(Any, answer).id
    return cast(str, _provider_text(value, PROVIDER_ID_MAX_CHARS))


def remote_job(answer: object) -> RemoteJob:
    """The checked fields of a fine-tuning job object (``GET /v1/fine_tuning/jobs/{id}``, OpenAI API reference,
    "The fine-tuning job object"). Raises ``ProviderError(MISMATCH)`` for an answer of another shape: not an
    object, a status that is not a string, a token count or time that is not a whole number in range, a model name
    over :data:`MODEL_NAME_MAX_CHARS` characters."""
    with reading_response():
        job = cast(Any, answer)
        status, trained, finished, model, error = (
            job.status,
            job.trained_tokens,
            job.finished_at,
            job.fine_tuned_model,
            job.error,
        )
        error_message = error.message if error is not None else None
    if error_message is not None and not isinstance(error_message, str):
        raise ProviderError(MISMATCH)
    return RemoteJob(
        status=cast(str, _provider_text(status, PROVIDER_STATUS_MAX_CHARS)),
        trained_tokens=_whole(trained, MAX_INT32),
        finished_at=_whole(finished, LAST_UNIX_SECOND),
        fine_tuned_model=_provider_text(model, MODEL_NAME_MAX_CHARS, optional=True),
        error_message=error_message or None,
    )


def cost_estimate(base_model: str, trained_tokens: int | None) -> float | None:
    """USD for ``trained_tokens`` at :data:`TRAINING_PRICE_USD_PER_1M_TOKENS` (``None`` when unknown)."""
    price = TRAINING_PRICE_USD_PER_1M_TOKENS.get(base_model)
    if price is None or trained_tokens is None:
        return None
    return round(trained_tokens * price / 1_000_000, 4)


@dataclass(frozen=True)
class Readiness:
    """Whether a fine-tune may start now. Rule: ``enabled`` (``coach.fine_tune_enabled``), an OpenAI endpoint
    with a key configured, no job active, ``new_examples`` (SFT train examples created since the last job that
    trained started) ≥ ``min_examples`` and ``days_since_last`` (days since it started) ≥ ``min_days`` (``None``:
    no such job yet). A job that failed or was cancelled trained nothing: it starts neither count again. ``reason``
    names the first rule not met (``""`` when ready)."""

    ready: bool
    enabled: bool
    new_examples: int
    min_examples: int
    days_since_last: float | None
    min_days: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def fine_tune_dict(job: FineTuneJob) -> dict[str, Any]:
    """A fine-tune job as the API shows it (ids as strings, times ISO 8601)."""
    return {
        "id": str(job.id),
        "status": job.status,
        "method": job.method,
        "base_model": job.base_model,
        "dataset_id": str(job.dataset_id) if job.dataset_id else None,
        "provider_job_id": job.provider_job_id,
        "training_file_id": job.training_file_id,
        "validation_file_id": job.validation_file_id,
        "fine_tuned_model": job.fine_tuned_model,
        "trained_tokens": job.trained_tokens,
        "cost_estimate_usd": job.cost_estimate_usd,
        "error": job.error,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


async def _cancel(client: openai.AsyncOpenAI, job_id: uuid.UUID, provider_job_id: str) -> str | None:
    """Cancel provider job ``provider_job_id`` of fine-tune ``job_id`` (``POST /v1/fine_tuning/jobs/{id}/cancel``).
    Returns ``None`` once cancelled, else why not (:func:`describe_error`, never a response body), which is logged."""
    try:
        await client.fine_tuning.jobs.cancel(provider_job_id)
    except (openai.APIError, EgressRefused) as exc:
        log.warning("fine-tune %s: could not cancel provider job %s: %s", job_id, provider_job_id, describe_error(exc))
        return describe_error(exc)
    return None


async def cancel_jobs(client: openai.AsyncOpenAI, jobs: Sequence[tuple[uuid.UUID, str]]) -> tuple[list[str], list[str]]:
    """Cancel fine-tunes still training at the provider, ``(job id, provider job id)`` each (:func:`_cancel`), e.g.
    before their training data is erased: a job left running would go on training (and billing) on it and deliver
    a model of it. Returns the provider job ids cancelled and one ``"<id>: <reason>"`` per failure (never a
    response body); never raises for the provider's answer (:meth:`FineTuneService.cancel_provider_jobs` raises
    ``Conflict`` when the coach has no API key stored)."""
    cancelled: list[str] = []
    failed: list[str] = []
    for job_id, provider_job_id in jobs:
        failure = await _cancel(client, job_id, provider_job_id)
        if failure is None:
            cancelled.append(provider_job_id)
        else:
            failed.append(f"{provider_job_id}: {failure}")
    return cancelled, failed


async def _job(session: AsyncSession, coach_id: uuid.UUID, job_id: uuid.UUID) -> FineTuneJob:
    """The coach's fine-tune job, locked for update, in the caller's session. Raises ``NotFound``."""
    job = await session.scalar(
        select(FineTuneJob).where(FineTuneJob.id == job_id, FineTuneJob.coach_id == coach_id).with_for_update()
    )
    if job is None:
        raise NotFound("fine-tune job not found")
    return job


async def _last_job(session: AsyncSession, coach_id: uuid.UUID, *, trained: bool = False) -> FineTuneJob | None:
    """The coach's newest fine-tune job, if any, in the caller's session; ``trained``: the newest that succeeded
    or is still under way (a failed or cancelled job trained nothing)."""
    query = select(FineTuneJob).where(FineTuneJob.coach_id == coach_id)
    if trained:
        query = query.where(FineTuneJob.status.not_in((FineTuneStatus.FAILED, FineTuneStatus.CANCELLED)))
    return await session.scalar(query.order_by(FineTuneJob.created_at.desc(), FineTuneJob.id.desc()).limit(1))


async def _cancel_for_local(
    sessionmaker: async_sessionmaker[AsyncSession],
    client: Callable[[], openai.AsyncOpenAI],
    coach_id: uuid.UUID,
    job_id: uuid.UUID,
    provider_job_id: str,
) -> str:
    """The coach switched to the local offline model while fine-tune ``job_id`` ran (which turned fine-tunes off):
    cancel its provider job (:func:`_cancel`, on ``client()``: the coach's stored key and base URL) and mark the job
    ``cancelled`` with :data:`SWITCHED_TO_LOCAL` and the cancel's outcome as its ``error`` (shown on the
    dashboard), so it is polled no more and yields no model version. A cancel that cannot be sent or is refused
    still ends the job here; the reason then asks the coach to cancel it in the provider's dashboard. Returns a
    short status for arq."""
    try:
        async with client() as provider:
            failure = await _cancel(provider, job_id, provider_job_id)
    except Conflict as exc:  # no key stored any more
        failure = exc.message
    outcome = (
        "the provider job was cancelled"
        if failure is None
        else f"the provider job could not be cancelled ({failure}): cancel it in the provider's dashboard"
    )
    async with unit_of_work(sessionmaker, coach_id) as uow:
        job = await _job(uow.session, coach_id, job_id)
        if job.status in FineTuneStatus.FINAL:
            return f"already {job.status}"
        job.status, job.finished_at = FineTuneStatus.CANCELLED, datetime.now(UTC)
        job.error = one_line(f"{SWITCHED_TO_LOCAL}; {outcome}", MAX_ERROR_CHARS)
    return f"{provider_job_id}: cancelled, {outcome}"


async def _end_start(
    sessionmaker: async_sessionmaker[AsyncSession],
    coach_id: uuid.UUID,
    job_id: uuid.UUID,
    error: str,
    *,
    status: str = FineTuneStatus.FAILED,
) -> str:
    """Mark the job whose start failed ``status`` (``failed``, or ``cancelled``) with ``error`` (our own text or
    :func:`describe_error`, never a response body), while its start still has anything left to do
    (:func:`_start_done`, read under the row's lock): another start, or the sweep, may have stored its provider
    job since the caller looked."""
    async with unit_of_work(sessionmaker, coach_id) as uow:
        job = await _job(uow.session, coach_id, job_id)
        if (done := _start_done(job)) is not None:
            return done
        job.status, job.error = status, one_line(error, MAX_ERROR_CHARS)
        job.finished_at = datetime.now(UTC)
    return f"{status}: {error}"


async def stop_unstarted(sessionmaker: async_sessionmaker[AsyncSession], coach_id: uuid.UUID, job_id: uuid.UUID) -> str:
    """The coach switched to the local model while fine-tune ``job_id`` was still ``preparing`` (no provider job
    stored): mark it ``cancelled`` with :data:`SWITCHED_TO_LOCAL` as a running one is, not failed. A start still
    under way then cancels the provider job it creates (:meth:`FineTuneService._started`). Returns a short
    status."""
    error = f"{SWITCHED_TO_LOCAL}; {NOT_STARTED}"
    return await _end_start(sessionmaker, coach_id, job_id, error, status=FineTuneStatus.CANCELLED)


async def _unstartable(
    sessionmaker: async_sessionmaker[AsyncSession], coach: Coach, job_id: uuid.UUID, error: str
) -> str:
    """The job's start cannot go on without the coach's OpenAI endpoint (``error``): cancelled when the coach
    switched to the local model (:func:`stop_unstarted`), else failed with ``error``."""
    if coach.llm_provider == "local":
        return await stop_unstarted(sessionmaker, coach.id, job_id)
    return await _end_start(sessionmaker, coach.id, job_id, error)


def _start_done(job: FineTuneJob) -> str | None:
    """``"already started (<status>)"`` when the job's start has nothing left to do (it left ``preparing``, or
    its provider job is stored); ``None`` while it is still to start."""
    if job.status != FineTuneStatus.PREPARING or job.provider_job_id is not None:
        return f"already started ({job.status})"
    return None


async def _created_before(client: openai.AsyncOpenAI, job_id: uuid.UUID) -> FineTuningJob | None:
    """The provider job an earlier, interrupted try of :meth:`FineTuneService.start` created (found by its
    ``metadata.opencoach_job_id``), so a retry or the sweep's recovery does not create a second one."""
    page = await client.fine_tuning.jobs.list(metadata={"opencoach_job_id": str(job_id)}, limit=1)
    with reading_response():
        return page.data[0] if page.data else None


def has_openai_endpoint(coach: Coach, key: str | None) -> bool:
    """The coach serves from an OpenAI-compatible endpoint with a model and a key (fine-tunes need one)."""
    return coach.llm_provider == "openai" and bool(coach.llm_model) and bool(key)


class FineTuneService:
    """Readiness checks, starting and polling fine-tune jobs."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        accounts: AccountService,
        training: TrainingDataService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._accounts = accounts
        self._training = training

    def _client(self, coach: Coach, *, any_provider: bool = False) -> openai.AsyncOpenAI:
        """An SDK client on the coach's endpoint with the coach's key. ``any_provider``: the stored key and base URL
        are enough whatever ``llm_provider`` says: a coach who switched to the local model still has jobs and files
        at the endpoint the key was stored for, to cancel (:func:`_cancel_for_local`) or delete after an erasure
        (:meth:`delete_files`). Raises ``Conflict`` without one."""
        key = self._registry.decrypt_key(coach.llm_api_key_encrypted)
        if not (has_openai_endpoint(coach, key) or (any_provider and key)):
            raise Conflict("fine-tunes need an OpenAI endpoint with an API key in the settings")
        timeout = self._settings.llm_timeout_seconds
        return openai.AsyncOpenAI(
            api_key=key,
            base_url=coach.llm_base_url,
            timeout=timeout,
            max_retries=2,
            http_client=self._registry.egress.client(timeout=timeout),  # type: ignore[arg-type]  # httpx: see openai_compat
        )

    async def readiness(self, uow: UnitOfWork) -> Readiness:
        """The readiness rule (see :class:`Readiness`) for the coach now."""
        session, coach_id = uow.session, uow.coach_id
        coach = await uow.coach()
        last, trained = await _last_job(session, coach_id), await _last_job(session, coach_id, trained=True)
        since = trained.created_at if trained is not None else None
        new = await self._training.count_since(session, coach_id, since, split=Split.TRAIN)
        days = (datetime.now(UTC) - since).total_seconds() / 86400 if since is not None else None
        key = self._registry.decrypt_key(coach.llm_api_key_encrypted)
        if not coach.fine_tune_enabled:
            reason = "fine-tunes are turned off in the settings"
        elif not has_openai_endpoint(coach, key):
            reason = "no OpenAI endpoint with an API key is configured"
        elif last is not None and last.status in FineTuneStatus.ACTIVE:
            reason = "a fine-tune job is still running"
        elif new < coach.fine_tune_min_examples:
            reason = f"{new} of {coach.fine_tune_min_examples} new training examples"
        elif days is not None and days < coach.fine_tune_min_days:
            reason = f"{days:.1f} of {coach.fine_tune_min_days} days since the last fine-tune"
        else:
            reason = ""
        return Readiness(
            ready=not reason,
            enabled=coach.fine_tune_enabled,
            new_examples=new,
            min_examples=coach.fine_tune_min_examples,
            days_since_last=None if days is None else round(days, 2),
            min_days=coach.fine_tune_min_days,
            reason=reason,
        )

    async def sweep(self, *, stalled_start_s: float | None) -> str:
        """Cron: for every coach from ``fine_tune_coaches()`` (enabled, or with an active job), poll its
        active jobs, take up (:meth:`recover_stalled`) a job still ``preparing`` with no provider job
        ``stalled_start_s`` seconds after it was created (longer than every try of its start may take; ``None``:
        none is taken up), and start one when :meth:`readiness` holds. One coach's failure is logged and does not
        stop the others. Returns a summary."""
        async with self._sessionmaker() as session:
            coach_ids = list((await session.scalars(text("SELECT coach_id FROM fine_tune_coaches()"))).all())
        polled = started = failed = 0
        for coach_id in coach_ids:
            try:
                async with unit_of_work(self._sessionmaker, coach_id) as uow:
                    session = uow.session
                    stalled = (
                        and_(
                            FineTuneJob.status == FineTuneStatus.PREPARING,
                            FineTuneJob.provider_job_id.is_(None),
                            FineTuneJob.created_at < func.now() - timedelta(seconds=stalled_start_s),
                        )
                        if stalled_start_s is not None
                        else false()
                    )
                    active = (
                        await session.execute(
                            select(FineTuneJob.id, stalled).where(
                                FineTuneJob.coach_id == coach_id,
                                FineTuneJob.status.in_(FineTuneStatus.ACTIVE),
                            )
                        )
                    ).all()
                for job_id, is_stalled in active:
                    await (self.recover_stalled(coach_id, job_id) if is_stalled else self.poll(coach_id, job_id))
                    polled += 1
                async with unit_of_work(self._sessionmaker, coach_id) as uow:
                    if (await self.readiness(uow)).ready:
                        await self.create_job(uow)
                        started += 1
            except Exception:  # noqa: BLE001 - one tenant's provider trouble must not stop the sweep
                log.exception("fine-tune sweep failed for coach %s", coach_id)
                failed += 1
        return f"{len(coach_ids)} coaches: {polled} jobs polled, {started} started, {failed} failed"

    async def recover_stalled(self, coach_id: uuid.UUID, job_id: uuid.UUID) -> str:
        """Take up a job left ``preparing`` by a start that no longer runs: adopt the provider job an interrupted
        try created (found by its metadata, as a retried :meth:`start` does), or fail the job with
        :data:`STALLED_START` so it no longer blocks the coach's next fine-tune. Raises ``ProviderError`` when
        the provider is out of reach (the next sweep tries again). Returns a short status."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            job = await _job(uow.session, coach_id, job_id)
            if (done := _start_done(job)) is not None:
                return done
            coach = await uow.coach()
        try:
            client = self._client(coach)
        except Conflict as exc:
            return await _unstartable(self._sessionmaker, coach, job_id, exc.message)
        async with client:
            try:
                created = await _created_before(client, job_id)
            except (openai.APIError, EgressRefused, ProviderError) as exc:
                raise ProviderError(f"fine-tune look-up failed: {describe_error(exc)}") from exc
            if created is None:
                return await self._fail(coach_id, job_id, STALLED_START)
            return await self._started(client, coach_id, job_id, created)

    async def create_job(self, uow: UnitOfWork, *, method: str = "supervised") -> FineTuneJob:
        """Snapshot the coach's examples for ``method`` (``supervised``: SFT, ``dpo``: preference pairs) and
        queue the job's start. Raises ``InvalidInput`` (unknown method), ``Conflict`` (no OpenAI endpoint,
        no train examples, or a job already active)."""
        if method not in METHODS:
            raise InvalidInput(f"method must be one of {', '.join(METHODS)}")
        kind = METHODS[method]
        session, coach_id = uow.session, uow.coach_id
        coach = await uow.coach()
        if not has_openai_endpoint(coach, self._registry.decrypt_key(coach.llm_api_key_encrypted)):
            raise Conflict("fine-tunes need an OpenAI endpoint with an API key in the settings")
        # one create per coach at a time (a double submit, the sweep's own): the second sees the first's job
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"fine-tune:{coach_id}"})
        last = await _last_job(session, coach_id)
        if last is not None and last.status in FineTuneStatus.ACTIVE:
            raise Conflict("a fine-tune job is already running")
        if not (await self._training.stats(uow))[kind][Split.TRAIN]:
            raise Conflict(f"no {kind} training examples in the train split yet")
        dataset = await self._training.snapshot(uow, kind)
        job = FineTuneJob(
            coach_id=coach_id,
            dataset_id=dataset.id,
            base_model=coach.fine_tune_base_model,
            method=method,
            status=FineTuneStatus.PREPARING,
        )
        session.add(job)
        await session.flush()
        await session.refresh(job)
        jobs.start_fine_tune(session, coach_id, job.id)
        return job

    async def _file(self, coach_id: uuid.UUID, dataset_id: uuid.UUID, split: str) -> tuple[bytes, list[uuid.UUID]]:
        """The JSONL of the snapshot's examples in ``split`` as the snapshot is now, and their ids (the content is
        empty when it holds none)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            dataset = await self._training.dataset(uow.session, coach_id, dataset_id)
            examples = await self._training.examples(uow, kind=dataset.kind, split=split, ids=dataset.example_ids)
        lines = [example_line(e, scrub=dataset.scrub_pii) for e in examples]
        return ("\n".join(lines) + "\n").encode() if lines else b"", [e.id for e in examples]

    async def _upload(
        self, client: openai.AsyncOpenAI, coach_id: uuid.UUID, job_id: uuid.UUID, dataset_id: uuid.UUID, split: str
    ) -> str | None:
        """Upload the snapshot's ``split`` (``POST /v1/files``) and store the file id on the job; returns it, or
        ``None`` when the split holds no example.

        An erasure or a forget that takes an example out of the snapshot while its file uploads finds no file id
        on the job yet, so it cannot delete the file. The id is therefore stored only while the snapshot (locked)
        still holds every uploaded example; otherwise the file is queued for deletion at the provider (the
        erasure's purge job) and the split is uploaded again as the snapshot is now (up to
        :data:`UPLOAD_TRIES` times, then :class:`SnapshotChanging`)."""
        for _ in range(UPLOAD_TRIES):
            content, example_ids = await self._file(coach_id, dataset_id, split)
            if not content:
                return None
            uploaded = await client.files.create(file=(f"{job_id}-{split}.jsonl", content), purpose="fine-tune")
            file_id = provider_id(uploaded)
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                session = uow.session
                snapshot = await session.scalar(
                    select(TrainingDataset.example_ids).where(TrainingDataset.id == dataset_id).with_for_update()
                )
                if snapshot is not None and set(example_ids) <= set(snapshot):
                    job = await _job(session, coach_id, job_id)
                    if split == Split.TRAIN:
                        job.training_file_id = file_id
                    else:
                        job.validation_file_id = file_id
                    return file_id
                jobs.purge_erased_data(session, coach_id, [file_id], reason=f"outdated-upload:{file_id}")
            log.info("fine-tune %s: the snapshot changed while its %s file uploaded; uploading it again", job_id, split)
        raise SnapshotChanging(f"the training data kept changing while the {split} file uploaded")

    async def start(self, coach_id: uuid.UUID, job_id: uuid.UUID) -> str:
        """arq job: upload the dataset's train (and, when any, validation) JSONL and create the provider job
        (``model=job.base_model``, ``method={"type": job.method}``). Idempotent: stored file and job ids are
        reused, and a retry after the files were uploaded first looks for a provider job created by the
        interrupted try (``GET /v1/fine_tuning/jobs?metadata[opencoach_job_id]=…``). A provider rejection
        (4xx) fails the job with its message; network trouble raises
        ``ProviderError`` for a retry."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            job = await _job(session, coach_id, job_id)
            if (done := _start_done(job)) is not None:
                return done
            coach = await uow.coach()
            dataset = await self._training.dataset(session, coach_id, job.dataset_id) if job.dataset_id else None
            training_file_id, validation_file_id = job.training_file_id, job.validation_file_id
            retried = training_file_id is not None
            base_model, method = job.base_model, job.method
        if dataset is None:
            return await self._fail(coach_id, job_id, "the job's dataset is gone")
        try:
            client = self._client(coach)
        except Conflict as exc:
            return await _unstartable(self._sessionmaker, coach, job_id, exc.message)
        async with client:
            try:
                if training_file_id is None:
                    training_file_id = await self._upload(client, coach_id, job_id, dataset.id, Split.TRAIN)
                    if training_file_id is None:
                        return await self._fail(coach_id, job_id, "the dataset has no train examples left")
                if validation_file_id is None:
                    validation_file_id = await self._upload(client, coach_id, job_id, dataset.id, Split.VALIDATION)
                created = await _created_before(client, job_id) if retried else None
                created = created or await client.fine_tuning.jobs.create(
                    model=base_model,
                    training_file=training_file_id,
                    validation_file=validation_file_id or openai.omit,
                    method=cast(job_create_params.Method, {"type": method}),
                    suffix="opencoach",
                    metadata={"opencoach_job_id": str(job_id)},
                )
                provider_id(created)  # an answer of another shape fails the job (below) before it is stored
                remote_job(created)
            except SnapshotChanging as exc:  # not the provider's fault: the job's start is tried again later
                raise ProviderError(str(exc)) from exc
            except ProviderError as exc:  # an answer of another shape: not the fine-tuning API
                return await self._fail(coach_id, job_id, f"the endpoint does not speak the fine-tuning API: {exc}")
            except openai.APIStatusError as exc:
                if exc.status_code >= 500 or exc.status_code == 429:
                    message = f"fine-tune start failed: {describe_error(exc)}"
                    raise ProviderError(message, retry_after=retry_after(exc)) from exc
                return await self._fail(coach_id, job_id, describe_error(exc))
            except EgressRefused as exc:
                return await self._fail(coach_id, job_id, describe_error(exc))
            except openai.APIError as exc:
                raise ProviderError(f"fine-tune start failed: {describe_error(exc)}") from exc
            return await self._started(client, coach_id, job_id, created)

    async def _started(
        self, client: openai.AsyncOpenAI, coach_id: uuid.UUID, job_id: uuid.UUID, created: FineTuningJob
    ) -> str:
        """Store the provider job ``created`` for the fine-tune (its id and status) and queue the first poll. A
        fine-tune that left ``preparing`` meanwhile (the sweep failed a start it took for stalled, and the coach
        may have started another; or the coach switched to the local model) keeps its state, and ``created`` is
        cancelled at the provider: nothing would poll it, and it would train (and bill) for a job marked failed or
        cancelled. Returns a short status for arq."""
        created_id, created_status = provider_id(created), remote_job(created).status
        status = created_status if created_status in PROVIDER_STATUSES else FineTuneStatus.VALIDATING_FILES
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            job = await _job(uow.session, coach_id, job_id)
            if (done := _start_done(job)) is None:
                job.provider_job_id, job.status = created_id, status
                jobs.poll_fine_tune(uow.session, coach_id, job_id)
            elif job.provider_job_id == created_id:  # (an earlier try of this start stored it)
                return done
        if done is None:
            return f"created {created_id} ({status})"
        failure = await _cancel(client, job_id, created_id)
        return f"{done}; provider job {created_id} " + ("cancelled" if failure is None else "not cancelled")

    async def give_up(self, coach_id: uuid.UUID, job_id: uuid.UUID, error: str) -> str:
        """The ``start_fine_tune`` job's last try failed (``error``: the provider out of reach): a job still
        ``preparing`` fails with it, so it neither blocks the coach's next fine-tune nor waits for good. Returns
        a short status for arq."""
        return await self._fail(coach_id, job_id, f"gave up starting it: {error}")

    async def _fail(self, coach_id: uuid.UUID, job_id: uuid.UUID, error: str) -> str:
        """:func:`_end_start` with ``failed``."""
        return await _end_start(self._sessionmaker, coach_id, job_id, error)

    async def poll(self, coach_id: uuid.UUID, job_id: uuid.UUID) -> str:
        """arq job: fetch the provider job and record its status (OpenAI's names), ``trained_tokens``,
        ``error`` (``error.message``), ``finished_at`` and the cost estimate. On success a ``staging``
        :class:`ModelVersion` is created once and the promotion gate is queued. A final job is not polled
        again; the job of a coach who switched to the local model is cancelled instead (:func:`_cancel_for_local`,
        or :func:`stop_unstarted` while it is still ``preparing``)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            job = await _job(session, coach_id, job_id)
            if job.status in FineTuneStatus.FINAL:
                return f"already {job.status}"
            coach = await uow.coach()
            provider_job_id = job.provider_job_id
        if provider_job_id is None:
            local = coach.llm_provider == "local"
            return await stop_unstarted(self._sessionmaker, coach_id, job_id) if local else "not started yet"
        if coach.llm_provider == "local":
            stored = partial(self._client, coach, any_provider=True)
            return await _cancel_for_local(self._sessionmaker, stored, coach_id, job_id, provider_job_id)
        try:
            async with self._client(coach) as client:
                remote = remote_job(await client.fine_tuning.jobs.retrieve(provider_job_id))
        except (openai.APIError, EgressRefused) as exc:
            raise ProviderError(f"fine-tune poll failed: {describe_error(exc)}") from exc
        except ProviderError as exc:  # an answer of another shape: polled again on the retry
            raise ProviderError(f"fine-tune poll failed: {exc}") from exc
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            job = await _job(session, coach_id, job_id)
            if remote.status in PROVIDER_STATUSES:
                job.status = remote.status
            job.trained_tokens = remote.trained_tokens
            job.cost_estimate_usd = cost_estimate(job.base_model, remote.trained_tokens)
            if remote.error_message:
                # the job's own failure reason (a field of the job object, not an error body), one short line
                job.error = one_line(remote.error_message, MAX_ERROR_CHARS)
            if remote.finished_at:
                job.finished_at = datetime.fromtimestamp(remote.finished_at, UTC)
            if job.status == FineTuneStatus.SUCCEEDED and remote.fine_tuned_model:
                job.fine_tuned_model = remote.fine_tuned_model
                version = await session.scalar(select(ModelVersion).where(ModelVersion.fine_tune_job_id == job.id))
                if version is None:
                    version = ModelVersion(
                        coach_id=coach_id,
                        model=remote.fine_tuned_model,
                        base_model=job.base_model,
                        fine_tune_job_id=job.id,
                        status=ModelVersionStatus.STAGING,
                    )
                    session.add(version)
                    await session.flush()
                if version.status == ModelVersionStatus.STAGING:
                    jobs.evaluate_model(session, coach_id, version.id)
            status = job.status
        return f"{provider_job_id}: {status}"

    async def poll_active(self, coach_id: uuid.UUID) -> str:
        """arq job (``stop_fine_tunes``, queued when the coach switches to the local model): :meth:`poll` each of
        the coach's active jobs now, which cancels them, instead of at the next sweep. Returns a summary."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            job_ids = (
                await uow.session.scalars(
                    select(FineTuneJob.id).where(
                        FineTuneJob.coach_id == coach_id, FineTuneJob.status.in_(FineTuneStatus.ACTIVE)
                    )
                )
            ).all()
        return "; ".join([await self.poll(coach_id, job_id) for job_id in job_ids]) or "no active fine-tune"

    async def cancel_provider_jobs(
        self, coach: Coach, jobs: Sequence[tuple[uuid.UUID, str]]
    ) -> tuple[list[str], list[str]]:
        """:func:`cancel_jobs` at the coach's endpoint with the stored key (also once on the local model)."""
        async with self._client(coach, any_provider=True) as client:
            return await cancel_jobs(client, jobs)

    async def delete_files(self, coach: Coach, file_ids: list[str]) -> tuple[list[str], list[str]]:
        """Delete uploaded training files at the coach's provider (``DELETE /v1/files/{id}``), e.g. after a
        client's erasure, with the stored key also once the coach switched to the local model (the files stay at
        that endpoint). A file the provider no longer has (404) counts as deleted. Returns the deleted ids and
        one ``"<id>: <status and short reason>"`` per failure (never a response body); never raises for the
        provider's answer, only ``Conflict`` when the coach has no API key stored."""
        deleted: list[str] = []
        failed: list[str] = []
        async with self._client(coach, any_provider=True) as client:
            for file_id in file_ids:
                try:
                    await client.files.delete(file_id)
                    deleted.append(file_id)
                except openai.NotFoundError:
                    deleted.append(file_id)
                except (openai.APIError, EgressRefused) as exc:
                    failed.append(f"{file_id}: {one_line(describe_error(exc), MAX_ERROR_CHARS)}")
        return deleted, failed

    async def list_jobs(self, uow: UnitOfWork) -> list[FineTuneJob]:
        """The coach's fine-tune jobs, newest first."""
        session, coach_id = uow.session, uow.coach_id
        return list(
            (
                await session.scalars(
                    select(FineTuneJob)
                    .where(FineTuneJob.coach_id == coach_id)
                    .order_by(FineTuneJob.created_at.desc(), FineTuneJob.id.desc())
                )
            ).all()
        )
