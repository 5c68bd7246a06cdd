"""What the turn's stages hand each other: the received message, the loaded turn, the gathered context,
the reply being generated, and the result the channels render."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from app.accounts.models import Coach
from app.accounts.tone import ToneChoice
from app.chat.tone import TurnTone, turn_tone
from app.chat.turn.injection import ReplyCheck
from app.chat.turn.timing import Stages
from app.conversations.handoffs import Handoff
from app.conversations.metadata import HANDED_BACK
from app.conversations.models import Conversation, Message
from app.handoff.confidence import Confidence
from app.handoff.languages import Language
from app.handoff.risk import RiskAssessment
from app.handoff.signals import TurnSignals, content_words, stem
from app.learning.experiments import Assignment
from app.learning.interventions import FewShotExample
from app.learning.models import ModelVersion
from app.llm.base import Usage
from app.memory.retrieval import MemoryContext
from app.rag.retrieval import RetrievedChunk

MIN_SHARED_WORDS = 3
"""Content words a reply without ``[n]`` markers must share with a passage for it to be cited."""
_MARKERS = re.compile(r"\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")
"""A reply's citation by number: ``[2]``, or several at once, ``[1, 3]``."""


def _topic_words(text: str, language: Language) -> frozenset[str]:
    """The words of ``text`` that tell its topic, in ``language`` (the reply's: the client's). English:
    :func:`~app.handoff.signals.content_words` (stemmed) without scikit-learn's English stop words (the Glasgow
    Information Retrieval Group's list, 318 words): the signals' own list is kept short for matching the coach's
    topics, and "when, what, one, each, other, take" made an unrelated passage share three words with generic
    advice. Spanish, French, German, Portuguese: the casefolded words of three letters or more, unstemmed, without
    that language's stop words (NLTK's lists, as ``bm25s`` ships them): the English rule let a German reply cite a
    passage by "und, die, nicht"."""
    if language == "en":
        stop = _stop_words()
        return frozenset(word for word in content_words(text) if word not in stop)
    stop = _other_stop_words(language)
    return frozenset(word for word in _WORD.findall(text.casefold()) if len(word) >= 3 and word not in stop)


_WORD = re.compile(r"\w+")
_STOP_WORD_LISTS: dict[Language, str] = {
    "es": "STOPWORDS_SPANISH",
    "fr": "STOPWORDS_FRENCH",
    "de": "STOPWORDS_GERMAN",
    "pt": "STOPWORDS_PORTUGUESE",
}
"""The ``bm25s.stopwords`` list of each language but English."""


@cache
def _stop_words() -> frozenset[str]:
    """scikit-learn's English stop words and their stems (:func:`~app.handoff.signals.stem`, as
    :func:`~app.handoff.signals.content_words` cuts words: "take" is "tak" there), imported on first use (the
    package takes a second to import)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | {stem(word) for word in ENGLISH_STOP_WORDS}


@cache
def _other_stop_words(language: Language) -> frozenset[str]:
    """``language``'s stop words (:data:`_STOP_WORD_LISTS`), imported on first use."""
    from bm25s import stopwords

    return frozenset(getattr(stopwords, _STOP_WORD_LISTS[language]))


def cited_passages(text: str, passages: Sequence[RetrievedChunk], language: Language = "en") -> list[int]:
    """The 1-based numbers (prompt order) of the ``passages`` a reply ``text`` draws on: those it cites by number
    (``[2]``, as the prompt asks, or ``[1, 3]``), when it cites any that exist; else those sharing at least
    :data:`MIN_SHARED_WORDS` content words with it (:func:`_topic_words` in ``language``, the reply's), a
    lexical form of post-hoc attribution (citing by the answer, not by the question: Gao et al. 2023, "Enabling
    Large Language Models to Generate Text with Citations", EMNLP 2023, judge a citation by whether the passage
    supports the answer). Every retrieved passage was a citation: small talk ("thanks, have a nice day") showed
    five book pages, and an "I do not know" looked sourced. A retrieval score is no floor here: the Meditations
    passages that answer "how should I deal with people who annoy me?" are 0.10–0.18 in cosine to it, as close
    as unrelated text."""
    named = {int(n) for group in _MARKERS.findall(text) for n in group.split(",")}
    marked = sorted(n for n in named if 1 <= n <= len(passages))
    if marked:
        return marked
    said = _topic_words(text, language)
    return [
        n for n, p in enumerate(passages, start=1) if len(said & _topic_words(p.text, language)) >= MIN_SHARED_WORDS
    ]


TEMPERATURE = 0.3
"""Sampling temperature unless an experiment's variant sets another."""


