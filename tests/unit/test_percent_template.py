"""The dashboard's percentages (``templates/partials/percent.html``)."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.mark.parametrize(
    ("share", "shown"),
    [(0.625, "63 %"), (0.125, "13 %"), (0.285, "28 %"), (0.0, "0 %"), (1.0, "100 %"), (None, "–")],
)
def test_a_half_percent_rounds_up_as_a_coach_would_round_it(share: float | None, shown: str) -> None:
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    pct = templates.get_template("partials/percent.html").module.pct  # type: ignore[attr-defined]
    assert str(pct(share)) == shown
