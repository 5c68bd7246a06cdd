"""Per-turn handoff signals of one client message: pure, fast functions (no DB, no network, no model).

The chat turn computes these after the crisis screen (:mod:`app.handoff.risk`) and before or after generation,
stores :meth:`TurnSignals.as_dict` on the message metadata, and feeds :class:`TurnSignals` to
:func:`app.handoff.confidence.score_confidence`. Each signal is a plain number, flag or list so that the coach
can see *why* a conversation was handed over.

Signals
-------
- **sentiment** — VADER compound score of the message, in ``[-1, 1]``; VADER's lexicon is English, so a message
  written in another language counts as neutral (:func:`message_sentiment`).
- **sentiment trend** — least-squares slope of the compound over the client's last
  :data:`TREND_WINDOW` messages, per message (:func:`sentiment_trend`).
- **human request** — an explicit ask for a person: the ``/human`` command or wording such as "can I talk to a
  real person", in English, Spanish, French, German or Portuguese (:func:`asks_for_human`).
- **retrieval support** — how well the coach's material covers the question, from the retrieved chunks'
  cosine similarities (:func:`retrieval_support`).
- **topics** — which of the coach's high-stakes / always-escalate topics (free-text settings such as
  "quitting my job", "medication") the message touches (:func:`topic_matches`).
- **repeated question** — similarity of the message to the client's earlier messages: asking again is a
  sign the answers did not help (:func:`repeated_question`).
- **thumbs-down streak** — consecutive thumbs-down on the latest AI replies (:func:`thumbs_down_streak`).
- **venting** — frustration aimed at the AI ("stupid bot", "you're useless") in this message and the client's
  latest ones (:func:`venting`).
- **token confidence** — geometric-mean token probability of the AI reply, when the provider returns
  logprobs (:func:`token_confidence`).

Text handling shared by the lexical signals: lower-case, curly apostrophes straightened and apostrophes
dropped (``I'm`` → ``im``), words are runs of letters and digits, :data:`STOP_WORDS` removed, each word cut
by :func:`stem` (a small suffix stripper, enough to make ``quitting``/``quit``, ``medications``/
``medication``, ``divorced``/``divorce`` meet) after :data:`SYNONYMS` (``meds`` → ``medication``).

Sources
-------
- Hutto C.J. & Gilbert E. (2014), "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social
  Media Text", *ICWSM 2014* — the ``vaderSentiment`` package; compound score normalised to ``[-1, 1]``.
- Reimers N. & Gurevych I. (2019), "Sentence-BERT", *EMNLP 2019* — all-MiniLM-L6-v2, whose cosines
  :func:`retrieval_support` maps.
- Malinin A. & Gales M. (2021), "Uncertainty Estimation in Autoregressive Structured Prediction", *ICLR
  2021*, and Manakul P. et al. (2023), "SelfCheckGPT", *EMNLP 2023* — mean token log-probability of a
  generated answer as a (weak) confidence signal (:func:`token_confidence`).
- OpenAI API reference, Chat Completions ``logprobs`` (``choices[].logprobs.content[].logprob``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from app.core.text import SENTIMENT_CACHE_SIZE, sentiment
from app.handoff.honesty_rules import claim_language, question_language, spelled_language
from app.handoff.human_request import ReportedSpeech, request_language
from app.handoff.languages import Language, detection_text, written_language
from app.handoff.normalise import fold, normalise, one_edit

if TYPE_CHECKING:
    from app.accounts.models import Coach
    from app.handoff.risk import RiskAssessment

TREND_WINDOW = 6
"""Messages (the client's latest, this one included) over which :func:`sentiment_trend` fits its slope."""

TREND_MIN_MESSAGES = 3
"""Fewer messages than this give a trend of ``0.0`` (two points make a slope, but not a trend)."""

REPEAT_THRESHOLD = 0.6
"""Cosine similarity (over stemmed content-word sets) from which a message counts as a repeat. "How do I stop
procrastinating?" vs "I still don't know how to stop procrastinating" is 0.77; two different questions that
share one word ("how do I sleep better" vs "how do I stop procrastinating") are 0.33."""

REPEAT_MIN_WORDS = 3
"""Messages with fewer content words ("ok", "thanks", "yes please") never count as repeats."""

SUPPORT_LOW = 0.15
"""MiniLM cosine at or below which the coach's material is taken not to cover the question (support 0)."""

SUPPORT_HIGH = 0.55
"""MiniLM cosine at or above which the material is taken to cover the question fully (support 1)."""


# --- sentiment ---------------------------------------------------------------------------------------------


def sentiment_trend(compounds: Sequence[float]) -> float:
    """Least-squares slope of the client's sentiment, in compound units per message.

    ``compounds``: VADER compounds of the client's messages, **oldest first**, this message last; only the
    last :data:`TREND_WINDOW` are used. Returns ``0.0`` with fewer than :data:`TREND_MIN_MESSAGES`. Over six
    messages the slope lies in ``[-0.4, 0.4]`` (a straight fall from +1 to -1 is ``-0.4``); negative means
    worsening. Closed form ``Σ(x-x̄)(y-ȳ) / Σ(x-x̄)²`` with ``x = 0..n-1``."""
    ys = [float(c) for c in compounds[-TREND_WINDOW:]]
    n = len(ys)
    if n < TREND_MIN_MESSAGES:
        return 0.0
    x_mean = (n - 1) / 2
    y_mean = math.fsum(ys) / n
    numerator = math.fsum((x - x_mean) * (y - y_mean) for x, y in enumerate(ys))
    denominator = math.fsum((x - x_mean) ** 2 for x in range(n))
    return numerator / denominator


# --- text normalisation ------------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP_WORDS = _words(
    """a an the and or but if so as of to in on at by for from with about into over than then there here
    i im ive id me my myself mine we our ours us you your youre yours he his him she her hers it its itself
    they them their theirs this that these those is am are was were be been being do does did doing done
    have has had having will would shall should can could may might must just really very also too quite
    get got dont doesnt didnt isnt arent wasnt not no some any all up out"""
)
"""Function words dropped before topic matching and repeat detection. Question words (how, what, why) are
kept: they carry a question's intent, so "how do I stop procrastinating" keeps three content words."""

SYNONYMS = {"meds": "medication", "med": "medication", "medicine": "medication", "medicines": "medication"}
"""Word → canonical word, applied before stemming. Deliberately tiny: only colloquial forms of the example
topics that suffix stripping cannot join (``my meds`` ↔ ``medication``)."""

_APOSTROPHES = re.compile(r"['’‘`]")
_WORD = re.compile(r"[a-z0-9]+")
_VOWEL = re.compile(r"[aeiouy]")


