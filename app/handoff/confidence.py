"""How confident the AI may be in answering this turn itself: one number in ``[0, 1]`` from the turn's signals.

Formula
-------
The confidence is the **product** of per-signal factors, each in ``[0, 1]`` and ``1.0`` when its signal raises
no concern — a "weakest link" design: any one strong concern pulls the value down on its own, and smaller
concerns add up multiplicatively. With ``s`` = :class:`~app.handoff.signals.TurnSignals` and
``clip(x, a, b) = min(b, max(a, x))``::

    crisis_risk          = 1 - s.risk_score
    human_request        = 0 if s.human_request else 1
    negative_sentiment   = clip(1 - 0.3·max(0, -s.sentiment) - 0.6·max(0, -s.sentiment_trend), 0.5, 1)
    low_retrieval_support = 1                           if s.retrieval_support is None (not measured)
                                                        or s.venting > 0 (a vent asks nothing the material covers)
                          = 0.6 + 0.4·s.retrieval_support otherwise
    high_stakes_topic    = 0.6 ** len(s.high_stakes_topics)
    frustration          = (1 - 0.4·s.repeated_question) · 0.75 ** s.thumbs_down_streak · 0.6 ** s.venting
    low_token_confidence = 1                           if s.token_confidence is None
                          = clip(0.5 + 0.5·(p - 0.2) / 0.4, 0.5, 1) with p = s.token_confidence
                            (p ≤ 0.2 → 0.5, p ≥ 0.6 → 1, linear between)

    value  = Π factors
    reason = the factor with the lowest value, if it is < 1 (ties: TIE_ORDER), else None

The AI hands the turn to the coach when ``value < threshold`` (:func:`below_threshold`); the coach sets the
threshold, :data:`DEFAULT_CONFIDENCE_THRESHOLD` = 0.5 by default. The constants are set so that, at 0.5:

- a neutral question the coach's material covers (support ≥ 0.5) scores ≥ 0.8;
- a question the material does not cover at all (support 0) scores 0.6 on its own — the AI may still answer
  general questions;
- a high-stakes topic plus weak support (≤ 0.25) falls below (0.6 · 0.7 = 0.42);
- an explicit request for a human is 0;
- a thumbs-down streak of 2 plus a repeated question falls below (≤ 0.76 · 0.5625 = 0.43), while a streak of
  2 alone (0.56) does not and a streak of 3 alone (0.42) does;
- one message venting at the AI ("stupid bot", "you're useless": :func:`app.handoff.signals.vents_at_ai`) is 0.6
  alone — the AI answers once more when nothing else is wrong — and falls below with a thumbs-down (0.45), a
  repeated question (≤ 0.46) or its own strongly negative mood (compound ≤ -0.6 → ≤ 0.49); "stupid bot" (-0.53)
  or "you are useless" (-0.42) as a first message stays with the AI (0.50, 0.52). While the client vents the
  retrieval support does not count: the vent factor takes its place. Support measures how well the coach's
  material covers a question, a vent asks none, and its words never match a passage — a vent's support is 0,
  and multiplied in (0.6 · 0.6 · mood ≈ 0.3) it handed every first vent to any coach with documents. Two vents
  among the client's last three messages fall below on their own (0.36). Not a rule like a request for a person:
  the client did not ask for one, and one lexical reading is weak evidence (the reasons are in
  :func:`~app.handoff.signals.vents_at_ai`). A mild "hmm, that's not quite it" is no vent and changes nothing;
- strongly negative sentiment (compound ≤ -0.6) with a worsening trend (≤ -0.2 per message) falls below
  together with weak support; sentiment alone never does (floor 0.5: VADER reads a client describing a hard
  week as very negative, which is what coaching is for);
- crisis risk scoring ≥ 0.5 (the crisis protocol's own trigger, :data:`app.handoff.crisis.PROTOCOL_SCORE`)
  is at or below the threshold on its own;
- a low token probability alone only reaches the threshold (floor 0.5): it is a weak signal of a wrong answer.

The coach's *always-escalate* topics (``TurnSignals.escalate_topics``) are a rule, not a factor: the caller
hands those turns over whatever the confidence.

Sources
-------
- The weakest-link product follows noisy-AND / independent-evidence combinations (Pearl J. (1988),
  *Probabilistic Reasoning in Intelligent Systems*, §4.3.2): each concern independently "vetoes" a share of
  the confidence.
- Token probability as confidence: Malinin & Gales (2021), *ICLR*; Kadavath S. et al. (2022), "Language
  Models (Mostly) Know What They Know", arXiv:2207.05221 — informative but weak, hence its floor.
- The constants are design choices checked against the scenarios above (``tests/unit/test_confidence.py``),
  not fitted to data; recalibrate once real handoff outcomes are logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from app.handoff.signals import TurnSignals

DEFAULT_CONFIDENCE_THRESHOLD: Final = 0.5
"""Per-coach default: a turn whose confidence is below it goes to the coach. The coach can change it."""

REASONS: Final = (
    "crisis_risk",
    "human_request",
    "negative_sentiment",
    "low_retrieval_support",
    "high_stakes_topic",
    "frustration",
    "low_token_confidence",
)
"""The factor names, also the possible ``Confidence.reason`` values (the order of ``Confidence.factors``)."""

TIE_ORDER: Final = (
    "human_request",
    "crisis_risk",
    "high_stakes_topic",
    "frustration",
    "negative_sentiment",
    "low_token_confidence",
    "low_retrieval_support",
)
"""Which reason wins when two factors are equally low: the most specific first (low support is the most
common and least telling concern, so "high-stakes topic, no material" reads as ``high_stakes_topic``)."""

SENTIMENT_WEIGHT: Final = 0.3
"""Factor lost per unit of negative compound."""
TREND_WEIGHT: Final = 0.6
"""Factor lost per unit of negative slope (compound per message; ≤ 0.4 in magnitude over six messages)."""
SENTIMENT_FLOOR: Final = 0.5
"""Sentiment alone never takes the value below this."""
SUPPORT_BASE: Final = 0.6
"""Factor for a question the coach's material does not cover at all (support 0)."""
TOPIC_FACTOR: Final = 0.6
"""Factor per high-stakes topic touched."""
REPEAT_WEIGHT: Final = 0.4
"""Factor lost for a full repeat (similarity 1)."""
THUMBS_DOWN_FACTOR: Final = 0.75
"""Factor per consecutive thumbs-down."""
VENT_FACTOR: Final = 0.6
"""Factor per message venting at the AI among the client's last three (:func:`app.handoff.signals.venting`), in
place of the retrieval support's factor (a vent asks nothing the material could cover): one vent alone stays
with the AI at the default threshold, whatever the support, unless its own mood is strongly negative; one plus a
thumbs-down or a repeated question, or two vents, hand over."""
TOKEN_P_LOW: Final = 0.2
"""Geometric-mean token probability at or below which the factor is at its floor."""
TOKEN_P_HIGH: Final = 0.6
"""Geometric-mean token probability at or above which the reply raises no concern."""
TOKEN_FLOOR: Final = 0.5
"""The token-confidence factor's floor."""


