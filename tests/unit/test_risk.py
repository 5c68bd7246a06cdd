"""The crisis / self-harm risk detector (:mod:`app.handoff.risk`): pure, no database."""

from __future__ import annotations

import pytest

from app.handoff.crisis import needs_crisis_protocol
from app.handoff.normalise import normalise
from app.handoff.risk import CONCERN_THRESHOLD, CRISIS_THRESHOLD, RiskDetector

detector = RiskDetector()


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("I want to kill myself tonight", "kill myself"),
        ("I just want to die", "want to die"),
        ("I'm going to end my life", "end my life"),
        ("I've been cutting myself again", "hurt myself"),
        ("I'm suicidal", "suicidal (self)"),
        ("Only reason I didn't kill myself tonight is that I got scared", "kill myself"),
    ],
)
def test_explicit_first_person_wording_is_crisis(text: str, cue: str) -> None:
    assessment = detector.assess(text)
    assert assessment.level == "crisis"
    assert assessment.explicit
    assert cue in assessment.matched
    assert CRISIS_THRESHOLD <= assessment.score <= 1.0


@pytest.mark.parametrize(
    ("text", "cue", "level"),
    [
        ("Everyone would be better off without me", "better off without me", "crisis"),
        ("I have no reason to live anymore", "no reason to live", "crisis"),
        ("I hope I don’t wake up tomorrow", "dont want to wake up", "crisis"),
        ("I'm giving away my things and wanted to say goodbye", "giving away my things", "crisis"),
        ("I can't go on like this", "cant go on", "concern"),
        ("What's the point. I have my dad's gun in my lap", "gun", "concern"),
    ],
)
def test_indirect_wording_and_means_are_flagged(text: str, cue: str, level: str) -> None:
    assessment = detector.assess(text)
    assert assessment.level == level
    assert cue in assessment.matched
    assert not assessment.explicit


@pytest.mark.parametrize(
    "text",
    [
        "Want to die.",
        "wanna die tonight",
        "just want to die",
        "Honestly just going to end it all tonight",
        "Was ready to die last night",
    ],
)
def test_a_message_naming_no_one_speaks_for_the_writer(text: str) -> None:
    """Clients drop the pronoun in chat: a first-person cue in a message naming no one is the writer's own
    statement (these scored 0, no crisis protocol, the learned component included)."""
    assessment = detector.assess(text)
    assert assessment.level == "crisis" and assessment.explicit


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("I just took all my pills", "took all the pills"),
        ("Took 30 tylenol an hour ago", "took all the pills"),
        ("I swallowed a whole bottle of sleeping pills", "took all the pills"),
        ("I'm planning my suicide", "plan"),
        ("The plan is overdose tonight", "plan"),
        ("I want to jump off a bridge", "jump to die"),
    ],
)
def test_an_attempt_under_way_a_plan_and_a_method_are_crisis(text: str, cue: str) -> None:
    """An overdose already taken, a plan, a wish to jump: these reached ``concern`` at most (the means cue
    alone, or a plan said with "is" taken for a thing), and no crisis protocol."""
    assessment = detector.assess(text)
    assert assessment.level == "crisis" and assessment.explicit
    assert cue in assessment.matched


@pytest.mark.parametrize(
    "text",
    [
        "I took 20 minutes to get ready",
        "I ate too many cookies",
        "I took all my notes to class",
        "I want to jump off the diving board",
        "My suicide prevention training starts Monday",
    ],
)
def test_quantities_plans_and_jumps_without_a_method_are_not_crisis(text: str) -> None:
    assert detector.assess(text).level != "crisis"


@pytest.mark.parametrize(
    "text",
    [
        "i dont wanna live anymore",
        "I no longer want to be alive",
        "just took 15 pills",
        "took 12 of my xanax, feeling sleepy now",
        "gonna commit suicide",
        "having suicidal thoughts again",
        "you'd all be better off without me",
        "my wife would be better off without me",
        "this is my last message. thanks for everything coach",
        "by the time you read this ill be gone",
        "sliced my arm open",
        "i'd rather be dead",
        "cant stop wanting to die",
        "i can not keep living like this",
        "wish i wasnt alive",
    ],
)
def test_crisis_wordings_clients_write_call_for_the_protocol(text: str) -> None:
    """Wordings found missing by an adversarial probe of the detector (slang, no pronoun, a count under 20, a
    burden said to someone, a last message): each scored under the protocol's 0.5, most of them 0."""
    assert needs_crisis_protocol(detector.assess(text))


