"""Prompt assembly for one chat turn, within a token budget.

Order: system (coach persona + grounding instructions + numbered passages), then the recent history
(oldest first), then the client's new message. When the prompt is over budget, the oldest history turns
go first, then the lowest-ranked passages; persona and the new message are always kept.
Tokens are counted with tiktoken (cl100k); ``BUDGET_MARGIN`` covers other models' tokenizers and
chat-template overhead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.chat.models import Message, SenderType
from app.llm.base import ChatMessage
from app.rag.chunking import count_tokens
from app.rag.retrieval import RetrievedChunk

BUDGET_MARGIN = 0.8
PER_MESSAGE_OVERHEAD = 4

GROUNDING = (
    "Use the passages below from the coach's own material when they help, and cite them by their number, "
    "like [1]. Do not invent quotes. If the passages do not cover the question, answer from general "
    "coaching practice and say so."
)


@dataclass(frozen=True)
class AssembledPrompt:
    """The messages to send, the passages that made it in (citations), and the estimated token count."""

    messages: list[ChatMessage]
    passages: list[RetrievedChunk]
    history_used: int
    estimated_tokens: int


def _passage_block(passages: Sequence[RetrievedChunk]) -> str:
    lines = []
    for i, p in enumerate(passages, start=1):
        where = f"{p.title}, p. {p.page}" if p.page is not None else p.title
        lines.append(f"[{i}] ({where}) {p.text}")
    return "\n\n".join(lines)


def _system(persona: str, passages: Sequence[RetrievedChunk]) -> str:
    if not passages:
        return persona
    return f"{persona}\n\n{GROUNDING}\n\nPassages:\n{_passage_block(passages)}"


def _tokens(messages: Sequence[ChatMessage]) -> int:
    return sum(count_tokens(msg["content"]) + PER_MESSAGE_OVERHEAD for msg in messages)


def assemble_prompt(
    *,
    persona: str,
    passages: Sequence[RetrievedChunk],
    history: Sequence[Message],
    user_text: str,
    budget_tokens: int,
) -> AssembledPrompt:
    """Build the chat prompt. ``history`` is oldest-first and excludes the new message; client turns
    become ``user`` messages, AI and human-coach turns ``assistant`` messages. ``budget_tokens`` is the
    model's context minus the reply's ``max_tokens``."""
    limit = int(budget_tokens * BUDGET_MARGIN)
    kept_passages = list(passages)
    turns: list[ChatMessage] = [
        {"role": "user" if msg.sender_type == SenderType.CLIENT else "assistant", "content": msg.text}
        for msg in history
    ]
    new: ChatMessage = {"role": "user", "content": user_text}

    def build() -> list[ChatMessage]:
        return [{"role": "system", "content": _system(persona, kept_passages)}, *turns, new]

    messages = build()
    while _tokens(messages) > limit and (turns or kept_passages):
        if turns:
            turns.pop(0)
        else:
            kept_passages.pop()
        messages = build()
    return AssembledPrompt(messages, kept_passages, len(turns), _tokens(messages))
