"""Text helpers shared by the domains: free text shown in a small space (the coach's brief, alert e-mails,
stored errors) and sentiment (VADER; Hutto & Gilbert 2014, *ICWSM*)."""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


def one_line(text: str, limit: int) -> str:
    """``text`` with every run of whitespace (newlines included) made one space, cut to at most ``limit``
    characters with a trailing ``…`` when it is longer."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    """The VADER analyzer, built once (it reads its lexicon and emoji files from the package)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


SENTIMENT_CACHE_SIZE = 2048
"""Texts whose score :func:`sentiment` keeps per process: a chat turn scores the client's last few messages
for the trend (:data:`app.handoff.signals.TREND_WINDOW`), all but the newest scored by the turns before."""


SENTIMENT_MAX_WORDS = 300
"""Words of a text :func:`sentiment` reads, an emoji counting as the words of its description (VADER reads
"🙂" as "slightly smiling face"). VADER's loop over the words rebuilds a lower-cased copy of all of them for each
word, so its time grows with the square of their number: a chat message of 3,990 emoji (under the 4,000-character
limit) took 8.4 s of CPU, on the event loop, holding up every client of the process; 770 plain words took 25 ms.
300 words take a few ms, and tell a message's affect."""


def _vader_words(text: str) -> str:
    """The start of ``text`` VADER reads: at most :data:`SENTIMENT_MAX_WORDS` words once its emoji are
    described."""
    if text.isascii():  # (no emoji)
        words = text.split()
        return text if len(words) <= SENTIMENT_MAX_WORDS else " ".join(words[:SENTIMENT_MAX_WORDS])
    described, budget = _analyzer().emojis, SENTIMENT_MAX_WORDS
    for index, char in enumerate(text):
        description = described.get(char)
        budget -= len(description.split()) if description is not None else char == " "
        if budget < 0:
            return text[:index]
    return text


@lru_cache(maxsize=SENTIMENT_CACHE_SIZE)
def sentiment(text: str) -> float:
    """VADER compound score of ``text`` (Hutto & Gilbert 2014): a float in ``[-1, 1]``, negative for negative
    affect; ``0.0`` for an empty or neutral text. VADER's own reading of compound: ``≤ -0.05`` negative,
    ``≥ 0.05`` positive. English only; no errors. Reads the first :data:`SENTIMENT_MAX_WORDS` words. Deterministic,
    so the last :data:`SENTIMENT_CACHE_SIZE` texts' scores are kept (about 0.15 ms of CPU each here)."""
    if not text.strip():
        return 0.0
    return float(_analyzer().polarity_scores(_vader_words(text))["compound"])