def stem(word: str) -> str:
    """A small, deterministic suffix stripper for lower-case English words (not Porter; enough for topic and
    repeat matching): plural ``-ies/-es/-s``, then ``-ing/-ed`` (undoubling a final consonant: ``quitting`` →
    ``quit``), then ``-ation/-ly``, then a final ``-e``. Words of ≤ 3 letters are kept as they are.
    Examples: ``medications``/``medication`` → ``medic``; ``divorced``/``divorcing``/``divorce`` → ``divorc``;
    ``worried``/``worries``/``worrying``/``worry`` → ``worry``."""
    w = word
    if len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith(("sses", "shes", "ches", "xes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if w.endswith("ied") and len(w) > 4:
        w = w[:-3] + "y"
    else:
        for suffix in ("ing", "ed"):
            base = w[: -len(suffix)]
            if w.endswith(suffix) and len(base) >= 3 and _VOWEL.search(base):
                w = base
                if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "lsz":
                    w = w[:-1]
                break
    for suffix in ("ation", "ly"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def content_words(text: str) -> frozenset[str]:
    """The stemmed content words of ``text``: lower-cased, apostrophes dropped, :data:`STOP_WORDS` removed,
    :data:`SYNONYMS` applied, then :func:`stem`. ``"I'm quitting my job!"`` → ``{"quit", "job"}``."""
    words = _WORD.findall(_APOSTROPHES.sub("", text.lower()))
    return frozenset(stem(SYNONYMS.get(w, w)) for w in words if w not in STOP_WORDS)


# --- topics and repeats ------------------------------------------------------------------------------------


def topic_matches(text: str, topics: Sequence[str]) -> list[str]:
    """Which of the coach's ``topics`` (free-text settings: "quitting my job", "medication", "legal") the
    message ``text`` touches, lexically: a topic matches when **all** its stemmed content words
    (:func:`content_words`) occur in the message's, so "I might quit my job" touches "quitting my job" and
    "should I stop my meds?" touches "medication", but "my job is fine" does not touch "quitting my job".
    Returns the matching topics as given, in the given order, without duplicates; a topic with no content
    words (empty, or only stop-words) never matches. No synonyms beyond :data:`SYNONYMS`: "lawyer" does not
    touch "legal" — coaches should list the words their clients use."""
    words = content_words(text)
    matched: list[str] = []
    for topic in topics:
        needed = content_words(topic)
        if needed and needed <= words and topic not in matched:
            matched.append(topic)
    return matched


def coach_topics(coach: Coach, text: str) -> list[str]:
    """The coach's high-stakes and always-escalate topics (in that order, no duplicates) that ``text``
    touches (:func:`topic_matches`): the coach's own labels for what a client message is about."""
    return topic_matches(text, [*coach.high_stakes_topics, *coach.always_escalate_topics])


def _set_cosine(a: frozenset[str], b: frozenset[str]) -> float:
    """Cosine of two binary bag-of-words vectors (Ochiai coefficient): ``|a ∩ b| / √(|a|·|b|)``."""
    if not a or not b:
        return 0.0
    return len(a & b) / math.sqrt(len(a) * len(b))


def repeated_question(text: str, earlier: Sequence[str]) -> float:
    """How much ``text`` repeats one of the client's ``earlier`` messages in this conversation, in ``[0, 1]``.

    Similarity is the cosine of the stemmed content-word sets (:func:`content_words`; Ochiai coefficient).
    Returns the highest similarity when it reaches :data:`REPEAT_THRESHOLD`, else ``0.0``. Messages (this one
    or earlier ones) with fewer than :data:`REPEAT_MIN_WORDS` content words never count. Lexical only: a
    paraphrase with other words ("I can't get going in the morning" vs "how do I start the day") is missed."""
    words = content_words(text)
    if len(words) < REPEAT_MIN_WORDS:
        return 0.0
    best = 0.0
    for message in earlier:
        other = content_words(message)
        if len(other) >= REPEAT_MIN_WORDS:
            best = max(best, _set_cosine(words, other))
    return best if best >= REPEAT_THRESHOLD else 0.0


# --- explicit request for a human --------------------------------------------------------------------------

_COMMAND = re.compile(r"^\s*/human(?:\s|$)", re.IGNORECASE)
_CLAUSES = re.compile(r"[,.!?¿¡;:\n()\"]+|\s[-–—]\s")
_NEGATORS = _words("dont not no never doesnt didnt wont wouldnt without nobody")
_NEGATION_WINDOW = 3
"""Words before a match (in the same clause) searched for a negator: "no, I **don't** need a human"."""

_ADJ = r"(?:(?:real|actual|live|human|flesh and blood) )?"
_TARGET = (
    rf"(?:an? |the |some )?{_ADJ}(?:human(?: being| agent| coach)?|person|agent|operator|someone real|somebody real)\b"
)
_PERSON = rf"(?:an? |the |some )?{_ADJ}(?:human(?: being| coach)?|person|someone real|somebody real)\b"
"""A human, without "agent"/"operator" (so "I need an agent for my book" is not a request)."""
_REAL_PERSON = (
    r"(?:an? |the |some )?(?:(?:real|actual|live|flesh and blood) (?:human(?: being)?|person)|human(?: being)?|"
    r"someone real|somebody real)\b"
)
"""A human marked as one ("a real person", "a human"): "can a person lose weight…" is no request."""
_COACH = r"(?:my|the|your|our) (?:real |actual |human )?coach\b"
_FRAME = (
    r"(?:can i|could i|may i|let me|want to|wanna|need to|like to|rather|prefer(?: to)?|is there|please|pls|"
    r"how do i|how can i|where can i|i must)"
)
_TALK = r"(?:talk|speak|chat|talking|speaking|chatting)(?: (?:to|with))?"
_NOT_A_NAME = (
    r"(?!(?:him|her|them|it|you|people|everyone|someone|somebody|anyone|my|your|his|their|a|an|the|to|with|"
    r"myself|yourself|himself|herself|ourselves|themselves)\b)"
)
_PLEASE = r"(?: (?:please|pls|plz|now|right now|asap|here|in|over|for me|instead|already|then))*$"
"""Words that may end a short request ("get Dana please", "can I have my coach now")."""
_OPENERS = r"(?:(?:please|pls|plz|can you|could you|would you|will you|just|ok|okay|so|then|now|hey|hi|um) )*"
"""Words that may open a short request ("pls get my coach", "hey is Dana around")."""
_SOMEONE = r"(?:someone|somebody|anyone|anybody)"
_TEAM = rf"{_SOMEONE}(?: else)? (?:from|on|at) (?:the|your) (?:team|staff|office|company)\b"
"""Someone of the coach's team ("can someone from the team call me"): a person, whoever it is."""
_CALL_ME = r"(?:call|phone|ring) me(?: back)?(?: (?:please|pls|plz|now|today|tomorrow|asap|soon|when you can))*$"
"""A call-back asked for, with nothing after it but its time ("call me back tomorrow please")."""
_HUMAN_TEMPLATES: tuple[str, ...] = (
    # "can I talk to a real person", "I'd rather speak with a human", "let me talk to my coach / to Dana"
    rf"\b{_FRAME}(?: \w+){{0,2}} {_TALK} (?:{_TARGET}|{{coach}})",
    # "connect me with a human", "transfer me to a human agent", "put me through to my coach"
    rf"\b(?:connect|transfer|switch|put|pass|hand) me(?: (?:over|through|back))? (?:to|with) "
    rf"(?:{_TARGET}|{{coach}}|{_SOMEONE}\b)",
    # "get me a human", "bring me my coach"
    rf"\b(?:get|give|find|bring) me (?:to )?(?:{_TARGET}|{{coach}})",
    # "pls get my coach", "get Dana please", "can you call my coach": a short command, nothing after the person
    rf"^{_OPENERS}(?:get|fetch|bring|call|grab)(?: in)? (?:{_TARGET}|{{coach}}){_PLEASE}",
    # "can I have my coach please", "could I get a human"
    rf"\b(?:can|could|may) i (?:please |just )?(?:have|get) (?:{_TARGET}|{{coach}}){_PLEASE}",
    # "could you put Dana on please"
    rf"\bput (?:{_TARGET}|{{coach}}) on(?=$| (?:please|pls|now|the (?:line|phone|chat))\b)",
    # "I want a real human", "I need a person", "I want my coach", "I'd prefer a human", "I want Dana not a bot"
    rf"\b(?:want|need|prefer|wanna|rather have|(?:id|would|wed) like) (?:{_PERSON}|{{coach}})",
    # "is there a real person (I can talk to)", "is anyone real there", "is there a human I can talk to"
    r"\bis there (?:an? )?(?:real|actual|live|human) (?:person|human|coach|being)\b",
    r"\bis there (?:anyone|anybody|someone|somebody) (?:real|human)\b",
    rf"\bis there {_PERSON}(?=$| (?:i|we) can\b| (?:here|there|around|available|to talk)\b)",
    # "is a real person there?", "is anyone real here": a person's presence, nothing after it
    rf"^{_OPENERS}is (?:{_REAL_PERSON}|{_SOMEONE} (?:real|human)) (?:there|here|around|available|online)"
    r"(?: (?:now|right now|at the moment|at all|please))?$",
    # "is Dana around?", "is my coach there", "is the coach available today or is it just you?": the coach's
    # presence, nothing after it but an alternative
    rf"^{_OPENERS}is {{coach}}(?: (?:still|actually|even))? (?:around|there|here|available|online|in|free)"
    r"(?: (?:now|right now|today|at the moment|at all|please))?(?: or .+)?$",
    rf"^{_OPENERS}(?:where is|wheres) {{coach}}(?: (?:now|today|gone|at))?$",
    # "can my coach answer this herself", "can Dana take over?", "can a real person look at this"
    rf"\b(?:can|could|would|will) (?:{{coach}}|{_REAL_PERSON}|{_TEAM}) (?:please |just )?(?:answer|reply|respond|"
    r"get back|message|call|text|talk|take over|look at (?:this|it|that|my)|have a look|step in|jump in|"
    r"check (?:this|it|that))",
    # "can someone call me back please", "please have someone call me"
    rf"\b(?:(?:can|could|would|will) {_SOMEONE}|(?:have|get) {_SOMEONE}(?: to)?) (?:please |just )?{_CALL_ME}",
    # "let me talk to Sarah directly", "can I speak with Dr Lee in person"
    rf"\b{_TALK} (?:(?:dr|mr|ms|mrs|miss|coach) )?{_NOT_A_NAME}[a-z]+ (?:directly|personally|in person|myself)\b",
    # "I don't want to talk to a bot" (carries its own negation; keep it last, see _SELF_NEGATING)
    r"\b(?:dont|do not|no longer|stop) (?:want|wanna|like)(?: to)? (?:talk|speak|chat|talking|chatting)"
    r"(?:ing)? (?:to|with) (?:an? |the |this |some )?(?:bot|ai|robot|machine|chatbot|computer)\b",
)
"""The English request rules, with ``{coach}`` where the coach goes: "my coach", and the coach's own name words
when the turn knows them (:func:`_human_patterns`)."""
_SELF_NEGATING = frozenset({len(_HUMAN_TEMPLATES) - 1})
"""Indices of patterns that carry their own negation, so negators before them are not checked: the last one
("I don't want to talk to a bot")."""
_PRONOUN = re.compile(
    rf"\b{_FRAME}(?: \w+){{0,2}} {_TALK} (?:him|them|her(?=$| (?:about|directly|personally|instead|please|pls|now|"
    r"today|rather|than|myself|in person|again|asap|if|for|when|too|though)\b))"
)
"""'I'd rather talk to her': the coach only when the message names the coach before, or one of the client's last
:data:`NAMED_WINDOW` messages does (:func:`_asks_in_english`);
"her" followed by a noun is someone else's ("talk to her mum")."""
_REQUEST_TYPOS: dict[str, str] = {
    **{
        typo: word
        for word in ("person", "human", "actual", "someone", "somebody")
        for typo in one_edit(word)
        - _words("pearson persona persons humane humans hunan factual humano humana humain actuel")
    },
    **{"reel": "real", "rael": "real", "reall": "real", "hooman": "human"},
}
"""Misspelt request words → the word ("a reel person", "a real peson", "an acutal human"): one edit
(:func:`app.handoff.normalise.one_edit`) from the longer words, minus neighbours that are words themselves (in
the MiniLM vocabulary, as :data:`app.handoff.normalise.TYPO_TARGETS` are checked) or in the other languages a
client writes ("humano", "humain": a Spanish or French ask must keep its language, :func:`human_request_language`);
"real" is too short for that ("read", "deal"), so only its sound-alikes."""
_SENTENCES = re.compile(r"[.!?;\n]+")
_ENGLISH_SPEECH = ReportedSpeech(_words("said says told tells wrote writes"), _words("i we"), _words("but"))
"""A request after someone else's verb of saying in the same sentence is a quote ("my coach said I need a
person to lean on", 'my friend said "I want to talk to a real person"'); "I told you, I want a human" and
"she said it's fine, but I want a human" are the client's own (:class:`app.handoff.human_request.ReportedSpeech`)."""
_BARE = re.compile(rf"^(?:an? )?{_ADJ}(?:human|person|agent|operator)(?: please| pls| plz| now)?$")
"""A clause that is only a request word: "human please", "a real person", "agent"."""


_FUNCTION_WORDS = _words(
    """a an the and or but if so as of to in on at by for from with about into over than then there here
    i im ive id me my myself mine we our ours us you your youre yours he his him she her hers it its itself
    they them their theirs this that these those just really very also too quite not no some any all up out"""
)
"""The :data:`STOP_WORDS` that are no one's name (articles, pronouns, prepositions, quantifiers): alone they never
stand for the coach, so a coach "Run To Win" does not make "I want to run" a request; "will" or "may" do (a coach
"Will Baker": "is Will around?")."""
NAMED_WINDOW = 2
"""The client's earlier messages (the latest ones) in which naming the coach makes "I'd rather talk to her" a
request for the coach (:func:`asks_for_human`)."""
_LATER = re.compile(
    r"\b(?:tomorrow|tonight|later|next (?:time|session|call|meeting|week|month)|"
    r"(?:in|at|during) (?:our|my|the|a) (?:next )?(?:session|call|meeting|appointment|check in))\b"
)
_NOW = re.compile(r"\b(?:now|asap|right away|immediately|urgently|urgent|until|till|cant wait)\b")
"""A request put off to later ("can I talk to my coach about this tomorrow in our session?", "… next time") is no
ask to hand over now (:data:`_LATER` after the match in its sentence), unless the words after it press for now
("… now, not next week", "… it cant wait until tomorrow")."""


def _normalise(text: str) -> str:
    return _APOSTROPHES.sub("", text.lower())


def asks_for_human(text: str, *, coach_name: str | None = None, earlier: Sequence[str] = ()) -> bool:
    """Whether the client explicitly asks for a human (the coach or any person) instead of the AI.

    Fires on the ``/human`` command (the message starts with ``/human``, case-insensitive, optionally followed
    by text) and on request wording, matched per clause (split at ``, . ! ? ; :``) after lower-casing and
    dropping apostrophes: a request frame plus talk verb plus a human target ("can I talk to a real person",
    "I'd rather talk to a person", "let me speak with my coach"), imperatives ("connect me with a human",
    "get me a human", "transfer me to an agent", "put me through to someone"), wants ("I want a real human",
    "I want my coach"), "is there a real person", "is a real person there?", "talk to <Name> directly", "I don't
    want to talk to a bot", and a bare "human please"; short commands with nothing after the person ("pls get my
    coach", "can I have a human please", "is my coach around?", "is the coach available today or is it just
    you?", "where's my coach?", "can someone call me back?"), and "can my coach / a real person / someone from
    the team take over / look at this / call me". ``coach_name``, when given, puts the coach's name wherever "my
    coach" goes: the full name as a phrase and each of its words ("let me talk to Dana", "can I talk to Will
    Baker", "I want Will not a bot", "is Dana around?", "can Dana take over?"), a word such as "will" or "may"
    too (the slot lies inside request frames, so "will I be ready?" is none), but no article, pronoun or
    preposition (:data:`_FUNCTION_WORDS`). Once the coach is named — in this message before the request or in
    one of the client's last :data:`NAMED_WINDOW` ``earlier`` messages (oldest first), by "my coach", the full
    name or a name word that is no stop word — "I'd rather talk to her / him / them" asks for the coach.
    Request words misspelt by one edit ("a real peson", "an acutal human") or written as "reel" count
    (:data:`_REQUEST_TYPOS`). Talking to oneself ("how should I talk to myself before a race") is not a request.

    A match with a negator (:data:`_NEGATORS`) among the :data:`_NEGATION_WINDOW` words before it in the same
    clause does not count ("no, I don't need a human"), nor one put off to later by the words after it in its
    sentence ("can I talk to my coach about this tomorrow in our session?", "… next time": :data:`_NOW`).
    Mentions that are not requests do not fire: "I talked to a person at work today", "human beings are weird",
    "I want to be a better person", "my coach said…"; nor does a request after someone else's verb of saying in
    the same sentence ("my coach said I need a person to lean on", 'my friend said "I want to talk to a real
    person"'; "I told you, I want a human" does).
    The same kinds of request in Spanish, French, German and Portuguese ("quiero hablar con una persona", "je
    veux parler à un humain", "ich möchte mit einem Menschen sprechen", "quero falar com uma pessoa", "¿puedo
    hablar con mi coach?") fire too, matched on the accent-free text (:mod:`app.handoff.human_request`, which
    also refuses reported speech there: "mi coach dijo que necesito una persona").

    Limits: the target is not tied to this chat, so "I need to talk to a person at the bank", "how do I talk
    to a person who ignores me", "I need a person to hold me accountable", "connect me with someone who knows
    taxes" and "I need to talk to Bob directly" (Bob not the coach) fire too — a false handoff costs the coach a
    look, a missed request costs the client's trust. A coach whose name is an everyday word ("Hope", "Will")
    makes "I want hope" / "I need will power" a request; "Will said to rest" alone does not name the coach for a
    later "her / him" (a stop word: "I will"), and "her" may be someone the earlier message named after the
    coach."""
    return human_request_language(text, coach_name=coach_name, earlier=earlier) is not None


def human_request_language(text: str, *, coach_name: str | None = None, earlier: Sequence[str] = ()) -> Language | None:
    """The language of the client's explicit ask for a human (:func:`asks_for_human`, whose ``earlier`` this
    takes too): ``"en"`` for the ``/human`` command or English wording, ``"es" | "fr" | "de" | "pt"`` for wording
    in those (:mod:`app.handoff.human_request`), ``None`` when ``text`` is no such ask. The handoff notice follows
    a non-English ask, which is often too short for :func:`app.handoff.languages.detect_language` ("¿puedo
    hablar con mi coach?", "ich möchte mit einem Menschen sprechen" read as English there)."""
    if _COMMAND.match(text) or _asks_in_english(text, coach_name, earlier[len(earlier) - NAMED_WINDOW :]):
        return "en"
    return _asks_in_other_language(text, coach_name)


def _asks_in_english(text: str, coach_name: str | None, earlier: Sequence[str]) -> bool:
    """The English request wording of :func:`asks_for_human`, per clause (request words misspelt by one edit
    corrected: :data:`_REQUEST_TYPOS`), each read with the words of its sentence before and after it
    (:data:`_ENGLISH_SPEECH`, :data:`_LATER`); once the coach is named in ``earlier`` (the client's latest messages)
    or in this message, "talk to her / him / them" asks for the coach too (:data:`_PRONOUN`)."""
    words = _WORD.findall(_normalise(coach_name or ""))
    phrase = [" ".join(words)] if len(words) > 1 else []
    patterns, coach = _english_rules(
        tuple(re.escape(n) for n in dict.fromkeys([*phrase, *(w for w in words if w not in _FUNCTION_WORDS)])),
        tuple(re.escape(n) for n in dict.fromkeys([*phrase, *(w for w in words if w not in STOP_WORDS)])),
    )
    named = any(coach.search(" ".join(_WORD.findall(_normalise(message)))) for message in earlier)
    for clause, context, after in _clauses_in_context(_normalise(text), _WORD):
        flat = " ".join(_REQUEST_TYPOS.get(w, w) for w in clause)
        named = named or coach.search(flat) is not None
        if _english_clause_asks(flat, [*patterns, (-1, _PRONOUN)] if named else patterns, context, after):
            return True
    return False


@lru_cache(maxsize=256)
def _english_rules(
    slot: tuple[str, ...], naming: tuple[str, ...]
) -> tuple[list[tuple[int, re.Pattern[str]]], re.Pattern[str]]:
    """The English request rules (:data:`_HUMAN_TEMPLATES`, indexed) with the coach's regex-escaped ``slot`` names
    (the full name, then its name words; empty: "my coach" only) in the coach's slot, and the pattern that finds
    the coach named: "my coach" or one of the ``naming`` names (no stop words: "I will" names no coach "Will").
    Cached: one coach's rules are built once per process."""
    coach = rf"(?:{_COACH}|(?:{'|'.join(slot)})\b)" if slot else _COACH
    patterns = [(index, re.compile(rule.replace("{coach}", coach))) for index, rule in enumerate(_HUMAN_TEMPLATES)]
    named = rf"(?:{_COACH}|(?:{'|'.join(naming)})\b)" if naming else _COACH
    return patterns, re.compile(rf"\b{named}")


def _clauses_in_context(text: str, word: re.Pattern[str]) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """Each clause of prepared ``text`` that has words (``word``), split by sentence (:data:`_SENTENCES`) then
    clause (:data:`_CLAUSES`), as ``(its words, the words of its sentence before it, those after it)``: the context
    in which a verb of saying makes a request reported speech, and a "tomorrow" after it puts it off."""
    for sentence in _SENTENCES.split(text):
        clauses = [words for clause in _CLAUSES.split(sentence) if (words := word.findall(clause))]
        for index, words in enumerate(clauses):
            yield words, [w for c in clauses[:index] for w in c], [w for c in clauses[index + 1 :] for w in c]


def _english_clause_asks(
    flat: str, patterns: list[tuple[int, re.Pattern[str]]], context: list[str], after: list[str]
) -> bool:
    """Whether one prepared English clause asks for a human: a bare request word or a pattern with no
    negator in the :data:`_NEGATION_WINDOW` words before it, neither of them reported speech, the pattern not put
    off by the words after it in its sentence (``after``: the later clauses' words)."""
    if _BARE.match(flat) and not _ENGLISH_SPEECH.reports(context):
        return True
    for index, pattern in patterns:
        for match in pattern.finditer(flat):
            before = flat[: match.start()].split()
            if _ENGLISH_SPEECH.reports([*context, *before]):
                continue
            rest = " ".join([flat[match.end() :], *after])
            if _LATER.search(rest) and not _NOW.search(rest):
                continue
            if index in _SELF_NEGATING or not _NEGATORS.intersection(before[-_NEGATION_WINDOW:]):
                return True
    return False


_NAME_PARTICLES = _words("del dos das von van der den des les")
_LOCAL_WORD = re.compile(r"[a-z0-9ß]+")


def _asks_in_other_language(text: str, coach_name: str | None) -> Language | None:
    """The Spanish, French, German and Portuguese request wording of :func:`asks_for_human`
    (:mod:`app.handoff.human_request`), per clause of the accent-free text (:func:`app.handoff.normalise.normalise`,
    apostrophes as spaces), each clause read with the words of its sentence before it (verbs of saying)."""
    names = _local_names(coach_name)
    for words, context, _ in _clauses_in_context(detection_text(normalise(text)), _LOCAL_WORD):
        if (language := request_language(" ".join(words), names, context)) is not None:
            return language
    return None


def _local_names(coach_name: str | None) -> list[str]:
    """The coach's name words as the non-English rules match them: accent-free, regex-escaped, at least three
    letters, no stop-word or name particle ("de", "von"); empty without a name."""
    if not coach_name:
        return []
    words = _LOCAL_WORD.findall(normalise(coach_name))
    return [re.escape(w) for w in words if len(w) >= 3 and w not in STOP_WORDS | _NAME_PARTICLES]


# --- retrieval, feedback, token probabilities --------------------------------------------------------------


def retrieval_support(scores: Sequence[float]) -> float:
    """How well the coach's material covers the question, in ``[0, 1]``, from the cosine similarities
    (``[-1, 1]``, query vs chunk, all-MiniLM-L6-v2) of the retrieved chunks: the best score mapped linearly
    from :data:`SUPPORT_LOW` (→ 0) to :data:`SUPPORT_HIGH` (→ 1), clipped. Empty → ``0.0``.

    Anchors, from a probe of all-MiniLM-L6-v2 on four short coaching passages (morning routine,
    procrastination, talking to one's manager, sleep) and ten client questions: questions a passage answers scored
    0.35–0.60 (median ≈ 0.53: "what should my morning routine look like" 0.59, "how do I ask my boss for a
    raise" 0.35), a loosely related one 0.30 ("I feel stuck in my career"), unrelated questions −0.06–0.15
    (pasta recipe 0.15, taxes 0.06). The input stays the cosine, not the fused score: weighted RRF scores are
    rank-based (the top passage scores the same whether or not it answers).

    Re-fitted on SciFact when chunks gained contextual headers (:func:`app.evals.retrieval.support_anchors`,
    medians of the best cosine with the answer in the material and with it removed): 0.544 / 0.633, AUC 0.73
    on held-out queries. Not adopted: SciFact claims paraphrase their abstracts, so its cosines run far higher
    than a client's question against a coaching book, and with those anchors ordinary coaching questions got
    support 0 and were handed to the coach. Anchors for coaching need a coaching question set with known
    answers. Scores from another embedder (e.g. text-embedding-3-small, whose cosines run lower) would need
    their own anchors.
    """
    if not scores:
        return 0.0
    best = max(float(s) for s in scores)
    return min(1.0, max(0.0, (best - SUPPORT_LOW) / (SUPPORT_HIGH - SUPPORT_LOW)))


def token_confidence(logprobs: Sequence[float]) -> float | None:
    """Geometric-mean token probability of a generated reply: ``exp(mean(logprobs))`` in ``[0, 1]``, from the
    natural-log probabilities of its tokens (OpenAI ``logprobs.content[].logprob``). ``None`` for an empty
    sequence (provider returned none). NaN entries are ignored; a ``-inf`` entry gives ``0.0``."""
    values = [float(v) for v in logprobs if not math.isnan(v)]
    if not values:
        return None
    if any(math.isinf(v) and v < 0 for v in values):
        return 0.0
    return min(1.0, math.exp(math.fsum(values) / len(values)))


def thumbs_down_streak(helpful_newest_first: Sequence[bool | None]) -> int:
    """Consecutive thumbs-down on the latest AI replies. ``helpful_newest_first``: each AI reply's feedback,
    newest first — ``False`` thumbs-down, ``True`` thumbs-up, ``None`` not rated. Counts the ``False`` values
    before the first ``True``; unrated replies are skipped (clients rate rarely, so an unrated reply breaks
    nothing — only a thumbs-up ends the streak). ``[False, None, False, True, False]`` → 2."""
    streak = 0
    for helpful in helpful_newest_first:
        if helpful is True:
            break
        if helpful is False:
            streak += 1
    return streak


# --- the bundle --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnSignals:
    """Signals of one client turn, all plain JSON-able values (see the module docstring for each)."""

    risk_score: float
    """RiskDetector score in ``[0, 1]`` (:attr:`app.handoff.risk.RiskAssessment.score`)."""
    risk_level: str
    """``none`` | ``concern`` | ``crisis``."""
    sentiment: float
    """VADER compound of this message, ``[-1, 1]``."""
    sentiment_trend: float
    """Slope of the compound over the client's last ≤ 6 messages incl. this one, per message; 0.0 with < 3."""
    human_request: bool
    """Explicit ask for a human (:func:`asks_for_human`)."""
    retrieval_support: float | None
    """``[0, 1]`` coverage of the question by the coach's material; ``None`` = not measured."""
    high_stakes_topics: list[str] = field(default_factory=list)
    """The coach's high-stakes topics this message touches."""
    escalate_topics: list[str] = field(default_factory=list)
    """The coach's always-escalate topics this message touches."""
    repeated_question: float = 0.0
    """``[0, 1]``: max similarity to the client's earlier messages (0.0 below :data:`REPEAT_THRESHOLD`)."""
    thumbs_down_streak: int = 0
    """Consecutive thumbs-down on the latest AI replies."""
    venting: int = 0
    """How many of the client's last :data:`VENT_WINDOW` messages vent at the AI; 0 when this one does not."""
    token_confidence: float | None = None
    """``exp(mean token logprob)`` of the AI reply when the provider returned logprobs; else ``None``."""

    def as_dict(self) -> dict[str, Any]:
        """The signals as a JSON-able dict for message metadata: floats rounded to 3 decimals, ``None`` kept,
        lists copied."""
        return {
            "risk_score": round(self.risk_score, 3),
            "risk_level": self.risk_level,
            "sentiment": round(self.sentiment, 3),
            "sentiment_trend": round(self.sentiment_trend, 3),
            "human_request": self.human_request,
            "retrieval_support": None if self.retrieval_support is None else round(self.retrieval_support, 3),
            "high_stakes_topics": list(self.high_stakes_topics),
            "escalate_topics": list(self.escalate_topics),
            "repeated_question": round(self.repeated_question, 3),
            "thumbs_down_streak": self.thumbs_down_streak,
            "venting": self.venting,
            "token_confidence": None if self.token_confidence is None else round(self.token_confidence, 3),
        }


@lru_cache(maxsize=SENTIMENT_CACHE_SIZE)
def message_sentiment(text: str) -> float:
    """VADER's compound score of a client message (:func:`app.core.text.sentiment`, ``[-1, 1]``) when it reads as
    English or says too little to tell (:func:`~app.handoff.languages.written_language`: "ok", "/human"); ``0.0``,
    neutral, when it is written in another language. VADER's lexicon is English: it read the German article "die"
    as the verb (−0.60 for "Die Übung hilft mir sehr", and for "Wie heißt die Übung?"), and a German client's second
    neutral question handed the chat to the coach as a falling mood. The last texts' scores are kept, as
    :func:`~app.core.text.sentiment` keeps its own (a turn reads the client's earlier messages again)."""
    compound = sentiment(text)
    return compound if compound == 0.0 or written_language(normalise(text)) in (None, "en") else 0.0


def turn_signals(
    text: str,
    *,
    risk: RiskAssessment,
    earlier_client_messages: Sequence[str] = (),
    high_stakes_topics: Sequence[str] = (),
    escalate_topics: Sequence[str] = (),
    retrieval_scores: Sequence[float] | None = None,
    helpful_newest_first: Sequence[bool | None] = (),
    reply_logprobs: Sequence[float] | None = None,
    coach_name: str | None = None,
    answered_earlier: Sequence[str] | None = None,
) -> TurnSignals:
    """All signals of one client message in one call (a convenience over the functions above).

    ``earlier_client_messages``: the client's earlier messages in this conversation, **oldest first** (not
    including ``text``); the sentiment trend uses the last :data:`TREND_WINDOW` - 1 of them plus ``text``.
    ``answered_earlier``: those of them a reply answered, which a repeat counts against (:func:`repeated_question`;
    ``None``: all of them): asking again what got no answer, or only an apology, is no sign that an answer missed.
    ``retrieval_scores``: cosines of the retrieved chunks, ``None`` when retrieval has not run (support
    ``None``). ``helpful_newest_first``: feedback on the latest AI replies. ``reply_logprobs``: the reply's
    token logprobs (``Usage.token_logprobs``), ``None`` before generation or when the provider sent none."""
    earlier = list(earlier_client_messages)
    compounds = [message_sentiment(m) for m in earlier[-(TREND_WINDOW - 1) :]] if TREND_WINDOW > 1 else []
    compound = message_sentiment(text)
    return TurnSignals(
        risk_score=float(risk.score),
        risk_level=str(risk.level),
        sentiment=compound,
        sentiment_trend=sentiment_trend([*compounds, compound]),
        human_request=asks_for_human(text, coach_name=coach_name, earlier=earlier),
        retrieval_support=None if retrieval_scores is None else retrieval_support(retrieval_scores),
        high_stakes_topics=topic_matches(text, high_stakes_topics),
        escalate_topics=topic_matches(text, escalate_topics),
        repeated_question=repeated_question(text, earlier if answered_earlier is None else answered_earlier),
        thumbs_down_streak=thumbs_down_streak(helpful_newest_first),
        venting=venting(text, earlier),
        token_confidence=None if reply_logprobs is None else token_confidence(reply_logprobs),
    )


# --- honesty: "am I talking to a real person?" and a reply that claims to be human -----------------------

_CONTRACTIONS = {
    "im": "i am",
    "youre": "you are",
    "ur": "you are",
    "u": "you",
    "r": "are",
    "arent": "are not",
    "isnt": "is not",
    "whos": "who is",
    "thats": "that is",
}
"""Applied word by word after :func:`_normalise` (apostrophes already dropped): ``I'm`` → ``i am``,
``r u a bot`` → ``are you a bot``."""

_AI = (
    r"(?:an? )?(?:bot|robot|ai|a i|chatbot|chat bot|machine|computer|automated (?:\w+ )?"
    r"(?:system|service|reply|response|message|assistant)|automated|artificial intelligence|language model|llm|"
    r"chatgpt|gpt|virtual assistant|ai assistant)"
)
"""What the client may ask about (or the model deny being): a bot, an AI, a machine, automation."""
_AI_CLAIM = rf"(?:{_AI}|(?:an? )?(?:program|algorithm|computer program|software))"
_TALK_AI = (
    r"(?:talk|speak|chat|text|write|message|talking|speaking|chatting|texting|writing|messaging)(?: (?:to|with))?"
)
_REAL = r"(?:an? )?(?:real |actual |live |flesh and blood )?(?:human(?: being)?|person|people)"
_WHAT = rf"(?:{_REAL}|{_AI}|real|for real|a real one|an actual one)"
_ADV = r"(?:(?:actually|really|even|just|still|honestly|truly|only|like) ){0,2}"
_TAIL = (
    r"(?=$| or\b| (?:answering|writing|typing|replying|responding|talking|chatting|texting|reading|there|here|"
    r"behind|on the other|right now|at all|for real|too|either|yourself|though|then|or not|huh)\b)"
)
"""What may follow the thing asked about: the clause's end, an alternative ("or a bot"), or words about who is
answering ("… typing this", "… on the other end"). So "is it a human right to…" and "are you a person who
likes…" do not fire."""
_ASKS_AI_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # "are you a real person?", "are you human or a bot", "are you actually an AI", "r u real"
        rf"\bare you {_ADV}{_WHAT}{_TAIL}",
        # "am I talking to a bot?", "am I chatting with a real person", "am I speaking to an AI right now"
        rf"\bam i (?:\w+ )?{_TALK_AI} {_ADV}{_WHAT}{_TAIL}",
        # "is this a bot?", "is this an AI or a person", "is this automated", "is it a real person"
        rf"\bis (?:this|it|that) {_ADV}(?:a bot|an ai|ai|{_AI}|{_REAL}){_TAIL}",
        # "is a real person reading this", "is there a human typing", "is anyone real answering"
        r"\b(?:is|does) (?:there )?(?:an? |anyone |anybody |someone |somebody )(?:real |actual |live )?"
        r"(?:human |person |people |real )(?:\w+ )?(?:reading|answering|writing|typing|replying|responding|behind|"
        r"read|answer|write|type|reply|respond|on the other)\b",
        r"\b(?:is|does) (?:anyone|anybody|someone|somebody|a person|a human) (?:actually |really |even )?"
        r"(?:reading|read) (?:this|these|my messages|what i write)$",
        # "who am I talking to", "who is answering", "who is on the other end"
        rf"\bwho (?:am i|is|are you|is this) (?:\w+ )?(?:{_TALK}|answering|writing|typing|replying|responding|"
        r"on the other (?:end|side)|behind)(?:$| this| these| me| here)",
        # "is this really you?", "is it actually you or a bot", "is this you personally"
        r"\bis (?:this|it|that) (?:really |actually |truly |even )+you\b",
        r"\bis (?:this|it|that) you (?:yourself|personally|in person|or)\b",
        # "you're a bot, aren't you", "so you're just an AI", "you are an AI right"
        rf"^(?:so |oh |wait |ok |okay )?you are {_ADV}{_AI}(?:$| (?:right|arent you|huh|then)$)",
        # bare "human or bot?", "bot or human", "real person?", "AI?"
        rf"^(?:{_REAL}|{_AI}) or (?:{_REAL}|{_AI}|not)$",
        r"^(?:an? )?(?:bot|robot|ai|chatbot|real person|real human)$",
    )
)


def _honesty_words(text: str) -> list[str]:
    """Clauses of ``text`` (as :func:`asks_for_human` splits them), each lower-cased, apostrophes dropped,
    :data:`_CONTRACTIONS` expanded and words joined by single spaces."""
    out: list[str] = []
    for clause in _CLAUSES.split(_normalise(text)):
        words = [_CONTRACTIONS.get(w, w) for w in _WORD.findall(clause)]
        if words:
            out.append(" ".join(words))
    return out


def asks_if_ai(text: str, *, coach_name: str | None = None) -> bool:
    """Whether the client asks who they are talking to: a person, the coach, a bot, an AI.

    Per clause, after lower-casing, dropping apostrophes and expanding a few contractions and text-speak
    (``I'm`` → ``i am``, ``r u`` → ``are you``): "are you a real person / human / a bot / an AI / real?",
    "am I talking to a bot / a real person?", "is this a bot / automated / a real person?", "is a real person
    reading this?", "who am I talking to?", "is this really you?", "you're a bot, aren't you?" and a bare
    "human or bot?" / "bot?". ``coach_name``, when given, also makes "is this really <name>" / "am I talking
    to <name>" fire. The thing asked about must end the clause or be followed by an alternative ("… or a
    bot") or words about who is answering, so "are you a person who likes lists", "is it a human right" and
    "am I talking too much" do not fire. The same questions in Spanish, French, German and Portuguese ("¿eres
    un bot?", "es-tu une IA ?", "bist du ein Mensch?", "você é um robô?") fire too, matched on the accent-free
    text (:mod:`app.handoff.honesty_rules`, which also refuses negated forms and reported speech there).

    A **request** for a person ("I want to talk to a real person", "is there a real person I can talk to")
    is :func:`asks_for_human`, not this: the turn checks that first and hands the conversation to the coach
    (whose notice says the coach was asked to join); this question is answered only when no handoff rule
    fired. A message can be both ("are you a bot? I want a human"): the handoff wins.

    Limits: statements about AI in general ("AI will take my job", "I talked to a bot at the bank") do not
    fire, and neither does a question phrased around them ("do bots have feelings?")."""
    return ai_question_language(text, coach_name=coach_name) is not None


def ai_question_language(text: str, *, coach_name: str | None = None) -> Language | None:
    """The language of the client's question who is answering (:func:`asks_if_ai`): ``"en"`` for English
    wording, ``"es" | "fr" | "de" | "pt"`` for wording in those (:mod:`app.handoff.honesty_rules`), ``None``
    when ``text`` asks no such thing. The disclosure answers in it: "¿eres un bot?" is too short for
    :func:`app.handoff.languages.detect_language`."""
    if _asks_if_ai_in_english(text, coach_name):
        return "en"
    names, spelled = _local_names(coach_name), spelled_language(text)  # "tu és humano?" is Portuguese
    for words, context, _ in _clauses_in_context(detection_text(normalise(text)), _LOCAL_WORD):
        if (language := question_language(" ".join(words), names, context, spelled)) is not None:
            return language
    return None


def _asks_if_ai_in_english(text: str, coach_name: str | None) -> bool:
    """The English wording of :func:`asks_if_ai`, per clause (:func:`_honesty_words`)."""
    clauses = _honesty_words(text)
    names: list[str] = []
    if coach_name:
        names = [re.escape(n) for n in _WORD.findall(_normalise(coach_name)) if n not in STOP_WORDS]
    named = (
        re.compile(
            rf"\b(?:is (?:this|it|that) (?:really |actually |truly )?|am i (?:\w+ )?{_TALK_AI} (?:really |actually )?)"
            rf"(?:{'|'.join(names)})\b"
        )
        if names
        else None
    )
    for clause in clauses:
        if any(pattern.search(clause) for pattern in _ASKS_AI_PATTERNS):
            return True
        if named is not None and named.search(clause):
            return True
    return False


_END = r"(?=$| \|)"
"""End of a clause in the joined text :func:`claims_human` searches (clauses joined by `` | ``)."""
_CLAIM_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # "I'm a real person", "I am human", "I'm a human being too", "yes, I'm definitely a real person"
        r"\bi am (?:(?:a|definitely|really|actually|truly|totally|100|percent|certainly|very much|just|also|"
        rf"indeed|still|absolutely|a living) ){{0,3}}{_REAL}\b(?! (?:who|that|like|with)\b)",
        # "I'm real", "yes I am real", "I'm for real"
        rf"\bi am (?:(?:very|really|totally|definitely|absolutely|100|percent) ){{0,2}}(?:real|for real){_END}",
        # "I am not an AI", "I'm not a bot", "I'm not a robot or a program", "I'm no bot"
        rf"\bi am (?:not|no|definitely not|certainly not|not at all) {_AI_CLAIM}\b",
        # "as a human, I …", "as a fellow human", "as a real person myself"
        r"\bas (?:a )?(?:real |living )?(?:human(?: being)?|person)(?: myself| too)?(?: \|)? i\b",
        r"\bas a fellow (?:human|person)\b",
        # "you're talking to a real person", "you are chatting with a human", "this is a real person"
        rf"\byou are (?:\w+ )?{_TALK_AI} {_ADV}(?:a |an )?(?:real |actual |live )?(?:human|person)\b",
        r"\b(?:this is|it is|that is) (?:a |an )?(?:real|actual|live) (?:human|person)\b",
        # "a real person is typing this", "a human is writing to you"
        r"\b(?:a )?(?:real|actual|live) (?:human|person) (?:is )?(?:typing|writing|answering|replying)\b",
    )
)


