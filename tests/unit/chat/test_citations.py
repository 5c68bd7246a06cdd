"""Which retrieved passages a reply cites (``app.chat.turn.state.cited_passages``, ``Reply.citations``)."""

from __future__ import annotations

import uuid

import pytest

from app.chat.turn.state import Reply, cited_passages
from app.conversations.metadata import client_citations
from app.handoff.signals import TurnSignals
from app.rag.retrieval import RetrievedChunk

SIGNALS = TurnSignals(0.0, "none", 0.0, 0.0, False, None)
PASSAGES = [
    "Begin the morning by saying to thyself, I shall meet with the busy-body, the ungrateful, arrogant, deceitful.",
    "When the morning goes badly, stop for two minutes. Breathe out slowly and name one thing you can control.",
    "The licence of this Project Gutenberg eBook: you may copy it, give it away or re-use it.",
]


def passage(page: int, text: str) -> RetrievedChunk:
    return RetrievedChunk(uuid.uuid4(), uuid.uuid4(), "Meditations", page, text, 0.2, 0.01)


@pytest.mark.parametrize(
    ("reply", "cited"),
    [
        pytest.param("Stop for two minutes, breathe out slowly, and name what you control.", [2], id="drawn-on"),
        pytest.param("You're welcome, have a nice day!", [], id="small-talk"),
        pytest.param("I do not know.", [], id="no-answer"),
        pytest.param("As [3] says, and [1] too: rest first. [7]", [1, 3], id="by-number"),
        pytest.param("Great question [1, 3]. Be kind to those who offend you.", [1, 3], id="grouped-numbers"),
        pytest.param("When you take one thing at a time, each other task is made lighter.", [], id="stop-words"),
        pytest.param(
            "Say to yourself each morning that you will meet the ungrateful and arrogant.", [1], id="paraphrase"
        ),
    ],
)
def test_a_reply_cites_the_passages_it_draws_on(reply: str, cited: list[int]) -> None:
    """Every retrieved passage was a citation: "Hi! Thanks so much, have a nice day" showed five book pages, an "I do
    not know" looked sourced, and the licence page came with an answer about a playlist (found by a run as a coach's
    clients). A reply now cites the passages it names by number (a number no passage has is ignored), else those it
    shares three content words with; each keeps its number in the prompt, which the client's view shows."""
    passages = [passage(page, text) for page, text in enumerate(PASSAGES, start=10)]

    assert cited_passages(reply, passages) == cited
    citations = Reply(metadata={}, signals=SIGNALS, drafting=False, passages=passages, text=reply).citations
    assert [c["chunk_id"] for c in citations] == [str(passages[n - 1].chunk_id) for n in cited]
    assert [c["markers"] for c in client_citations(citations)] == [[n] for n in cited]


GERMAN_PASSAGES = [
    "Die Kunst des Lebens gleicht mehr dem Ringen als dem Tanzen, und nicht die Dinge beunruhigen uns.",
    "Geh jeden Morgen zehn Minuten spazieren, atme langsam aus und nenne eine Sache, die du steuern kannst.",
]


@pytest.mark.parametrize(
    ("reply", "cited"),
    [
        pytest.param(
            "Es ist nicht die Frage, ob du das schaffst, und die Antwort liegt bei dir.", [], id="function-words"
        ),
        pytest.param("Geh morgens zehn Minuten spazieren und atme dabei langsam aus.", [2], id="drawn-on"),
    ],
)
def test_a_reply_in_another_language_cites_by_that_languages_content_words(reply: str, cited: list[int]) -> None:
    """A German reply cited a passage it shares only "und, die, nicht, das" with (the English rule kept them as
    content words); in the client's language, a passage is cited by the words that carry its topic."""
    passages = [passage(page, text) for page, text in enumerate(GERMAN_PASSAGES, start=10)]

    assert cited_passages(reply, passages, "de") == cited
    reply_of = Reply(metadata={}, signals=SIGNALS, drafting=False, passages=passages, text=reply, language="de")
    assert [c["chunk_id"] for c in reply_of.citations] == [str(passages[n - 1].chunk_id) for n in cited]
