"""Crisis-detector benchmark: per-message latency of what the chat turn runs on every client message.

No database, no network: the detector is pure apart from the local MiniLM. Messages: up to 150 C-SSRS
Reddit posts cut to their first 60 words (``--cssrs``, default ``../shared/data/crisis/cssrs_dev.csv``) and
50 short coaching messages, ~200 in all, each timed once after a warm-up:

- **lexicon**: :class:`app.handoff.risk.RiskDetector` (normalisation, English and non-English cues);
- **combined, embedding included**: :class:`app.handoff.detector.CrisisDetector` with the local
  all-MiniLM-L6-v2 embedding the message (what the turn pays when it has no embedding of the message);
- **combined, embedding given**: the same with the message's MiniLM vector passed in (what the turn pays
  when it reuses the vector it computed for retrieval);
- **conversation_risk** over the last six assessments.

Run from the project root (about a minute on two cores)::

    .venv/bin/python bench/crisis.py
    .venv/bin/python bench/crisis.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from app.evals.crisis import load_cssrs
from app.handoff.crisis_model import minilm_embed
from app.handoff.detector import CrisisDetector, conversation_risk
from app.handoff.risk import RiskDetector

CSSRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "crisis" / "cssrs_dev.csv"
CHAT = (
    "How do I stop procrastinating in the morning?",
    "I feel anxious before every meeting. What can I do?",
    "My partner and I keep arguing about chores.",
    "I can't switch off from work in the evening.",
    "I feel lonely since I moved to a new city.",
    "Honestly I've been feeling hopeless for weeks.",
    "What should I do when I feel overwhelmed?",
    "I had a great session today, thanks!",
    "I just want to disappear, nobody would even notice.",
    "quiero matarme",
)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100), interpolating linearly between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def messages(path: Path, posts: int) -> list[str]:
    """``posts`` C-SSRS posts (first 60 words each) and five rounds of :data:`CHAT`."""
    texts = [" ".join(p.split()[:60]) for user in load_cssrs(path).users for p in user.posts if p.strip()]
    step = max(1, len(texts) // posts)
    return texts[::step][:posts] + list(CHAT) * 5


def timed(run: Callable[[str], Any], texts: list[str]) -> list[float]:
    """Milliseconds of ``run`` on each text."""
    out = []
    for text in texts:
        start = time.perf_counter()
        run(text)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="Per-message latency of the crisis detector.")
    parser.add_argument("--cssrs", type=Path, default=CSSRS, help="C-SSRS CSV (default: the shared dev file)")
    parser.add_argument("--posts", type=int, default=150, help="C-SSRS posts among the messages")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    texts = messages(args.cssrs, args.posts)
    lexicon, detector = RiskDetector(), CrisisDetector()
    start = time.perf_counter()
    detector.assess("warm-up: load the model and MiniLM")
    load_ms = (time.perf_counter() - start) * 1000
    vectors = {text: minilm_embed([text])[0] for text in texts}
    recent = [lexicon.assess(text) for text in texts[:6]]
    rows = {
        "lexicon": timed(lexicon.assess, texts),
        "combined, embedding included": timed(detector.assess, texts),
        "combined, embedding given": timed(lambda t: detector.assess(t, embedding=vectors[t]), texts),
        "conversation_risk (6 messages)": timed(lambda _t: conversation_risk(recent), texts),
    }
    result = {
        "messages": len(texts),
        "first_call_ms": round(load_ms, 1),
        "rows": {
            name: {
                "p50_ms": round(percentile(v, 50), 3),
                "p95_ms": round(percentile(v, 95), 3),
                "mean_ms": round(statistics.fmean(v), 3),
            }
            for name, v in rows.items()
        },
    }
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    table = Table(title=f"Crisis detector per message — {len(texts)} messages (first call {load_ms:.0f} ms)")
    for column in ("step", "p50 ms", "p95 ms", "mean ms"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for name, row in result["rows"].items():
        table.add_row(name, f"{row['p50_ms']:.3f}", f"{row['p95_ms']:.3f}", f"{row['mean_ms']:.3f}")
    console = Console()
    console.width = max(console.width, 110)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