def claims_human(text: str) -> bool:
    """Whether a reply (the model's) claims that a person, not an AI, is writing: "I'm a real person", "I am
    human", "I'm real", "I am not an AI / a bot", "as a human, I…", "you're talking to a real person", "a real
    person is typing this". Same clauses and normalisation as :func:`asks_if_ai`; the same claims in Spanish,
    French, German and Portuguese ("soy una persona real", "je ne suis pas un robot", "ich bin ein echter
    Mensch", "não sou uma IA") fire too (:func:`human_claim_language`).

    Does not fire on honest or unrelated wording: "I'm not a real person, I'm an AI", "I'm an AI assistant",
    "as an AI I can't…", "as a human, you deserve rest" (about the client), "I am a person who…", "human
    beings need sleep", "your coach is a real person". Clauses are joined by `` | `` so "as a human, I…"
    (clause break before "I") still reads as one claim. Limits: a claim made only by implication ("I had a
    long day at the office too") is not caught."""
    return human_claim_language(text) is not None


def human_claim_language(text: str) -> Language | None:
    """The language of a reply's claim to be a person (:func:`claims_human`): ``"en"`` for English wording,
    ``"es" | "fr" | "de" | "pt"`` for wording in those (:mod:`app.handoff.honesty_rules`, on the accent-free
    clauses joined by `` | ``: :func:`app.handoff.normalise.fold`, cheap enough for every streamed window),
    ``None`` when the reply makes no such claim. The correction answers in it."""
    joined = " | ".join(_honesty_words(text))
    if any(pattern.search(joined) for pattern in _CLAIM_PATTERNS):
        return "en"
    clauses = (_LOCAL_WORD.findall(clause) for clause in _CLAUSES.split(detection_text(fold(text))))
    return claim_language(" | ".join(" ".join(words) for words in clauses if words))


