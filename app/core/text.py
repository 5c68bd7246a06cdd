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


@lru_cache(maxsize=SENTIMENT_CACHE_SIZE)
def sentiment(text: str) -> float:
    """VADER compound score of ``text`` (Hutto & Gilbert 2014): a float in ``[-1, 1]``, negative for negative
    affect; ``0.0`` for an empty or neutral text. VADER's own reading of compound: ``≤ -0.05`` negative,
    ``≥ 0.05`` positive. English only; no errors. Deterministic, so the last :data:`SENTIMENT_CACHE_SIZE`
    texts' scores are kept (about 0.15 ms of CPU each here)."""
    if not text.strip():
        return 0.0
    return float(_analyzer().polarity_scores(text)["compound"])
