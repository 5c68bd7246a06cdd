"""The learning dashboard page (charts drawn server-side as SVG)."""

from __future__ import annotations

from litestar import get
from litestar.params import FromQuery
from litestar.response import Template

from app.deps import ContainerDep, Uow
from app.learning.charts import dashboard_charts
from app.web.dashboard.auth import CoachPage


class LearningPages(CoachPage):
    """What the clone learnt and how well it does."""

    @get("/learning")
    async def learning(self, uow: Uow, container: ContainerDep, days: FromQuery[int] = 30) -> Template:
        """The learning dashboard (the figures of ``GET /api/v1/learning/dashboard`` with SVG charts)."""
        figures = await container.learning_dashboard.figures(uow, days=days)
        return Template(
            "dashboard/learning.html",
            context={
                "coach": await uow.coach(),
                "nav": "learning",
                "f": figures,
                "charts": dashboard_charts(figures),
            },
        )
