"""REST API of A/B experiments (coach key): create, list with results, one with results, stop."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.params import JSONBody

from app.auth import COACH_DEPENDENCIES, TEXT_BODY_MAX_BYTES
from app.deps import ContainerDep, PathId, Uow


class ExperimentIn(msgspec.Struct, forbid_unknown_fields=True):
    """A new experiment: ``variants`` ``[{"name", "persona"?, "model"?, "temperature"?}]`` (2–4),
    ``metric`` ``thumbs_up_rate`` | ``handoff_rate``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    metric: str
    variants: list[dict[str, Any]]
    alpha: float = 0.05
    min_samples: int = 30


class ExperimentController(Controller):
    path = "/api/v1/learning/experiments"
    tags = ["learning"]
    dependencies = COACH_DEPENDENCIES

    @post("/", status_code=201, request_max_body_size=TEXT_BODY_MAX_BYTES)
    async def create(self, data: JSONBody[ExperimentIn], uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """Start an experiment (400 on bad variants or metric, 409 while another one runs)."""
        experiment = await container.experiments.create(
            uow,
            name=data.name,
            metric=data.metric,
            variants=data.variants,
            alpha=data.alpha,
            min_samples=data.min_samples,
        )
        return (await container.experiments.results(uow, experiment.id)).as_dict()

    @get("/")
    async def list_experiments(self, uow: Uow, container: ContainerDep) -> list[dict[str, Any]]:
        """The coach's experiments with per-variant counts, rates, 95 % Wilson intervals, p-value and winner."""
        return [results.as_dict() for results in await container.experiments.list_results(uow)]

    @get("/{experiment_id:str}")
    async def get_experiment(self, experiment_id: PathId, uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """One experiment with its results (404 for another coach's)."""
        return (await container.experiments.results(uow, experiment_id)).as_dict()

    @post("/{experiment_id:str}/stop", status_code=200)
    async def stop(self, experiment_id: PathId, uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """Stop a running experiment (409 when it is not running)."""
        await container.experiments.stop(uow, experiment_id)
        return (await container.experiments.results(uow, experiment_id)).as_dict()
