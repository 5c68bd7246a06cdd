"""Intervention analysis (strategy, tone, formality, key phrases), the coach's style profile, and the
prompt's few-shot section within the token budget."""

from __future__ import annotations

import uuid

import pytest

from app.chat.prompt import EXAMPLES_HEADER, assemble_prompt
from app.chat.spotlight import datamark
from app.learning.analysis import analyse_message, formality, key_phrases, mood
from app.learning.interventions import FewShotExample, judge_success, what_works_line
from app.learning.strategy import CATCH_ALL, FEATURE_DIMENSIONS, STRATEGIES, default_model, features
from app.learning.style import StyleSample, build_style_profile, predict_strategy, style_lines
from app.llm.local import MiniLMEmbedder
from app.memory.retrieval import MemoryContext


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_the_shipped_classifier_has_the_esconv_labels_and_its_validation_scores() -> None:
    model = default_model()
    assert model.labels == STRATEGIES
    assert model.coef.shape == (len(STRATEGIES), FEATURE_DIMENSIONS)
    validation = model.meta["validation"]
    assert validation["accuracy"] > validation["majority_baseline"] + 0.2
    assert 0 < validation["macro_f1"] <= 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("How long have you been feeling this way?", "Question"),
        ("Have you thought about making a list and doing one small thing at a time? Maybe try a walk.", None),
        ("I have been through a breakup myself, and I remember how hard it was for me.", "Self-disclosure"),
        ("You are doing the right thing, and I am sure you will get through this. You are strong!", None),
    ],
)
async def test_strategy_of_clear_examples(embedder: MiniLMEmbedder, text: str, expected: str | None) -> None:
    [vector] = await embedder.embed([text])
    analysis = analyse_message(text, "I feel so stuck since the breakup.", vector)
    assert analysis.strategy in STRATEGIES
    assert sum(analysis.strategy_scores.values()) == pytest.approx(1.0, abs=1e-3)
    if expected is not None:
        assert analysis.strategy == expected, analysis.strategy_scores
    else:  # a suggestion and a reassurance: the right label is among the two most probable
        top = sorted(analysis.strategy_scores, key=analysis.strategy_scores.__getitem__, reverse=True)[:2]
        wanted = "Providing Suggestions" if "try" in text else "Affirmation and Reassurance"
        assert wanted in top, analysis.strategy_scores


async def test_tone_and_the_clients_mood(embedder: MiniLMEmbedder) -> None:
    text = "That is wonderful news, I'm so happy for you!"
    [vector] = await embedder.embed([text])
    analysis = analyse_message(text, "I feel awful and hopeless today.", vector)
    assert analysis.tone > 0.5 and analysis.tone_label == "positive"
    assert analysis.client_sentiment < -0.5 and analysis.client_mood == "negative"
    assert set(analysis.as_dict()) >= {"strategy", "strategy_scores", "tone", "formality", "key_phrases"}


def test_features_refuse_a_wrong_sized_embedding() -> None:
    with pytest.raises(ValueError, match="384"):
        features([0.1] * 10, "hi")


def test_formality_orders_formal_above_casual() -> None:
    formal = "Considering the circumstances, establishing a consistent evening routine would be advisable."
    neutral = "It might help to set a regular time for going to bed each evening."
    casual = "omg yeah i'd totally just chill lol, you're gonna be ok!! 😊"
    scores = [formality(formal), formality(neutral), formality(casual)]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[2] + 0.4
    assert all(0 <= s <= 1 for s in scores)
    assert formality("") == 0.5


def test_key_phrases_find_the_content_and_skip_short_texts() -> None:
    text = (
        "A short breathing exercise before bed can calm racing thoughts. Try the breathing exercise for five "
        "minutes tonight and write down what you notice."
    )
    phrases = key_phrases(text)
    assert 1 <= len(phrases) <= 5
    assert any("breathing" in p for p in phrases)
    assert key_phrases("Ok thanks") == []


def test_mood_thresholds() -> None:
    assert [mood(-0.5), mood(0.0), mood(0.04), mood(0.05)] == ["negative", "neutral", "neutral", "positive"]


def test_success_rule_prefers_thumbs_then_sentiment() -> None:
    assert judge_success(False, -0.8, 0.9) is False
    assert judge_success(True, 0.5, -0.5) is True
    assert judge_success(None, -0.6, -0.4) is True  # improved
    assert judge_success(None, -0.2, -0.6) is False  # got worse
    assert judge_success(None, 0.6, 0.6) is True  # stayed positive


def _sample(strategy: str, client_mood: str, success: bool | None = None, client: str = "") -> StyleSample:
    return StyleSample(strategy, client_mood, 0.6, 0.2, ("small step", "sleep"), success, client=client or strategy)


def test_style_profile_aggregates_and_predicts() -> None:
    samples = [
        _sample("Reflection of feelings", "negative", True),
        _sample("Reflection of feelings", "negative", True),
        _sample("Question", "negative", False),
        _sample("Question", "neutral"),
        _sample("Question", "neutral", True),
        _sample("Providing Suggestions", "positive", False),
    ]
    profile = build_style_profile(samples)
    assert profile["n"] == 6
    assert profile["strategies"]["Question"] == 0.5
    assert profile["by_mood"]["negative"] == {"Reflection of feelings": 2, "Question": 1}
    assert profile["success"]["Reflection of feelings"] == {"uses": 2, "successes": 2, "rate": 1.0}
    assert profile["success"]["Question"] == {"uses": 2, "successes": 1, "rate": 0.5}
    assert "small step" in profile["key_phrases"]
    assert predict_strategy(profile, "negative") == "Reflection of feelings"
    assert predict_strategy(profile, "positive") == "Providing Suggestions"
    assert predict_strategy({"n": 0}, "negative") is None

    lines = style_lines(profile)
    assert 3 <= len(lines) <= 5
    assert any("Question (50%)" in line for line in lines)
    assert any("feels low" in line and "Reflection of feelings" in line for line in lines)
    assert style_lines(build_style_profile(samples[:2])) == []
    assert style_lines(None) == []


