"""Prompt assembly for one chat turn, within a token budget.

Order in the prompt: one system message (coach persona; then "How <coach> has replied in similar
situations" — the coach's style lines and a few of the coach's own past interventions nearest to this
situation, best first (immediate learning, :mod:`app.learning.interventions`): each the described situation
and the coach's scrubbed reply, never the other client's words; then what memory knows about
the client — the L4 profile and the recalled L2 session summaries / L3 insights, best first; then grounding
instructions and the numbered passages of the coach's material), then the L1 recent turns (oldest first),
then the client's new message.

Spotlighting (``spotlight=True``, the default; :mod:`app.chat.spotlight`, Hines et al. 2024): the system
message states the instruction hierarchy after the persona, and the examples, the memory lines and the
passages — text other people wrote — each sit in a delimited, datamarked data block. ``spotlight=False`` is
the undefended prompt ``opencoach eval injection`` compares against.

When the prompt is over budget, cuts happen in this order, one unit at a time:

1. the oldest L1 turns, while more than ``KEEP_RECENT`` remain (the last exchange matters most);
2. the least similar few-shot examples (they are a nudge, memory and sources are facts);
3. the style lines, last first;
4. the lowest-ranked passages, while more than ``KEEP_PASSAGES`` remain;
5. the lowest-scored memory items (recalled messages, summaries and insights compete on one score);
6. the lowest-ranked passages, while more than one remains;
7. the profile lines, last first;
8. the last passage;
9. the remaining L1 turns.

Memory goes after the weaker passages, not before them all: with the local model's 2,048-token window, five
passages alone filled the budget, and a client asking what they had said got the book instead of the memory.

Persona and the new message are always kept. Tokens are counted with tiktoken (cl100k);
``BUDGET_MARGIN`` covers other models' tokenizers and chat-template overhead.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.chat.spotlight import HIERARCHY, clean, data_block, datamark
from app.conversations.models import Message, SenderType
from app.llm.base import ChatMessage
from app.memory.retrieval import MemoryContext, MemoryItem
from app.rag.chunking import count_tokens
from app.rag.retrieval import RetrievedChunk, source_label

if TYPE_CHECKING:
    from app.learning.interventions import FewShotExample

BUDGET_MARGIN = 0.8
PER_MESSAGE_OVERHEAD = 4
KEEP_RECENT = 2
KEEP_PASSAGES = 2
"""Passages kept before memory items are cut (see the module docstring)."""
LINE_START = re.compile(r"(?<=\n)(?=\S)")
"""Where a text may be cut for counting its tokens piece by piece: after a newline, before a character that is
not whitespace. No pre-token of cl100k's pattern (tiktoken's ``pat_str``) crosses such a place: every pattern
that takes a newline ends there or goes on only through whitespace, and none starts with a newline before a
letter. BPE merges only inside a pre-token, so the pieces' counts add up to the whole text's count exactly
(checked against tiktoken in ``tests/unit/test_prompt_and_security.py``). The budget search counts each line of
the system message once per prompt instead of the whole message for every state it tries."""
PIECE_CACHE_SIZE = 4096
"""Prompt pieces whose token counts :func:`_piece_tokens` keeps (least recently used dropped first): a few MB at
most (a piece is one line of a passage, a memory item or a message)."""
EXAMPLES_HEADER = "How {coach} has replied in similar situations (follow the style and technique, not the words):"
MEMORY_HEADER = (
    "What you remember about this client from earlier sessions (use it naturally; when the client asks what or "
    "when they told you something, answer from it with its date):"
)

GROUNDING = (
    "Use the passages below from the coach's own material when they help, and cite them by their number, "
    "like [1]. Do not invent quotes. If the passages do not cover the question, answer from general "
    "coaching practice and say so."
)


@dataclass(frozen=True)
class AssembledPrompt:
    """The messages to send, what made it in (passages for citations, memory items and profile lines for
    attribution, the number of L1 turns, the few-shot ``examples`` and style lines), and the estimated
    token count."""

    messages: list[ChatMessage]
    passages: list[RetrievedChunk]
    memory_items: list[MemoryItem]
    profile_lines: int
    history_used: int
    estimated_tokens: int
    examples: list[FewShotExample] = field(default_factory=list)
    style_lines: int = 0
    persona: str = ""
    """The persona at the top of the system message."""
    protected: list[str] = field(default_factory=list)
    """Other texts the client must never read back: the fixed instructions and the style lines — with ``persona``
    and the few-shot ``examples`` (:class:`~app.chat.turn.injection.ReplyCheck`), the output check's leak
    reference."""
    untrusted: list[str] = field(default_factory=list)
    """Texts in the prompt that others wrote (passages, memory lines, few-shot texts): where an injected
    instruction can hide — the output check's payload reference."""

    def memory_used(self) -> dict[str, object]:
        """Attribution for the AI message's metadata: ids of the insights, summaries and recalled messages
        (episodes) in the prompt."""
        return {
            "message_ids": [str(i.id) for i in self.memory_items if i.layer == "message"],
            "insight_ids": [str(i.id) for i in self.memory_items if i.layer == "insight"],
            "summary_ids": [str(i.id) for i in self.memory_items if i.layer == "summary"],
            "profile": self.profile_lines > 0,
        }


