"""Asks for a person that a tester's run found missed or invented (app.handoff.signals.asks_for_human with the
coach's name), and frustration aimed at the AI (app.handoff.signals.vents_at_ai), which lowers the confidence
(app.handoff.confidence) without handing over on one mild complaint.

Each list has the tester's sentences and cases written before the rules were changed and not tuned on
(``HELD_OUT_*``)."""

from __future__ import annotations

import dataclasses

import pytest

from app.handoff.confidence import DEFAULT_CONFIDENCE_THRESHOLD, below_threshold, score_confidence
from app.handoff.risk import RiskDetector
from app.handoff.signals import TurnSignals, asks_for_human, turn_signals, vents_at_ai

COACH = "Dana Coach"

TESTER_ASKS = [
    "can i talk to a reel person",
    "pls get my coach",
    "is Dana around? I'd rather talk to her",
    "can I speak to a real human pls",
    "get me a human",
    "I want Dana not a bot",
]
TESTER_NOT_ASKS = [
    "any tips on how I should talk to myself before a race?",
    "I need to talk to my boss about it",
    "how do I talk to my mum about this",
    "my coach at the gym said to rest",
]
HELD_OUT_ASKS = [
    "could you put Dana on please",
    "i wanna talk to a real peson",
    "is there a humen i can talk to",
    "can Dana take over?",
    "where's my coach? i need to speak to her",
    "I'd prefer talking to Dana",
    "get Dana please",
    "i want to talk to someone real",
    "need a human asap",
    "can i have my coach please",
    "please tell Dana I want to talk to her",
    "can i talk to an acutal person",
    "I want Dana, not you",
    "can a real person look at this instead",
    "let me speak to dana",
    # a second batch, written after the rules and run once against them, not tuned on
    "yo can i chat with an actual human",
    "I'd like to speak with Dana if possible",
    "can I talk to the coach herself?",
    "get me someone real",
    "honestly I just want a real person",
    "Is Dana online?",
    "is dana available right now",
    "connect me to Dana",
    "could Dana reply to this personally?",
    "no bots please, I want my coach",
    "a human pls",
    "can i speak to a person instead",
    "i need to speak with my coach asap",
    "where is Dana",
    "can someone real take over",
]
HELD_OUT_NOT_ASKS = [
    "how should I talk to my kids about the move",
    "I talked to myself all through the run",
    "what do I say when I talk to my manager",
    "Dana's plan says rest on sunday",
    "my coach at work wants a report by friday",
    "I need to talk myself into running today",
    "should I get a personal trainer?",
    "tips for talking to people at parties",
    "Dana mentioned a breathing exercise, can you explain it?",
    "my sister wants to speak to a real person about her debt",
    "I don't need Dana for this, you're doing fine",
    "how can I talk to my boss without getting angry",
    "I want to feel like a real person again",
    "get me a plan for next week",
    "is Dana's book worth reading?",
    # the second batch (two of its look-alikes still fire: see asks_for_human's limits)
    "I want to talk to my doctor about my knee",
    "my coach Dana said I should rest more",
    "Dana is a great coach",
    "I talk to myself a lot when running",
    "should I talk to her about it?",
    "my coach is away this week, right?",
    "can a person run a marathon without training?",
    "I'd rather talk about my sleep",
    "should I get my coach a gift?",
    "where is my coach's feedback?",
    "I want to talk to myself more kindly",
    "talk to you later",
    "Dana's app keeps crashing",
]


@pytest.mark.parametrize("text", TESTER_ASKS + HELD_OUT_ASKS)
def test_asks_for_a_person_or_the_coach_by_name(text: str) -> None:
    assert asks_for_human(text, coach_name=COACH) is True


@pytest.mark.parametrize("text", TESTER_NOT_ASKS + HELD_OUT_NOT_ASKS)
def test_mentions_and_talking_to_oneself_are_not_asks(text: str) -> None:
    assert asks_for_human(text, coach_name=COACH) is False


