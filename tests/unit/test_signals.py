"""Per-turn handoff signals (app.handoff.signals): pure functions, no DB."""

from __future__ import annotations

import json
import math
import time

import pytest

from app.core import text as text_module
from app.core.text import sentiment
from app.handoff.risk import RiskAssessment, RiskDetector
from app.handoff.signals import (
    REPEAT_THRESHOLD,
    SUPPORT_HIGH,
    SUPPORT_LOW,
    TurnSignals,
    asks_for_human,
    content_words,
    message_sentiment,
    repeated_question,
    retrieval_support,
    sentiment_trend,
    stem,
    thumbs_down_streak,
    token_confidence,
    topic_matches,
    turn_signals,
)

# --- sentiment ---------------------------------------------------------------------------------------------


def test_sentiment_is_vader_compound() -> None:
    """Negative affect gives a negative compound, positive a positive one, neutral/empty ≈ 0, all in [-1, 1]."""
    bad = sentiment("I hate this, nothing works and I feel awful")
    good = sentiment("Thank you so much, that really helped and I feel great!")
    assert -1.0 <= bad < -0.5
    assert 0.5 < good <= 1.0
    assert sentiment("") == 0.0
    assert sentiment("   ") == 0.0
    assert abs(sentiment("The meeting is on Tuesday at 10.")) < 0.05


@pytest.mark.parametrize(
    "text",
    ["🙂😀😃" * 1330 + "x", "I feel bad about work. " * 170, "Me siento 😢 mal " * 400],
    ids=["emoji", "plain", "mixed"],
)
def test_sentiment_reads_a_bounded_number_of_words(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """VADER's time grows with the square of the words it reads (a message of 3,990 emoji, each read as its
    description, held the event loop 8.4 s): it reads the first SENTIMENT_MAX_WORDS words, emoji described."""
    analyzer, read = text_module._analyzer(), []
    scores = analyzer.polarity_scores

    def recording(given: str) -> dict[str, float]:
        read.append(given)
        return scores(given)

    monkeypatch.setattr(analyzer, "polarity_scores", recording)
    sentiment.cache_clear()
    sentiment(text)
    [given] = read
    described = sum(len(analyzer.emojis[c].split()) if c in analyzer.emojis else 0 for c in given)
    assert len(given.split()) + described <= text_module.SENTIMENT_MAX_WORDS + 1 and text.startswith(given.split()[0])


@pytest.mark.parametrize(
    ("compounds", "expected"),
    [
        ([], 0.0),
        ([0.5], 0.0),
        ([0.5, -0.5], 0.0),  # fewer than three messages: no trend
        ([0.0, 0.0, 0.0], 0.0),
        ([0.6, 0.3, 0.0], -0.3),
        ([-0.4, -0.2, 0.0, 0.2], 0.2),
        ([1.0, 0.6, 0.2, -0.2, -0.6, -1.0], -0.4),
        # only the last six count: the leading 9.0 would otherwise dominate
        ([9.0, 1.0, 0.6, 0.2, -0.2, -0.6, -1.0], -0.4),
    ],
)
def test_sentiment_trend_is_the_least_squares_slope(compounds: list[float], expected: float) -> None:
    assert sentiment_trend(compounds) == pytest.approx(expected)


def test_sentiment_trend_matches_numpy_polyfit() -> None:
    np = pytest.importorskip("numpy")
    ys = [0.42, -0.1, 0.05, -0.55, -0.3, -0.8]
    assert sentiment_trend(ys) == pytest.approx(float(np.polyfit(range(6), ys, 1)[0]))


# --- human request -----------------------------------------------------------------------------------------

ASKS_FOR_HUMAN = [
    "/human",
    "/HUMAN please, this is urgent",
    "  /Human",
    "can I talk to a real person?",
    "I want to speak to my coach",
    "is this a bot? get me a human",
    "connect me with a human",
    "let me talk to Sarah directly",
    "I'd rather talk to a person",
    "I’d rather talk to a person",  # curly apostrophe
    "stop, I want a real human",
    "Can I speak with an actual human being?",
    "Please transfer me to a human agent",
    "I want my coach, not the AI",
    "Is there a real person I can talk to?",
    "human please",
    "A real person, please.",
    "I don't want to talk to a bot anymore",
    "could my coach answer this herself?",
    "how do I talk to the coach?",
    "Honestly I need a human right now",
    "I would like a real person to look at this",
    "can I please just chat with my coach",
    "no, I want a human",
    "put me through to my coach",
    "I told you, I want a human",  # the client restates their ask
    "I'd like to talk to my coach, please.",  # what the widget's "Talk to a human" button sends (static/chat.js)
    "She said it's fine, but I want to talk to a real person",
]

NOT_ASKS_FOR_HUMAN = [
    "my coach said people are complicated",
    "I talked to a person at work today",
    "human beings are weird",
    "I want to be a better person",
    "no, I don't need a human",
    "I don't want to talk to a person right now, just you",
    "I want to speak up more in meetings",
    "I need to talk to my boss about a raise",
    "My coach is a real person who cares",
    "how do I become a people person?",
    "I'm only human",
    "It's human nature to procrastinate",
    "I met a real person from the forum",
    "My coach wants me to talk to people more",
    "Tell me about human resources policies",
    "what is a humane way to say no?",
    "I want to talk to my partner directly",
    "/humanity is overrated",
    "You sound so human!",
    "Are you a bot?",
    "I like a person in my class",
    "I need an agent for my book",
    "I'd never need a human for this, you're fine",
    "When I talk to a person I get anxious",
    "My coach said I need a person to lean on",  # reported speech
    'My friend said "I want to talk to a real person" and laughed',  # a quote
    "He told me: get me a human is what everyone says",
    "",
]


@pytest.mark.parametrize("text", ASKS_FOR_HUMAN)
def test_asks_for_human_fires_on_explicit_requests(text: str) -> None:
    assert asks_for_human(text) is True


@pytest.mark.parametrize("text", NOT_ASKS_FOR_HUMAN)
def test_asks_for_human_ignores_mentions_and_negations(text: str) -> None:
    assert asks_for_human(text) is False


def test_asks_for_human_by_the_coachs_name() -> None:
    """With the coach's name, "let me talk to <name>" counts without "directly"; other names still don't."""
    assert asks_for_human("can I talk to Maria?", coach_name="Maria Gonzalez") is True
    assert asks_for_human("I want to speak with gonzalez", coach_name="Maria Gonzalez") is True
    assert asks_for_human("can I talk to Maria?") is False
    assert asks_for_human("can I talk to Peter?", coach_name="Maria Gonzalez") is False
    assert asks_for_human("Maria said hi", coach_name="Maria Gonzalez") is False


# --- topics ------------------------------------------------------------------------------------------------

TOPICS = ["quitting my job", "medication", "legal", "divorce"]


def test_stem_joins_the_inflections_used_in_topics() -> None:
    assert stem("quitting") == stem("quit")
    assert stem("medications") == stem("medication")
    assert stem("divorced") == stem("divorcing") == stem("divorce") == stem("divorces")
    assert stem("worried") == stem("worries") == stem("worrying") == stem("worry")
    assert stem("jobs") == "job"
    assert stem("stress") == stem("stressed") == "stress"
    assert stem("ask") == "ask"


def test_content_words_drop_stop_words_and_apply_synonyms() -> None:
    assert content_words("I'm quitting my job!") == {"quit", "job"}
    assert content_words("my meds") == content_words("Medication")
    assert content_words("the and of") == frozenset()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm thinking of quitting my job", ["quitting my job"]),
        ("Should I just quit my job?", ["quitting my job"]),
        ("My JOB is killing me, I want to quit", ["quitting my job"]),
        ("can I stop my meds?", ["medication"]),
        ("I forgot my medications again", ["medication"]),
        ("Is this legal?", ["legal"]),
        ("We are getting divorced and I might quit my job", ["quitting my job", "divorce"]),
        ("my job is fine", []),
        ("I quit smoking", []),
        ("I talked to a lawyer", []),  # no synonyms beyond the documented tiny map
        ("", []),
    ],
)
def test_topic_matches(text: str, expected: list[str]) -> None:
    assert topic_matches(text, TOPICS) == expected