@pytest.mark.parametrize(
    "text",
    [
        "i need to cut myself some slack",
        "I'm taking my life back!",
        "I want to stop eating sugar",
        "took my meds this morning",
        "my plan is to cut carbs for a month",
        "i don't want to live in london anymore",
        "I'm not suicidal, just really tired",
        "my first attempt at sourdough was a disaster",
        "bought a massage gun for recovery",
        "relapsed on sugar this weekend",
        "cut myself chopping onions",
        "im going to do it, asking for a raise friday",
        "said goodbye to my old team today",
    ],
)
def test_everyday_coaching_messages_do_not_call_for_the_protocol(text: str) -> None:
    """Everyday wordings the same probe found sending the crisis reply and an urgent alert (a self-care idiom, a
    habit goal, medication taken as prescribed, a negated "suicidal", a first attempt at a hobby)."""
    assert not needs_crisis_protocol(detector.assess(text))


@pytest.mark.parametrize(
    "text",
    ["The battery is going to die soon", "The hero wants to die a hero.", "Want to die laughing at that video lol"],
)
def test_a_first_person_cue_said_of_a_thing_is_not_the_writers(text: str) -> None:
    assert detector.assess(text).level == "none"


@pytest.mark.parametrize(
    "text",
    [
        "If you are thinking about suicide, please call the 988 lifeline.",
        "Please don't kill yourself, you matter.",
        "I don't understand why you want to die.",
        "My brother killed himself in June.",
        "My grandmother died last week and I miss her.",
    ],
)
def test_supportive_and_third_person_wording_is_discounted(text: str) -> None:
    assert detector.assess(text).level == "none"


@pytest.mark.parametrize(
    "text",
    [
        "Please don't tell my mum, but I want to kill myself.",
        "I called the hotline but I still want to end my life",
        "I can't talk to someone about this, I want to die",
    ],
)
def test_the_writers_own_statement_next_to_a_help_phrase_is_a_crisis(text: str) -> None:
    """A help phrase ("please don't", "hotline", "talk to someone") discounts a supporter's sentence, not the
    writer's own "I want to kill myself" in it: these scored 0.225–0.33 (concern at most), no crisis protocol."""
    assessment = detector.assess(text)
    assert assessment.level == "crisis" and assessment.explicit


@pytest.mark.parametrize(
    "text",
    [
        "This deadline is killing me",
        "I died laughing at that video",
        "I'm dying to see the new movie",
        "My phone died again, ugh",
        "Let's cut our losses and move on",
        "",
    ],
)
def test_idioms_and_ordinary_messages_are_not_risk(text: str) -> None:
    assessment = detector.assess(text)
    assert assessment.level == "none"
    assert assessment.score < CONCERN_THRESHOLD


def test_negation_lowers_but_keeps_a_trace() -> None:
    plain = detector.assess("I will kill myself")
    negated = detector.assess("I would never kill myself")
    assert negated.score < plain.score
    assert negated.level != "crisis"


def test_supporter_sentence_scores_far_below_the_same_words_in_first_person() -> None:
    supporter = detector.assess("If you want to end your life, talk to someone about suicide first.")
    client = detector.assess("I want to end my life, I keep thinking about suicide.")
    assert supporter.score < CONCERN_THRESHOLD < CRISIS_THRESHOLD <= client.score


def test_user_level_aggregation_combines_weak_signals_and_keeps_the_strongest() -> None:
    weak = ["I feel so alone lately.", "Honestly I feel hopeless."]
    each = [detector.assess(post).score for post in weak]
    user = detector.assess_user(weak)
    assert user.score > max(each)
    assert user.level == "concern"
    assert set(user.matched) == {"alone", "hopeless"}

    strong = detector.assess_user(["Nice weather today.", "I want to kill myself", "Thanks for listening."])
    assert strong.level == "crisis"
    assert strong.explicit
    assert strong.matched[0] == "kill myself"

    calm = detector.assess_user(["Had a great session today!", "Work is killing me but it's fine."])
    assert calm.level == "none"
    assert calm.score == 0.0
    assert detector.assess_user([]).level == "none"


def test_scores_stay_in_unit_interval_for_long_input() -> None:
    text = "I want to die. I want to kill myself. No reason to live. " * 50
    assessment = detector.assess(text)
    assert 0.0 <= assessment.score <= 1.0
    assert assessment.level == "crisis"


