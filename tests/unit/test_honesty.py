"""Honest AI: the detectors (app.handoff.signals.asks_if_ai, claims_human) and the turn's decisions
(app.chat.turn.decide.before_model with ``asks_if_ai``, honest_reply, cache_after)."""

from __future__ import annotations

import pytest

from app.chat.turn.decide import Before, BeforeModel, before_model, cache_after, honest_reply
from app.chat.turn.honesty import correction, disclosure
from app.conversations.metadata import ReplyMeta, client_view
from app.handoff.signals import TurnSignals, asks_for_human, asks_if_ai, claims_human

ASKS = [
    "Am I talking to a real person?",
    "am i talking to a bot",
    "Are you human?",
    "are you a bot?",
    "Are you an AI?",
    "r u a bot",
    "are you real?",
    "Are you actually a real person or an AI?",
    "are you human right now?",
    "Is this an AI or a person?",
    "is this a bot?",
    "Is this automated?",
    "Is this a real person?",
    "Wait, am I texting with a bot?",
    "am I chatting with a real person right now",
    "Is a real person reading this?",
    "Is anyone actually reading this?",
    "Who am I talking to?",
    "Is this really you?",
    "you're a bot, aren't you?",
    "so you're just an AI",
    "Human or bot?",
    "bot?",
    "Are you ChatGPT?",
    "Hi! Are you a human? I have a question about my mornings.",
]

NOT_ASKS = [
    "I want to talk to a real person",  # a request: asks_for_human, handed off before this is looked at
    "Can I speak with my coach?",
    "are you sure?",
    "Are you able to help me sleep better?",
    "Are you available tomorrow?",
    "are you a person who likes lists?",
    "Is this a good plan?",
    "is this normal?",
    "Is this a program for beginners?",
    "is it a human right to rest?",
    "am I talking too much?",
    "I'm a real person with feelings",
    "My coach is a real person",
    "AI is changing my job",
    "I talked to a bot at the bank and it was useless",
    "do robots have feelings?",
    "I know you're an AI, but can you help me plan?",
    "does anyone answer emails at your company",
    "who is talking to my boss about it",
    "",
]


@pytest.mark.parametrize("text", ASKS)
def test_asks_if_ai_fires(text: str) -> None:
    assert asks_if_ai(text)


@pytest.mark.parametrize("text", NOT_ASKS)
def test_asks_if_ai_does_not_fire(text: str) -> None:
    assert not asks_if_ai(text)


def test_asks_if_ai_knows_the_coach_by_name() -> None:
    assert asks_if_ai("is this really Sarah?", coach_name="Sarah Lee")
    assert asks_if_ai("am I talking to Sarah?", coach_name="Sarah Lee")
    assert not asks_if_ai("is this really Sarah?")  # no name given: "Sarah" is no one in particular
    assert not asks_if_ai("I talked to Sarah yesterday", coach_name="Sarah Lee")


@pytest.mark.parametrize(
    ("text", "question", "wants_human"),
    [
        ("Am I talking to a real person?", True, False),
        ("I want to talk to a real person", False, True),
        ("Are you a bot? I want to talk to a human.", True, True),  # both: the handoff wins (below)
        ("is there a real person I can talk to?", False, True),
    ],
)
def test_question_and_request_are_separate_signals(text: str, question: bool, wants_human: bool) -> None:
    assert asks_if_ai(text) is question
    assert asks_for_human(text) is wants_human


CLAIMS = [
    "Yes, I'm a real person, not a bot.",
    "I am human.",
    "I'm definitely a real person!",
    "I'm a human being too, you know.",
    "I'm real.",
    "I'm not an AI.",
    "No, I am not a bot, I promise.",
    "I'm not a robot or a program.",
    "As a human, I understand how that feels.",
    "As a fellow human, I get it.",
    "You're talking to a real person!",
    "This is a real person answering.",
    "A real person is typing this.",
]

