"""Crisis and self-harm risk in a client's message: a fast, curated lexicon detector (no model, no I/O).

Method
------
A message is normalised first (:func:`app.handoff.normalise.normalise`: NFKC, format characters, accents and
look-alike letters, spaced-out letters, leetspeak and slang such as ``k i l l  m y s e l f``, ``k1ll
mys3lf``, ``kms``, and typos in risk words: ``i wnat to kil myslef``, ``im sucidal``), lower-cased,
apostrophes are dropped (``I'm`` → ``im``; the C-SSRS Reddit text is written that way already), a few
idioms that use death words harmlessly are blanked out (``this deadline is killing me``, ``I died laughing``,
``dying to see``, ``to die for``, ``killing it``), and the text is cut into sentences.
Each sentence is matched against :data:`CUES`, a list of named regular expressions with a weight in
``(0, 1]`` and a kind:

- ``explicit``: first-person suicidal or self-harm wording (``kill myself``, ``end my life``, ``I want to
  die``, ``I'm suicidal``, ``cutting myself``, ``overdose``, an overdose taken: ``took all my pills``, a plan:
  ``planning my suicide``, a method wished for: ``want to jump off a bridge``, ``suicide note``).
- ``indirect``: what the C-SSRS and the Columbia Protocol screener ask about without the word suicide —
  passive wish to be dead (``don't want to wake up``, ``wish I was dead``), perceived burdensomeness
  (``better off without me``), hopelessness about living (``no reason to live``, ``can't go on``,
  ``what's the point``), and preparatory behaviour (``say goodbye``, ``giving away my things``, a note).
- ``means``: access to or talk of a method (gun, pills, rope, bridge, train, blade…) in a first-person
  sentence — the C-SSRS "method / plan / preparatory behaviour" items.
- ``distress``: weak risk indicators (hopeless, worthless, hate myself, depressed, empty…) that alone
  never reach ``crisis`` but add up.

Context rules, per sentence (links and markdown link text are dropped first — song titles are not
confessions): for each cue match the nearest person word among the :data:`_SUBJECT_WINDOW` words before it
decides whose state it describes — ``i``/``my``… → the writer; ``you``/``he``/``my brother``/``people``… →
someone else. A cue spoken about someone else, or in a sentence that points to help (``hotline``,
``call 988``, ``please don't``, ``reach out``), or — with no person word before it — in a sentence that
mentions others and not the writer, is multiplied by :data:`SUPPORTIVE_DISCOUNT`; that is how "if you are
thinking about suicide, call…" from a supporter stays low. Cues marked ``first_person`` (``want to die``,
means, distress…) count only when the writer is the subject — ``I want to die`` yes, ``why you want to
die`` and ``my grandmother died`` no; a subjectless fragment (``Sad. Depressed.``) speaks for the writer
when the message has a first-person word elsewhere. A cue marked ``negatable`` with a negator (``not``,
``never``, ``don't``, ``wasn't``…) among the three words before it is multiplied by
:data:`NEGATION_DISCOUNT` (``I would never kill myself``) unless the sentence undoes the negation (``the
only reason I didn't kill myself``, ``haven't … yet``); cues that carry their own negation (``don't want to
wake up``) are not negatable. "Ending it" or "ending things" (not "it all", not "with my life") in a sentence that
names the activity or agreement ended and no loss (:func:`_ends_a_thing`: ``i feel like ending things now lol, this
call went long``) is multiplied by :data:`ENDED_THING_DISCOUNT`: ``concern``, without the crisis reply. A
relationship or a couple's quarrel is not discounted (``we fight all the time, i feel like ending it`` gets the
protocol): "it" may be the writer's life there, and on a first message the ``concern`` left reached no coach;
"ending it with him" names whom, and is no cue. A word after "end it" that adds nothing to what is ended (``i want to
end it too``, ``… as well``, ``… for good``) leaves it a cue, as "ending things with my life / myself" is one.
Pointless living "without" an everyday comfort (:data:`_COMFORT`: ``no point living without coffee``) is
hyperbole; without a person, hope or anything else it stays a crisis, and the person lived without does not make
the sentence someone else's (:data:`_LIVING_WITHOUT`: ``no point living without her``). A mark such as "lol" clears
nothing: people mask (``i want to die lol``).

Scores combine by noisy-or: a message's score is ``1 - Π(1 - w)`` over its cues (each cue counted once, at
its strongest sentence); a user's (:meth:`RiskDetector.assess_user`) is the noisy-or of their messages'
scores. ``level`` is ``crisis`` at ``score ≥ CRISIS_THRESHOLD`` *and* at least one explicit or indirect cue,
``concern`` at ``score ≥ CONCERN_THRESHOLD``, else ``none``. ``concern`` is a deliberately sensitive screen
(one distress cue such as "I feel so alone" reaches it): it is meant to surface a conversation to the
coach; ``crisis`` is the level for the crisis protocol.

Explicit ideation in Spanish, French, German and Portuguese ("quiero matarme", "je veux me suicider", "ich
will mich umbringen", "quero me matar"…) comes from :mod:`app.handoff.languages` as explicit cues named
``"<lang>: …"``, and the weaker classes there ("no tengo razón para vivir", "ich kann nicht mehr"…) at the kinds and
weights of their English counterparts; :attr:`RiskAssessment.language` tells the crisis reply which language the
client wrote in. The learned component and the conversation-level score sit beside this detector in
:mod:`app.handoff.detector`.

Limits: the English context rules (subject, negation, help) do not apply to the other languages; sarcasm,
quotes of others and long-past experiences ("I was suicidal in my teens") are not told apart from the
present; the lexicon is a screen, not a diagnosis.

Sources
-------
- Posner K. et al. (2011), "The Columbia–Suicide Severity Rating Scale", *Am J Psychiatry* 168(12):1266–77,
  and the C-SSRS Screen Version (Columbia Lighthouse Project): wish to be dead, active ideation, method,
  intent, plan, preparatory behaviour, attempt — the structure of the explicit / indirect / means cues.
- Gaur M. et al. (2019), "Knowledge-aware Assessment of Severity of Suicide Risk for Early Intervention",
  *WWW 2019*: the Reddit C-SSRS data set (labels Supportive, Indicator, Ideation, Behavior, Attempt) that
  ``opencoach eval crisis`` scores this detector on (:mod:`app.evals.crisis`).
- Joiner T. (2005), *Why People Die by Suicide*: perceived burdensomeness and thwarted belongingness
  (``better off without me``, ``I'm a burden``).
- Warning-sign lists of the 988 Suicide & Crisis Lifeline and the American Foundation for Suicide
  Prevention: talking about wanting to die, being a burden, having no reason to live, saying goodbye,
  giving away possessions, looking for a means.

The weights, the discounts and the two thresholds were **tuned on** ``../shared/data/crisis/cssrs_dev.csv``
(263 users; target: user recall ≥ 0.95 for Ideation/Behavior/Attempt against Supportive, at the best
precision; there: recall 0.974, precision 0.821, where flagging everyone gives precision 0.729), so the
dev-set figures are optimistic, and no split of that file can make them honest: an independent check on
other C-SSRS users found recall below 0.95. ``opencoach eval crisis --folds 5`` reports the lexicon beside
the learned component, whose every weight and threshold is fitted on training folds only.

Short chat messages are another distribution than those Reddit users: ``bench/crisis_probes.py`` scores 622
messages written to probe the detector (crisis wordings clients use, and everyday coaching messages that trip
its cues). The cues added for them (slang such as "dont wanna live", counts of pills under twenty, a burden said
to someone, last messages, self-harm acts, passive death wishes, idioms with "myself") were written against its
``tune`` half only; on its ``report`` half the protocol reaches 0.511 of the crisis messages (0.172 before) and
0.264 of the everyday ones (0.605 before): adversarial by design, so a map of where it breaks, not a rate.
Typo tolerance (:func:`app.handoff.normalise.normalise`) and the pointless-living and ending-it wordings a tester
sent as first messages ("I don't see the point in living", "i feel like ending it all") raised the ``report``
half to 0.546 of the crisis messages, the everyday ones unchanged (0.264); that figure is not clean: two of the
six messages it gained are the tester's own, and the probe set's "typos" pattern was read whole, both halves,
before the corrections were written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, cast

from app.handoff.languages import CueKind, Language, LanguageCue, detect_language, match_cues
from app.handoff.normalise import normalise

RiskLevel = Literal["none", "concern", "crisis"]

CONCERN_THRESHOLD = 0.19
"""Score from which a message (or user) is flagged ``concern``: just under one distress cue (0.2); tuned on
cssrs_dev for user recall ≥ 0.95 (0.2 itself would give 0.947)."""

CRISIS_THRESHOLD = 0.8
"""Score from which a message with an explicit or indirect cue is ``crisis``."""

SUPPORTIVE_DISCOUNT = 0.25
"""Weight multiplier for a cue said about someone else, or in a sentence pointing to help."""

NEGATION_DISCOUNT = 0.3
"""Weight multiplier for a negatable cue with a negator in the three words before it."""

ENDED_THING_DISCOUNT = 0.3
"""Weight multiplier for "ending it" / "ending things" in a sentence that names the activity or agreement ended
(:func:`_ends_a_thing`: a call, a contract; not a relationship): an "end it all" cue then scores 0.225, level
``concern``, not the crisis protocol."""

EXPLICIT_WEIGHT = 0.7
"""An explicit cue of at least this weight, found undiscounted, makes an assessment ``explicit`` (the crisis alert's
"suicidal intent or self-harm stated")."""

_FP = r"(?:i|im|ive|id|ill|me|my|myself|mine)"
_FIRST_PERSON = re.compile(rf"\b{_FP}\b")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_OTHER_WORDS = _words(
    "you your youre yourself youve youll youd u he hes she shes him her his hers they theyre theyve them "
    "someone somebody people person friend friends father mother dad mom mum brother sister son daughter "
    "husband wife boyfriend girlfriend partner grandmother grandfather grandma grandpa uncle aunt cousin "
    "child children kid kids baby teen teenager student students patient colleague coworker boss"
)
_FIRST_WORDS = _words("i im ive id ill me my myself mine")
_OTHER_PERSON = re.compile(
    r"\b(?:you|your|youre|yourself|youve|youll|youd|u|he|hes|she|shes|him|her|his|hers|they|theyre|them)\b"
)
_LIVING_WITHOUT = re.compile(
    r"\b(?:live|living|life|alive|exist|existing|go on|going on|carry on|carrying on) without (?:you|u|her|him|them)\b"
)
"""Living "without" someone: the person named there is whom the writer lives without ("no point living without her",
"cant go on without him"), not whom the sentence is about."""
_SUBJECT_WINDOW = 8
"""Words before a cue searched for its nearest person word (``why you want to die`` → someone else)."""
_HELP = re.compile(
    r"\b(?:hotline|lifeline|helpline|crisis (?:line|text|center)|call 988|988|1-?800|samaritans|"
    r"please (?:dont|do not)|reach out|talk to (?:someone|a professional|a therapist))\b"
)
_NEGATION_CANCEL = re.compile(r"\b(?:yet|only reason|almost|nearly|barely|until|cant stop|couldnt stop)\b")
_NEGATORS = _words(
    "not never no dont didnt doesnt wont wouldnt cant couldnt nor nothing arent isnt wasnt werent havent hasnt"
)
_IDIOMS = re.compile(
    r"\b(?:(?:is|was|are|were|its|it's|thats) killing me|killing it|killed it|kill (?:for|time)|"
    r"(?:died|dying|die) (?:of |from )?laugh(?:ing|ter)?|dying to \w+|to die for|dead (?:tired|serious|wrong|end)|"
    r"drop dead gorgeous|guns n roses|(?:my|the) (?:phone|battery|laptop|car) (?:died|is dead|is dying)|"
    r"cut (?:the|my) (?:hair|nails|losses)|cut (?:myself|me) some slack|burn(?:ing|ed|t)? (?:myself|me) out|"
    r"(?:drown|drowning|poison|poisoning) myself (?:in|with) \w+|shoot(?:ing)? myself (?:in the foot|a \w+)|"
    r"(?:stab|stabbing) myself in the \w+|(?:killing|killed) myself (?:at|laughing|with laughter)|"
    r"(?:cut|burned|burnt|hurt) myself (?:shaving|chopping|cooking|skiing|running|by accident|accidentally|"
    r"on (?:a|the) \w+|at (?:the gym|work|football|practice))|"
    r"(?:starving|hurting) myself (?:of|by not|until dinner)|die (?:my|her|his|their) hair|hill (?:i|to) \w+ to die on|"
    r"(?:take|taking|took) (?:my|my own) life (?:back|to the next level|into my own hands))\b"
)
_SENTENCES = re.compile(r"[.!?;\n]+|\|\|")


@dataclass(frozen=True)
class Cue:
    """One named pattern: ``weight`` in (0, 1]; ``first_person``: count only in a first-person sentence;
    ``negatable``: discount when a negator precedes it; ``about_writer``: the pattern itself names the writer
    ("better off without me"), so a person word before it is whom it is said to ("you'd all be…", "my wife would
    be…"), not whom it is about, and does not discount it."""

    name: str
    pattern: re.Pattern[str]
    weight: float
    kind: CueKind
    first_person: bool = False
    negatable: bool = True
    about_writer: bool = False


def _cue(
    name: str,
    *alternatives: str,
    weight: float,
    kind: CueKind,
    first_person: bool = False,
    negatable: bool = True,
    about_writer: bool = False,
) -> Cue:
    """A cue whose pattern matches any of ``alternatives`` (regular expressions on normalised text)."""
    pattern = re.compile("|".join(f"(?:{regex})" for regex in alternatives))
    return Cue(name, pattern, weight, kind, first_person, negatable, about_writer)


_SELF = r"(?:my ?self|my own self)"
_WITH_ONESELF = rf"with (?:my (?:own )?life\b(?! (?:coach|insurance|partner|savings|story)\b)|{_SELF}\b)"
"""What "ending it / things" is done with when it is the writer's life: "ending things with my life", "… with
myself" (not "with him", "with my ex", "with my life coach": someone named)."""
_COMFORT = (
    r"(?:(?:a|an|the|my|some|good|decent|proper|real|any|morning|daily|fresh|hot|iced|strong|fast) )*"
    r"(?:coffee|tea|caffeine|espresso|lattes?|wifi|wi fi|internet|netflix|music|chocolate|pizza|sugar|cheese|snacks|"
    r"desserts?|ice cream|phone|air ?con|air conditioning|sunshine|weekends|naps?|memes|tiktok|spotify)\b"
)
"""An everyday comfort, as in the hyperbole "no point living without coffee": a pointless-living wording followed by
"without" and one of these is not one (without her, my kids, hope, a future… it still is)."""
_LIVING = (
    r"(?:live|living|being alive|staying alive|going on|carrying on|existing|life)"
    rf"(?= *(?:$|,|anymore|any more|like this|at all|if|when|tbh|honestly|now|without(?! {_COMFORT})|some days|"
    r"most days)\b)"
)
"""Living, as the object of a pointless-living wording, when nothing follows that makes it a way of living ("the
point of living well", "… of living in the city", "… without coffee": :data:`_COMFORT`)."""
CUES: tuple[Cue, ...] = (
    # explicit — C-SSRS active ideation, behaviour, attempt
    _cue(
        "kill myself",
        rf"\b(?:kill|killing|killed|off|offing|offed|end|ending|hang|hanging|shoot|shooting)"
        rf" {_SELF}\b",
        rf"\b(?:drown|drowning|poison|poisoning) {_SELF}\b",
        weight=0.9,
        kind="explicit",
    ),
    _cue(
        "suicidal (self)",
        r"\b(?:im|i am|i feel|i felt|feeling|i was|ive been|been|got|get|getting|became|am|having|have|had) "
        r"(?:(?!not\b|never\b|no\b)\w+ ){0,2}suicidal\b",
        r"\bsuicid(?:al|e) (?:thoughts|urges|feelings|ideation) (?:are |r )?(?:back|again)\b",
        r"\bsuicide (?:is )?on my mind\b",
        weight=0.9,
        kind="explicit",
    ),
    _cue("suicidal", r"\bsuicidal\b", weight=0.45, kind="explicit"),
    _cue("suicide", r"\bsuicide\b", weight=0.1, kind="explicit"),
    _cue(
        "plan",
        r"\bplan(?:ning|ned)? (?:out )?(?:my (?:own )?)?(?:suicide|death)\b",
        r"\bmy (?:own )?suicide\b(?! (?:prevention|awareness|hotline|lifeline|training))",
        r"\bplan (?:is |was )?(?:to )?(?:overdose|od|(?:hang|shoot|drown|cut) myself|slit my \w+|end it(?: all)?)\b",
        weight=0.8,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "suicide intent",
        r"\b(?:want|wanna|going|gonna|plan|planning|ready|decided|thinking about|think about|considering|"
        r"contemplating|cant stop thinking about) (?:to )?(?:commit(?:ting)? )?suicide\b",
        weight=0.8,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "commit suicide (self)",
        r"\b(?:commit|committed|committing|attempt|attempted|attempting|consider|considering|contemplat\w*) suicide\b",
        weight=0.3,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "want to die",
        r"\b(?:want|wanted|wanting|wanna|wish|wishing|ready|going|deserve|longing|long|desire|need) "
        r"(?:to |too )?(?:just )?(?:die|be dead|not exist|not be alive|stop existing|cease to exist)\b",
        weight=0.85,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "end my life",
        r"\b(?:end|ending|take|taking|took|ended) (?:my|my own) life\b",
        rf"\b(?:end|ending|ended) (?:it|things|it all|everything) {_WITH_ONESELF}",
        weight=0.9,
        kind="explicit",
    ),
    _cue(
        "end it all",
        r"\bend (?:it all|everything|things)\b(?! with)",
        r"\bending (?:it all|everything)\b(?! (?:with|on|at|by|for|in)\b)",
        r"\b(?:feel|feels|felt|feeling) like (?:just )?ending (?:it|things)\b"
        r"(?! (?:with|on|at|by|for|in|early|off|there|here)\b)",
        r"\bending (?:it|things)(?: all)? (?:is|seems|feels like|would be) (?:the |my )?"
        r"(?:only|best|easiest|answer|solution|way out)\b",
        weight=0.75,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "self-harm",
        r"(?<!clean from )(?<!free from )(?<!clean of )\bself[- ]?(?:harm\w*|injur\w*|mutilat\w*)\b",
        weight=0.5,
        kind="explicit",
    ),
    _cue(
        "hurt myself",
        rf"\b(?:cut|cutting|cuts|burn|burning|hurt|hurting|harm|harming|stab|stabbing|starve|starving) {_SELF}\b",
        weight=0.8,
        kind="explicit",
    ),
    _cue(
        "cutting",
        r"\b(?:cutting|cut|slit|slitting|sliced|slicing|carved|carving) (?:again\b(?!,? (?:down|carbs|calories|sugar))|"
        r"my (?:wrists?|arms?|thighs?|legs?|skin|stomach)\b(?! workouts?| day)|deep(?:er)? (?:enough|tonight))",
        r"\b(?:burned|burnt|hit|punched|scratched|bit|hurt) (?:\w+ ){0,6}on purpose\b",
        r"\b(?:did|done|doing) (?:sh|s ?/ ?h)\b|\bs ?/ ?h again\b",
        r"\brelapsed?\b(?! (?:on|after|with|into|in|and)\b)",
        weight=0.6,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "overdose",
        r"\b(?:overdos\w*|overdoes|od on|odd on)\b",
        r"\b(?:to|gonna|wanna|will|ill|just|going to) od\b",
        weight=0.7,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "took all the pills",
        r"\b(?:took|taken|take|taking|swallowed|swallowing|downed|ate) (?:all (?:of )?(?:my|the|those|these)|"
        r"(?:a|the) (?:whole|entire|full) (?:bottle|box|pack|packet)|(?:a )?bottle of|(?:a )?handful of|every|"
        r"(?:way )?too many|(?:a lot|lots|loads|heaps|a bunch|a shit ton|a ton|packs|boxes|bottles) of|"
        r"(?:like |about |over )?(?:[5-9]|[1-9]\d|\d{3}|ten|twenty|thirty|forty|fifty|a hundred)) (?:\w+ ){0,3}"
        r"(?:pills?|tablets?|capsules?|meds|medication|medicine|tylenol|paracetamol|ibuprofen|advil|aspirin|"
        r"acetaminophen|benadryl|xanax|oxy\w*|sleeping \w+|antidepressants?|painkillers?|insulin|pill)\b",
        weight=0.8,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "finish the job",
        r"\bfinish the job\b",
        r"\btake (?:them all|all of them|the rest|more of them)\b",
        r"\b(?:gonna|going to) take more\b",
        weight=0.6,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "attempt",
        r"\b(?:my|last|first|second|third|previous|failed|suicide) attempts?\b(?! (?:at|to|on)\b)",
        r"\bmade an attempt\b(?! (?:at|to|on)\b)",
        r"\btried to (?:die|end it|kill myself|overdose)\b|\btried to do it\b(?! (?:myself|on my own|alone))",
        weight=0.6,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "suicide note",
        r"\b(?:suicide|goodbye) (?:note|letter)s?\b",
        r"\bwr(?:ote|ite|iting) (?:a|my) (?:last |final |goodbye )?note(?= *$| for (?:my|everyone|when)|"
        r" to (?:my )?(?:family|kids|children|parents|mom|mum|dad|wife|husband|everyone))",
        r"\bwr(?:ote|itten|iting) (?:goodbye )?letters to (?:everyone|all|my (?:kids|children|family|wife|husband|"
        r"parents|mom|mum|dad|sister|brother|friends))\b",
        weight=0.8,
        kind="explicit",
    ),
    # indirect — wish to be dead, burdensomeness, hopelessness, preparatory behaviour
    _cue(
        "wish I was dead",
        r"\bwish (?:i|id) (?:was|were|could be|would) (?:dead|die|gone|never born)",
        r"\bwish (?:i|id) (?:had )?never (?:been born|existed|woken up)\b",
        r"\bwish (?:i|id) (?:wasnt|werent) (?:alive|here|born|around)\b",
        r"\bwish (?:i|id) could (?:just )?(?:disappear|not exist|stop existing|vanish|not wake up)\b",
        r"\b(?:id|i would) rather be dead\b(?! than)|\b(?:just )?let me die\b|\bi should (?:just )?die\b(?! \w+ hair)",
        r"\bhope (?:i|to) (?:get hit by a (?:bus|car|truck|train)|die\b)|\bhope the plane crashes\b",
        r"\b(?:wouldnt|would not) (?:care|mind) if i died\b|\b(?:wouldnt|would not) mind dying\b",
        r"\bpray(?:ing)? (?:i|to) (?:dont|never) wake up\b",
        r"\beasier (?:to|if i) (?:just )?(?:not be alive|die|be dead|was dead|wasnt here)\b",
        weight=0.85,
        kind="indirect",
        negatable=False,
    ),
    _cue(
        "better off without me",
        r"\bbetter off (?:without me(?! (?:on|for|in|at|micromanaging|there)\b)|dead|"
        r"if i (?:was|were|wasnt|werent) (?:gone|dead|here|around))\b",
        r"\bhappier if i (?:was|were|wasnt|werent) (?:gone|dead|here|around)\b",
        r"\bworld (?:would be|is) better without me\b",
        weight=0.8,
        kind="indirect",
        negatable=False,
        about_writer=True,
    ),
    _cue("burden", r"\b(?:im|i am|being|just) a burden\b", weight=0.45, kind="indirect"),
    _cue(
        "no reason to live",
        r"\b(?:no|nothing|any) (?:reason|point|purpose) (?:to|in|of) "
        rf"(?:live|living|life|go(?:ing)? on|being alive|stay(?:ing)? alive)\b(?! without {_COMFORT})",
        rf"\bno point {_LIVING}",
        r"\bnothing (?:left )?to live for\b",
        r"\bnot worth living\b|\b(?:life|living|it all) (?:is |isnt )?(?:not )?worth it(?: anymore)?\b(?<!is worth it)",
        r"\blife (?:is|isnt) (?:not )?worth living\b",
        rf"\b(?:dont|do not|cant|no longer|never) (?:really |even )?(?:see|find) (?:the |a |any |much )?"
        rf"(?:point|reason|purpose|sense) (?:in|of|to) {_LIVING}",
        r"\bwhat(?:s| is) the point (?:in|of) (?:living|being alive|going on|carrying on)"
        r"(?= *(?:$|,|anymore|any more|like this|at all)\b)",
        weight=0.8,
        kind="indirect",
        negatable=False,
    ),
    _cue(
        "cant go on",
        r"\bcant (?:go on|keep going|do this anymore|take (?:it|this) anymore|live like this|keep living)\b",
        r"\bcant handle (?:it|this|life) anymore\b",
        weight=0.55,
        kind="indirect",
        negatable=False,
    ),
    _cue(
        "dont want to wake up",
        r"\b(?:dont|do not|never|no longer) (?:really )?(?:want to|wanna) (?:wake up|be alive|live|be here|exist)"
        r"(?! (?:in(?! this (?:world|life|body))|at|near|with|on|there|for|late|early|before)\b)"
        rf"(?! without {_COMFORT})(?: anymore)?\b",
        r"\bhope (?:i|to) (?:dont|never) wake up\b",
        r"\b(?:sleep|go to sleep) (?:and|forever and) never wake up\b",
        weight=0.8,
        kind="indirect",
        negatable=False,
    ),
    _cue(
        "say goodbye",
        r"\b(?:say|said|saying) (?:my )?goodbyes?\b"
        r"(?! to (?:my (?:mentor|team|colleagues?|coworkers?|old|boss|job|class)|the|this|that|junk)\b)",
        r"\bgoodbye (?:everyone|world|all)\b",
        r"\bthis is goodbye\b(?! to)",
        r"\b(?:this is|its) my (?:last|final) (?:message|text|goodbye)\b",
        r"\bby the time (?:you|u) (?:read|see) this\b",
        r"\b(?:wont|will not) be (?:here|around|alive) (?:tomorrow|anymore|much longer|by)\b",
        r"\btell (?:my \w+|them|everyone) (?:that )?(?:i love (?:them|her|him|you)|im sorry)\b",
        weight=0.5,
        kind="indirect",
        first_person=True,
    ),
    _cue(
        "giving away my things",
        r"\bg(?:ive|iving|iven|ave) away (?:all )?(?:my|everything)\b(?! old)",
        weight=0.6,
        kind="indirect",
    ),
    _cue(
        "whats the point",
        r"\bwhats the point\b",
        r"\bno point (?:anymore|in anything|in trying)\b",
        weight=0.35,
        kind="indirect",
        negatable=False,
    ),
    _cue(
        "tired of living",
        r"\b(?:tired|sick|done|exhausted) (?:of|with) (?:living|life|being alive|existing|everything)\b"
        r"(?! (?:at|about|in|this|that)\b)",
        r"\bready to go *$",
        r"\bwant (?:it all )?to (?:end|stop|be over)(?: it)?(?= *$| now| already| forever| all)",
        # "end it" with a word that adds nothing to what is ended: "i want to end it too", "… as well", "… for good"
        r"\b(?:want|wanna|ready|need) (?:to )?(?:just )?end it(?= *$|,? (?:too|as well|also)\b|"
        r" (?:for good|once and for all|for real|tonight|tn|today|tomorrow|rn|right now|tbh|honestly|lol)\b)",
        r"\bi want out\b(?! of (?!life|this life|this world))",
        r"\bgive up on (?:life|living|everything)\b",
        weight=0.55,
        kind="indirect",
        first_person=True,
    ),
    _cue(
        "thinking about it",
        r"\b(?:close to|about to|going to|gonna|decided to|plan to|planning to|imma|finna|will|ill|just) "
        r"(?:just )?(?:go through with it|end it)\b(?! with)",
        r"\bending (?:it|things) (?:tonight|tn|today|tomorrow|now|this weekend)\b",
        r"\b(?:close to|about to|going to|gonna|decided to|plan to|planning to) do it (?:tonight|tn|now)\b",
        r"\bthink(?:ing)? about (?:death|dying|ending it|it again)\b",
        r"\bthoughts of (?:death|dying|ending)\b",
        weight=0.55,
        kind="indirect",
        first_person=True,
    ),
    _cue(
        "death wish",
        r"\b(?:death|dying) (?:is|would be|seems) (?:the |as )?"
        r"(?:only|best|answer|way|solution|close|welcome|easier|a relief)\b",
        r"\bwant(?:ed)? death\b",
        r"\bwelcome death\b",
        r"\bdisappear forever\b",
        r"\bnot (?:be|being) here anymore\b",
        r"\bnot (?:wake|waking) up\b(?! (?:at|before|until|early|late|on time|in time))",
        r"\bnever wake up\b(?! (?:at|before|until|early|late|on time|in time|when))",
        weight=0.6,
        kind="indirect",
        first_person=True,
    ),
    _cue(
        "no way out",
        r"\bno way out\b",
        r"\bonly (?:way|option|solution) (?:out|left)\b",
        r"\bonly way (?:i can|to)\b",
        r"\bno future\b",
        weight=0.45,
        kind="indirect",
        first_person=True,
    ),
    # means — method and access (first person only)
    _cue(
        "gun",
        r"(?<!massage )(?<!glue )(?<!nerf )(?<!water )(?<!heat )(?<!staple )"
        r"\b(?:gun|guns|pistol|revolver|rifle|shotgun|firearm|handgun|bullets?)\b(?! points?| journal| list)",
        r"(?:\b|\.)357\b",
        r"\bpull(?:ed|ing)? the trigger\b",
        weight=0.5,
        kind="means",
        first_person=True,
    ),
    _cue(
        "pills",
        r"\b(?:pills?|bottle of|oxy\w*|xanax|xanex|hydros?|tylenol|paracetamol|opiates?|heroin)\b",
        weight=0.45,
        kind="means",
        first_person=True,
    ),
    _cue("rope", r"\b(?:rope|noose|belt)\b", weight=0.35, kind="means", first_person=True),
    _cue(
        "jump to die",
        r"\b(?:want|wanted|wanna|going|gonna|ready|about|plan|planning|thinking about|think about|will|ill|imma|finna)"
        r" (?:to )?"
        r"(?:just )?(?:jump|jumping|throw(?:ing)? myself|step(?:ping)?) (?:off|from|in front of) "
        r"(?:a |the |this |that )?"
        r"(?:bridge|building|roof|rooftop|cliff|ledge|balcony|tower|window|overpass|train|subway|bus|truck|car)\b",
        r"\b(?:gonna|going to|about to|ready to|want to|will|ill) (?:just )?jump *$",
        r"\b(?:want|wanna|gonna|going|thinking of|thinking about) (?:to )?(?:rope|roping)\b",
        r"\b(?:want|wanna) to hang *$",
        weight=0.7,
        kind="explicit",
        first_person=True,
    ),
    _cue(
        "jump",
        r"\b(?:bridge|ledge|jump(?:ing)? off|jump(?:ing)? in front|rooftop|cliff|train tracks|railway)\b",
        weight=0.4,
        kind="means",
        first_person=True,
    ),
    _cue("blade", r"\b(?:razor|blades?|knife)\b", weight=0.35, kind="means", first_person=True),
    # distress — weak indicators
    _cue(
        "hopeless",
        r"\b(?:hopeless|worthless|useless|helpless|empty inside|numb|no hope|lost all hope|broken)\b",
        r"\b(?:triggers|nightmares|through the night|give up|giving up|gave up)\b",
        weight=0.2,
        kind="distress",
        first_person=True,
    ),
    _cue(
        "hate myself",
        rf"\b(?:hate|despise|loathe) {_SELF}\b",
        r"\bi hate my life\b",
        r"\bim (?:a )?(?:failure|disappointment|fuck ?up|mess|broken)\b",
        weight=0.3,
        kind="distress",
    ),
    _cue(
        "depressed",
        r"\b(?:depress\w*|anxiety|ptsd|bipolar|therapist|psychiatrist|meds|medication|hospital\w*|psych ward)\b",
        weight=0.2,
        kind="distress",
        first_person=True,
    ),
    _cue(
        "alone",
        r"\b(?:alone|lonely|isolated|no friends|no one cares|nobody cares|"
        r"(?:no one|nobody) (?:would |will )?(?:even )?miss me)\b",
        weight=0.2,
        kind="distress",
        first_person=True,
    ),
    _cue("death", r"\b(?:die|dying|death|dead|funeral)\b", weight=0.12, kind="distress", first_person=True),
)
"""The curated cue list, in order; names are what :attr:`RiskAssessment.matched` reports."""


@dataclass(frozen=True)
class RiskAssessment:
    """The risk of one message, user or conversation.

    ``level`` none/concern/crisis; ``score`` in [0, 1] (the lexicon's noisy-or score); ``matched`` the names
    of the cues that fired (strongest first; a learned flag adds ``"learned"``, conversation escalation
    ``"conversation"``); ``explicit`` whether an explicit cue fired at full weight; ``language`` the
    message's language (``en es fr de pt``, :func:`app.handoff.languages.detect_language`, or the language
    of a matched non-English cue) for the crisis reply's resources; ``learned`` the learned component's
    probability (:mod:`app.handoff.crisis_model`) or ``None`` when it did not run.
    """

    level: RiskLevel
    score: float
    matched: list[str] = field(default_factory=list)
    explicit: bool = False
    language: Language = "en"
    learned: float | None = None


_LINKS = re.compile(r"\[[^\]]*\]\([^)]*\)|https?://\S+")


def _normalise(unlinked: str) -> str:
    """The English cues' form of a :func:`~app.handoff.normalise.normalise` d text with its links out
    (:data:`_LINKS`): apostrophes dropped ("don't" → "dont"), "can not" → "cant", idioms out."""
    text = unlinked.replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"\bcan ?not\b", "cant", re.sub(r"['`]", "", text))
    return _IDIOMS.sub(" ", text)