@pytest.mark.parametrize(
    "text",
    [
        "i wnat to kil myslef evrything is pointles",
        "i want to kil myself",
        "i want to kil my self",
        "im sucidal",
        "i wnat to die",
        "I don't see the point in living",
        "i dont see the point of living anymore",
        "i feel like ending it all",
        "ya no kiero vivir",
        "j'ai envie d'en finir",
        "nobody is coming, are they. i still feel like ending it",
        "feeling suicdal again",
        "i want too die",
        "kiiill myself",
        "what's the point of living like this",
    ],
)
def test_misspelt_and_indirect_crisis_wordings_a_tester_sent_call_for_the_protocol(text: str) -> None:
    """First messages a tester sent as a client that got an ordinary AI reply: misspelt crisis words (a dropped,
    doubled or swapped letter) and wordings of pointless living or of ending it, in English, Spanish and French."""
    assert needs_crisis_protocol(detector.assess(text))


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("no le veo sentido a vivir", "es"),
        ("não vejo sentido em viver", "pt"),
        ("je ne vois plus l'intérêt de vivre", "fr"),
        ("ich sehe keinen Sinn mehr zu leben", "de"),
        ("J’ai envie d’en finir.", "fr"),
    ],
)
def test_pointless_living_and_ending_it_in_other_languages_call_for_the_protocol(text: str, language: str) -> None:
    assessment = detector.assess(text)
    assert needs_crisis_protocol(assessment)
    assert assessment.language == language


@pytest.mark.parametrize(
    "text",
    [
        "I killed it at work today",
        "I need to work on my skill set",
        "my self-care routine is slipping",
        "ending the meeting early was a relief",
        "we talked about the point of living well",
        "i dont see the point of living in a big city",
        "i feel like ending it with him, we fight all the time",
        "we're ending it all with a party on friday",
        "I want to dye my hair blue",
        "can't wait to live abroad, i want to wait until spring",
        "the pasta was overdone again",
        "j'ai envie d'en finir avec ce boulot",
        "no le veo sentido a vivir en esta ciudad",
        "my kiln broke, so the pottery class is off",
    ],
)
def test_look_alikes_of_misspelt_and_indirect_wordings_do_not_call_for_the_protocol(text: str) -> None:
    """Everyday messages one letter or one word away from the wordings above."""
    assert not needs_crisis_protocol(detector.assess(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i wnat to kil myslef", "i want to kill myself"),
        ("im sucidal, suicde, ovrdose", "im suicidal, suicide, overdose"),
        ("kiiill my selff, dieee, wana", "kill my self, die, wanna"),
        ("end my lfe", "end my life"),
        ("ya no kiero vivir", "ya no quiero vivir"),
    ],
)
def test_normalise_corrects_typos_in_risk_words(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "skill kiln kills killed wait dye tie lie giving diving living loving deed sell shelf elf",
        "overdone overdoes suicides pensamientos suicidas je veux me suicider quero me suicidar",
        "die frau ist da, quero viver",
    ],
)
def test_normalise_leaves_everyday_words_one_letter_from_a_risk_word_alone(text: str) -> None:
    assert normalise(text) == text


@pytest.mark.parametrize(
    ("ordinary", "crisis"),
    [
        ("i feel like ending things now lol, this call went long", "i feel like ending things now lol"),
        ("honestly this call went long, i feel like ending things now", "honestly i feel like ending things now"),
        (
            "feel like ending it now, this zoom call is dragging lol",
            "this zoom call made me realise i want to end it all",
        ),
        ("my contract is a nightmare, i feel like ending it", "my contract ended, i feel like ending it"),
    ],
)
def test_ending_it_is_ordinary_when_its_sentence_names_the_activity_ended(ordinary: str, crisis: str) -> None:
    """ "Ending it / things" next to the activity or agreement ended (a call, a contract) is level ``concern``, not
    the crisis protocol; "it all", a loss, a sentence apart or a "lol" alone keep it."""
    assessment = detector.assess(ordinary)
    assert not needs_crisis_protocol(assessment)
    assert assessment.level == "concern"
    assert needs_crisis_protocol(detector.assess(crisis))


@pytest.mark.parametrize(
    "text",
    [
        "we fight all the time, i feel like ending it",
        "I feel like ending it, we fight all the time",
        "my girlfriend and i argue every single day, i feel like ending it",
        "our relationship is toxic and i feel like ending things",
        "we keep fighting about money, honestly i feel like ending things",
        "my husband and i fight every day and i feel like ending it",
        "our marriage is falling apart and i feel like ending things",
    ],
)
def test_ending_it_beside_a_relationship_or_a_couples_fight_calls_for_the_protocol(text: str) -> None:
    """Err toward safety: the ``concern`` a discount left reached no coach on a first message, and "it" may be the
    writer's life. Naming whom ("ending it with him, we fight all the time") is no cue (see the look-alikes)."""
    assessment = detector.assess(text)
    assert needs_crisis_protocol(assessment)
    assert "end it all" in assessment.matched


