"""The turn's pure decisions (app.chat.turn.decide), one table row per branch."""

from __future__ import annotations

from typing import Any

import pytest

from app.chat.turn.decide import (
    After,
    AfterRetrieval,
    Before,
    BeforeModel,
    FinalReply,
    OnError,
    after_retrieval,
    before_model,
    cache_after,
    cut_at_deadline,
    final_reply,
    model_order,
    on_provider_error,
    use_cache,
)
from app.handoff.confidence import Confidence
from app.handoff.signals import TurnSignals


def signals(**changes: Any) -> TurnSignals:
    """Calm signals of an ordinary question, with ``changes``."""
    base: dict[str, Any] = {
        "risk_score": 0.0,
        "risk_level": "none",
        "sentiment": 0.1,
        "sentiment_trend": 0.0,
        "human_request": False,
        "retrieval_support": None,
    }
    return TurnSignals(**(base | changes))


@pytest.mark.parametrize(
    ("crisis", "active", "sig", "mode", "expected"),
    [
        pytest.param(True, False, signals(), "auto", BeforeModel(Before.CRISIS, "crisis"), id="crisis"),
        pytest.param(
            True, True, signals(), "auto", BeforeModel(Before.CRISIS, "crisis", active=True), id="crisis-in-handoff"
        ),
        pytest.param(
            True,
            False,
            signals(human_request=True, escalate_topics=["debt"]),
            "human_only",
            BeforeModel(Before.CRISIS, "crisis"),
            id="crisis-beats-every-rule",
        ),
        pytest.param(False, True, signals(), "auto", BeforeModel(Before.PAUSED), id="paused-handoff"),
        pytest.param(
            False, True, signals(human_request=True), "auto", BeforeModel(Before.PAUSED), id="paused-beats-request"
        ),
        pytest.param(
            False,
            False,
            signals(human_request=True, escalate_topics=["debt"]),
            "auto",
            BeforeModel(Before.HAND_OFF, "human_request", "the client asked for a human"),
            id="human-request",
        ),
        pytest.param(
            False,
            False,
            signals(escalate_topics=["debt", "medication"]),
            "draft",
            BeforeModel(Before.HAND_OFF, "escalate_topic", "debt, medication"),
            id="escalate-topic",
        ),
        pytest.param(
            False, False, signals(), "human_only", BeforeModel(Before.HAND_OFF, "human_only"), id="human-only"
        ),
        pytest.param(False, False, signals(), "auto", BeforeModel(Before.ANSWER), id="answer-auto"),
        pytest.param(False, False, signals(), "draft", BeforeModel(Before.ANSWER), id="answer-draft"),
    ],
)
def test_before_model(crisis: bool, active: bool, sig: TurnSignals, mode: str, expected: BeforeModel) -> None:
    assert before_model(crisis=crisis, handoff_active=active, signals=sig, mode=mode) == expected


LOW = Confidence(0.31, "retrieval_support", {"retrieval_support": 0.31})
HIGH = Confidence(0.9, None, {})


@pytest.mark.parametrize(
    ("mode", "confidence", "threshold", "expected"),
    [
        pytest.param(
            "auto",
            LOW,
            0.5,
            AfterRetrieval(After.HAND_OFF, "confidence 0.31 < 0.50, mostly retrieval support"),
            id="low-confidence-auto",
        ),
        pytest.param(
            "auto", Confidence(0.2, None), 0.5, AfterRetrieval(After.HAND_OFF, "confidence 0.20 < 0.50"), id="no-reason"
        ),
        pytest.param("draft", LOW, 0.5, AfterRetrieval(After.DRAFT), id="draft-mode-even-when-low"),
        pytest.param("draft", HIGH, 0.5, AfterRetrieval(After.DRAFT), id="draft-mode"),
        pytest.param("auto", HIGH, 0.5, AfterRetrieval(After.SEND), id="send"),
        pytest.param("auto", Confidence(0.5, None), 0.5, AfterRetrieval(After.SEND), id="at-threshold-sends"),
    ],
)
def test_after_retrieval(mode: str, confidence: Confidence, threshold: float, expected: AfterRetrieval) -> None:
    assert after_retrieval(mode=mode, confidence=confidence, threshold=threshold) == expected