def _names_others(text: str) -> bool:
    """Whether ``text`` names someone other than the writer (:data:`_OTHER_PERSON`), leaving out whom the writer
    would live without (:data:`_LIVING_WITHOUT`): "no point living without her" speaks of the writer."""
    return bool(_OTHER_PERSON.search(_LIVING_WITHOUT.sub(" ", text)))


def _subject(sentence: str, start: int) -> str | None:
    """``self``, ``other`` or None: the nearest person word in the few words before a cue."""
    for word in reversed(re.findall(r"[a-z]+", sentence[:start])[-_SUBJECT_WINDOW:]):
        if word in _FIRST_WORDS:
            return "self"
        if word in _OTHER_WORDS:
            return "other"
    return None


_THIRD_PERSON_VERBS = _words("is wants needs has seems keeps gets its thats")
"""A verb of a third-person subject right before a first-person cue ("the battery is going to die"): in a
message naming no one, the cue is then said of a thing, not by the writer. Not "was": a writer who drops the
"I" writes "was ready to die last night"."""


def _said_of_a_thing(sentence: str, match: re.Match[str]) -> bool:
    """Whether the word right before ``match`` is a third-person verb (:data:`_THIRD_PERSON_VERBS`: "the
    battery *is* going to die")."""
    return any(word in _THIRD_PERSON_VERBS for word in re.findall(r"[a-z]+", sentence[: match.start()])[-1:])


