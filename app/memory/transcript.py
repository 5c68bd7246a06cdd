"""Messages as the memory jobs show them to the model, split to fit its context, and the attribution of
what the model wrote back to the messages it came from."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import tzinfo

import numpy as np

from app.conversations.models import Message, SenderType
from app.llm.base import Embedder
from app.rag.chunking import count_tokens

GROUNDING_TOP = 2
GROUNDING_MIN_SIMILARITY = 0.4
"""A statement is attributed to its ``GROUNDING_TOP`` most similar messages with cosine ≥ this (MiniLM
puts paraphrases of one fact around 0.5–0.8 and unrelated chat turns below 0.3)."""

_WORD = re.compile(r"\w+")

LINE_PREFIX_TOKENS = 20
"""cl100k tokens of a transcript line's ``[n] Name (Tue 2026-12-08 11:15 +14): `` prefix (:func:`format_messages`;
18–22 measured for one- and two-word names), counted with each message's text by :func:`windows`."""
TRANSCRIPT_STAMP = re.compile(r"\((?:[A-Z][a-z]{2} )?\d{4}-\d{1,2}-\d{1,2}[ T]\d{1,2}:\d{2}[^()\n]{0,12}\):")
"""A transcript line's speaker stamp, a date and time in brackets followed by a colon, ``Maria (Tue 2026-12-08 11:15
+14):`` (:func:`format_messages`) or the like: notes about a client never carry one; a small model that copies
transcript lines does ("Maria Lopez (2026-12-07 21:13): I'm so sorry to hear…"). A date and time in brackets
without the colon is a note's own ("Check in after the presentation (Thu 2026-12-10 14:00)")."""
COPIED_RUN = 6
"""Consecutive words, one of them a first- or second-person word (:data:`DIALOGUE_WORDS`), that a summary may not
share with the Assistant's or the Coach's messages unless the client said them too (:func:`copies`): "I'm so sorry
to hear that your brother was willing to help you" is the reply speaking, not a note about the client; "Luis to start
in the shallow end on Saturdays", also the reply's words, is a note of what it suggested."""
DIALOGUE_WORDS = frozenset(_WORD.findall("i me my mine we us our ours you your yours"))
"""The words of someone speaking (to) the client: notes about the client speak of them in the third person."""
COMMON_WORDS = frozenset(
    _WORD.findall(
        """the and for with that this these those from about into onto over under after before will would could
        should can may might must has have had was were are been being his her hers him she they them their theirs
        you your yours our ours its not but all any some more most much many very also just than then there here
        what when where which who whom whose how why one get got make made need want wants wanted like said say
        says talk talked discuss discussed client session coach assistant"""
    )
)
"""Words too common to ground a statement in a message (:func:`content_words`): a topic "wants to talk about it"
shares them with any session."""

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def speaker(message: Message, client_name: str) -> str:
    """The label of a message's author: the client's name, ``Assistant`` (the AI clone) or ``Coach``."""
    if message.sender_type == SenderType.CLIENT:
        return client_name
    return "Coach" if message.sender_type == SenderType.HUMAN_COACH else "Assistant"


def format_messages(messages: Sequence[Message], client_name: str, zone: tzinfo) -> str:
    """``[1] Name (Sun 2026-11-22 14:05 CET): text`` lines, numbered from 1 in the given order, each message dated in
    ``zone`` with its weekday and the zone's abbreviation or UTC offset (``+14``): the coach's zone
    (:func:`~app.accounts.availability.coach_zone`), which the chat prompt dates the client's memory and its "today"
    in, so that a model reads "tomorrow" or "Friday" from the client's day, not UTC's."""
    return "\n".join(
        f"[{i}] {speaker(msg, client_name)} ({msg.created_at.astimezone(zone):%a %Y-%m-%d %H:%M %Z}): {msg.text}"
        for i, msg in enumerate(messages, start=1)
    )


def windows(messages: Sequence[Message], max_tokens: int) -> list[list[Message]]:
    """Consecutive runs of ``messages`` of at most ``max_tokens`` cl100k tokens each (a single longer message
    gets a window of its own)."""
    result: list[list[Message]] = []
    current: list[Message] = []
    used = 0
    for msg in messages:
        tokens = count_tokens(msg.text) + LINE_PREFIX_TOKENS
        if current and used + tokens > max_tokens:
            result.append(current)
            current, used = [], 0
        current.append(msg)
        used += tokens
    if current:
        result.append(current)
    return result


