"""REST API of the learning loop's training side (coach key or dashboard session): training data export and
statistics, fine-tune jobs, model versions with promotion and rollback."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery, JSONBody, QueryParameter

from app.auth import COACH_DEPENDENCIES
from app.deps import CoachId, ContainerDep, PathId, Uow
from app.learning.finetune import fine_tune_dict
from app.learning.models import FineTuneJob, ModelVersion
from app.learning.versions import model_version_dict

JSONL_MEDIA_TYPE = "application/jsonl"
"""Media type of the export (JSON Lines; ``application/x-ndjson`` is the older name)."""


class FineTuneOut(msgspec.Struct):
    """A fine-tune job: our ``status`` (``preparing``) then OpenAI's (``validating_files``, ``queued``,
    ``running``, ``succeeded``, ``failed``, ``cancelled``); ``trained_tokens`` and ``cost_estimate_usd``
    (see :data:`app.learning.finetune.TRAINING_PRICE_USD_PER_1M_TOKENS`) once known; ``error`` when failed."""

    id: uuid.UUID
    status: str
    method: str
    base_model: str
    dataset_id: uuid.UUID | None
    provider_job_id: str | None
    training_file_id: str | None
    validation_file_id: str | None
    fine_tuned_model: str | None
    trained_tokens: int | None
    cost_estimate_usd: float | None
    error: str | None
    created_at: str | None
    finished_at: str | None


def fine_tune_out(job: FineTuneJob) -> FineTuneOut:
    """Serialise a fine-tune job."""
    return msgspec.convert(fine_tune_dict(job), FineTuneOut)


class ModelVersionOut(msgspec.Struct):
    """A model version (``staging``, ``production``, ``retired``, ``rejected``) with the promotion gate's
    ``evaluation`` (see :mod:`app.learning.versions`)."""

    id: uuid.UUID
    model: str
    base_model: str
    status: str
    fine_tune_job_id: uuid.UUID | None
    evaluation: dict[str, Any]
    created_at: str | None
    promoted_at: str | None
    retired_at: str | None


def model_version_out(version: ModelVersion) -> ModelVersionOut:
    """Serialise a model version."""
    return msgspec.convert(model_version_dict(version), ModelVersionOut)


class FineTuneRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``method``: ``supervised`` (SFT examples) or ``dpo`` (preference pairs)."""

    method: str = "supervised"


class PromoteRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``force``: put the version in production without the promotion gate (the coach's override)."""

    force: bool = False


class RollbackOut(msgspec.Struct):
    """The version now in production (``null``: the coach's base model serves)."""

    production: ModelVersionOut | None


async def training_export(
    uow: Uow, container: ContainerDep, export_format: str, split: str, *, scrub_pii: bool = True
) -> Response[str]:
    """The coach's training examples as a JSON Lines attachment (``opencoach-<format>-<split>.jsonl``), for the
    API route and the dashboard's "Export" link alike; ``DomainError`` (400) for an unknown format or split."""
    lines = await container.training.export(uow, kind=export_format, split=split, scrub_pii=scrub_pii)
    body = "".join(line + "\n" for line in lines)
    filename = f"opencoach-{export_format}-{split}.jsonl"
    return Response(
        body,
        media_type=JSONL_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


class TrainingController(Controller):
    path = "/api/v1/learning"
    tags = ["learning"]
    dependencies = COACH_DEPENDENCIES

    # the download's media type is its Response's; on the route it would also be every error's (a 400 said JSONL)
    @get("/export", responses={200: ResponseSpec(str, media_type=JSONL_MEDIA_TYPE, description="JSON Lines")})
    async def export(
        self,
        uow: Uow,
        container: ContainerDep,
        export_format: Annotated[str, QueryParameter(name="format")] = "sft",
        split: FromQuery[str] = "all",
        scrub_pii: FromQuery[bool] = True,
    ) -> Response[str]:
        """The coach's training examples as a JSON Lines download: ``format=sft`` (OpenAI chat fine-tuning
        format) or ``preference`` (OpenAI preference format); ``split=train|validation|test|all``;
        ``scrub_pii`` (default true) replaces e-mails and phone numbers with placeholders. 400 otherwise."""
        return await training_export(uow, container, export_format, split, scrub_pii=scrub_pii)

    @get("/training")
    async def training(self, coach_id: CoachId, uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """Example counts (``sft``/``preference`` per split, ``by_source``, ``total``) and the fine-tune
        ``readiness`` (ready, enabled, new_examples, min_examples, days_since_last, min_days, reason)."""
        stats = await container.training.stats(uow)
        readiness = await container.fine_tunes.readiness(uow)
        return {"stats": stats, "readiness": readiness.as_dict()}


class ModelController(Controller):
    path = "/api/v1/learning"
    tags = ["learning"]
    dependencies = COACH_DEPENDENCIES

    @get("/fine-tunes")
    async def list_fine_tunes(self, uow: Uow, container: ContainerDep) -> list[FineTuneOut]:
        """The coach's fine-tune jobs, newest first."""
        return [fine_tune_out(job) for job in await container.fine_tunes.list_jobs(uow)]

    @post("/fine-tunes", status_code=201)
    async def start_fine_tune(
        self, uow: Uow, container: ContainerDep, data: JSONBody[FineTuneRequest | None] = None
    ) -> FineTuneOut:
        """Start a fine-tune now (the readiness thresholds do not apply): snapshot the examples and queue the
        upload. 409 without an OpenAI endpoint and key, without train examples or while a job runs; 400 for
        an unknown method."""
        method = data.method if data is not None else "supervised"
        return fine_tune_out(await container.fine_tunes.create_job(uow, method=method))

    @get("/models")
    async def list_models(self, uow: Uow, container: ContainerDep) -> list[ModelVersionOut]:
        """The coach's model versions, newest first."""
        return [model_version_out(v) for v in await container.model_versions.list_versions(uow)]

    @post("/models/{version_id:str}/promote", status_code=200)
    async def promote(
        self,
        version_id: PathId,
        coach_id: CoachId,
        container: ContainerDep,
        data: JSONBody[PromoteRequest | None] = None,
    ) -> ModelVersionOut:
        """Put a version in production through the promotion gate (unless its evaluation already passed or
        ``force``); 409 with the gate's reason when it refuses, 404 for an unknown version. No request unit of
        work: the gate replays examples through two models, so :meth:`promote` opens short ones of its own."""
        force = data.force if data is not None else False
        return model_version_out(await container.model_versions.promote(coach_id, version_id, force=force))

    @post("/models/rollback", status_code=200)
    async def rollback(self, uow: Uow, container: ContainerDep) -> RollbackOut:
        """Retire the production version and restore the previous one (or the base model: ``null``); 409
        when no version is in production."""
        restored = await container.model_versions.rollback(uow)
        return RollbackOut(production=model_version_out(restored) if restored is not None else None)