@pytest.mark.parametrize(
    ("ordinary", "crisis"),
    [
        ("i want to end the call too", "I want to end it too"),
        ("i want to end it too, this meeting is dragging", "This meeting is dragging. I want to end it too."),
        ("this project is a mess, i want to end it for good", "This project is a mess. I want to end it for good."),
        ("i want to end my lease as well", "my marriage is ending and I want to end it too"),
        ("i want to end it with him too", "i want to end it as well"),
        ("i want to end this meeting for good", "i really want to end it for good"),
        ("can we end it there for today", "i wanna end it tonight"),
        ("i want to end things with my ex", "i want to end it, too"),
        ("i want to stop for good", "lost my job and honestly i just want to end it once and for all"),
    ],
)
def test_ending_it_with_a_word_that_names_nothing_ended_calls_for_the_protocol(ordinary: str, crisis: str) -> None:
    """ "I want to end it" is a crisis wording; "too", "as well", "for good", "tonight"… after it name nothing ended,
    so they keep it one. What is ended named ("the call", "with him", this meeting in its sentence) is not."""
    assert not needs_crisis_protocol(detector.assess(ordinary))
    assert needs_crisis_protocol(detector.assess(crisis))


@pytest.mark.parametrize(
    ("ordinary", "crisis"),
    [
        ("i feel like ending things with my boyfriend", "i feel like ending things with my life"),
        ("i feel like ending it with my ex", "i feel like ending it with my own life"),
        ("thinking of ending things with my life coach", "thinking of ending things with myself"),
        ("ending things with my landlord, the lease is up", "this call went long, i feel like ending it with my life"),
    ],
)
def test_ending_things_with_my_life_or_myself_calls_for_the_protocol(ordinary: str, crisis: str) -> None:
    assert not needs_crisis_protocol(detector.assess(ordinary))
    assessment = detector.assess(crisis)
    assert assessment.level == "crisis"
    assert "end my life" in assessment.matched


@pytest.mark.parametrize(
    ("said_of_another", "crisis"),
    [
        ("he says there's no point living without her", "no point living without her"),
        ("my sister feels there's no point in living without him", "there's no point in living without him"),
        ("if you feel there's no point living without them, call 988", "no point living without you"),
        ("she can't go on without him", "honestly no point living without him lol"),
        ("they don't want to live without her", "theres no point living without them anymore"),
    ],
)
def test_pointless_living_without_someone_is_the_writers_crisis(said_of_another: str, crisis: str) -> None:
    """The person lived without ("no point living without her") is not whom the sentence is about: it reads
    first-person, as with "my" in it; someone else said to feel so ("he says…") is still discounted."""
    assert not needs_crisis_protocol(detector.assess(said_of_another))
    assessment = detector.assess(crisis)
    assert assessment.level == "crisis"
    assert "no reason to live" in assessment.matched


@pytest.mark.parametrize(
    ("ordinary", "crisis"),
    [
        ("I can't see the point of living without coffee haha", "I can't see the point of living without her"),
        ("i can't see the point of living without wifi lol", "i can't see the point of living without him lol"),
        ("there's no point in living without chocolate tbh", "there's no point in living without my kids"),
        ("i dont want to live without coffee", "i dont want to live without her"),
        ("can't see the point of living without my morning coffee haha", "no point living without hope"),
    ],
)
def test_pointless_living_without_an_everyday_comfort_is_hyperbole(ordinary: str, crisis: str) -> None:
    assert not needs_crisis_protocol(detector.assess(ordinary))
    assert needs_crisis_protocol(detector.assess(crisis))


@pytest.mark.parametrize(
    "text", ["ending things is the only way out", "ending things tonight, i'm done", "there's no point living anymore"]
)
def test_ending_things_as_the_way_out_and_no_point_living_call_for_the_protocol(text: str) -> None:
    assert needs_crisis_protocol(detector.assess(text))


@pytest.mark.parametrize(
    ("negated", "stated"),
    [
        ("je n'ai pas envie d'en finir", "j'ai envie d'en finir"),
        ("je n'ai aucune envie de mourir, j'ai juste besoin de repos", "j'ai de plus en plus envie de mourir"),
        ("j'ai pas envie de mourir, je veux juste aller mieux", "je sais pas j'ai envie de mourir"),
        ("je n'ai plus envie de mourir", "je n'ai plus envie de vivre"),
        ("je n'ai pas envie de vivre à Paris", "je n'ai pas envie de vivre"),
        ("je n'ai pas décidé d'en finir", "j'ai décidé d'en finir"),
        ("ich habe nicht vor, mich umzubringen", "ich habe vor, mich umzubringen"),
        ("ich habe keine Absicht, mich umzubringen", "ich kann nicht mehr, ich will mich umbringen"),
    ],
)
def test_a_negated_wish_to_die_in_french_and_german_is_not_a_crisis(negated: str, stated: str) -> None:
    """As "I don't want to die" is not one: a negator ("pas", "aucune", "plus" before "envie", "nicht vor,") cancels
    the wish; "de plus en plus envie" (more and more), "plus envie de vivre" (no longer wanting to live) state it."""
    assert not needs_crisis_protocol(detector.assess(negated))
    assert needs_crisis_protocol(detector.assess(stated))