# --- frustration aimed at the AI ---------------------------------------------------------------------------

VENT_WINDOW = 3
"""The client's latest messages (this one included) among which :func:`venting` counts vents."""

_INSULT = (
    r"(?:stupid|dumb|useless|pointless|worthless|hopeless|terrible|awful|rubbish|garbage|trash|crap|crappy|idiotic|"
    r"pathetic|ridiculous|lame|damn|freaking|fucking)"
)
_ANSWER = r"(?:answers?|repl(?:y|ies)|responses?|advice|suggestions?)"
_BOT = r"(?:bot|ai|a i|robot|chatbot|chat bot|machine|computer|program)"
_DEGREE = r"(?:(?:so|such|completely|totally|really|just|absolutely|utterly|literally|being|a|an) ){0,3}"
_VENT_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # "stupid bot", "useless answer", "what a dumb reply"
        rf"\b{_INSULT} (?:ass )?(?:{_BOT}|{_ANSWER})\b",
        # "same canned answer again", "another generic reply", "same answer again"
        rf"\b(?:canned|generic|scripted|robotic|automated|copy pasted?) {_ANSWER}\b",
        rf"\bsame (?:old )?{_ANSWER} (?:again|as before|every time|over and over)\b",
        # "you're useless", "you are so dumb", "you're not listening", "you were no help"
        rf"\byou (?:are|were) {_DEGREE}(?:useless|stupid|dumb|pointless|worthless|hopeless|terrible|awful|rubbish|"
        r"garbage|trash|pathetic|idiotic|idiot|joke|no help|no use|not helping|not helpful|not listening|"
        r"not getting it|going in circles)\b",
        # "you keep saying the same thing", "you keep repeating yourself", "you don't listen"
        r"\byou (?:keep|always|just keep|are just|are still) (?:saying|repeating|giving me|telling me|tell me|say|"
        r"repeat|give me) (?:the same|that same|this same|yourself)\b|\byou keep repeating\b",
        r"\byou (?:do not|dont|never|clearly dont|clearly do not) (?:listen|help|get it|get what i)\b",
        # "this bot is hopeless", "the AI is useless"
        rf"\b(?:this|the) {_BOT} (?:is|was) {_DEGREE}(?:{_INSULT}|no help|not helping|not helpful)\b",
    )
)


