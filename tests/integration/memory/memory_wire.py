"""What the memory jobs send a model, read back by the tests' fake OpenAI endpoints: which job a
Structured Outputs request belongs to, and the client's lines in a ``format_messages`` transcript."""

from __future__ import annotations

import re

from app.memory.prompts import DECISION_INSTRUCTIONS, EXTRACT_INSTRUCTIONS, PROFILE_INSTRUCTIONS, SUMMARY_INSTRUCTIONS

LINE = re.compile(r"^\[(\d+)\] (.+?) \(([A-Z][a-z]{2} \d{4}-\d{2}-\d{2} \d{2}:\d{2} [^)]+)\): (.*)$")
"""One ``[n] Speaker (Tue 2026-12-08 11:15 +14): text`` line of :func:`app.memory.transcript.format_messages`: the
line's number, speaker, date (in the coach's time zone, its abbreviation or offset last) and text."""


def _prefix(instructions: str) -> str:
    return instructions.split("{name}")[0]


def memory_job(system: str) -> str | None:
    """``summary``, ``extract``, ``decision`` or ``profile`` for a memory job's system prompt; else ``None``."""
    if system == DECISION_INSTRUCTIONS:
        return "decision"
    for job, instructions in (
        ("summary", SUMMARY_INSTRUCTIONS),
        ("extract", EXTRACT_INSTRUCTIONS),
        ("profile", PROFILE_INSTRUCTIONS),
    ):
        if system.startswith(_prefix(instructions)):
            return job
    return None


def client_lines(transcript: str) -> list[tuple[int, str]]:
    """``(number, text)`` of the client's lines (every speaker but ``Assistant`` and ``Coach``)."""
    lines = []
    for raw in transcript.splitlines():
        match = LINE.match(raw)
        if match and match[2] not in ("Assistant", "Coach"):
            lines.append((int(match[1]), match[4]))
    return lines


def new_client_lines(user: str) -> list[tuple[int, str]]:
    """The client's lines under ``New messages:`` of an extraction request."""
    return client_lines(user.split("New messages:\n", 1)[1])
