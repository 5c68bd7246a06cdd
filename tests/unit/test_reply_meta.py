"""ReplyMeta (typed reply metadata) round trips and tolerance of stored rows; client_view is an allowlist."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from app.chat.prompt import AssembledPrompt
from app.conversations.metadata import (
    CLIENT_FEEDBACK_KEYS,
    CLIENT_METADATA_KEYS,
    ClientMeta,
    ConfidenceMeta,
    ExperimentMeta,
    FeedbackMeta,
    MemoryMeta,
    ModelFallbackMeta,
    ReplyMeta,
    RiskMeta,
    SignalsMeta,
    client_citations,
    client_handoff_view,
    client_view,
    feedback_of,
    helpful,
    is_notice,
)
from app.handoff.confidence import Confidence
from app.handoff.crisis import risk_metadata
from app.handoff.risk import RiskAssessment
from app.handoff.signals import TurnSignals

SIGNALS = TurnSignals(
    risk_score=0.62,
    risk_level="concern",
    sentiment=-0.4,
    sentiment_trend=-0.1,
    human_request=False,
    retrieval_support=0.7,
    high_stakes_topics=["money"],
    token_confidence=0.9,
)
CONFIDENCE = Confidence(0.41, "crisis_risk", {"crisis_risk": 0.5, "negative_sentiment": 0.82})

AI_REPLY: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-4o-mini",
    "mode": "auto",
    "experiment": {"id": "8f1c", "variant": "b"},
    "model_version_id": "7d2e",
    "ai_confidence_before": 0.72,
    "confidence_threshold": 0.5,
    "history_messages": 4,
    "memory": {"insight_ids": ["i1"], "summary_ids": [], "message_ids": ["m1"], "profile": True},
    "few_shot": ["f1", "f2"],
    "cache": "miss",
    "model_fallback": {"from": "ft:gpt-4o-mini:acme::x", "error": "model_not_found"},
    "prompt_tokens": 812,
    "completion_tokens": 40,
    "truncated": True,
    "confidence": CONFIDENCE.as_dict(),
    "signals": SIGNALS.as_dict(),
    "retrieval_ms": 12.5,
    "prompt_ms": 0.4,
    "first_token_ms": 101.0,
    "generation_ms": 900.2,
    "is_handback": True,
    "human_duration_minutes": 3.5,
    "feedback": {"helpful": False, "rating": 2, "text": "meh", "at": "2026-01-02T10:00:00+00:00"},
}
"""An AI reply's metadata as the turn writes it today (every key of the answer path)."""

CRISIS_REPLY: dict[str, Any] = {
    "crisis": True,
    "handoff_reason": "crisis",
    "handoff_id": "h1",
    "ai_confidence_before": 0.0,
    "signals": SIGNALS.as_dict(),
    "risk": risk_metadata(RiskAssessment("crisis", 0.91, ["plan", "intent"], True)),
}
HANDOFF_NOTICE: dict[str, Any] = {
    "notice": "handoff",
    "handoff_id": "h2",
    "handoff_reason": "low_confidence",
    "ai_confidence_before": 0.3,
    "signals": SIGNALS.as_dict(),
    "confidence": CONFIDENCE.as_dict(),
}
FAILED_REPLY: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-4o-mini",
    "mode": "auto",
    "error": "APIConnectionError: Connection error (key sk-…abcd)",
    "partial_reply": "Let's",
    "confidence": CONFIDENCE.as_dict(),
    "signals": SIGNALS.as_dict(),
    "latency_ms": 1500.0,
    "persist_ms": 3.1,
}
COACH_MESSAGE: dict[str, Any] = {
    "is_handoff": True,
    "handoff_id": "h3",
    "handoff_reason": "coach_takeover",
    "ai_confidence_before": None,
}
EDITED_DRAFT: dict[str, Any] = AI_REPLY | {
    "mode": "draft",
    "draft_id": "d1",
    "approved_by_coach": True,
    "edited": True,
    "ai_draft": "the AI's text",
}
SLA_NOTICE: dict[str, Any] = {"notice": "sla", "handoff_id": "h4"}
EVAL_MESSAGE: dict[str, Any] = {"locomo_dia_id": "D1:3"}

ALL_KINDS = [
    AI_REPLY,
    CRISIS_REPLY,
    HANDOFF_NOTICE,
    FAILED_REPLY,
    COACH_MESSAGE,
    EDITED_DRAFT,
    SLA_NOTICE,
    EVAL_MESSAGE,
]


