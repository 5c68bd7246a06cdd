"""Crisis-protocol decisions on short chat messages written to probe the detector (``bench/crisis_probes.json``).

The C-SSRS file ``opencoach eval crisis`` scores holds whole Reddit users; a coaching chat sends one short,
informal message at a time. An adversarial probe (stop 56) wrote such messages by pattern: ``crisis`` ones that
call for the crisis protocol (slang such as "dont wanna live", no pronoun, a count of pills, a burden said to
someone, a last message, a self-harm act, euphemisms, typos) and ``benign`` everyday coaching ones that trip
its cues (self-care idioms with "myself", habit goals, medication taken as prescribed, hyperbole, quoting
someone). They are adversarial by design, so their rates say where the detector breaks, not how often it errs
in real traffic.

The messages are split in two halves by the first byte of each text's SHA-256: the cues added at stop 56 were
written against the ``tune`` half only; the ``report`` half is the figure to quote. Decision: the turn's rule,
:func:`app.handoff.crisis.needs_crisis_protocol`, of the lexicon (:class:`app.handoff.risk.RiskDetector`) and of
the combined detector (:class:`app.handoff.detector.CrisisDetector`, which also runs MiniLM).

Run from the project root (about 20 s on two cores)::

    .venv/bin/python bench/crisis_probes.py [--half tune|report] [--misses] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from app.handoff.crisis import needs_crisis_protocol
from app.handoff.detector import CrisisDetector
from app.handoff.risk import RiskDetector

PROBES = Path(__file__).with_name("crisis_probes.json")


def half(text: str) -> str:
    """``tune`` or ``report``: the half a probe message belongs to (first byte of its SHA-256, even or odd)."""
    return "tune" if hashlib.sha256(text.encode()).digest()[0] % 2 == 0 else "report"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=("tune", "report"), default=None, help="one half only (default: both)")
    parser.add_argument("--misses", action="store_true", help="list the wrong decisions of the lexicon")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    probes = json.loads(PROBES.read_text())
    lexicon, combined = RiskDetector(), CrisisDetector()
    results: dict[str, dict[str, dict[str, float]]] = {}
    wrong: list[tuple[str, str, str]] = []
    for name in [args.half] if args.half else ["tune", "report"]:
        results[name] = {}
        for group, patterns in probes.items():
            texts = [(pattern, t) for pattern, items in patterns.items() for t in items if half(t) == name]
            counts = {"messages": len(texts), "lexicon": 0, "combined": 0}
            for pattern, text in texts:
                for detector_name, detector in (("lexicon", lexicon), ("combined", combined)):
                    if needs_crisis_protocol(detector.assess(text)):
                        counts[detector_name] += 1
                    elif detector_name == "lexicon" and group == "crisis":
                        wrong.append((name, pattern, text))
                if group == "benign" and needs_crisis_protocol(lexicon.assess(text)):
                    wrong.append((name, pattern, text))
            results[name][group] = {
                "messages": counts["messages"],
                "lexicon": round(counts["lexicon"] / max(counts["messages"], 1), 3),
                "combined": round(counts["combined"] / max(counts["messages"], 1), 3),
            }
    if args.json:
        print(json.dumps(results))
        return
    table = Table(title="Crisis protocol on probe messages (share of messages that get it)")
    for column in ("half", "group", "messages", "lexicon", "combined"):
        table.add_column(column, justify="right" if column not in ("half", "group") else "left")
    for name, groups in results.items():
        for group, row in groups.items():
            label = "crisis (want 1)" if group == "crisis" else "benign (want 0)"
            table.add_row(name, label, str(row["messages"]), f"{row['lexicon']:.3f}", f"{row['combined']:.3f}")
    console = Console()
    console.print(table)
    if args.misses:
        for name, pattern, text in wrong:
            console.print(f"{name}  [{pattern}]  {text!r}", highlight=False)


if __name__ == "__main__":
    main()
