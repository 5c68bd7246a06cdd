"""Okapi BM25 computed in Python, the reference the SQL rankings are tested against (Robertson & Zaragoza 2009,
"The Probabilistic Relevance Framework: BM25 and Beyond"; Lucene's idf ``ln(1 + (N − df + 0.5) / (df + 0.5))``)."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterable


def bm25_scores(
    rows: Iterable[tuple[uuid.UUID, int, str, int]], words: set[str], k1: float, b: float
) -> dict[uuid.UUID, float]:
    """BM25 of every document holding a query word, from one ``(document id, length, lexeme, tf)`` row per
    lexeme of each document (every document of the collection, query word or not: they make N and the mean
    length). ``words``: the query's lexemes. Documents without a query word get no score."""
    rows = list(rows)
    lengths = {doc: length for doc, length, _, _ in rows}
    avgdl = max(sum(lengths.values()) / len(lengths), 1.0)
    df = Counter(word for _, _, word, _ in rows if word in words)
    scores: Counter[uuid.UUID] = Counter()
    for doc, length, word, tf in rows:
        if word in df:
            idf = math.log(1 + (len(lengths) - df[word] + 0.5) / (df[word] + 0.5))
            scores[doc] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))
    return dict(scores)