_ENDED_THING = re.compile(
    r"\b(?:this|the|that|our|my|a) (?:\w+ )?(?:call|meeting|session|chat|conversation|zoom|stream|game|match|shift|"
    r"lecture|class|lesson|lease|contract|subscription|project|streak|trip|podcast|series|show)s?\b"
)
"""What a client ends in an ordinary "ending it / things": a named activity or agreement ("this call went long").
Not a relationship nor a couple's quarrel ("we fight all the time, i feel like ending it"): "it" may then be the
writer's life, and the ``concern`` the discount leaves does not reach the coach on a first message, so those keep
the crisis protocol."""
_LOSS = re.compile(
    r"\b(?:left me|leaving me|broke up|dumped|cheated|(?:is|its|was) over|ended|divorc\w*|died|passed away|lost)\b"
)
"""A loss in the same sentence ("my contract ended, i feel like ending it"): then "it" may be the writer's life."""
_ENDS_IT = re.compile(rf"\bend(?:ing)? (?:it|things)\b(?! all\b| {_WITH_ONESELF})")


def _ends_a_thing(pattern: re.Pattern[str], sentence: str) -> bool:
    """Whether every match of ``pattern`` in ``sentence`` ends "it" or "things" (not "it all", "everything", "my
    life", "things with my life") in a sentence that names what is ended (:data:`_ENDED_THING`) and no loss
    (:data:`_LOSS`): "i feel like ending things now, this call went long". A sentence apart does not count:
    "This call went long. I feel like ending it." keeps the crisis protocol."""
    if _ENDED_THING.search(sentence) is None or _LOSS.search(sentence) is not None:
        return False
    for match in pattern.finditer(sentence):
        ending = _ENDS_IT.search(sentence, match.start())  # (read on past the match: "feel like ending it| all")
        if ending is None or ending.start() >= match.end():
            return False
    return True


