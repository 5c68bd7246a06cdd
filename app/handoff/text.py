"""Free text shown in a small space (the coach's brief, alert e-mails, stored errors)."""

from __future__ import annotations


def one_line(text: str, limit: int) -> str:
    """``text`` with every run of whitespace (newlines included) made one space, cut to at most ``limit``
    characters with a trailing ``…`` when it is longer."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