def _clip(x: float, low: float = 0.0, high: float = 1.0) -> float:
    if math.isnan(x):
        return low
    return min(high, max(low, x))


@dataclass(frozen=True)
class Confidence:
    """The confidence of one AI turn: ``value`` in ``[0, 1]`` (product of ``factors``); ``reason`` the name of
    the factor that lowered it most (one of :data:`REASONS`, ties broken by :data:`TIE_ORDER`; ``None`` when
    no factor is below 1); ``factors`` every factor in ``[0, 1]`` keyed by its name."""

    value: float
    reason: str | None
    factors: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for message metadata: floats rounded to 3 decimals."""
        return {
            "value": round(self.value, 3),
            "reason": self.reason,
            "factors": {name: round(f, 3) for name, f in self.factors.items()},
        }


def confidence_factors(signals: TurnSignals) -> dict[str, float]:
    """Each factor of the formula in the module docstring, in ``[0, 1]``, keyed by :data:`REASONS` (in that
    order). Out-of-range signal values are clipped (risk score and support to ``[0, 1]``, counts to ≥ 0)."""
    negative = max(0.0, -signals.sentiment)
    worsening = max(0.0, -signals.sentiment_trend)
    support = signals.retrieval_support
    p = signals.token_confidence
    return {
        "crisis_risk": _clip(1.0 - signals.risk_score),
        "human_request": 0.0 if signals.human_request else 1.0,
        "negative_sentiment": _clip(1.0 - SENTIMENT_WEIGHT * negative - TREND_WEIGHT * worsening, SENTIMENT_FLOOR),
        "low_retrieval_support": 1.0
        if support is None or signals.venting > 0
        else SUPPORT_BASE + (1.0 - SUPPORT_BASE) * _clip(support),
        "high_stakes_topic": TOPIC_FACTOR ** len(signals.high_stakes_topics),
        "frustration": _clip(1.0 - REPEAT_WEIGHT * _clip(signals.repeated_question))
        * THUMBS_DOWN_FACTOR ** max(0, signals.thumbs_down_streak)
        * VENT_FACTOR ** max(0, signals.venting),
        "low_token_confidence": 1.0
        if p is None
        else _clip(TOKEN_FLOOR + (1.0 - TOKEN_FLOOR) * (p - TOKEN_P_LOW) / (TOKEN_P_HIGH - TOKEN_P_LOW), TOKEN_FLOOR),
    }


def score_confidence(signals: TurnSignals) -> Confidence:
    """Confidence of the AI in answering this turn: the product of :func:`confidence_factors` (see the module
    docstring for the math and the calibration targets). Pure; no errors for any signal values."""
    factors = confidence_factors(signals)
    value = _clip(math.prod(factors.values()))
    lowest = min(factors, key=lambda name: (factors[name], TIE_ORDER.index(name)))
    reason = lowest if factors[lowest] < 1.0 else None
    return Confidence(value=value, reason=reason, factors=factors)


def below_threshold(confidence: Confidence, threshold: float = DEFAULT_CONFIDENCE_THRESHOLD) -> bool:
    """Whether the turn goes to the coach: ``confidence.value < threshold`` (a value exactly at the threshold
    stays with the AI). ``threshold`` in ``[0, 1]``; 0 never hands over, above 1 always does."""
    return confidence.value < threshold