def _passage_lines(
    passages: Sequence[RetrievedChunk], spotlight: bool, mark: Callable[[str], str] = datamark
) -> list[str]:
    lines = []
    for i, p in enumerate(passages, start=1):
        text = f"({source_label(p.title, p.page, p.locator)}) {p.text}"
        lines.append(f"[{i}] {mark(text) if spotlight else text}")
    return lines


def _example_block(
    coach: str,
    style: Sequence[str],
    examples: Sequence[FewShotExample],
    spotlight: bool = False,
    datamarked: Callable[[str], str] = datamark,
) -> str:
    mark = datamarked if spotlight else str
    lines = [f"- {mark(line)}" for line in style]
    for example in examples:
        technique = f" ({example.strategy})" if example.strategy else ""
        situation, said = mark(example.situation), mark(example.coach_text)
        lines.append(f'When {situation}:\n{coach or "Coach"}{technique}: "{said}"')
    header = EXAMPLES_HEADER.format(coach=coach or "the coach")
    return "\n".join([header, data_block("the coach's past replies", lines) if spotlight else "\n".join(lines)])


def _system(
    persona: str,
    profile: Sequence[str],
    items: Sequence[MemoryItem],
    passages: Sequence[RetrievedChunk],
    coach: str = "",
    style: Sequence[str] = (),
    examples: Sequence[FewShotExample] = (),
    spotlight: bool = False,
    mark: Callable[[str], str] = datamark,
    today: str = "",
) -> str:
    """The system message; ``mark`` datamarks untrusted text when ``spotlight`` is on (:func:`datamark`, or a
    cached copy of it while the budget search builds the same lines again); ``today`` (the memory's
    :attr:`~app.memory.retrieval.MemoryContext.today`) heads the memory lines, whose dates count from it."""
    parts = [persona] if persona else []
    if spotlight:
        parts.append(HIERARCHY)
    if style or examples:
        parts.append(_example_block(coach, style, examples, spotlight, mark))
    if profile or items:
        lines = [*profile, *(item.line() for item in items)]
        if spotlight:
            lines = [data_block("notes about the client", [mark(line) for line in lines])]
        parts.append("\n".join([MEMORY_HEADER, *([f"Today is {today}."] if today else []), *lines]))
    if passages:
        lines = _passage_lines(passages, spotlight, mark)
        block = data_block("passages", lines) if spotlight else "\n\n".join(lines)
        parts.append(f"{GROUNDING}\n\nPassages:\n{block}")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class _Kept:
    """What one state of the budget cuts keeps of each part of the prompt."""

    turns: list[ChatMessage]
    shots: list[FewShotExample]
    style: list[str]
    items: list[MemoryItem]
    passages: list[RetrievedChunk]
    profile: list[str]


@functools.lru_cache(maxsize=PIECE_CACHE_SIZE)
def _piece_tokens(piece: str) -> int:
    """cl100k tokens in one piece of a prompt message (cut at :data:`LINE_START`), remembered for the process:
    the persona, the headers and the coach's passages come back turn after turn, and each state of the budget
    search counts the same pieces again."""
    return count_tokens(piece)