def vents_at_ai(text: str) -> bool:
    """Whether a client message vents frustration **at the AI**: an insult aimed at the bot or its answers ("stupid
    bot", "useless answer", "you're useless", "this bot is hopeless"), a complaint that it repeats itself ("same
    canned answer again", "you keep saying the same thing") or does not listen ("you're not listening", "you don't
    get it"). English only; per clause of :func:`_honesty_words` (``you're`` → ``you are``); a negator
    (:data:`_NEGATORS`) among the :data:`_NEGATION_WINDOW` words before a match cancels it ("I'm not saying you're
    useless").

    Not venting: a mild correction ("hmm that's not quite it", "not really what I meant") — the client is still
    working with the AI; frustration at something else ("my stupid knee", "my boss is useless", "stupid question,
    but…", "I feel useless today": sentiment reads those). Limits: "this isn't helping" alone is not read ("this"
    may be the stretching the client tried), nor is sarcasm ("great, another essay").

    Why it lowers the confidence instead of handing over at once (:data:`app.handoff.confidence.VENT_FACTOR`): the
    client did not ask for a person — that is :func:`asks_for_human`, which hands over at once — and a lexical
    reading of one message is the weakest evidence the turn has. One vent takes the confidence to 0.6 on its own,
    in place of the retrieval support (a vent asks nothing the coach's material could cover, so its support of 0
    does not count), so the AI answers once more when nothing else is wrong ("stupid bot" as a first message:
    0.6 · its mood's 0.84 = 0.50); a thumbs-down or a repeated question with it, its own strongly negative mood
    (compound ≤ -0.6), or a second vent among the client's last :data:`VENT_WINDOW` messages goes below the
    default threshold and hands the chat to the coach (:func:`venting`)."""
    for clause in _honesty_words(text):
        for pattern in _VENT_PATTERNS:
            for match in pattern.finditer(clause):
                if not _NEGATORS.intersection(clause[: match.start()].split()[-_NEGATION_WINDOW:]):
                    return True
    return False


def venting(text: str, earlier: Sequence[str]) -> int:
    """How many of the client's last :data:`VENT_WINDOW` messages — ``text`` and the latest of ``earlier`` (the
    client's earlier messages, oldest first) — vent at the AI (:func:`vents_at_ai`); ``0`` when ``text`` does not:
    a client who has calmed down ("ok, how about hills?") is not held to an earlier outburst."""
    if not vents_at_ai(text):
        return 0
    return 1 + sum(vents_at_ai(message) for message in earlier[len(earlier) - VENT_WINDOW + 1 :])
