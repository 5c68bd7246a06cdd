"""Where a chunk of a document processed again went in its copy (:func:`app.rag.passages.successors`)."""

from __future__ import annotations

from app.rag.passages import successors

SENTENCES = [f"Sentence {n} says something of its own about habit number {n}." for n in range(400)]


def _chunks(sentences: list[str], size: int = 8) -> list[str]:
    return [" ".join(sentences[i : i + size]) for i in range(0, len(sentences), size)]


def test_a_chunk_is_found_by_its_text_or_by_what_it_holds_where_it_is_expected() -> None:
    original = _chunks(SENTENCES)
    # the new extraction reads three sentences the old one missed at the start (every boundary moves), drops a
    # hidden passage in the middle, and reads 20 chunks' worth of text before the end
    missed = [f"A line the old reader missed, number {n}." for n in range(3)]
    late = [f"Text read now, chunk {n} of it, line {k}." for n in range(20) for k in range(8)]
    copy = _chunks(missed + SENTENCES[:200] + SENTENCES[208:360] + late + SENTENCES[360:])
    found = successors(original, copy)

    for index, chunk in enumerate(original):
        if index == 25:  # the hidden passage, gone
            assert index not in found
            continue
        own = set(chunk.split(". "))
        shared = [len(own & set(candidate.split(". "))) for candidate in copy]
        assert found[index] == max(range(len(copy)), key=lambda j: (shared[j], -j)), index
    assert found[46] - 46 == 19, "found 20 chunks further on, past the text read before it"


def test_identical_text_goes_to_its_nearest_copy_and_nothing_alike_to_none() -> None:
    same = "The same passage, word for word, twice over in one book."
    original = [same, "Unrelated words here.", same]
    copy = [same, "Other words entirely, about something else.", "Filler.", same]
    assert successors(original, copy) == {0: 0, 2: 3}
    assert successors([], copy) == {} and successors(original, []) == {}


def test_a_chunk_sharing_only_an_overlap_is_gone_and_a_tie_goes_to_where_it_is_expected() -> None:
    """Containment decides: a copy's chunk that holds two of a chunk's eight sentences (what neighbouring chunks
    share through their overlap) is not its successor, one that holds four is; between two that hold four each,
    the one nearest where the chunk is expected wins."""
    other = [f"Another thought, unrelated, on topic {n}." for n in range(40)]
    s = SENTENCES
    original = [" ".join(s[0:8]), " ".join(s[8:16]), " ".join(s[16:24])]
    copy = [
        " ".join(s[0:8]),
        " ".join(s[8:10] + other[0:6]),  # two of chunk 1's sentences: an overlap's worth
        " ".join(other[6:14]),
        " ".join(s[16:20] + other[14:18]),  # half of chunk 2, one from where it is expected
        " ".join(other[18:26]),
        " ".join(s[20:24] + other[26:30]),  # the other half, three from it
    ]
    assert successors(original, copy) == {0: 0, 2: 3}
    near = copy[:2] + [copy[5], copy[4], copy[3]]  # the halves swapped
    assert successors(original, near) == {0: 0, 2: 2}