def _cut_states(uncut: _Kept) -> list[_Kept]:
    """Every state the budget cuts pass through, ``uncut`` first, one unit cut per state in the order of the
    module docstring; the last state is the one no cut applies to."""
    turns, shots, style, items = list(uncut.turns), list(uncut.shots), list(uncut.style), list(uncut.items)
    passages, profile = list(uncut.passages), list(uncut.profile)
    cuts: list[tuple[Callable[[], bool], Callable[[], object]]] = [
        (lambda: len(turns) > KEEP_RECENT, lambda: turns.pop(0)),
        (lambda: bool(shots), shots.pop),
        (lambda: bool(style), style.pop),
        (lambda: len(passages) > KEEP_PASSAGES, passages.pop),
        (lambda: bool(items), items.pop),
        (lambda: len(passages) > 1, passages.pop),
        (lambda: bool(profile), profile.pop),
        (lambda: bool(passages), passages.pop),
        (lambda: bool(turns), lambda: turns.pop(0)),
    ]
    states = [uncut]
    while (step := next((cut for applies, cut in cuts if applies()), None)) is not None:
        step()
        states.append(_Kept(list(turns), list(shots), list(style), list(items), list(passages), list(profile)))
    return states


def _first_within(states: Sequence[_Kept], fits: Callable[[_Kept], bool]) -> _Kept:
    """The first of ``states`` that ``fits`` (the last when none does). Each cut only removes text, so the
    token count falls along the states and bisection finds it with a few tokenizations of the prompt instead
    of one per cut; the uncut state is tried first, as most prompts fit."""
    low, high = 0, 0 if fits(states[0]) else len(states) - 1  # the answer lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        if fits(states[middle]):
            high = middle
        else:
            low = middle + 1
    return states[low]


def assemble_prompt(
    *,
    persona: str,
    passages: Sequence[RetrievedChunk],
    memory: MemoryContext,
    history: Sequence[Message],
    user_text: str,
    budget_tokens: int,
    examples: Sequence[FewShotExample] = (),
    style: Sequence[str] = (),
    coach_name: str = "",
    spotlight: bool = True,
) -> AssembledPrompt:
    """Build the chat prompt. ``passages``, ``memory.items`` and ``examples`` (the coach's past
    interventions, :meth:`app.learning.interventions.InterventionService.similar`) come best first;
    ``style`` are :func:`app.learning.style.style_lines`; ``coach_name`` names the coach in the examples
    section. ``history`` is oldest-first and excludes the new message (client turns become ``user``
    messages, AI and human-coach turns ``assistant`` messages). ``budget_tokens`` is the model's context
    minus the reply's ``max_tokens``. ``spotlight``: data blocks and the instruction hierarchy (see the module
    docstring); off only to measure the undefended prompt."""
    limit = int(budget_tokens * BUDGET_MARGIN)
    turns: list[ChatMessage] = [
        {"role": "user" if msg.sender_type == SenderType.CLIENT else "assistant", "content": msg.text}
        for msg in history
    ]
    new: ChatMessage = {"role": "user", "content": user_text}
    uncut = _Kept(turns, list(examples), list(style), list(memory.items), list(passages), list(memory.profile_lines))
    mark = functools.cache(datamark)  # the search builds the same lines for each state it tries

    def tokens(messages: Sequence[ChatMessage]) -> int:
        pieces = (piece for msg in messages for piece in LINE_START.split(msg["content"]))
        return sum(map(_piece_tokens, pieces)) + PER_MESSAGE_OVERHEAD * len(messages)

    def build(kept: _Kept) -> list[ChatMessage]:
        system = _system(
            persona,
            kept.profile,
            kept.items,
            kept.passages,
            coach_name,
            kept.style,
            kept.shots,
            spotlight,
            mark,
            memory.today,
        )
        return [{"role": "system", "content": system}, *kept.turns, new]

    kept = _first_within(_cut_states(uncut), lambda state: tokens(build(state)) <= limit)
    messages = build(kept)
    shot_texts = [shot.coach_text for shot in kept.shots]
    fixed = [GROUNDING, EXAMPLES_HEADER, MEMORY_HEADER, *([HIERARCHY] if spotlight else [])]
    return AssembledPrompt(
        messages,
        kept.passages,
        kept.items,
        len(kept.profile),
        len(kept.turns),
        tokens(messages),
        kept.shots,
        len(kept.style),
        persona=persona,
        protected=[*fixed, *kept.style],
        untrusted=[  # as the model reads them (clean: NFKC, no invisible characters); a passage's title too
            *(clean(f"{p.title}. {p.text}") for p in kept.passages),  # (the file's name, /Title, <title>)
            *(clean(line) for line in kept.profile),
            *(clean(i.text) for i in kept.items),
            *(clean(text) for text in shot_texts),
        ],
    )
