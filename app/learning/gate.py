"""The promotion gate's arithmetic: embedding similarity to the coach's actual replies, the pairwise LLM
judge's win rate, and the decision.

Metric: for each held-out SFT example, the cosine similarity between the model's reply and the coach's
actual reply (``chosen``), both embedded by the coach's embedder; the score is the mean over the examples
(an embedding-similarity metric in the spirit of BERTScore / SemScore: Aynetdinov & Akbik, 2024, "SemScore:
Automated Evaluation of Instruction-Tuned LLMs based on Semantic Textual Similarity", arXiv:2401.17072).
A candidate passes when its score beats the current model's by more than :data:`EMBEDDING_MARGIN` and,
when a judge model is configured, wins at least :data:`MIN_JUDGE_WIN_RATE` of the pairwise comparisons
(ties count one half; the candidate's position alternates between A and B to cancel position bias, as in
Zheng et al., 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", arXiv:2306.05685).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EMBEDDING_MARGIN = 0.02
"""The candidate's mean cosine similarity must exceed the current model's by more than this."""
MIN_JUDGE_WIN_RATE = 0.5
MIN_HELD_OUT_EXAMPLES = 5
"""Fewer held-out examples than this: the gate refuses (the difference would be noise)."""
MAX_HELD_OUT_EXAMPLES = 50
"""At most this many held-out examples are replayed (cost and time bound)."""
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["winner"],
    "additionalProperties": False,
}
"""Structured Outputs schema of one judge verdict."""


def cosine_similarities(replies: Sequence[Sequence[float]], references: Sequence[Sequence[float]]) -> list[float]:
    """Row-wise cosine similarity of two equally long lists of vectors (each normalised here)."""
    a = np.asarray(replies, dtype=float)
    b = np.asarray(references, dtype=float)
    if a.shape != b.shape:
        raise ValueError("one reference vector per reply")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    sims = np.einsum("ij,ij->i", a, b) / np.where(norms == 0, 1.0, norms)
    return [float(s) for s in sims]


def win_rate(verdicts: Sequence[str]) -> float | None:
    """The candidate's share of ``verdicts`` (``"candidate"``, ``"current"``, ``"tie"``; ties count 0.5);
    ``None`` without verdicts."""
    if not verdicts:
        return None
    score = sum(1.0 if v == "candidate" else 0.5 if v == "tie" else 0.0 for v in verdicts)
    return score / len(verdicts)


@dataclass(frozen=True)
class GateDecision:
    """``passed`` and the ``reason`` in words."""

    passed: bool
    reason: str


def decide(candidate: float, current: float, judge_win_rate: float | None) -> GateDecision:
    """Pass iff ``candidate > current + EMBEDDING_MARGIN`` and (no judge, or ``judge_win_rate ≥ 0.5``)."""
    if candidate <= current + EMBEDDING_MARGIN:
        return GateDecision(
            False,
            f"similarity {candidate:.3f} does not beat the current model's {current:.3f} by more than "
            f"{EMBEDDING_MARGIN}",
        )
    if judge_win_rate is not None and judge_win_rate < MIN_JUDGE_WIN_RATE:
        return GateDecision(False, f"the judge preferred the current model (win rate {judge_win_rate:.2f})")
    return GateDecision(True, f"similarity {candidate:.3f} beats {current:.3f}")