def test_the_coachs_name_counts_only_for_this_coach() -> None:
    """The name rules need the coach's own name: another name in the same words is someone else."""
    assert asks_for_human("is Dana around?", coach_name=COACH) is True
    assert asks_for_human("is Dana around?", coach_name="Maria Gonzalez") is False
    assert asks_for_human("I want Dana not a bot") is False
    assert asks_for_human("is my coach around?") is True


def test_a_pronoun_is_the_coach_only_after_the_coach_is_named() -> None:
    assert asks_for_human("I'd rather talk to her") is False
    assert asks_for_human("I told my mum, I'd rather talk to her") is False
    assert asks_for_human("my coach is great, I'd rather talk to her") is True
    assert asks_for_human("I saw Dana's note, I'd rather talk to her mum") is False


# --- frustration aimed at the AI ---------------------------------------------------------------------------

TESTER_VENTS = ["stupid bot, same canned answer again", "you're useless, this isn't helping"]
HELD_OUT_VENTS = [
    "this is pointless, you keep saying the same thing",
    "ugh, useless answer",
    "you're not listening to me at all",
    "wow, what a dumb reply",
    "you keep repeating yourself, this bot is hopeless",
]
NOT_VENTS = [
    "hmm that's not quite it",  # mild: one such remark must never hand over
    "not really what I meant, can you try again?",
    "I feel useless today",
    "my stupid knee is acting up again",
    "my boss is useless",
    "this workout is pointless without a plan",
    "stupid question, but how do I pace a 10k?",
    "I'm not saying you're useless",
    "you're not useless at all, thanks",
    "",
]


@pytest.mark.parametrize("text", TESTER_VENTS + HELD_OUT_VENTS)
def test_frustration_aimed_at_the_ai_is_read(text: str) -> None:
    assert vents_at_ai(text) is True


@pytest.mark.parametrize("text", NOT_VENTS)
def test_mild_or_self_directed_frustration_is_not_venting_at_the_ai(text: str) -> None:
    assert vents_at_ai(text) is False


def _turn(text: str, earlier: list[str], **changes: object) -> TurnSignals:
    signals = turn_signals(text, risk=RiskDetector().assess(text), earlier_client_messages=earlier, coach_name=COACH)
    return dataclasses.replace(signals, **changes)


def test_venting_counts_toward_the_handoff_but_one_mild_remark_does_not() -> None:
    """One vent lowers the confidence but does not hand over on its own (material covers the question); with a
    thumbs-down, or a second vent among the client's last three messages, it hands over; a mild remark changes
    nothing; an earlier vent counts only while the client is still venting."""
    calm = _turn("how do I pace a 10k?", [], retrieval_support=1.0)
    mild = _turn("hmm that's not quite it", ["how do I pace a 10k?"], retrieval_support=1.0)
    once = _turn("stupid bot, same canned answer again", ["how do I pace a 10k?"], retrieval_support=1.0)
    twice = _turn("you're useless, this isn't helping", ["stupid bot, same canned answer again", "ok"])
    later = _turn("ok, how about hills?", ["stupid bot, same canned answer again"], retrieval_support=1.0)
    assert (mild.venting, once.venting, twice.venting, later.venting) == (0, 1, 2, 0)
    assert score_confidence(mild).value == score_confidence(calm).value == 1.0
    assert not below_threshold(score_confidence(dataclasses.replace(once, sentiment=0.0)))
    assert score_confidence(once).value < 1.0 and score_confidence(once).reason == "frustration"
    assert below_threshold(score_confidence(dataclasses.replace(once, thumbs_down_streak=1)))
    assert below_threshold(score_confidence(dataclasses.replace(twice, sentiment=0.0, retrieval_support=1.0)))
    assert score_confidence(later).value == 1.0
    assert DEFAULT_CONFIDENCE_THRESHOLD == 0.5
