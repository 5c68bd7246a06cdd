"""Prompt assembly for one chat turn, within a token budget.

Order in the prompt: one system message (coach persona; then what memory knows about the client — the L4
profile and the recalled L2 session summaries / L3 insights, best first; then grounding instructions and
the numbered passages of the coach's material), then the L1 recent turns (oldest first), then the
client's new message.

When the prompt is over budget, cuts happen in this order, one unit at a time:

1. the oldest L1 turns, while more than ``KEEP_RECENT`` remain (the last exchange matters most);
2. the lowest-scored memory items (summaries and insights compete on one score);
3. the lowest-ranked passages, while more than one remains;
4. the profile lines, last first;
5. the last passage;
6. the remaining L1 turns.

Persona and the new message are always kept. Tokens are counted with tiktoken (cl100k);
``BUDGET_MARGIN`` covers other models' tokenizers and chat-template overhead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.chat.models import Message, SenderType
from app.llm.base import ChatMessage
from app.memory.retrieval import MemoryContext, MemoryItem
from app.rag.chunking import count_tokens
from app.rag.retrieval import RetrievedChunk

BUDGET_MARGIN = 0.8
PER_MESSAGE_OVERHEAD = 4
KEEP_RECENT = 2
MEMORY_HEADER = "What you remember about this client from earlier sessions (use it naturally; do not recite it):"

GROUNDING = (
    "Use the passages below from the coach's own material when they help, and cite them by their number, "
    "like [1]. Do not invent quotes. If the passages do not cover the question, answer from general "
    "coaching practice and say so."
)


@dataclass(frozen=True)
class AssembledPrompt:
    """The messages to send, what made it in (passages for citations, memory items and profile lines for
    attribution, the number of L1 turns), and the estimated token count."""

    messages: list[ChatMessage]
    passages: list[RetrievedChunk]
    memory_items: list[MemoryItem]
    profile_lines: int
    history_used: int
    estimated_tokens: int

    def memory_used(self) -> dict[str, object]:
        """Attribution for the AI message's metadata: ids of the insights and summaries in the prompt."""
        return {
            "insight_ids": [str(i.id) for i in self.memory_items if i.layer == "insight"],
            "summary_ids": [str(i.id) for i in self.memory_items if i.layer == "summary"],
            "profile": self.profile_lines > 0,
        }


def _passage_block(passages: Sequence[RetrievedChunk]) -> str:
    lines = []
    for i, p in enumerate(passages, start=1):
        where = f"{p.title}, p. {p.page}" if p.page is not None else p.title
        lines.append(f"[{i}] ({where}) {p.text}")
    return "\n\n".join(lines)


def _system(
    persona: str, profile: Sequence[str], items: Sequence[MemoryItem], passages: Sequence[RetrievedChunk]
) -> str:
    parts = [persona] if persona else []
    if profile or items:
        parts.append("\n".join([MEMORY_HEADER, *profile, *(item.line() for item in items)]))
    if passages:
        parts.append(f"{GROUNDING}\n\nPassages:\n{_passage_block(passages)}")
    return "\n\n".join(parts)


def _tokens(messages: Sequence[ChatMessage]) -> int:
    return sum(count_tokens(msg["content"]) + PER_MESSAGE_OVERHEAD for msg in messages)


def assemble_prompt(
    *,
    persona: str,
    passages: Sequence[RetrievedChunk],
    memory: MemoryContext,
    history: Sequence[Message],
    user_text: str,
    budget_tokens: int,
) -> AssembledPrompt:
    """Build the chat prompt. ``passages`` and ``memory.items`` come best first; ``history`` is oldest-first
    and excludes the new message (client turns become ``user`` messages, AI and human-coach turns
    ``assistant`` messages). ``budget_tokens`` is the model's context minus the reply's ``max_tokens``."""
    limit = int(budget_tokens * BUDGET_MARGIN)
    kept_passages = list(passages)
    items = list(memory.items)
    profile = list(memory.profile_lines)
    turns: list[ChatMessage] = [
        {"role": "user" if msg.sender_type == SenderType.CLIENT else "assistant", "content": msg.text}
        for msg in history
    ]
    new: ChatMessage = {"role": "user", "content": user_text}
    cuts: list[tuple[Callable[[], bool], Callable[[], object]]] = [
        (lambda: len(turns) > KEEP_RECENT, lambda: turns.pop(0)),
        (lambda: bool(items), items.pop),
        (lambda: len(kept_passages) > 1, kept_passages.pop),
        (lambda: bool(profile), profile.pop),
        (lambda: bool(kept_passages), kept_passages.pop),
        (lambda: bool(turns), lambda: turns.pop(0)),
    ]

    def build() -> list[ChatMessage]:
        return [{"role": "system", "content": _system(persona, profile, items, kept_passages)}, *turns, new]

    messages = build()
    while _tokens(messages) > limit:
        step = next((cut for applies, cut in cuts if applies()), None)
        if step is None:
            break
        step()
        messages = build()
    return AssembledPrompt(messages, kept_passages, items, len(profile), len(turns), _tokens(messages))
