"""Which of ``en es fr de pt`` a client's message is written in (:func:`app.handoff.languages.written_language`),
measured on labelled text with a tune/report split, and the confidence floor chosen on the tune half.

Labelled data, all from public or in-repo sources:
- the product's own catalogue (:data:`app.handoff.catalogue.CATALOGUE`): every text in its five languages (a text
  that two languages share, such as "OK", is left out), ``{fields}`` filled with a name; and, to stand for
  chat-length messages, each text's first three words;
- English chat: the seekers' messages of ESConv's ``valid.jsonl`` (``../shared/data/esconv``), whole and their first
  three words.

Each text goes to the ``tune`` or the ``report`` half by the parity of its SHA-256's first byte. On the tune half the
floor of py3langid's probability is the one that maximises ``correct - 2 * wrong`` (a wrong language switches every
notice of the conversation; no answer falls back to the language the client's app is set to, or English). The table
gives, on the report half, what the shipped :func:`written_language` answers: right, wrong, no answer, per language.

    .venv/bin/python bench/languages.py [--esconv DIR] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.handoff.catalogue import CATALOGUE  # noqa: E402
from app.handoff.languages import LANGUAGES, language_probability, written_language  # noqa: E402
from app.handoff.normalise import normalise  # noqa: E402

console = Console()
ESCONV = Path(__file__).resolve().parents[2] / "shared" / "data" / "esconv"
FLOORS = [round(0.30 + 0.05 * i, 2) for i in range(14)]
PREFIX_WORDS = 3


def _filled(text: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "Alex", text)


def labelled(esconv: Path) -> list[tuple[str, str]]:
    """``(text, language)`` pairs: the catalogue's texts and ESConv's seeker messages, whole and their first words."""
    pairs: set[tuple[str, str]] = set()
    for texts in CATALOGUE.values():
        shared = Counter(texts.values())
        for language, text in texts.items():
            if language in LANGUAGES and shared[text] == 1:
                pairs.add((_filled(text), language))
    with (esconv / "valid.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            for turn in json.loads(line).get("dialog", []):
                if turn.get("speaker") in ("seeker", "usr") and turn.get("text", "").strip():
                    pairs.add((turn["text"].strip(), "en"))
    with_prefixes = set(pairs)
    for text, language in pairs:
        words = text.split()
        if len(words) > PREFIX_WORDS:
            with_prefixes.add((" ".join(words[:PREFIX_WORDS]), language))
    return sorted(with_prefixes)


def half(text: str) -> str:
    """``tune`` or ``report``, by the parity of the first byte of the text's SHA-256."""
    return "tune" if hashlib.sha256(text.encode()).digest()[0] % 2 == 0 else "report"


def score(answers: list[tuple[str | None, str]]) -> dict[str, int]:
    """Right, wrong and no-answer counts of ``(answer, gold)`` pairs."""
    right = sum(answer == gold for answer, gold in answers)
    none = sum(answer is None for answer, _ in answers)
    return {"texts": len(answers), "right": right, "wrong": len(answers) - right - none, "no answer": none}


def tune(pairs: list[tuple[str, str]]) -> tuple[float, list[dict[str, object]]]:
    """The floor maximising ``right - 2 * wrong`` on ``pairs``, and every floor's counts."""
    probabilities = [(language_probability(normalise(text)), gold) for text, gold in pairs]
    rows = []
    for floor in FLOORS:
        answers = [(guess if p >= floor else None, gold) for (guess, p), gold in probabilities]
        counts = score(answers)
        rows.append({"floor": floor, **counts, "utility": counts["right"] - 2 * counts["wrong"]})
    best = max(rows, key=lambda row: (row["utility"], -float(row["floor"])))  # type: ignore[arg-type]
    return float(best["floor"]), rows  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--esconv", type=Path, default=ESCONV, help="ESConv directory (valid.jsonl)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    pairs = labelled(args.esconv)
    halves = {name: [p for p in pairs if half(p[0]) == name] for name in ("tune", "report")}
    floor, rows = tune(halves["tune"])
    report = [(written_language(normalise(text)), gold) for text, gold in halves["report"]]
    by_language = {
        language: score([(answer, gold) for answer, gold in report if gold == language]) for language in LANGUAGES
    }
    result = {"floor_tuned": floor, "tune": rows, "report": score(report), "report_by_language": by_language}
    if args.json:
        print(json.dumps(result))
        return
    tuned = Table(title=f"Tune half ({len(halves['tune'])} texts): py3langid's probability floor")
    for name in ("floor", "right", "wrong", "no answer", "utility"):
        tuned.add_column(name, justify="right")
    for row in rows:
        tuned.add_row(*(str(row[name]) for name in ("floor", "right", "wrong", "no answer", "utility")))
    console.print(tuned)
    shown = Table(title=f"Report half ({len(halves['report'])} texts): the shipped written_language")
    for name in ("gold", "texts", "right", "wrong", "no answer"):
        shown.add_column(name, justify="right")
    for language, counts in [*by_language.items(), ("all", score(report))]:
        shown.add_row(language, *(str(counts[name]) for name in ("texts", "right", "wrong", "no answer")))
    console.print(shown)
    console.print(f"floor chosen on the tune half: {floor}")


if __name__ == "__main__":
    main()