def sentences(text: str) -> list[str]:
    """Split prose into sentences at ``.``/``!``/``?`` followed by white space."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def content_words(text: str, name: str = "") -> frozenset[str]:
    """``text``'s casefolded ``\\w+`` words of three characters or more, but for :data:`COMMON_WORDS` and the words
    of ``name`` (the client's: the Assistant greets them by it, so it would ground anything said of them)."""
    own = {word.casefold() for word in _WORD.findall(name)}
    return frozenset(
        word for word in _WORD.findall(text.casefold()) if len(word) >= 3 and word not in COMMON_WORDS | own
    )


def shares_words(text: str, words: frozenset[str], name: str = "") -> bool:
    """Whether ``text`` has a content word (:func:`content_words`, ``name`` left out) among ``words`` (a session's
    content words), or one that starts one of them or that one of them starts: "run" and "running", "weekly" and
    "week" meet without a stemmer. The lexical grounding of a summary's topics and action items, too short for
    embeddings to tell apart: "Soccer player" shares none with a session about swimming."""
    own = content_words(text, name)
    return bool(own & words) or any(a.startswith(b) or b.startswith(a) for a in own for b in words)


def copies(text: str, theirs: Sequence[str], own: Sequence[str]) -> bool:
    """Whether ``text`` repeats :data:`COPIED_RUN` consecutive words (casefolded ``\\w+``), one of them in
    :data:`DIALOGUE_WORDS`, of one of ``theirs`` (the Assistant's and the Coach's messages) that none of ``own``
    (the client's) holds: a summary that copies the Assistant's reply credits its words to the client."""

    def runs(texts: Sequence[str]) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        for item in texts:
            words = _WORD.findall(item.casefold())
            found.update(tuple(words[i : i + COPIED_RUN]) for i in range(len(words) - COPIED_RUN + 1))
        return found

    return any(DIALOGUE_WORDS.intersection(run) for run in runs([text]) & (runs(theirs) - runs(own)))


@dataclass(frozen=True)
class Grounding:
    """Attribution of statements to messages: ``vectors`` are the statements' embeddings, ``matches[i]`` the
    indices of the messages statement ``i`` is grounded in (best first; empty when none is similar enough)."""

    vectors: list[list[float]]
    matches: list[list[int]]

    def sources(self, messages: Sequence[Message]) -> list[uuid.UUID]:
        """Ids of all matched messages, in message order."""
        return [messages[j].id for j in sorted({j for row in self.matches for j in row})]

    def share(self, favoured: set[int], others: float) -> float:
        """Mean over the statements (1.0 for none) of 1 for one grounded in a message of index in ``favoured``,
        ``others`` for one grounded only in other messages, 0 for one grounded in none. With no ``favoured`` message
        among those compared, every grounded statement counts 1."""
        if not self.matches:
            return 1.0
        worth = [0.0 if not row else 1.0 if set(row) & favoured or not favoured else others for row in self.matches]
        return sum(worth) / len(worth)


async def ground(
    embedder: Embedder, statements: Sequence[str], messages: Sequence[Message], *, name: str = ""
) -> Grounding:
    """Attribute ``statements`` to ``messages`` by embedding similarity: each statement's ``GROUNDING_TOP``
    nearest messages with cosine ≥ ``GROUNDING_MIN_SIMILARITY``. With ``name`` (the client's), its words are
    left out of statements and messages when they are compared: a statement about "Bruno" is otherwise similar
    to "Hi, I'm Bruno." for the name alone. The vectors returned are still those of the statements as written."""
    if not statements:
        return Grounding([], [])
    masked = [_without_name(text, name) for text in [*statements, *(msg.text for msg in messages)]]
    vectors = await embedder.embed([*statements, *masked] if name else masked)
    statement_vectors = vectors[: len(statements)]
    if not messages:
        return Grounding(statement_vectors, [[] for _ in statements])
    compared = vectors[len(statements) :] if name else vectors
    similarity = np.asarray(compared[: len(statements)]) @ np.asarray(compared[len(statements) :]).T  # cosine
    matches = [
        [int(j) for j in np.argsort(-row)[:GROUNDING_TOP] if row[j] >= GROUNDING_MIN_SIMILARITY] for row in similarity
    ]
    return Grounding(statement_vectors, matches)


def _without_name(text: str, name: str) -> str:
    """``text`` without the words of ``name`` (whole words, any case); unchanged for an empty ``name``."""
    words = [re.escape(word) for word in re.findall(r"\w+", name)]
    return re.sub(rf"\b(?:{'|'.join(words)})\b", "", text, flags=re.IGNORECASE) if words else text