def test_a_key_phrase_said_to_one_client_only_stays_out_of_the_style_profile() -> None:
    """The style profile goes into every client's prompt: a phrase from one client's conversations (their name, a
    person they spoke of, as the coach echoed it) is left out however often it was said; one said to two clients
    is kept."""
    anna = [StyleSample("Question", "negative", 0.5, 0.1, ("anna", "divorce from mark", "one step"), client="a")]
    samples = anna * 5 + [StyleSample("Question", "neutral", 0.5, 0.1, ("one step",), client="b")]
    profile = build_style_profile(samples)
    assert profile["key_phrases"] == ["one step"]
    assert not any("anna" in line or "mark" in line for line in style_lines(profile))


def _example(n: int, similarity: float) -> FewShotExample:
    return FewShotExample(
        uuid.uuid4(), f"Client situation number {n} " * 8, f"Coach reply number {n} " * 8, "Question", similarity
    )


def test_prompt_includes_examples_and_style_within_the_budget() -> None:
    examples = [_example(1, 0.8), _example(2, 0.6)]
    prompt = assemble_prompt(
        persona="You are Sam's assistant.",
        passages=[],
        memory=MemoryContext(profile_lines=["What works: short plans"]),
        history=[],
        user_text="I can't sleep.",
        budget_tokens=4000,
        examples=examples,
        style=["Register: conversational."],
        coach_name="Sam",
    )
    system = prompt.messages[0]["content"]
    assert EXAMPLES_HEADER.format(coach="Sam") in system
    assert datamark("Coach reply number 1") in system and datamark("Coach reply number 2") in system
    assert "Sam (Question):" in system and datamark("Register: conversational.") in system
    assert system.index("How Sam has replied") < system.index(datamark("What works: short plans"))
    assert prompt.examples == examples and prompt.style_lines == 1


def test_examples_are_cut_before_memory_when_over_budget() -> None:
    examples = [_example(1, 0.8), _example(2, 0.6), _example(3, 0.5)]
    common = {
        "persona": "You are Sam's assistant.",
        "passages": [],
        "memory": MemoryContext(profile_lines=["What works: short plans"]),
        "history": [],
        "user_text": "I can't sleep.",
        "style": ["Register: conversational."],
        "coach_name": "Sam",
    }
    full = assemble_prompt(**common, examples=examples, budget_tokens=10_000)  # type: ignore[arg-type]
    # a budget that fits everything but one example: the least similar (last) goes, memory stays
    tight = int((full.estimated_tokens - 20) / 0.8)
    cut = assemble_prompt(**common, examples=examples, budget_tokens=tight)  # type: ignore[arg-type]
    assert [e.similarity for e in cut.examples] == [0.8, 0.6]
    assert cut.profile_lines == 1 and cut.style_lines == 1
    assert cut.estimated_tokens <= int(tight * 0.8)
    # just room for persona, profile and message: every example and the style line go, the profile stays
    bare = assemble_prompt(**(common | {"style": []}), budget_tokens=10_000)  # type: ignore[arg-type]
    tiny = assemble_prompt(**common, examples=examples, budget_tokens=int(bare.estimated_tokens / 0.8) + 1)  # type: ignore[arg-type]
    assert tiny.examples == [] and tiny.style_lines == 0 and tiny.profile_lines == 1
    assert "Coach reply number" not in tiny.messages[0]["content"]


def test_the_previous_strategy_sharpens_the_prediction() -> None:
    """After a Question this coach restates; otherwise it mostly asks: the sequence factor tells them apart."""
    samples = [
        StyleSample("Question", "negative", 0.5, 0.0),
        StyleSample("Restatement or Paraphrasing", "negative", 0.5, 0.0, previous_strategy="Question"),
        StyleSample("Question", "negative", 0.5, 0.0, previous_strategy="Restatement or Paraphrasing"),
        StyleSample("Restatement or Paraphrasing", "negative", 0.5, 0.0, previous_strategy="Question"),
        StyleSample("Question", "negative", 0.5, 0.0, previous_strategy="Restatement or Paraphrasing"),
        StyleSample("Question", "negative", 0.5, 0.0),
    ]
    profile = build_style_profile(samples)
    assert profile["after"]["Question"] == {"Restatement or Paraphrasing": 2}
    assert predict_strategy(profile, "negative") == "Question"
    assert predict_strategy(profile, "negative", "Question") == "Restatement or Paraphrasing"
    assert predict_strategy(profile, "negative", "Restatement or Paraphrasing") == "Question"


def test_the_catch_all_strategy_makes_no_what_works_line() -> None:
    """ESConv's "Others" helped a client: "Responds well to the coach's others" went into the client's profile,
    shown to the coach and put into every prompt."""
    assert what_works_line(CATCH_ALL) is None
    assert what_works_line("Question") == "Responds well to the coach's question"
