"""Session transcripts (WebVTT ``.vtt`` and SubRip ``.srt``) to speaker turns with webvtt-py.

Consecutive cues of one speaker make one turn, a :class:`app.rag.extract.Page` with ``number`` ``None`` and
``locator`` the turn's start time (``"HH:MM:SS"``), which citations show instead of a page. The speaker is
the cue's WebVTT voice span (``<v Name>``) or a ``Name:`` prefix on the cue's text (the usual SRT habit);
a turn's text starts with ``"Name: "``. A turn is cut after ``TURN_SECONDS`` so a long monologue still gets
timestamps close to each passage. A transcript has no pages: its document's ``pages`` stays ``None``, for SRT and
VTT alike, and ``pages_done`` counts its turns (the dashboard shows them as "N turns").
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import webvtt
from webvtt.errors import MalformedFileError

from app.rag.extract import Caps, ExtractedText, ExtractionError, Page

TURN_SECONDS = 60
"""Longest turn (seconds from its first cue's start) before a new one starts with a fresh timestamp."""

_NAME_PREFIX = re.compile(r"^([A-Z][\w .'-]{0,40}):\s+(.+)$", re.DOTALL)


@dataclass
class _Turn:
    speaker: str | None
    start: str
    seconds: int
    lines: list[str]


def extract_transcript(text: str, kind: str, caps: Caps) -> ExtractedText:
    """Speaker turns of the ``kind`` (``"vtt"`` or ``"srt"``) transcript ``text``.

    Raises ``ExtractionError``: malformed file, no cues with text, more turns or characters than ``caps``."""
    try:
        captions = webvtt.from_buffer(io.StringIO(text), format=kind).captions
    except MalformedFileError as exc:
        raise ExtractionError(f"the {kind.upper()} transcript is malformed ({exc})") from exc
    except (ValueError, IndexError, AttributeError) as exc:
        raise ExtractionError(f"the {kind.upper()} transcript cannot be read ({exc})") from exc
    turns: list[_Turn] = []
    for caption in captions:
        speaker, said = _speaker(caption.voice, " ".join(caption.text.split()))
        if not said:
            continue
        last = turns[-1] if turns else None
        if last and last.speaker == speaker and caption.start_in_seconds - last.seconds < TURN_SECONDS:
            last.lines.append(said)
            continue
        turns.append(_Turn(speaker, caption.start[:8], caption.start_in_seconds, [said]))
        caps.check_pages(len(turns), "the transcript", "turn", "speaker turns")
    if not turns:
        raise ExtractionError(f"the {kind.upper()} transcript has no cues with text")
    pages = [Page(None, _turn_text(turn), turn.start) for turn in turns]
    caps.check_characters(sum(len(page.text) for page in pages))
    return ExtractedText(pages)


def _speaker(voice: str | None, text: str) -> tuple[str | None, str]:
    """``(speaker, text without the name prefix)``; the voice span wins over a ``Name:`` prefix."""
    if voice:
        return voice.strip(), text
    if match := _NAME_PREFIX.match(text):
        return match.group(1).strip(), match.group(2).strip()
    return None, text


def _turn_text(turn: _Turn) -> str:
    said = " ".join(turn.lines)
    return f"{turn.speaker}: {said}" if turn.speaker else said
