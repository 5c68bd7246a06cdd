"""Server-rendered SVG charts of the learning dashboard, drawn with pygal: inline SVG without any script or
inline style, so the page keeps the app's Content-Security-Policy (``script-src 'self'; style-src 'self'``).

pygal puts into every chart a ``<style>`` element, an inline ``<script>`` with its config and a ``<script>``
loading its tooltips from ``kozea.github.io``, plus a hidden tooltip group (``style="opacity: 0"``) for that
script. The charts here drop all of these (``js=[]`` and an xml filter, :func:`_static_svg`); their
CSS is served once as a stylesheet (:func:`chart_stylesheet`), scoped to the ``pygal-chart`` class every chart
carries instead of pygal's per-chart id."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
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


STYLESHEET_SERIES = len(STYLE.colors)
"""The stylesheet styles this many series (one colour class each); the charts draw one series."""
COUNT_TICKS = 5
"""At most this many steps on the axis of a chart of counts."""
_REMOVED_TAGS = ("script", "style")


def _static_svg(root: Any) -> Any:
    """pygal xml filter (``add_xml_filter``): remove every ``<script>``, ``<style>``, comment and the script-driven
    tooltip group from the chart's element tree (pygal's etree: ``xml.etree`` or lxml); returns ``root``."""
    for parent in list(root.iter()):
        for child in list(parent):
            if (
                not isinstance(child.tag, str)  # comments (pygal's credits with its URLs)
                or child.tag.rpartition("}")[2] in _REMOVED_TAGS
                or "tooltip" in (child.get("class") or "").split()
            ):
                parent.remove(child)
    return root


def _render(chart: Any) -> Markup:
    chart.add_xml_filter(_static_svg)
    return Markup(chart.render(is_unicode=True, disable_xml_declaration=True))


def _config() -> dict[str, Any]:
    return {
        "style": STYLE,
        "height": 260,
        "width": 720,
        "explicit_size": False,
        "show_legend": False,
        "js": [],
    }


@lru_cache(maxsize=1)
def chart_stylesheet() -> str:
    """The CSS of the charts (pygal's base, style and graph CSS in :data:`STYLE`, for up to
    :data:`STYLESHEET_SERIES` series), with pygal's per-chart ``#chart-<uuid>`` prefix replaced by
    ``.pygal-chart``: one stylesheet for every chart of the page."""
    chart = pygal.Line(**_config())
    for series in range(STYLESHEET_SERIES):
        chart.add(str(series), [1])
    style = next(node for node in chart.render_tree().iter() if node.tag == "style")
    return (
        str(style.text)
        .replace(f"#chart-{chart.uuid} ", ".pygal-chart ")
        .replace(f"#chart-{chart.uuid}", ".pygal-chart")
    )


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
    """A horizontal bar per ``(label, value)``; ``percent`` draws fractions 0–1 as 0–100 %, else the values are
    counts, on an axis of whole numbers from 0 (pygal's own ticks for a count of 1 were 0.1, 0.2, …)."""
    chart = pygal.HorizontalBar(title=title, range=(0, 100) if percent else None, **_config())
    if not percent:
        top = max(1, math.ceil(max((v for _, v in items if v is not None), default=0)))
        step = math.ceil(top / COUNT_TICKS)
        chart.range = (0, top)
        chart.y_labels = list(range(0, top + 1, step))
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