def test_topic_matches_keeps_order_drops_duplicates_and_empty_topics() -> None:
    assert topic_matches("divorce and legal questions", ["legal", "divorce", "legal", "", "the"]) == [
        "legal",
        "divorce",
    ]
    assert topic_matches("anything", []) == []


# --- repeats -----------------------------------------------------------------------------------------------


def test_repeated_question_detects_a_reworded_repeat() -> None:
    earlier = ["How do I stop procrastinating?", "ok thanks", "what about sleep?"]
    score = repeated_question("I still don't know how to stop procrastinating", earlier)
    assert REPEAT_THRESHOLD <= score <= 1.0
    assert repeated_question("How can I stop procrastinating?", earlier) == pytest.approx(1.0)


def test_repeated_question_ignores_different_and_short_messages() -> None:
    earlier = ["How do I stop procrastinating?", "ok", "thanks"]
    assert repeated_question("how do I sleep better", earlier) == 0.0  # shares only "how": 0.33
    assert repeated_question("ok", earlier) == 0.0
    assert repeated_question("thanks!", ["thanks!", "thanks!"]) == 0.0
    assert repeated_question("How do I stop procrastinating?", []) == 0.0


# --- retrieval, feedback, token probabilities --------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([], 0.0),
        ([-0.3], 0.0),
        ([SUPPORT_LOW], 0.0),
        ([SUPPORT_HIGH], 1.0),
        ([0.9, 0.1], 1.0),
        ([(SUPPORT_LOW + SUPPORT_HIGH) / 2, 0.0], 0.5),
        ([0.1, 0.35], (0.35 - SUPPORT_LOW) / (SUPPORT_HIGH - SUPPORT_LOW)),
    ],
)
def test_retrieval_support_maps_the_best_cosine(scores: list[float], expected: float) -> None:
    assert retrieval_support(scores) == pytest.approx(expected)


