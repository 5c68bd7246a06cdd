"""The confidence formula (app.handoff.confidence): calibration scenarios, reasons, bounds."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from typing import Any

import pytest

from app.handoff.confidence import (
    DEFAULT_CONFIDENCE_THRESHOLD,
    REASONS,
    TIE_ORDER,
    Confidence,
    below_threshold,
    confidence_factors,
    score_confidence,
)
from app.handoff.signals import TurnSignals

THRESHOLD = DEFAULT_CONFIDENCE_THRESHOLD


def signals(**changes: Any) -> TurnSignals:
    """A neutral turn that raises no concern at all (every factor 1.0), with ``changes`` applied."""
    base = TurnSignals(
        risk_score=0.0,
        risk_level="none",
        sentiment=0.0,
        sentiment_trend=0.0,
        human_request=False,
        retrieval_support=None,
        high_stakes_topics=[],
        escalate_topics=[],
        repeated_question=0.0,
        thumbs_down_streak=0,
        token_confidence=None,
    )
    return dataclasses.replace(base, **changes)


def test_threshold_default() -> None:
    assert DEFAULT_CONFIDENCE_THRESHOLD == 0.5


def test_no_concern_is_full_confidence_without_reason() -> None:
    confidence = score_confidence(signals())
    assert confidence.value == 1.0
    assert confidence.reason is None
    assert set(confidence.factors) == set(REASONS)
    assert all(f == 1.0 for f in confidence.factors.values())


# --- calibration scenarios (the module docstring's targets) -----------------------------------------------


@pytest.mark.parametrize("support", [0.5, 0.75, 1.0])
def test_neutral_well_supported_question_is_confident(support: float) -> None:
    confidence = score_confidence(signals(sentiment=0.1, retrieval_support=support, token_confidence=0.7))
    assert confidence.value >= 0.8
    assert not below_threshold(confidence)


def test_unsupported_question_alone_stays_with_the_ai() -> None:
    """The AI may still answer general questions the coach's material does not cover."""
    confidence = score_confidence(signals(retrieval_support=0.0))
    assert confidence.value >= THRESHOLD
    assert not below_threshold(confidence)
    assert confidence.reason == "low_retrieval_support"


@pytest.mark.parametrize("support", [0.0, 0.3, 1.0])
def test_a_vent_takes_the_place_of_the_retrieval_support(support: float) -> None:
    """A vent ("stupid bot") asks nothing the coach's material could cover: its support does not count, so one
    vent alone stays with the AI whatever the support; a question without a vent still counts its support."""
    vent = score_confidence(signals(venting=1, retrieval_support=support))
    assert vent.factors["low_retrieval_support"] == 1.0
    assert vent.value == pytest.approx(0.6) and vent.reason == "frustration"
    assert not below_threshold(vent)
    assert below_threshold(score_confidence(signals(venting=2, retrieval_support=support)))
    plain = score_confidence(signals(retrieval_support=support)).factors["low_retrieval_support"]
    assert plain == pytest.approx(0.6 + 0.4 * support)


@pytest.mark.parametrize("support", [0.0, 0.25, 0.5])
def test_high_stakes_topic_with_weak_support_goes_to_the_coach(support: float) -> None:
    confidence = score_confidence(signals(high_stakes_topics=["quitting my job"], retrieval_support=support))
    assert confidence.value < THRESHOLD
    assert below_threshold(confidence)
    assert confidence.reason == "high_stakes_topic"


def test_high_stakes_topic_with_full_support_stays_with_the_ai() -> None:
    confidence = score_confidence(signals(high_stakes_topics=["medication"], retrieval_support=1.0))
    assert confidence.value >= THRESHOLD


def test_two_high_stakes_topics_go_to_the_coach_on_their_own() -> None:
    assert score_confidence(signals(high_stakes_topics=["legal", "divorce"])).value < THRESHOLD


def test_human_request_is_zero_whatever_else() -> None:
    confidence = score_confidence(signals(human_request=True, sentiment=0.9, retrieval_support=1.0))
    assert confidence.value == 0.0
    assert confidence.reason == "human_request"
    assert below_threshold(confidence, threshold=0.01)


@pytest.mark.parametrize("repeat", [0.6, 0.8, 1.0])
def test_thumbs_down_streak_of_two_plus_a_repeat_goes_to_the_coach(repeat: float) -> None:
    confidence = score_confidence(signals(thumbs_down_streak=2, repeated_question=repeat))
    assert confidence.value < THRESHOLD
    assert confidence.reason == "frustration"


def test_thumbs_down_streak_alone() -> None:
    assert score_confidence(signals(thumbs_down_streak=2)).value >= THRESHOLD
    assert score_confidence(signals(thumbs_down_streak=3)).value < THRESHOLD


@pytest.mark.parametrize(("compound", "trend"), [(-0.6, -0.2), (-0.8, -0.3), (-1.0, -0.4)])
def test_negative_worsening_sentiment_with_weak_support_goes_to_the_coach(compound: float, trend: float) -> None:
    confidence = score_confidence(signals(sentiment=compound, sentiment_trend=trend, retrieval_support=0.25))
    assert confidence.value < THRESHOLD
    assert confidence.reason in {"negative_sentiment", "low_retrieval_support"}


@pytest.mark.parametrize(("compound", "trend"), [(-0.6, -0.2), (-1.0, -0.4)])
def test_negative_sentiment_alone_never_goes_below(compound: float, trend: float) -> None:
    confidence = score_confidence(signals(sentiment=compound, sentiment_trend=trend))
    assert confidence.value >= THRESHOLD
    assert confidence.reason == "negative_sentiment"