NOT_CLAIMS = [
    "I'm not a real person, I'm an AI.",
    "I'm an AI assistant, not a human.",
    "As an AI, I can't feel tired, but I can help you plan.",
    "As a human, you deserve rest.",
    "Human beings need sleep.",
    "Your coach is a real person and can join this conversation.",
    "I am a person who values honesty.",  # odd, but not a claim to be a person writing to you
    "I'm really glad you asked.",
    "I'm not able to do that.",
    "I am not a doctor, so please check with one.",
    disclosure("Sam"),
    correction("Sam"),
]


@pytest.mark.parametrize("text", CLAIMS)
def test_claims_human_fires(text: str) -> None:
    assert claims_human(text)


@pytest.mark.parametrize("text", NOT_CLAIMS)
def test_claims_human_does_not_fire(text: str) -> None:
    assert not claims_human(text)


def test_the_honest_texts_say_ai_assistant_and_name_the_coach() -> None:
    for text in (disclosure("Sam"), correction("Sam")):
        assert "Sam's AI assistant" in text and "not a person" in text and "/human" in text


@pytest.mark.parametrize("language", ["en", "es", "fr", "de", "pt"])
def test_the_disclosure_answers_both_ways_of_asking(language: str) -> None:
    """ "Are you a person?" and "are you a bot?" get the one disclosure: it opens with what it is, never "No" (which
    answered "are you a bot?" with a denial) nor "Yes"."""
    opening = disclosure("Sam", language).split()[0].strip(":—–,").lower()
    assert opening not in {"no", "non", "nein", "não", "yes", "sí", "oui", "ja", "sim"}
    assert opening in {"i'm", "soy", "je", "ich", "sou"}


def calm() -> TurnSignals:
    return TurnSignals(0.0, "none", 0.1, 0.0, False, None)


def request() -> TurnSignals:
    return TurnSignals(0.0, "none", 0.1, 0.0, True, None)


@pytest.mark.parametrize(
    ("crisis", "active", "sig", "mode", "expected"),
    [
        pytest.param(False, False, calm(), "auto", BeforeModel(Before.DISCLOSE), id="disclose-auto"),
        pytest.param(False, False, calm(), "draft", BeforeModel(Before.DISCLOSE), id="disclose-draft-too"),
        pytest.param(True, False, calm(), "auto", BeforeModel(Before.CRISIS, "crisis"), id="crisis-first"),
        pytest.param(False, True, calm(), "auto", BeforeModel(Before.PAUSED), id="coach-has-it-paused"),
        pytest.param(
            False,
            False,
            request(),
            "auto",
            BeforeModel(Before.HAND_OFF, "human_request", "the client asked for a human"),
            id="request-beats-question",
        ),
        pytest.param(
            False, False, calm(), "human_only", BeforeModel(Before.HAND_OFF, "human_only"), id="human-only-hands-off"
        ),
    ],
)
def test_before_model_discloses(crisis: bool, active: bool, sig: TurnSignals, mode: str, expected: BeforeModel) -> None:
    assert before_model(crisis=crisis, handoff_active=active, signals=sig, mode=mode, asks_if_ai=True) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes, I'm a real person, not a bot.", correction("Dana")),
        ("As a human, I know mornings are hard.", correction("Dana")),
        ("Let's take it one step at a time.", None),
        ("I'm Dana's AI assistant, not a person.", None),
    ],
)
def test_honest_reply(reply: str, expected: str | None) -> None:
    assert honest_reply(reply, coach_name="Dana") == expected


def test_a_replaced_reply_is_not_cached() -> None:
    assert cache_after(cache="miss", failed=False)
    assert not cache_after(cache="miss", failed=False, replaced=True)
    assert not cache_after(cache="miss", failed=False, fallback=True), "the fallback model's reply"
    assert not cache_after(cache="miss", failed=False, sent=False), "a draft, or a reply the coach was asked to see"


def test_honesty_metadata_is_coach_only_and_not_training_data() -> None:
    meta = ReplyMeta.from_json({"honesty": "replaced", "honesty_model_reply": "I'm a real person."})
    assert meta.honesty == "replaced" and meta.honesty_model_reply == "I'm a real person."
    assert meta.not_ai_content
    assert client_view(meta) == {}
    assert meta.to_json() == {"honesty": "replaced", "honesty_model_reply": "I'm a real person."}
