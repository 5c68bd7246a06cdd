"""Server-rendered SVG charts of the learning dashboard, drawn with pygal (inline SVG, no JavaScript needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pygal
from markupsafe import Markup
from pygal.style import Style

STYLE = Style(
    background="transparent",
    plot_background="transparent",
    font_family="system-ui, sans-serif",
    colors=("#2f6f4f", "#c0392b", "#1864ab", "#e67700"),
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    value_font_size=11,
)
"""The dashboard's palette (app.css's accent, error, blue, amber)."""


def _render(chart: Any) -> Markup:
    return Markup(chart.render(is_unicode=True, disable_xml_declaration=True))


def _config() -> dict[str, Any]:
    return {"style": STYLE, "height": 260, "width": 720, "explicit_size": False, "show_legend": False}


def line(title: str, labels: Sequence[str], values: Sequence[float | None], *, percent: bool = True) -> Markup:
    """A line chart of one series over ``labels`` (e.g. days); ``None`` values leave gaps; ``percent``
    draws fractions 0–1 as 0–100 %."""
    chart = pygal.Line(
        title=title,
        range=(0, 100) if percent else None,
        x_label_rotation=30,
        show_minor_x_labels=False,
        allow_interruptions=True,
        **_config(),
    )
    chart.x_labels = list(labels)
    chart.x_labels_major = list(labels)[:: max(1, len(labels) // 8)]
    chart.add(title, [None if v is None else round(100 * v, 1) if percent else v for v in values])
    return _render(chart)


def bars(title: str, items: Sequence[tuple[str, float | None]], *, percent: bool = True) -> Markup:
    """A horizontal bar per ``(label, value)``; ``percent`` draws fractions 0–1 as 0–100 %."""
    chart = pygal.HorizontalBar(title=title, range=(0, 100) if percent else None, **_config())
    chart.x_labels = [label for label, _ in items]
    chart.add(title, [None if v is None else round(100 * v, 1) if percent else v for _, v in items])
    return _render(chart)


def dashboard_charts(figures: dict[str, Any]) -> dict[str, Markup]:
    """The page's charts from :meth:`app.learning.dashboard.LearningDashboard.figures`: ``approval_per_day``,
    ``approval_per_mode``, ``approval_per_topic``, ``handoff_reasons``, ``cache_per_day`` (only those with
    data)."""
    charts: dict[str, Markup] = {}
    approval = figures["approval"]
    if approval["overall"]["rated"]:
        days = approval["per_day"]
        charts["approval_per_day"] = line(
            "Approval rate per day (%)", [d["day"][5:] for d in days], [d["rate"] for d in days]
        )
        charts["approval_per_mode"] = bars(
            "Approval rate per mode (%)", [(mode, r["rate"]) for mode, r in approval["per_mode"].items()]
        )
        charts["approval_per_topic"] = bars(
            "Approval rate per topic (%)", [(topic, r["rate"]) for topic, r in approval["per_topic"].items()][:8]
        )
    reasons = figures["handoffs"]["reasons"]
    if reasons:
        charts["handoff_reasons"] = bars(
            "Handoffs per reason", [(r["label"], r["count"]) for r in reasons], percent=False
        )
    cache = figures["cache"]
    if cache["hits"] + cache["misses"]:
        days = cache["per_day"]
        charts["cache_per_day"] = line(
            "Cache hit rate per day (%)",
            [d["day"][5:] for d in days],
            [d["hits"] / (d["hits"] + d["misses"]) if d["hits"] + d["misses"] else None for d in days],
        )
    return charts
