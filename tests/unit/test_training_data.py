"""Training data without a database: PII scrubbing, the split by conversation, the quality score, the export
line formats, the promotion gate's arithmetic and the learning settings' validation."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest

from app.accounts.learning_settings import apply_learning_settings
from app.accounts.models import Coach
from app.core.errors import InvalidInput
from app.learning.finetune import cost_estimate
from app.learning.gate import EMBEDDING_MARGIN, cosine_similarities, decide, win_rate
from app.learning.models import ExampleKind, ExampleSource, Split, TrainingExample
from app.learning.pii import scrub_pii
from app.learning.training import content_hash, example_line, length_score, quality_score, split_for, text_key

PROMPT = [
    {"role": "system", "content": "You are Kim, a coach."},
    {"role": "user", "content": "Write to me at robin.lee@example.org or call +1 415-555-0132."},
]


def check_sft_line(line: str) -> dict[str, Any]:
    """Validate one line against the OpenAI chat fine-tuning format: ``{"messages": [...]}`` whose messages
    each have a known role and a string content, at least one user message, and an assistant message last, the
    only one trained on: weight 1, every earlier assistant message weight 0."""
    record = json.loads(line)
    assert set(record) == {"messages"}
    messages = record["messages"]
    assert isinstance(messages, list) and len(messages) >= 2
    for message in messages:
        assert set(message) == (
            {"role", "content", "weight"} if message["role"] == "assistant" else {"role", "content"}
        )
        assert message["role"] in ("system", "user", "assistant") and isinstance(message["content"], str)
    assert any(message["role"] == "user" for message in messages)
    assert messages[-1]["role"] == "assistant" and messages[-1]["weight"] == 1
    assert all(message["weight"] == 0 for message in messages[:-1] if message["role"] == "assistant")
    return record  # type: ignore[no-any-return]


def check_preference_line(line: str) -> dict[str, Any]:
    """Validate one line against the OpenAI preference (DPO) format: ``input.messages`` (a chat prompt) and
    one assistant message in each of ``preferred_output`` and ``non_preferred_output``."""
    record = json.loads(line)
    assert set(record) == {"input", "preferred_output", "non_preferred_output"}
    assert set(record["input"]) == {"messages"}
    for message in record["input"]["messages"]:
        assert message["role"] in ("system", "user", "assistant") and isinstance(message["content"], str)
    for key in ("preferred_output", "non_preferred_output"):
        [output] = record[key]
        assert output["role"] == "assistant" and isinstance(output["content"], str) and output["content"]
    assert record["preferred_output"] != record["non_preferred_output"]
    return record  # type: ignore[no-any-return]


def example(kind: str, chosen: str, rejected: str | None = None) -> TrainingExample:
    return TrainingExample(
        coach_id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        kind=kind,
        source=ExampleSource.COACH_REPLY,
        message_id=uuid.uuid4(),
        prompt=PROMPT,
        chosen=chosen,
        rejected=rejected,
        quality=0.9,
        split=Split.TRAIN,
        content_hash="x",
    )


# ---------------------------------------------------------------------------------------- PII


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail me at jo.smith+x@mail.example.co.uk today", "Mail me at [EMAIL] today"),
        ("Call +1 415-555-0132 now", "Call [PHONE] now"),
        ("My number is (212) 555-0198.", "My number is [PHONE]."),
        ("Ring 020 7946 0958 or +49 30 901820", "Ring [PHONE] or [PHONE]"),
        ("In 2024 I ran 5 km in 25 minutes, 3 times a week.", "In 2024 I ran 5 km in 25 minutes, 3 times a week."),
    ],
)
def test_emails_and_phone_numbers_become_placeholders_and_other_numbers_stay(text: str, expected: str) -> None:
    assert scrub_pii(text) == expected


# ---------------------------------------------------------------------------------------- split, quality, hash


def test_the_split_is_a_function_of_the_conversation_and_close_to_80_10_10() -> None:
    ids = [uuid.UUID(int=i * 7919 + 13) for i in range(3000)]
    first = [split_for(i) for i in ids]
    assert first == [split_for(uuid.UUID(str(i))) for i in ids], "same conversation, same split"
    shares = Counter(first)
    assert 0.76 < shares[Split.TRAIN] / 3000 < 0.84
    assert 0.07 < shares[Split.VALIDATION] / 3000 < 0.13
    assert 0.07 < shares[Split.TEST] / 3000 < 0.13


def test_quality_rewards_the_signal_and_a_sane_length() -> None:
    good = "That sounds hard. What would a small first step look like for you?"
    assert quality_score(good, 1.0) == 1.0
    assert quality_score(good, 0.8) == pytest.approx(0.86)
    assert quality_score("Ok.", 1.0) == pytest.approx(0.7 + 0.3 * 3 / 20)
    assert quality_score("x" * 2500, 1.0) == pytest.approx(0.85)
    assert length_score("") == 0.0
    assert 0 <= quality_score("", 0.0) <= quality_score("Ok.", 0.0) <= 1


def test_content_hash_separates_kinds_and_replies_and_text_key_ignores_case_space_and_end_punctuation() -> None:
    a = content_hash(ExampleKind.SFT, PROMPT, "Yes.", None)
    assert a == content_hash(ExampleKind.SFT, [dict(p) for p in PROMPT], "Yes.", None)
    assert a != content_hash(ExampleKind.PREFERENCE, PROMPT, "Yes.", "No.")
    assert a != content_hash(ExampleKind.SFT, PROMPT, "Yes!", None)
    assert text_key("  How do I   START?! ") == text_key("how do i start")


# ---------------------------------------------------------------------------------------- export formats


def test_an_sft_line_is_in_the_openai_chat_format_and_scrubbed() -> None:
    line = example_line(example(ExampleKind.SFT, "Sure, write to kim@coach.example."), scrub=True)
    record = check_sft_line(line)
    assert record["messages"][-1] == {"role": "assistant", "content": "Sure, write to [EMAIL].", "weight": 1}
    assert record["messages"][1]["content"] == "Write to me at [EMAIL] or call [PHONE]."
    raw = check_sft_line(example_line(example(ExampleKind.SFT, "Sure."), scrub=False))
    assert "robin.lee@example.org" in raw["messages"][1]["content"]


def test_a_preference_line_is_in_the_openai_preference_format() -> None:
    line = example_line(example(ExampleKind.PREFERENCE, "What matters most to you?", "You should quit."), scrub=True)
    record = check_preference_line(line)
    assert record["input"]["messages"] == [
        PROMPT[0],
        PROMPT[1] | {"content": "Write to me at [EMAIL] or call [PHONE]."},
    ]
    assert record["preferred_output"] == [{"role": "assistant", "content": "What matters most to you?"}]
    assert record["non_preferred_output"] == [{"role": "assistant", "content": "You should quit."}]


def test_the_format_checks_reject_malformed_lines() -> None:
    with pytest.raises(AssertionError):
        check_sft_line(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    with pytest.raises(AssertionError):
        check_preference_line(json.dumps({"input": {"messages": []}, "preferred_output": []}))


# ---------------------------------------------------------------------------------------- gate, cost


def test_cosine_similarity_win_rate_and_the_gate_decision() -> None:
    sims = cosine_similarities([[1, 0], [0, 2], [1, 1]], [[2, 0], [1, 0], [-1, -1]])
    assert sims == pytest.approx([1.0, 0.0, -1.0])
    assert win_rate(["candidate", "tie", "current", "candidate"]) == pytest.approx(0.625)
    assert win_rate([]) is None
    assert decide(0.8, 0.7, None).passed
    assert not decide(0.7 + EMBEDDING_MARGIN / 2, 0.7, None).passed, "within the margin is not better"
    assert not decide(0.9, 0.5, 0.4).passed, "the judge can veto"
    assert decide(0.9, 0.5, 0.5).passed


def test_cost_estimate_uses_the_price_table() -> None:
    assert cost_estimate("gpt-4o-mini-2024-07-18", 1_000_000) == pytest.approx(3.0)
    assert cost_estimate("gpt-4o-mini-2024-07-18", 12_345) == pytest.approx(0.037)
    assert cost_estimate("some-other-model", 1000) is None
    assert cost_estimate("gpt-4o-mini-2024-07-18", None) is None


# ---------------------------------------------------------------------------------------- settings


def test_learning_settings_validate_and_apply() -> None:
    coach = Coach(name="Kim", fine_tune_enabled=False, fine_tune_min_examples=50, judge_model=None)
    apply_learning_settings(
        coach, fine_tune_enabled=True, fine_tune_min_examples=10, judge_model="gpt-4o", response_cache_ttl_seconds=0
    )
    assert (coach.fine_tune_enabled, coach.fine_tune_min_examples, coach.judge_model) == (True, 10, "gpt-4o")
    assert coach.response_cache_ttl_seconds == 0
    apply_learning_settings(coach, judge_model="")
    assert coach.judge_model is None


@pytest.mark.parametrize(
    "changes",
    [
        {"fine_tune_enabled": "yes"},
        {"fine_tune_min_examples": 0},
        {"fine_tune_min_days": 400},
        {"fine_tune_base_model": "  "},
        {"judge_model": "gpt 4o"},
        {"response_cache_ttl_seconds": -1},
        {"learning_rate": 0.1},
    ],
)
def test_bad_learning_settings_are_refused(changes: dict[str, Any]) -> None:
    coach = Coach(name="Kim")
    with pytest.raises(InvalidInput):
        apply_learning_settings(coach, **changes)