@dataclass(frozen=True)
class Received:
    """A client message as stored by :meth:`app.chat.turn.pipeline.ChatService.receive`: its ``message_id``
    and ``conversation_id``, the client app's ``client_message_id`` (echoed in acknowledgements), whether this
    call ``created`` it (``False``: it was sent before with the same client id), whether the AI has
    ``answered`` it already (nothing left to do for it) and when it was stored (``created_at``, aware)."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    client_message_id: str | None
    created: bool
    answered: bool
    created_at: datetime


@dataclass(frozen=True)
class TurnResult:
    """The outcome of a turn: ids, the full reply, its citations and attribution metadata.

    ``received_message_id`` is the client's message the turn answered. ``message_id`` is ``None`` and
    ``reply`` empty when nothing was sent to the client: the AI is paused (a handoff is active), its reply
    waits for the coach's approval (draft mode), or the message was answered before. ``handoff`` is then, or
    when this turn handed the conversation to the coach, ``{"status", "reason", "confidence"}`` with status
    ``open`` | ``claimed`` | ``draft_pending``. ``created_at`` is when the reply was stored (``None`` without one).
    """

    conversation_id: uuid.UUID
    received_message_id: uuid.UUID
    message_id: uuid.UUID | None
    reply: str
    citations: list[dict[str, Any]]
    metadata: dict[str, Any]
    handoff: dict[str, Any] | None = None
    created_at: datetime | None = None


@dataclass
class Turn:
    """What the turn's first transaction loaded: the coach, the conversation, the client's message, the L1
    ``history`` before it (oldest first), its risk and signals, the active handoff (locked in that
    transaction), the message's ``query_embedding`` when the crisis screen's vector also serves retrieval
    (384 floats, stored as the message's episode in that transaction; ``None``: retrieval embeds the message
    itself, and gather stores the episode), and whether L3 extraction is due after the
    reply (``insights_due``, :func:`app.memory.insights.extraction_due`)."""

    coach: Coach
    conversation: Conversation
    message: Message
    client_name: str
    history: list[Message]
    risk: RiskAssessment
    signals: TurnSignals
    active: Handoff | None
    query_embedding: list[float] | None = None
    insights_due: bool = True

    @property
    def handed_back(self) -> bool:
        """The coach handed the message back after a low-confidence handoff took it from the AI
        (:data:`~app.conversations.metadata.HANDED_BACK`): the AI answers it whatever its confidence."""
        return bool((self.message.meta or {}).get(HANDED_BACK))


@dataclass(frozen=True)
class Learned:
    """The learning loop's part of a turn. An experiment's variant overrides persona, model and temperature
    (and the default tone intensity); otherwise the coach's production model version serves (``None``: the
    coach's base model). ``tone`` is the client's tone choice (:mod:`app.accounts.tone`)."""

    coach: Coach
    assignment: Assignment | None
    version: ModelVersion | None
    examples: list[FewShotExample]
    tone: ToneChoice | None = None

    def tone_for(self, risk: RiskAssessment, signals: TurnSignals) -> TurnTone | None:
        """The reply's tone (:func:`app.chat.tone.turn_tone`), ``None`` without a tone choice."""
        if self.tone is None:
            return None
        arm = self.assignment.intensity if self.assignment is not None else None
        return turn_tone(self.tone, risk, signals, arm)

    @property
    def persona(self) -> str:
        """The system persona: the variant's, else the coach's."""
        variant = self.assignment.persona if self.assignment is not None else None
        return self.coach.persona if variant is None else variant

    @property
    def temperature(self) -> float:
        """Sampling temperature: the variant's, else :data:`TEMPERATURE`."""
        variant = self.assignment.temperature if self.assignment is not None else None
        return TEMPERATURE if variant is None else variant

    @property
    def model(self) -> str | None:
        """The model name to serve on the coach's endpoint: the variant's, else the production version's,
        else ``None`` (the coach's configured model)."""
        if self.assignment is not None and self.assignment.model:
            return self.assignment.model
        return self.version.model if self.version is not None else None


@dataclass(frozen=True)
class Gathered:
    """The context of a turn: the coach's ``passages`` (best first), what ``memory`` recalls about the
    client, the ``learned`` settings and few-shot examples, and the confidence ``before`` generation."""

    passages: list[RetrievedChunk]
    memory: MemoryContext
    learned: Learned
    before: Confidence


@dataclass
class Reply:
    """The AI's reply as it is generated: streamed ``parts``, the ``passages`` it may cite, the provider's
    ``usage``, the ``signals`` scored at the end, the attribution ``metadata`` stored with it, the response
    cache key, whether it is ``drafting`` (kept for the coach) or ``failed`` (the apology), whether any of it
    was ``streamed`` to the client yet (the stream runs behind the model), the output ``check`` of its prompt
    (``None`` with the defences off), the turn's ``stages`` timings and the ``language`` it is written in (the
    client's, :attr:`~app.handoff.risk.RiskAssessment.language`: the citation rule reads it so)."""

    metadata: dict[str, Any]
    signals: TurnSignals
    drafting: bool
    parts: list[str] = field(default_factory=list)
    passages: list[RetrievedChunk] = field(default_factory=list)
    usage: Usage | None = None
    cache_key: str | None = None
    text: str = ""
    failed: bool = False
    streamed: bool = False
    check: ReplyCheck | None = None
    stages: Stages = field(default_factory=Stages)
    language: Language = "en"

    @property
    def citations(self) -> list[dict[str, Any]]:
        """The citations of the passages the reply draws on (:func:`cited_passages`), each with its number in the
        prompt (``markers``), which the client's view shows."""
        return [
            self.passages[number - 1].citation() | {"markers": [number]}
            for number in cited_passages(self.text, self.passages, self.language)
        ]
