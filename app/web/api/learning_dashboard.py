"""REST API of the learning dashboard (coach key): the same figures as the page ``/dashboard/learning``."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.params import FromQuery

from app.auth import COACH_DEPENDENCIES
from app.deps import ContainerDep, Uow


class LearningDashboardController(Controller):
    path = "/api/v1/learning"
    tags = ["learning"]
    dependencies = COACH_DEPENDENCIES

    @get("/dashboard")
    async def dashboard(self, uow: Uow, container: ContainerDep, days: FromQuery[int] = 30) -> dict[str, Any]:
        """Approval (overall, per day, mode and topic) and its health, failure patterns, handoff rate and
        reasons, training data and readiness, fine-tune jobs, model versions, cache hit rate, experiments and
        interventions over the last ``days`` (1–365, else 400)."""
        return await container.learning_dashboard.figures(uow, days=days)
