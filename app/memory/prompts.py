"""The memory jobs' prompts: instructions, one worked example per job, and how much input text fits.

The ``*_INSTRUCTIONS`` are the system messages of the L2 summary (:mod:`app.memory.summaries`), L3
extraction and match decision (:mod:`app.memory.insights`) and L4 profile (:mod:`app.memory.profile`) jobs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from app.core.config import Settings
from app.llm.base import ChatMessage
from app.memory.transcript import sentences

PROMPT_SHARE = 0.6
"""Share of the context the memory jobs' input text may use; the rest is instructions and the answer."""

SUMMARY_INSTRUCTIONS = (
    "You write a coach's private notes. Summarise the chat session with the client {name} as JSON: the "
    "concrete facts (events, people, places, dates, numbers), the topics, what was learned about {name}, "
    "the next steps, and {name}'s mood. Use only what the messages say. Write about {name} in the third person, "
    "in your own words: what the Assistant or the Coach says is not what {name} said."
)
EXTRACT_INSTRUCTIONS = (
    "You write a coach's private notes about the client {name}. From the new messages, list what is worth "
    "remembering about {name} in later sessions: goals, blockers, breakthroughs, preferences, achievements, "
    "patterns, milestones, commitments. Each one: a short statement about {name} with its concrete details, "
    "importance 0-10, status (active, achieved or dropped), and the numbers of the messages it comes from. "
    "Use only what {name} says; what the Assistant or the Coach says is not a fact about {name}. An empty "
    "list is fine."
)
DECISION_INSTRUCTIONS = (
    "Two notes about the same client. Answer 'same' if the new note says the same as the stored one, "
    "'update' if it changes or corrects it, 'different' if it is about something else."
)
PROFILE_INSTRUCTIONS = (
    "You write a coach's private notes on how to work with the client {name}: how {name} likes to "
    "communicate, what helps and what does not, the tone to use, topics to handle with care. Only new "
    "observations from this session; empty lists when it shows nothing."
)

# One worked example per job (few-shot prompting, Brown et al. 2020): small models follow an example's
# form far better than a description of it. The example client is EXAMPLE_NAME; the real client's name differs.
EXAMPLE_TRANSCRIPT = (
    "[1] Sam (Mon 2026-03-02 18:00 CET): I finally signed up for the 10k run in June!\n"
    "[2] Coach (Mon 2026-03-02 18:01 CET): That is great news. How do you feel about it?\n"
    "[3] Sam (Mon 2026-03-02 18:02 CET): Nervous. My knee still hurts after long runs, so I will see a physio on "
    "Friday."
)
EXAMPLE_SUMMARY = (
    '{"summary": "Sam signed up for a 10k run in June. Sam is nervous because the knee hurts after long runs '
    'and will see a physiotherapist on Friday.", "topics": ["10k run in June", "knee pain"], "insights": '
    '["Sam is training for a 10k run"], "action_items": ["Sam sees a physiotherapist on Friday"], '
    '"emotional_state": "nervous but motivated"}'
)
EXAMPLE_INSIGHTS = (
    '{"insights": [{"kind": "goal", "text": "Sam wants to run a 10k race in June", "importance": 7, '
    '"status": "active", "evidence": [1]}, {"kind": "blocker", "text": "Sam\'s knee hurts after long runs", '
    '"importance": 6, "status": "active", "evidence": [3]}, {"kind": "commitment", "text": "Sam will see a '
    'physiotherapist on Friday", "importance": 5, "status": "active", "evidence": [3]}]}'
)
EXAMPLE_PROFILE = (
    '{"communication_preferences": ["shares news with enthusiasm"], "what_works": ["asking how Sam feels"], '
    '"what_doesnt_work": [], "tone": "warm and encouraging", "sensitive_topics": ["knee injury"]}'
)


ECHO_UNSTATED = "not clear from the session"
"""What a summary's ``emotional_state`` says when the model copied the example's (:func:`echoes`)."""
EXAMPLE_NAME = "Sam"
"""The example client's name in the worked examples."""
ECHO_SIMILARITY = 0.8
"""Jaccard similarity of two texts' word sets (:func:`echoes`) from which one repeats the other: "Bruno's knee
hurts after long runs" repeats "Sam's knee hurts after long runs" (1.0); "Bruno wants to run a marathon in June"
is not "Sam wants to run a 10k race in June" (0.7)."""


def example_values(example: str) -> tuple[str, ...]:
    """The string values of a worked example's JSON output (``EXAMPLE_PROFILE``, ``EXAMPLE_SUMMARY``), lists
    flattened and prose cut into its sentences. A small model copies the example's words into a real client's
    memory ("knee injury" as a sensitive topic, "nervous but motivated" of everyone): an output value that
    :func:`echoes` one of these repeats the example, not the client, and is dropped."""
    values = json.loads(example).values()
    flat = [item for value in values for item in (value if isinstance(value, list) else [value])]
    return tuple(part for item in flat if isinstance(item, str) for part in sentences(item))


def _words(text: str, names: frozenset[str]) -> frozenset[str]:
    """The casefolded ``\\w+`` words of ``text``, each of ``names`` made one and the same word."""
    return frozenset("\0" if word in names else word for word in re.findall(r"\w+", text.casefold()))


def echoes(text: str, values: Sequence[str], name: str) -> bool:
    """Whether ``text`` (written about the client ``name``) repeats one of a worked example's ``values``: their
    word sets, the example client's name and the real client's taken for the same word, have a Jaccard similarity
    of at least :data:`ECHO_SIMILARITY` (so case, punctuation, the name and a word more or less do not hide an
    echo). A text without words echoes nothing."""
    names = frozenset(re.findall(r"\w+", f"{EXAMPLE_NAME} {name}".casefold()))
    own = _words(text, names)
    return bool(own) and any(
        len(own & other) >= ECHO_SIMILARITY * len(own | other) for other in (_words(v, names) for v in values)
    )


PROFILE_ECHOES = example_values(EXAMPLE_PROFILE)
"""The profile example's values (:func:`example_values`), dropped from a profile update's output."""
SUMMARY_ECHOES = example_values(EXAMPLE_SUMMARY)
"""The summary example's values and sentences (:func:`example_values`), dropped from a summary's output (an
answer whose prose repeats one is rejected)."""
INSIGHT_ECHOES = tuple(str(item["text"]) for item in json.loads(EXAMPLE_INSIGHTS)["insights"])
"""The insight example's texts, whose echoes an extraction drops."""


def few_shot_prompt(instructions: str, example_input: str, example_output: str, actual_input: str) -> list[ChatMessage]:
    """System instructions, one worked example as a user/assistant exchange, then the real input."""
    return [
        {"role": "system", "content": instructions},
        {"role": "user", "content": example_input},
        {"role": "assistant", "content": example_output},
        {"role": "user", "content": actual_input},
    ]


def input_tokens(settings: Settings, max_tokens: int) -> int:
    """Transcript tokens a memory prompt may carry: a share of the context left after the answer's room of
    ``max_tokens`` (``settings.llm_context_tokens`` is the model's whole window)."""
    return int((settings.llm_context_tokens - max_tokens) * PROMPT_SHARE)