@pytest.mark.parametrize("stored", ALL_KINDS)
def test_every_written_key_is_a_field(stored: dict[str, Any]) -> None:
    """Each kind of stored metadata loads with nothing left over, and writes back as it was (``None`` and
    empty values aside: unset fields are left out)."""
    meta = ReplyMeta.from_json(stored)
    assert meta.extra == {}
    assert meta.to_json() == {k: v for k, v in stored.items() if v is not None and v is not False and v != []}


@pytest.mark.parametrize("stored", ALL_KINDS)
def test_round_trip(stored: dict[str, Any]) -> None:
    meta = ReplyMeta.from_json(stored)
    assert ReplyMeta.from_json(meta.to_json()) == meta
    assert msgspec.json.decode(msgspec.json.encode(meta.to_json())) == meta.to_json()  # JSON-able


def test_typed_readers() -> None:
    meta = ReplyMeta.from_json(AI_REPLY)
    assert meta.confidence == ConfidenceMeta(value=0.41, reason="crisis_risk", factors=CONFIDENCE.factors)
    assert meta.signals is not None and meta.signals.risk_score == 0.62 and meta.signals.high_stakes_topics == ["money"]
    assert meta.memory == MemoryMeta(insight_ids=["i1"], summary_ids=[], message_ids=["m1"], profile=True)
    assert meta.experiment == ExperimentMeta(id="8f1c", variant="b")
    assert meta.model_fallback == ModelFallbackMeta(from_="ft:gpt-4o-mini:acme::x", error="model_not_found")
    assert meta.helpful is False and not meta.failed and not meta.not_ai_content
    crisis = ReplyMeta.from_json(CRISIS_REPLY)
    assert crisis.crisis and crisis.not_ai_content
    assert crisis.risk == RiskMeta(level="crisis", score=0.91, cues=["plan", "intent"], explicit=True)
    failed = ReplyMeta.from_json(FAILED_REPLY)
    assert failed.failed and failed.not_ai_content and failed.partial_reply == "Let's"
    assert ReplyMeta.from_json(SLA_NOTICE).not_ai_content and is_notice(SLA_NOTICE) and not is_notice(AI_REPLY)
    edited = ReplyMeta.from_json(EDITED_DRAFT)
    assert edited.edited and edited.approved_by_coach and edited.ai_draft == "the AI's text"
    assert ReplyMeta.from_json(COACH_MESSAGE).is_handoff


def test_the_nested_structures_match_their_writers() -> None:
    """SignalsMeta, ConfidenceMeta, RiskMeta, MemoryMeta and FeedbackMeta have exactly the keys their writers
    produce, so no signal added later is silently dropped on a round trip."""
    assert set(SignalsMeta.__struct_encode_fields__) == set(SIGNALS.as_dict())
    assert set(ConfidenceMeta.__struct_encode_fields__) == set(CONFIDENCE.as_dict())
    assert set(RiskMeta.__struct_encode_fields__) == set(risk_metadata(RiskAssessment("none", 0.0)))
    prompt = AssembledPrompt(
        messages=[], passages=[], memory_items=[], profile_lines=0, history_used=0, estimated_tokens=0
    )
    assert set(MemoryMeta.__struct_encode_fields__) == set(prompt.memory_used())
    assert set(FeedbackMeta.__struct_encode_fields__) == {"helpful", "rating", "text", "at"}


def test_old_and_unknown_rows_load() -> None:
    """Missing keys default; unknown keys and values of the wrong type are kept in ``extra`` (and written back)
    instead of failing the reader."""
    assert ReplyMeta.from_json(None) == ReplyMeta() and ReplyMeta.from_json({}).to_json() == {}
    old = {"provider": "local", "model": "smollm2", "signals": {"risk_score": 0.1}, "latency_ms": 12}
    meta = ReplyMeta.from_json(old)
    assert meta.signals == SignalsMeta(risk_score=0.1) and meta.latency_ms == 12.0
    odd = {"model": "m", "cache": 5, "feedback": "yes", "future_key": {"a": 1}, "extra": "literal"}
    meta = ReplyMeta.from_json(odd)
    assert meta.model == "m" and meta.cache is None and meta.feedback is None
    assert meta.extra == {"cache": 5, "feedback": "yes", "future_key": {"a": 1}, "extra": "literal"}
    assert meta.to_json() == odd
    assert feedback_of(odd) is None and helpful(odd) is None and helpful(None) is None
    assert helpful(AI_REPLY) is False and feedback_of(AI_REPLY) == FeedbackMeta(
        helpful=False, rating=2, text="meh", at="2026-01-02T10:00:00+00:00"
    )


