"""The coach's style profile: an aggregate over all of the coach's analysed interventions.

Shape of ``Coach.style_profile`` (written by :func:`build_style_profile`)::

    {"n": 12,                                   # analysed interventions
     "strategies": {"Question": 0.42, ...},     # share of each ESConv strategy
     "by_mood": {"negative": {"Reflection of feelings": 3, ...}, ...},   # strategy given the client's mood
     "after": {"Question": {"Restatement or Paraphrasing": 2, ...}, ...}, # strategy given the previous one
     "formality": 0.61, "tone": 0.12,           # means (formality 0–1, VADER compound −1–1)
     "key_phrases": ["small step", ...],        # said to the most clients (at least MIN_PHRASE_CLIENTS)
     "success": {"Question": {"uses": 4, "successes": 3, "rate": 0.75}, ...}}   # outcome known only

:func:`style_lines` turns it into a few short prompt lines; :func:`predict_strategy` is the profile's guess
of the coach's next technique (used by ``opencoach eval learning``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TOP_PHRASES = 8
MIN_PHRASE_CLIENTS = 2
"""Distinct clients a key phrase must have been said to before the style profile keeps it: the profile goes into
every client's prompt, and a phrase of one client's conversations is often theirs (their name, a person or a
place they spoke of, echoed by the coach)."""
MIN_STYLE_SAMPLES = 3
"""Fewer analysed interventions than this give no style lines (too little to call a style)."""


@dataclass(frozen=True)
class StyleSample:
    """One analysed intervention as the style profile sees it; ``success`` is ``None`` until known;
    ``previous_strategy``: the coach's strategy in the same conversation just before (``None`` for the first)."""

    strategy: str
    client_mood: str
    formality: float
    tone: float
    key_phrases: Sequence[str] = field(default_factory=tuple)
    success: bool | None = None
    previous_strategy: str | None = None
    client: str = ""
    """The client the intervention was for (an id): a key phrase counts only once said to
    :data:`MIN_PHRASE_CLIENTS` clients."""


def build_style_profile(samples: Sequence[StyleSample]) -> dict[str, Any]:
    """Aggregate analysed interventions into the style profile (shape in the module docstring); ``{"n": 0}``
    for none."""
    n = len(samples)
    if not n:
        return {"n": 0}
    counts = Counter(s.strategy for s in samples)
    by_mood: dict[str, Counter[str]] = {}
    after: dict[str, Counter[str]] = {}
    for s in samples:
        by_mood.setdefault(s.client_mood, Counter())[s.strategy] += 1
        if s.previous_strategy:
            after.setdefault(s.previous_strategy, Counter())[s.strategy] += 1
    phrases = Counter(p for p, _client in {(p, s.client) for s in samples for p in s.key_phrases})
    success: dict[str, dict[str, float]] = {}
    for s in samples:
        if s.success is None:
            continue
        row = success.setdefault(s.strategy, {"uses": 0, "successes": 0, "rate": 0.0})
        row["uses"] += 1
        row["successes"] += int(s.success)
    for row in success.values():
        row["rate"] = round(row["successes"] / row["uses"], 3)
    return {
        "n": n,
        "strategies": {k: round(v / n, 3) for k, v in counts.most_common()},
        "by_mood": {mood: dict(c.most_common()) for mood, c in sorted(by_mood.items())},
        "after": {prev: dict(c.most_common()) for prev, c in sorted(after.items())},
        "formality": round(sum(s.formality for s in samples) / n, 3),
        "tone": round(sum(s.tone for s in samples) / n, 3),
        "key_phrases": [p for p, clients in phrases.most_common() if clients >= MIN_PHRASE_CLIENTS][:TOP_PHRASES],
        "success": success,
    }


def predict_strategy(profile: Mapping[str, Any], client_mood: str, previous_strategy: str | None = None) -> str | None:
    """The coach's most likely strategy for a client in ``client_mood`` (``negative``/``neutral``/
    ``positive``) after the coach's ``previous_strategy`` in the conversation (``None``: not known or the
    first reply): naive Bayes over the profile's counts, ``P(s) · P(mood | s) · P(previous | s)`` with
    add-one smoothing (the previous-strategy factor only when given). ``None`` for an empty profile."""
    shares: Mapping[str, float] = profile.get("strategies") or {}
    n = int(profile.get("n", 0))
    if not shares or not n:
        return None
    mood_counts: Mapping[str, int] = (profile.get("by_mood") or {}).get(client_mood) or {}
    after_counts: Mapping[str, int] = (profile.get("after") or {}).get(previous_strategy or "") or {}
    moods = max(len(profile.get("by_mood") or {}), 1)

    def score(strategy: str) -> float:
        count = shares[strategy] * n
        value = count / n * (mood_counts.get(strategy, 0) + 1) / (count + moods)
        if previous_strategy:
            value *= (after_counts.get(strategy, 0) + 1) / (count + len(shares))
        return value

    return max(sorted(shares), key=score)


def _register(formality: float) -> str:
    if formality >= 0.65:
        return "fairly formal"
    if formality >= 0.45:
        return "conversational"
    return "casual and personal"


def style_lines(profile: Mapping[str, Any] | None) -> list[str]:
    """A few short prompt lines describing the coach's style (techniques, what they do when the client is
    low, register, warmth, typical phrases); ``[]`` when fewer than ``MIN_STYLE_SAMPLES`` interventions."""
    if not profile or int(profile.get("n", 0)) < MIN_STYLE_SAMPLES:
        return []
    lines = []
    top = list((profile.get("strategies") or {}).items())[:3]
    if top:
        lines.append("Techniques the coach uses most: " + ", ".join(f"{k} ({v:.0%})" for k, v in top) + ".")
    given_low: Mapping[str, int] = (profile.get("by_mood") or {}).get("negative") or {}
    low = max(sorted(given_low), key=lambda k: given_low[k]) if given_low else None
    if low:
        lines.append(f"When the client feels low, the coach usually answers with: {low}.")
    warmth = float(profile.get("tone", 0.0))
    tone = "warm and upbeat" if warmth >= 0.3 else "calm and even" if warmth > -0.05 else "sober"
    lines.append(f"Register: {_register(float(profile.get('formality', 0.5)))}; tone: {tone}.")
    successes = [(k, v) for k, v in (profile.get("success") or {}).items() if v.get("uses", 0) >= 2]
    best = max(successes, key=lambda kv: kv[1]["rate"], default=None)
    if best and best[1]["rate"] > 0:
        lines.append(f"What has worked best: {best[0]} (helped {best[1]['rate']:.0%} of the time).")
    phrases = list(profile.get("key_phrases") or [])[:5]
    if phrases:
        lines.append("Typical phrases: " + ", ".join(f"“{p}”" for p in phrases) + ".")
    return lines
