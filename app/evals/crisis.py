"""User-level evaluation of :class:`app.handoff.risk.RiskDetector` on a C-SSRS Reddit file.

The data set (Gaur M. et al., "Knowledge-aware Assessment of Severity of Suicide Risk for Early
Intervention", WWW 2019) labels Reddit users by the Columbia Suicide Severity Rating Scale: ``Supportive``
(posts only to support others), ``Indicator`` (risk indicators, no ideation), ``Ideation``, ``Behavior`` and
``Attempt``. A CSV with columns ``User``, ``Post`` (a stringified Python list of that user's posts) and
``Label`` (e.g. ``../shared/data/crisis/cssrs_dev.csv``) is read by :func:`load_cssrs`; some ``Post`` cells
are truncated lists that :func:`ast.literal_eval` rejects, and those are split on the ``', '`` separators
instead (counted in :attr:`CssrsData.repaired_rows`).

:func:`evaluate_crisis` flags a user when :meth:`RiskDetector.assess_user` gives level ``concern`` or
``crisis`` and scores it as a binary screen: Ideation, Behavior and Attempt are positive, Supportive is
negative, and Indicator users are left out of precision/recall and reported as ``indicator_flag_rate``
(the share flagged).
"""

from __future__ import annotations

import ast
import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import EvalDataError
from app.handoff.risk import RiskDetector

LABELS = ("Supportive", "Indicator", "Ideation", "Behavior", "Attempt")
"""The C-SSRS labels of the data set, from no risk to the most severe."""
POSITIVE = frozenset({"Ideation", "Behavior", "Attempt"})
NEGATIVE = frozenset({"Supportive"})
COLUMNS = ("User", "Post", "Label")
_SPLIT = re.compile(r"""['"]\s*,\s*['"]""")


@dataclass(frozen=True)
class CssrsUser:
    """One labelled user: ``posts`` in file order (empty strings dropped)."""

    user: str
    label: str
    posts: tuple[str, ...]


@dataclass(frozen=True)
class CssrsData:
    """The users of a C-SSRS file; ``repaired_rows``: Post cells split by the fallback, ``unparseable_rows``:
    cells that yielded no post at all (those users are kept with no posts)."""

    users: tuple[CssrsUser, ...]
    repaired_rows: int = 0
    unparseable_rows: int = 0


def parse_posts(cell: str) -> tuple[list[str], bool]:
    """The posts in one ``Post`` cell and whether the tolerant fallback was needed.

    ``"['a', 'b']"`` → ``(["a", "b"], False)``. A cell ``ast.literal_eval`` rejects (truncated, stray quotes)
    is stripped of its brackets and split on quote-comma-quote; a cell that is not a list at all is one post.
    """
    text = cell.strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, (list, tuple)):
        return [str(post) for post in value if str(post).strip()], False
    if isinstance(value, str):
        return ([value] if value.strip() else []), False
    inner = text[1:] if text.startswith("[") else text
    inner = inner[:-1] if inner.endswith("]") else inner
    inner = inner.strip()
    if inner[:1] in ("'", '"'):
        inner = inner[1:]
    if inner[-1:] in ("'", '"'):
        inner = inner[:-1]
    return [post for post in _SPLIT.split(inner) if post.strip()], True


def load_cssrs(path: Path) -> CssrsData:
    """Read a C-SSRS CSV (columns ``User``, ``Post``, ``Label``; extra columns ignored).

    Raises :class:`EvalDataError` for a missing or unreadable file, a missing column, an unknown label or
    a file without users. Malformed ``Post`` cells never raise: they are repaired or counted.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [column for column in COLUMNS if column not in header]
            if missing:
                raise EvalDataError(
                    f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)}; found "
                    f"{', '.join(header) or 'no header'})"
                )
            users: list[CssrsUser] = []
            repaired = unparseable = 0
            for line, row in enumerate(reader, start=2):
                label = (row.get("Label") or "").strip()
                if label not in LABELS:
                    raise EvalDataError(
                        f"{path}, line {line}: unknown label {label!r} (expected one of {', '.join(LABELS)})"
                    )
                posts, fallback = parse_posts(row.get("Post") or "")
                repaired += fallback and bool(posts)
                unparseable += not posts
                users.append(CssrsUser((row.get("User") or "").strip(), label, tuple(posts)))
    except FileNotFoundError as exc:
        raise EvalDataError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise EvalDataError(f"{path}: is a directory, not a CSV file") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvalDataError(f"{path}: not a readable CSV file ({exc})") from exc
    if not users:
        raise EvalDataError(f"{path}: no users (expected rows of {', '.join(COLUMNS)})")
    return CssrsData(tuple(users), repaired, unparseable)


def screen_metrics(flags: Sequence[tuple[str, bool]]) -> dict[str, Any]:
    """Precision, recall, F1 (positives Ideation/Behavior/Attempt, negatives Supportive), the Indicator flag
    rate and a confusion matrix ``{label: {"flagged": n, "not_flagged": n}}`` from ``(label, flagged)`` pairs.

    A ratio with an empty denominator is 0.0.
    """
    confusion = {label: {"flagged": 0, "not_flagged": 0} for label in LABELS}
    for label, flagged in flags:
        confusion[label]["flagged" if flagged else "not_flagged"] += 1
    tp = sum(confusion[label]["flagged"] for label in POSITIVE)
    fn = sum(confusion[label]["not_flagged"] for label in POSITIVE)
    fp = sum(confusion[label]["flagged"] for label in NEGATIVE)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    indicators = confusion["Indicator"]["flagged"] + confusion["Indicator"]["not_flagged"]
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "indicator_flag_rate": round(confusion["Indicator"]["flagged"] / indicators, 4) if indicators else 0.0,
        "users": len(flags),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "confusion": confusion,
    }


def evaluate_crisis(users: Sequence[CssrsUser], detector: RiskDetector | None = None) -> dict[str, Any]:
    """Run the detector over each user's posts and score the screen (see :func:`screen_metrics`); the result
    also counts users per level under ``levels``."""
    detector = detector or RiskDetector()
    flags: list[tuple[str, bool]] = []
    levels = {"none": 0, "concern": 0, "crisis": 0}
    for user in users:
        assessment = detector.assess_user(user.posts)
        levels[assessment.level] += 1
        flags.append((user.label, assessment.level != "none"))
    return {**screen_metrics(flags), "levels": levels}
