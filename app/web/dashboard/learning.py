"""The learning dashboard page (charts drawn server-side as SVG) and the charts' stylesheet."""

from __future__ import annotations

from typing import Annotated

from litestar import Response, get
from litestar.params import FromQuery, QueryParameter
from litestar.response import Template

from app.deps import ContainerDep, Uow
from app.learning.charts import chart_stylesheet, dashboard_charts
from app.web.api.training import training_export
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

    @get("/learning/export")
    async def export(
        self,
        uow: Uow,
        container: ContainerDep,
        export_format: Annotated[str, QueryParameter(name="format")] = "sft",
        split: FromQuery[str] = "all",
    ) -> Response[str]:
        """The training examples as a JSON Lines download with the dashboard session (as
        ``GET /api/v1/learning/export``, PII scrubbed); ``?format=sft|preference``, ``?split=…``."""
        return await training_export(uow, container, export_format, split)

    @get("/learning/charts.css", media_type="text/css")
    async def chart_styles(self) -> Response[str]:
        """The charts' CSS (:func:`app.learning.charts.chart_stylesheet`; the charts carry no inline style)."""
        return Response(chart_stylesheet(), media_type="text/css")