def test_a_handed_back_message_is_answered_whatever_the_confidence() -> None:
    """The coach handed back the question a low-confidence handoff took from the AI: the AI answers it (in
    ``draft`` mode the coach still reviews it)."""
    assert after_retrieval(mode="auto", confidence=LOW, threshold=0.5, handed_back=True) == AfterRetrieval(After.SEND)
    assert after_retrieval(mode="draft", confidence=LOW, threshold=0.5, handed_back=True) == AfterRetrieval(After.DRAFT)


@pytest.mark.parametrize(("ttl", "expected"), [(0, False), (1, True), (86400, True)])
def test_use_cache(ttl: int, expected: bool) -> None:
    assert use_cache(ttl) is expected


@pytest.mark.parametrize(
    ("cache", "failed", "expected"),
    [
        pytest.param("miss", False, True, id="miss-is-stored"),
        pytest.param("hit", False, False, id="cache-hit-not-stored-again"),
        pytest.param("miss", True, False, id="apology-never-cached"),
        pytest.param(None, False, False, id="cache-off"),
    ],
)
def test_cache_after(cache: str | None, failed: bool, expected: bool) -> None:
    assert cache_after(cache=cache, failed=failed) is expected


@pytest.mark.parametrize(
    ("serving", "base", "expected"),
    [("ft:gpt-4o-mini:coach", "gpt-4o-mini", ["ft:gpt-4o-mini:coach", "gpt-4o-mini"]), ("m", "m", ["m"])],
)
def test_model_order(serving: str, base: str, expected: list[str]) -> None:
    assert model_order(serving, base) == expected


@pytest.mark.parametrize(
    ("streamed", "attempt", "attempts", "expected"),
    [
        pytest.param(False, 0, 2, OnError.FALLBACK, id="serving-model-fails-first"),
        pytest.param(True, 0, 2, OnError.APOLOGY, id="failed-mid-reply"),
        pytest.param(False, 1, 2, OnError.APOLOGY, id="base-model-fails-too"),
        pytest.param(False, 0, 1, OnError.APOLOGY, id="only-model-fails"),
    ],
)
def test_on_provider_error(streamed: bool, attempt: int, attempts: int, expected: OnError) -> None:
    assert on_provider_error(streamed=streamed, attempt=attempt, attempts=attempts) is expected


@pytest.mark.parametrize(
    ("streamed", "tokens", "finish", "expected"),
    [
        pytest.param(" Breathe. Then act. ", 12, "stop", FinalReply("Breathe. Then act.", False), id="complete"),
        pytest.param("Breathe. Then act and", 40, "stop", FinalReply("Breathe.", True), id="cut-at-limit"),
        pytest.param("no sentence end", 40, "stop", FinalReply("no sentence end", True), id="cut-without-sentence"),
        pytest.param("Breathe. Then", None, "stop", FinalReply("Breathe. Then", False), id="no-usage"),
        # a server counting tokens its own way: under max_tokens by its count, but it says it stopped at the limit
        pytest.param("Breathe. Then act and", 31, "length", FinalReply("Breathe.", True), id="length-finish"),
        pytest.param("   ", 3, "stop", FinalReply("", False), id="empty"),
    ],
)
def test_final_reply(streamed: str, tokens: int | None, finish: str, expected: FinalReply) -> None:
    assert final_reply(streamed, completion_tokens=tokens, max_tokens=40, finish_reason=finish) == expected


@pytest.mark.parametrize(
    ("streamed", "expected"),
    [
        pytest.param(" Breathe. Then act and", FinalReply("Breathe.", True), id="cut-after-a-sentence"),
        pytest.param("Breathe! Then act?” And", FinalReply("Breathe! Then act?”", True), id="quote"),
        pytest.param("no sentence end yet", None, id="no-sentence"),
        pytest.param("   ", None, id="nothing"),
    ],
)
def test_cut_at_deadline(streamed: str, expected: FinalReply | None) -> None:
    assert cut_at_deadline(streamed) == expected
