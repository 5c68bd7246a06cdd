"""Analysis of one coach message given the client's message before it: technique, tone, formality, key phrases.

Pure functions (no database, no network); the embeddings come from the caller.

- **Technique**: an ESConv strategy label (:mod:`app.learning.strategy`).
- **Tone**: VADER compound (Hutto & Gilbert 2014, via :func:`app.handoff.signals.sentiment`) and its label
  by VADER's own thresholds (:func:`mood`).
- **Formality** (:func:`formality`): a lexical score in ``[0, 1]`` built from the surface cues that mark
  informal text in Pavlick E. & Tetreault J. (2016), "An Empirical Analysis of Formality in Online
  Communication", *TACL 4* (contractions, first/second-person pronouns, exclamation marks, emoji and
  emoticons, hedges and fillers, a lower-case ``i``), and from word length, which tracks Heylighen F. &
  Dewaele J.-M.'s (1999) F-score (formal text uses more nouns/articles/prepositions, i.e. longer words).
- **Key phrases**: YAKE! (Campos R. et al. 2020, "YAKE! Keyword extraction from single documents using
  multiple local features", *Information Sciences 509*), the ``yake`` package: up to
  :data:`KEY_PHRASES` phrases of 1–3 words, best first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from app.core.text import sentiment
from app.learning.strategy import StrategyModel, default_model, features

if TYPE_CHECKING:
    import yake

KEY_PHRASES = 5
POSITIVE = 0.05
"""VADER compound from which a text reads positive (Hutto & Gilbert 2014); ``≤ -POSITIVE`` negative."""

MOODS = ("negative", "neutral", "positive")

_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)?")
_CONTRACTION = re.compile(r"\b[A-Za-z]+['’](?:s|re|ve|ll|d|m|t)\b", re.IGNORECASE)
_EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]|[:;]-?[)(DPp]|<3")
_PERSONAL = frozenset(["i", "me", "my", "mine", "we", "us", "our", "you", "your", "yours", "ya", "u"])
_HEDGES = frozenset(
    [
        "like",
        "kinda",
        "sorta",
        "gonna",
        "wanna",
        "gotta",
        "yeah",
        "yep",
        "nope",
        "ok",
        "okay",
        "hey",
        "hi",
        "lol",
        "haha",
        "omg",
        "btw",
        "stuff",
        "totally",
        "really",
        "pretty",
        "just",
        "maybe",
        "guess",
        "basically",
        "literally",
    ]
)


def mood(compound: float) -> str:
    """``negative`` (compound ≤ -0.05), ``positive`` (≥ 0.05) or ``neutral``."""
    if compound <= -POSITIVE:
        return "negative"
    if compound >= POSITIVE:
        return "positive"
    return "neutral"


def formality(text: str) -> float:
    """Lexical formality in ``[0, 1]`` (1 = formal). ``0.7 × (1 − min(1, 2 × informal markers per word))
    + 0.3 × min(1, max(0, (mean word length − 3) / 3))``; markers (Pavlick & Tetreault 2016): contractions,
    first/second-person pronouns (half weight), ``!``, emoji/emoticons, hedges/fillers, a lower-case
    ``i``. An empty text scores ``0.5``."""
    words = _WORD.findall(text)
    if not words:
        return 0.5
    lower = [w.lower().replace("’", "'") for w in words]
    markers = (
        len(_CONTRACTION.findall(text))
        + 0.5 * sum(w in _PERSONAL for w in lower)
        + text.count("!")
        + len(_EMOJI.findall(text))
        + sum(w in _HEDGES for w in lower)
        + sum(w == "i" for w in words)
    )
    informal = min(1.0, 2.0 * markers / len(words))
    mean_len = sum(len(w) for w in words) / len(words)
    length = min(1.0, max(0.0, (mean_len - 3.0) / 3.0))
    return round(float(0.7 * (1.0 - informal) + 0.3 * length), 4)


@cache
def _extractor() -> yake.KeywordExtractor:
    import yake

    return yake.KeywordExtractor(lan="en", n=3, dedupLim=0.7, top=KEY_PHRASES)


def key_phrases(text: str, limit: int = KEY_PHRASES) -> list[str]:
    """Up to ``limit`` key phrases of ``text`` by YAKE! (lower-cased, best first); ``[]`` for a short text."""
    if len(_WORD.findall(text)) < 3:
        return []
    phrases = [str(phrase).lower() for phrase, _score in _extractor().extract_keywords(text)]
    return list(dict.fromkeys(phrases))[:limit]


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyse_message` finds: ``strategy`` (ESConv label) with ``strategy_scores`` (probability
    per label), ``tone`` (VADER compound of the message, ``[-1, 1]``) and ``tone_label``, ``formality``
    (``[0, 1]``), ``key_phrases``, and the client's mood before it (``client_sentiment``, ``client_mood``)."""

    strategy: str
    strategy_scores: dict[str, float]
    tone: float
    tone_label: str
    formality: float
    key_phrases: list[str] = field(default_factory=list)
    client_sentiment: float = 0.0
    client_mood: str = "neutral"

    def as_dict(self) -> dict[str, Any]:
        """JSON form (stored in ``Intervention.analysis``)."""
        return asdict(self)


def analyse_message(
    text: str,
    client_text: str,
    text_embedding: Sequence[float],
    *,
    model: StrategyModel | None = None,
) -> Analysis:
    """Analyse a coach message given the client's message before it (``client_text``, may be empty).
    ``text_embedding``: the all-MiniLM-L6-v2 vector (384-d, unit-normalised) of ``text``. ``model`` defaults
    to the shipped strategy classifier. Raises ``ValueError`` for an embedding of the wrong size."""
    clf = model or default_model()
    x = features(text_embedding, text)
    tone = sentiment(text)
    client = sentiment(client_text)
    return Analysis(
        strategy=clf.predict(x),
        strategy_scores=clf.scores(x),
        tone=round(tone, 4),
        tone_label=mood(tone),
        formality=formality(text),
        key_phrases=key_phrases(text),
        client_sentiment=round(client, 4),
        client_mood=mood(client),
    )
