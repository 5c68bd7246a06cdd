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
from app.handoff.signals import TurnSignals, asks_for_human, human_request_language, turn_signals, vents_at_ai

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


# --- a tester's second run: everyday first names, earlier messages, later sessions, a vent's support ---------

WILL = "Will Baker"
TESTER_ASKS_WILL = [
    "is Will around?",
    "I want Will not a bot",
    "can Will take over?",
    "can i talk to Will Baker",
    "I want Will Baker not a bot",
    "is Baker around?",
]
HELD_OUT_ASKS_WILL = [
    "let me speak to will",
    "get Will please",
    "where is Will?",
    "connect me to Will Baker",
    "I'd rather talk to Will",
    "can I have Will please",
]
HELD_OUT_NOT_ASKS_WILL = [
    "will I be ready for the race?",
    "I will talk to my boss tomorrow",
    "will it help to stretch first?",
    "what will I say to my manager",
    "I will, but I'd rather talk to her about it",  # "I will" does not name the coach for "her"
]


@pytest.mark.parametrize("text", TESTER_ASKS_WILL + HELD_OUT_ASKS_WILL)
def test_a_coach_whose_first_name_is_an_everyday_word_is_asked_for(text: str) -> None:
    assert asks_for_human(text, coach_name=WILL) is True


@pytest.mark.parametrize("text", HELD_OUT_NOT_ASKS_WILL)
def test_the_everyday_word_outside_a_request_is_not_the_coach(text: str) -> None:
    assert asks_for_human(text, coach_name=WILL) is False


@pytest.mark.parametrize(
    ("text", "coach", "asks"),
    [
        ("could May reply to this?", "May Chen", True),
        ("is May online?", "May Chen", True),
        ("I want to be fitter by May", "May Chen", False),
        ("I hope so", "Hope Adams", False),
        ("I hope I can keep going", "Hope Adams", False),
        ("I want to run a 10k", "Run To Win", False),  # "to" is no one's name: "want to" is no request
        ("I need to talk to my boss", "Run With Me", False),
    ],
)
def test_name_words_in_the_coach_slot_but_not_articles_or_pronouns(text: str, coach: str, asks: bool) -> None:
    assert asks_for_human(text, coach_name=coach) is asks


@pytest.mark.parametrize(
    ("text", "coach", "earlier", "asks"),
    [
        ("I'd rather talk to her", COACH, ["Dana said I should rest"], True),
        ("i'd rather speak to him", "Tom Reed", ["my coach Tom told me to rest", "ok"], True),
        ("I'd rather talk to her", COACH, ["Dana said I should rest", "I had a long week", "hi"], False),
        ("I'd rather talk to her", COACH, ["my mum keeps calling"], False),
        ("I'd rather talk to her", COACH, [], False),
    ],
)
def test_a_pronoun_is_the_coach_named_in_the_clients_last_two_messages(
    text: str, coach: str, earlier: list[str], asks: bool
) -> None:
    assert asks_for_human(text, coach_name=coach, earlier=earlier) is asks
    signals = turn_signals(text, risk=RiskDetector().assess(text), earlier_client_messages=earlier, coach_name=coach)
    assert signals.human_request is asks


TESTER_ASKS_2 = [
    "is a real person there?",
    "can someone from the team call me",
    "can you put me through to someone",
    "is the coach available today or is it just you?",
]
HELD_OUT_ASKS_2 = [
    "is a human there",
    "is anyone real there?",
    "could someone from your team call me back please",
    "connect me with someone please",
    "is my coach around or is this just a bot?",
    "can I talk to a real person now, not next week",
    "can I talk to my coach? it can't wait until tomorrow",
]
TESTER_NOT_ASKS_2 = ["can i talk to my coach about this tomorrow in our session?"]
HELD_OUT_NOT_ASKS_2 = [
    "can I talk to my coach about it next time?",
    "I want to talk to my coach about this later",
    "I'd like to talk to Dana about my knee in our next session",
    "is a real person there in the gym to help?",
    "someone from the team called me yesterday",
]


@pytest.mark.parametrize("text", TESTER_ASKS_2 + HELD_OUT_ASKS_2)
def test_asks_for_someone_present_or_from_the_team(text: str) -> None:
    assert asks_for_human(text, coach_name=COACH) is True


@pytest.mark.parametrize("text", TESTER_NOT_ASKS_2 + HELD_OUT_NOT_ASKS_2)
def test_talking_to_the_coach_later_in_a_session_is_not_an_ask_now(text: str) -> None:
    assert asks_for_human(text, coach_name=COACH) is False


LOW_SUPPORT = [0.1]
"""The best cosine of a vent against a coach's passages: "stupid bot" matches no passage (support 0)."""


def _real_turn(text: str, earlier: list[str], **changes: object) -> TurnSignals:
    signals = turn_signals(
        text,
        risk=RiskDetector().assess(text),
        earlier_client_messages=earlier,
        retrieval_scores=LOW_SUPPORT,
        coach_name=COACH,
    )
    return dataclasses.replace(signals, **changes)


@pytest.mark.parametrize("text", ["stupid bot", "you are useless", "stupid bot, same canned answer again"])
def test_one_vent_stays_with_the_ai_though_the_coachs_material_does_not_match_it(text: str) -> None:
    """A real turn: the coach has documents, and a vent matches none of them (support 0). One vent alone stays
    with the AI; a thumbs-down with it, or a second vent, hands over."""
    once = _real_turn(text, [])
    assert (once.retrieval_support, once.venting, once.sentiment < 0) == (0.0, 1, True)
    confidence = score_confidence(once)
    assert not below_threshold(confidence) and confidence.reason == "frustration"
    assert below_threshold(score_confidence(dataclasses.replace(once, thumbs_down_streak=1)))
    assert below_threshold(score_confidence(_real_turn(text, ["you're not listening to me at all"])))


def test_a_question_without_a_vent_still_counts_its_low_support() -> None:
    question = score_confidence(_real_turn("how do I fix my tax return?", []))
    assert question.reason == "low_retrieval_support" and question.value == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("text", "language"), [("¿humano?", "es"), ("humain svp", "fr"), ("um humano, por favor", "pt")]
)
def test_an_ask_in_another_language_keeps_its_language(text: str, language: str) -> None:
    """The one-edit misspellings of "human" read "humano" and "humain" as English, so a Spanish client's "¿humano?"
    got its handoff notice in English: a word of the client's own language is no misspelling."""
    assert human_request_language(text) == language