def _negated(sentence: str, start: int) -> bool:
    if _NEGATION_CANCEL.search(sentence):
        return False
    before = re.findall(r"[a-z]+", sentence[max(0, start - 40) : start])[-3:]
    return any(word in _NEGATORS for word in before)


class RiskDetector:
    """Scores client messages for suicide / self-harm risk with :data:`CUES` (see the module docstring).

    Pure and thread-safe: a detector holds only its cue list and thresholds; ~0.1 ms per short message.
    """

    def __init__(
        self,
        cues: Iterable[Cue] = CUES,
        concern_threshold: float = CONCERN_THRESHOLD,
        crisis_threshold: float = CRISIS_THRESHOLD,
    ) -> None:
        self.cues = tuple(cues)
        self.concern_threshold = concern_threshold
        self.crisis_threshold = crisis_threshold

    def _weights(
        self, normalised: str, language_cues: Iterable[LanguageCue]
    ) -> tuple[dict[str, float], dict[str, CueKind], bool]:
        """Per cue name its strongest weight over the sentences of a :func:`_normalise` d text, the kinds, and
        ``explicit``. The non-English cues found (``language_cues``: :func:`app.handoff.languages.match_cues`)
        count at their own kind and weight, explicit as an English cue is (:data:`EXPLICIT_WEIGHT`)."""
        best: dict[str, float] = {}
        kinds: dict[str, CueKind] = {}
        explicit = False
        for language_cue in language_cues:
            best[language_cue.name] = language_cue.weight
            kinds[language_cue.name] = language_cue.kind
            explicit = explicit or (language_cue.kind == "explicit" and language_cue.weight >= EXPLICIT_WEIGHT)
        speaker_self = bool(_FIRST_PERSON.search(normalised))
        # a message naming no one at all ("just want to die") is the writer's: a client writes to their coach
        speaker_unnamed = not speaker_self and not _names_others(normalised)
        for sentence in _SENTENCES.split(normalised):
            if not sentence.strip():
                continue
            other = _names_others(sentence)
            # A subjectless fragment ("Sad. Depressed.") speaks for the writer when the message does.
            first = bool(_FIRST_PERSON.search(sentence)) or ((speaker_self or speaker_unnamed) and not other)
            helping = bool(_HELP.search(sentence))
            for cue in self.cues:
                match = cue.pattern.search(sentence)
                if match is None:
                    continue
                subject = _subject(sentence, match.start())
                if cue.first_person and subject != "self" and (subject == "other" or not first):
                    continue
                if cue.first_person and subject is None and speaker_unnamed and _said_of_a_thing(sentence, match):
                    continue
                weight = cue.weight
                # a help phrase marks a supporter's sentence ("if you want to die, call 988"), not the writer's
                # own statement in it ("please don't tell my mum, but I want to kill myself")
                said_of_other = subject == "other" or (subject is None and other and not first)
                if (helping and subject != "self") or (said_of_other and not cue.about_writer):
                    weight *= SUPPORTIVE_DISCOUNT
                if cue.negatable and _negated(sentence, match.start()):
                    weight *= NEGATION_DISCOUNT
                if _ends_a_thing(cue.pattern, sentence):
                    weight *= ENDED_THING_DISCOUNT
                if weight > best.get(cue.name, 0.0):
                    best[cue.name] = weight
                    kinds[cue.name] = cue.kind
                if cue.kind == "explicit" and weight == cue.weight and cue.weight >= EXPLICIT_WEIGHT:
                    explicit = True
        return best, kinds, explicit

    def _level(self, score: float, kinds: Iterable[CueKind]) -> RiskLevel:
        strong = any(kind in ("explicit", "indirect") for kind in kinds)
        if score >= self.crisis_threshold and strong:
            return "crisis"
        if score >= self.concern_threshold:
            return "concern"
        return "none"

    def assess(self, text: str) -> RiskAssessment:
        """The risk of one client message (any length; empty → level ``none``, score 0), with its language:
        that of a matched non-English cue, else :func:`app.handoff.languages.detect_language`."""
        unlinked = _LINKS.sub(" ", normalise(text))
        normalised = _normalise(unlinked)
        # the non-English cues read elisions as two words ("j'aimerais" → "j aimerais"), which _normalise, made for
        # English contractions, glues ("jaimerais")
        best, kinds, explicit = self._weights(normalised, match_cues(unlinked))
        score = 1.0 - math.prod(1.0 - w for w in best.values())
        matched = sorted(best, key=lambda name: -best[name])
        language = next((name[:2] for name in matched if name[2:4] == ": "), None) or detect_language(normalised)
        return RiskAssessment(
            self._level(score, kinds.values()), round(score, 4), matched, explicit, cast(Language, language)
        )

    def assess_user(self, posts: Iterable[str]) -> RiskAssessment:
        """The risk of one person from all their messages: noisy-or of the message scores; ``matched`` is the
        union of the cue names (strongest message first), ``explicit`` whether any message had one."""
        assessments = sorted((self.assess(post) for post in posts), key=lambda a: -a.score)
        score = 1.0 - math.prod(1.0 - a.score for a in assessments)
        matched: list[str] = []
        kinds: list[CueKind] = []
        by_name = {cue.name: cue.kind for cue in self.cues}
        for assessment in assessments:
            for name in assessment.matched:
                if name not in matched:
                    matched.append(name)
                    kinds.append(by_name.get(name, "explicit"))
        explicit = any(a.explicit for a in assessments)
        language = assessments[0].language if assessments else "en"
        return RiskAssessment(self._level(score, kinds), round(score, 4), matched, explicit, language)
