"""Messages as the memory jobs show them to the model, split to fit its context, and the attribution of
what the model wrote back to the messages it came from."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.conversations.models import Message, SenderType
from app.llm.base import Embedder
from app.rag.chunking import count_tokens

GROUNDING_TOP = 2
GROUNDING_MIN_SIMILARITY = 0.4
"""A statement is attributed to its ``GROUNDING_TOP`` most similar messages with cosine ≥ this (MiniLM
puts paraphrases of one fact around 0.5–0.8 and unrelated chat turns below 0.3)."""

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def speaker(message: Message, client_name: str) -> str:
    """The label of a message's author: the client's name, ``Assistant`` (the AI clone) or ``Coach``."""
    if message.sender_type == SenderType.CLIENT:
        return client_name
    return "Coach" if message.sender_type == SenderType.HUMAN_COACH else "Assistant"


def format_messages(messages: Sequence[Message], client_name: str) -> str:
    """``[1] Name (2026-11-22 14:05): text`` lines, numbered from 1 in the given order."""
    return "\n".join(
        f"[{i}] {speaker(msg, client_name)} ({msg.created_at:%Y-%m-%d %H:%M}): {msg.text}"
        for i, msg in enumerate(messages, start=1)
    )


def windows(messages: Sequence[Message], max_tokens: int) -> list[list[Message]]:
    """Consecutive runs of ``messages`` of at most ``max_tokens`` cl100k tokens each (a single longer message
    gets a window of its own)."""
    result: list[list[Message]] = []
    current: list[Message] = []
    used = 0
    for msg in messages:
        tokens = count_tokens(msg.text) + 12  # the "[n] Name (date):" prefix
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


@dataclass(frozen=True)
class Grounding:
    """Attribution of statements to messages: ``vectors`` are the statements' embeddings, ``matches[i]`` the
    indices of the messages statement ``i`` is grounded in (best first; empty when none is similar enough)."""

    vectors: list[list[float]]
    matches: list[list[int]]

    def sources(self, messages: Sequence[Message]) -> list[uuid.UUID]:
        """Ids of all matched messages, in message order."""
        return [messages[j].id for j in sorted({j for row in self.matches for j in row})]

    def share(self) -> float:
        """Fraction of statements grounded in at least one message (1.0 for no statements)."""
        return sum(bool(row) for row in self.matches) / len(self.matches) if self.matches else 1.0


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