def test_crisis_risk_at_the_protocol_score_reaches_the_threshold() -> None:
    assert score_confidence(signals(risk_score=0.5, risk_level="concern")).value <= THRESHOLD
    assert score_confidence(signals(risk_score=0.9, risk_level="crisis")).value < THRESHOLD
    assert score_confidence(signals(risk_score=0.2, risk_level="concern")).value >= THRESHOLD


def test_low_token_confidence_alone_only_reaches_the_threshold() -> None:
    assert score_confidence(signals(token_confidence=0.0)).value == pytest.approx(0.5)
    assert score_confidence(signals(token_confidence=0.4)).value == pytest.approx(0.75)
    assert score_confidence(signals(token_confidence=0.6)).value == 1.0
    assert score_confidence(signals(token_confidence=0.95)).value == 1.0


# --- each signal on its own --------------------------------------------------------------------------------

ALONE: dict[str, dict[str, Any]] = {
    "crisis_risk": {"risk_score": 0.3, "risk_level": "concern"},
    "human_request": {"human_request": True},
    "negative_sentiment": {"sentiment": -0.5},
    "low_retrieval_support": {"retrieval_support": 0.3},
    "high_stakes_topic": {"high_stakes_topics": ["legal"]},
    "frustration": {"repeated_question": 0.7},
    "low_token_confidence": {"token_confidence": 0.3},
}


def test_every_reason_has_a_scenario() -> None:
    assert set(ALONE) == set(REASONS)


@pytest.mark.parametrize("reason", REASONS)
def test_each_signal_alone_lowers_confidence_and_names_itself(reason: str) -> None:
    confidence = score_confidence(signals(**ALONE[reason]))
    assert 0.0 <= confidence.value < 1.0
    assert confidence.reason == reason
    assert confidence.factors[reason] == pytest.approx(confidence.value)
    assert all(f == 1.0 for name, f in confidence.factors.items() if name != reason)


def test_worsening_trend_alone_counts_as_negative_sentiment() -> None:
    confidence = score_confidence(signals(sentiment=0.3, sentiment_trend=-0.25))
    assert confidence.value < 1.0
    assert confidence.reason == "negative_sentiment"


def test_not_measured_signals_do_not_lower_confidence() -> None:
    factors = confidence_factors(signals(retrieval_support=None, token_confidence=None))
    assert factors["low_retrieval_support"] == 1.0
    assert factors["low_token_confidence"] == 1.0


def test_escalate_topics_are_a_rule_not_a_factor() -> None:
    assert score_confidence(signals(escalate_topics=["legal"])).value == 1.0


def test_tie_goes_to_the_more_specific_reason() -> None:
    confidence = score_confidence(signals(retrieval_support=0.0, high_stakes_topics=["legal"]))
    assert confidence.factors["high_stakes_topic"] == confidence.factors["low_retrieval_support"] == 0.6
    assert confidence.reason == "high_stakes_topic"
    assert set(TIE_ORDER) == set(REASONS)


def test_reason_is_the_lowest_factor() -> None:
    confidence = score_confidence(signals(retrieval_support=0.0, high_stakes_topics=["legal", "divorce"]))
    assert confidence.reason == "high_stakes_topic"  # 0.36 < 0.6
    assert confidence.value == pytest.approx(0.6 * 0.36)


# --- bounds and serialisation ------------------------------------------------------------------------------


def random_signals(rng: random.Random) -> TurnSignals:
    def maybe(value: float) -> float | None:
        return None if rng.random() < 0.2 else value

    return TurnSignals(
        risk_score=rng.random(),
        risk_level=rng.choice(["none", "concern", "crisis"]),
        sentiment=rng.uniform(-1, 1),
        sentiment_trend=rng.uniform(-0.4, 0.4),
        human_request=rng.random() < 0.1,
        retrieval_support=maybe(rng.random()),
        high_stakes_topics=["t"] * rng.randint(0, 4),
        escalate_topics=["e"] * rng.randint(0, 2),
        repeated_question=rng.choice([0.0, rng.uniform(0.6, 1.0)]),
        thumbs_down_streak=rng.randint(0, 6),
        token_confidence=maybe(rng.random()),
    )


def test_value_and_factors_stay_in_unit_interval_for_random_signals() -> None:
    rng = random.Random(20240904)
    for _ in range(2000):
        s = random_signals(rng)
        confidence = score_confidence(s)
        assert 0.0 <= confidence.value <= 1.0
        assert all(0.0 <= f <= 1.0 for f in confidence.factors.values())
        assert confidence.value == pytest.approx(math.prod(confidence.factors.values()))
        assert confidence.reason is None or confidence.reason in REASONS
        assert (confidence.reason is None) == (confidence.value == 1.0)


def test_out_of_range_signals_are_clipped() -> None:
    confidence = score_confidence(
        signals(risk_score=1.7, retrieval_support=-0.5, repeated_question=3.0, token_confidence=float("nan"))
    )
    assert 0.0 <= confidence.value <= 1.0
    assert all(0.0 <= f <= 1.0 for f in confidence.factors.values())
    assert score_confidence(signals(risk_score=-1.0, thumbs_down_streak=-3)).value == 1.0


def test_confidence_as_dict_is_json_and_rounded() -> None:
    confidence = score_confidence(signals(retrieval_support=1 / 3, token_confidence=0.123456))
    data = confidence.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["value"] == round(confidence.value, 3)
    assert data["reason"] == confidence.reason
    assert data["factors"]["low_retrieval_support"] == round(0.6 + 0.4 / 3, 3)
    assert isinstance(confidence, Confidence)