def test_a_writer_builds_the_struct() -> None:
    """What the turn (and the handoff actions) build instead of dicts."""
    meta = ReplyMeta(
        provider="openai",
        model="gpt-4o-mini",
        mode="auto",
        confidence=msgspec.convert(CONFIDENCE.as_dict(), ConfidenceMeta),
        signals=msgspec.convert(SIGNALS.as_dict(), SignalsMeta),
        latency_ms=5.0,
    )
    stored = meta.to_json()
    assert stored["confidence"] == CONFIDENCE.as_dict() and stored["signals"] == SIGNALS.as_dict()
    assert set(stored) == {"provider", "model", "mode", "confidence", "signals", "latency_ms"}


# ------------------------------------------------------------------------------------------------ client_view


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (AI_REPLY, {"truncated": True, "feedback": AI_REPLY["feedback"]}),
        (CRISIS_REPLY, {"crisis": True}),
        (HANDOFF_NOTICE, {"notice": "handoff"}),
        (SLA_NOTICE, {"notice": "sla"}),
        (FAILED_REPLY, {"failed": True}),
        (COACH_MESSAGE, {"is_handoff": True}),
        (EDITED_DRAFT, {"truncated": True, "approved_by_coach": True, "feedback": AI_REPLY["feedback"]}),
        (EVAL_MESSAGE, {}),
        ({}, {}),
        ({"future_secret": 1, "error": "boom", "cache": "hit"}, {"failed": True}),
    ],
)
def test_client_view_is_an_allowlist(stored: dict[str, Any], shown: dict[str, Any]) -> None:
    view = client_view(stored)
    assert view == shown
    assert set(view) <= CLIENT_METADATA_KEYS and set(view.get("feedback", {})) <= CLIENT_FEEDBACK_KEYS
    assert client_view(ReplyMeta.from_json(stored)) == view


def test_the_allowlist() -> None:
    """Growing the allowlist is a decision: this list changes with it (and the reason goes on ClientMeta)."""
    assert set(ClientMeta.__struct_encode_fields__) == CLIENT_METADATA_KEYS
    assert {
        "crisis",
        "notice",
        "failed",
        "truncated",
        "is_handoff",
        "approved_by_coach",
        "feedback",
    } == CLIENT_METADATA_KEYS
    assert CLIENT_METADATA_KEYS.isdisjoint(
        {"confidence", "confidence_threshold", "signals", "risk", "error", "partial_reply", "model", "provider"}
    )


def test_client_handoff_view_drops_the_confidence() -> None:
    assert client_handoff_view(None) is None
    status = {"status": "open", "reason": "crisis", "confidence": 0.0}
    assert client_handoff_view(status) == {"status": "open", "reason": "crisis"}


def test_a_citation_merged_per_source_lists_the_passage_of_each_marker() -> None:
    """Passages of one page read as one citation whose ``chunk_ids`` stand beside its ``markers`` (what the widget
    opens); a passage stored without a chunk id keeps its place as ``None``; the client's view is a fixed point."""
    stored = [
        {"document_id": "d", "title": "Book", "page": 3, "chunk_id": "a", "score": 0.8},
        {"document_id": "e", "title": "Other", "page": 1, "chunk_id": "b", "score": 0.7},
        {"document_id": "d", "title": "Book", "page": 3, "score": 0.6},
        "not a citation",
        {"document_id": "d", "title": "Book", "page": 3, "chunk_id": "c", "score": 0.5},
    ]
    shown = client_citations(stored)
    book = {"document_id": "d", "title": "Book", "page": 3, "chunk_id": "a"}
    other = {"document_id": "e", "title": "Other", "page": 1, "chunk_id": "b"}
    assert shown == [
        book | {"markers": [1, 3, 5], "chunk_ids": ["a", None, "c"]},
        other | {"markers": [2], "chunk_ids": ["b"]},
    ]
    assert client_citations(shown) == shown


@pytest.mark.parametrize(
    ("helpful_", "rating", "approves"),
    [(True, None, True), (True, 3, True), (True, 2, False), (True, 1, False), (False, 5, False), (None, 5, None)],
)
def test_a_low_rating_overrides_a_thumbs_up(helpful_: bool | None, rating: int | None, approves: bool | None) -> None:
    """👍 then 1–2 ★ is the client's considered verdict: a thumbs down (the training data read it so; the learning
    dashboard counted it as approval)."""
    assert FeedbackMeta(helpful=helpful_, rating=rating).approves is approves
