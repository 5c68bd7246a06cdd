"""What two passages share: their sets of word 3-shingles (Broder 1997, "On the resemblance and containment of
documents", with exact shingle sets instead of min-hashes). Near-duplicate retrieved passages are collapsed by
resemblance (:func:`app.rag.retrieval.collapse_near_duplicates`), and a chunk of a document processed again is
found in its copy by containment (:func:`app.rag.passages.successors`)."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def shingles(passage: str) -> set[tuple[str, ...]]:
    """The word 3-shingles of ``passage`` (lower-cased ``\\w+`` words, three in a row); a passage of fewer than
    three words is one shingle of its words."""
    words = _WORD.findall(passage.lower())
    if len(words) < 3:
        return {tuple(words)}
    return set(zip(words, words[1:], words[2:], strict=False))