def test_token_confidence_is_the_geometric_mean_probability() -> None:
    assert token_confidence([]) is None
    assert token_confidence([0.0, 0.0]) == pytest.approx(1.0)
    assert token_confidence([math.log(0.5), math.log(0.5)]) == pytest.approx(0.5)
    assert token_confidence([math.log(0.9), math.log(0.1)]) == pytest.approx(0.3)
    assert token_confidence([-math.inf, 0.0]) == 0.0
    assert token_confidence([math.nan, math.log(0.25)]) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("feedback", "expected"),
    [
        ([], 0),
        ([None, None], 0),
        ([False], 1),
        ([False, False, True, False], 2),
        ([False, None, False, True, False], 2),  # an unrated reply breaks nothing
        ([True, False, False], 0),
        ([None, False, False, False], 3),
    ],
)
def test_thumbs_down_streak(feedback: list[bool | None], expected: int) -> None:
    assert thumbs_down_streak(feedback) == expected


# --- the bundle --------------------------------------------------------------------------------------------


def test_turn_signals_bundles_everything_and_serialises() -> None:
    text = "I feel awful. Can I talk to a real person about quitting my job?"
    risk = RiskDetector().assess(text)
    signals = turn_signals(
        text,
        risk=risk,
        earlier_client_messages=["Things are great!", "Work is ok I guess", "I'm stressed and tired"],
        high_stakes_topics=["quitting my job", "medication"],
        escalate_topics=["legal"],
        retrieval_scores=[0.2, 0.45],
        helpful_newest_first=[False, None, True],
        reply_logprobs=[math.log(0.8)] * 4,
    )
    assert signals.human_request is True
    assert signals.high_stakes_topics == ["quitting my job"]
    assert signals.escalate_topics == []
    assert signals.sentiment < 0
    assert signals.sentiment_trend < 0
    assert signals.retrieval_support == pytest.approx(retrieval_support([0.45]))
    assert signals.thumbs_down_streak == 1
    assert signals.token_confidence == pytest.approx(0.8)
    assert signals.risk_score == risk.score and signals.risk_level == risk.level

    data = signals.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == set(TurnSignals.__dataclass_fields__)
    for key in ("risk_score", "sentiment", "sentiment_trend", "retrieval_support", "token_confidence"):
        assert data[key] == round(data[key], 3)


def test_a_message_in_another_language_is_not_read_by_the_english_sentiment_lexicon() -> None:
    """A German client's neutral questions about the coach's German note handed the chat to the coach: VADER read
    the article "die" as the English verb (−0.60 each), and the second message made a falling mood (found by a run
    as a coach with a German document). A message written in another language is neutral now; English is read as
    before, and so is a text too short to tell."""
    german = ["Was ist die Zehn-Atemzüge-Regel?", "Wie heißt die Übung mit dem Anrufen?"]
    assert sentiment(german[1]) < -0.5  # what VADER alone makes of it
    signals = turn_signals(german[1], risk=RiskAssessment("none", 0.0), earlier_client_messages=german[:1])
    assert (signals.sentiment, signals.sentiment_trend) == (0.0, 0.0)

    assert message_sentiment("I feel awful and nothing works") == sentiment("I feel awful and nothing works") < -0.4
    assert message_sentiment("ok") == sentiment("ok")


def test_turn_signals_not_measured_stays_none() -> None:
    signals = turn_signals("hello", risk=RiskAssessment("none", 0.0))
    assert signals.retrieval_support is None
    assert signals.token_confidence is None
    assert signals.as_dict()["retrieval_support"] is None
    assert signals.sentiment_trend == 0.0


def test_signals_are_fast() -> None:
    """The hot path budget: all lexical signals for one message in well under a millisecond on average."""
    earlier = ["How do I stop procrastinating at work when everything feels urgent?"] * 20
    risk = RiskAssessment("none", 0.0)
    turn_signals("warm-up", risk=risk)  # builds the VADER analyzer once
    start = time.perf_counter()
    for _ in range(50):
        turn_signals(
            "Can I talk to my coach about quitting my job?",
            risk=risk,
            earlier_client_messages=earlier,
            high_stakes_topics=TOPICS,
            escalate_topics=TOPICS,
            retrieval_scores=[0.3] * 8,
        )
    assert (time.perf_counter() - start) / 50 < 0.02
