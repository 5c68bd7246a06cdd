"""What a Telegram chat shows: escaped HTML text, citations as footnotes, replies split at 4,096 characters,
and the inline keyboards. Pure functions.

Telegram's formatting (Bot API, "Formatting options", HTML style): only ``<``, ``>`` and ``&`` need escaping
in text; a message holds at most 4,096 characters after entity parsing (Bot API ``sendMessage``); callback
data is 1–64 bytes (``InlineKeyboardButton``).
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Sequence
from typing import Any

from app.conversations.metadata import client_citations
from app.handoff.catalogue import say
from app.handoff.languages import Language, detect_language, tag_language
from app.handoff.normalise import normalise
from app.memory.client_view import RememberedOut
from app.rag.retrieval import source_label

MAX_MESSAGE_CHARS = 4096
"""Telegram's limit on one message's text (after entity parsing), in UTF-16 code units (:func:`utf16_len`)."""
PARSE_MODE = "HTML"
FORGET_COMMAND = "/forget"
HELP_COMMAND = "/help"
FORGET_ITEMS = 30
"""Items listed by ``/forget`` (one button each; a keyboard holds at most 100 buttons)."""
FORGET_ITEM_CHARS = 120
"""Characters of an item's text shown in the ``/forget`` list (30 items fit one message)."""
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")
_ADDRESSED = re.compile(r"(/[A-Za-z0-9_]+)@([A-Za-z0-9_]+)(?=\s|$)")


def escape(text: str) -> str:
    """``text`` safe in Telegram's HTML parse mode (``&``, ``<``, ``>`` escaped; quotes left as they are)."""
    return html.escape(text, quote=False)


def addressed_command(text: object) -> tuple[str, str] | None:
    """A message ``text`` that begins with a command addressed to a bot, ``/cmd@<bot username>`` (as Telegram sends a
    command tapped in a message or sent in a group; Bot API "Commands"): ``(the text with "@<bot username>"
    dropped, the bot username)``; ``None`` for any other text."""
    match = _ADDRESSED.match(text) if isinstance(text, str) else None
    return None if match is None else (match.group(1) + match.string[match.end() :], match.group(2))


def footnotes(citations: Sequence[Any]) -> str:
    """Citations as footnotes, one per source as the client sees them (:func:`~app.conversations.metadata.
    client_citations`: passages of the same page are one), each led by the reply's markers it stands for, with
    :func:`app.rag.retrieval.source_label`: ``"[1, 2] Meditations, p. 12"``, ``"[3] Session 3, 00:12:31"``; ``""``
    without citations. ``citations``: stored, or already the client's view."""
    lines = []
    for citation in client_citations(citations):
        label = source_label(str(citation.get("title") or "source"), citation.get("page"), citation.get("locator"))
        lines.append(f"[{', '.join(str(n) for n in citation['markers'])}] {label}")
    return "\n".join(lines)


def reply_html(text: str, citations: Sequence[dict[str, Any]] = ()) -> str:
    """A reply's final text in HTML parse mode: the escaped text, then its footnotes in italics."""
    notes = footnotes(citations)
    body = escape(text)
    return f"{body}\n\n<i>{escape(notes)}</i>" if notes else body


def utf16_len(text: str) -> int:
    """``text``'s length as Telegram counts it against :data:`MAX_MESSAGE_CHARS`: UTF-16 code units, in which a
    character outside the Basic Multilingual Plane (most emoji) is two."""
    return len(text.encode("utf-16-le")) // 2


def _fitting(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` UTF-16 code units (at least one)."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return max(index, 1)
    return len(text)


def split_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """``text`` cut into parts of at most ``limit`` UTF-16 code units (:func:`utf16_len`), at sentence ends (or
    line breaks) where possible, else at a space, else hard; whitespace at the cuts is dropped. An empty text
    gives ``[""]``."""
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        fits = _fitting(rest, limit)
        window = rest[: fits + 1]
        cuts = [m.end() for m in _SENTENCE_END.finditer(window) if m.start() <= fits and m.start() > 0]
        cut = cuts[-1] if cuts else (window.rfind(" ") + 1 or fits)
        if cut <= 0 or cut > fits:
            cut = fits
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    parts.append(rest.rstrip())
    return parts


def split_html(text: str, citations: Sequence[dict[str, Any]] = ()) -> list[str]:
    """A reply as HTML messages each at most 4,096 long as Telegram counts them (UTF-16 code units after entity
    parsing: ``&amp;`` is one, an emoji two): the plain text is split at sentence ends, each part escaped, and
    nothing is cut off; the footnotes go with the last part (or alone)."""
    notes = footnotes(citations)
    plain = split_text(text, MAX_MESSAGE_CHARS)
    parts = [escape(part) for part in plain]
    if notes:
        if utf16_len(plain[-1]) + utf16_len(notes) + 2 <= MAX_MESSAGE_CHARS:
            parts[-1] += f"\n\n<i>{escape(notes)}</i>"
        else:
            parts.append(f"<i>{escape(notes)}</i>")
    return parts


def app_language(sender: dict[str, Any] | None) -> Language | None:
    """The language of an update's sender's Telegram app: their ``language_code`` (the Bot API's ``User``) when it
    is one of ``en es fr de pt``, else ``None``."""
    return tag_language(str((sender or {}).get("language_code") or ""))


def update_language(sender: dict[str, Any] | None, text: object = None) -> Language:
    """The language of the bot's own lines answering an update: the sender's app's (:func:`app_language`), else
    that of the message's ``text`` (:func:`app.handoff.languages.detect_language`; ``en`` for none)."""
    written = text if isinstance(text, str) else ""
    return app_language(sender) or detect_language(normalise(written))


def feedback_keyboard(message_id: uuid.UUID, language: str = "en") -> dict[str, Any]:
    """The 👍/👎 and "Talk to a human" inline keyboard under a reply (``reply_markup`` JSON), the button in
    ``language`` (``tg_human_button``). Callback data: ``f:<message id hex>:1`` (helpful) / ``:0``, and ``h``
    (human)."""
    return {
        "inline_keyboard": [
            [
                {"text": "👍", "callback_data": f"f:{message_id.hex}:1"},
                {"text": "👎", "callback_data": f"f:{message_id.hex}:0"},
            ],
            [{"text": say("tg_human_button", language), "callback_data": "h"}],
        ]
    }


def parse_feedback(data: str) -> tuple[uuid.UUID, bool] | None:
    """``(message_id, helpful)`` of a feedback button's callback data, ``None`` for anything else."""
    match = re.fullmatch(r"f:([0-9a-f]{32}):([01])", data)
    if match is None:
        return None
    return uuid.UUID(hex=match.group(1)), match.group(2) == "1"


_EVENT_LINES = {
    "coach_joined": "tg_joined",
    "coach_left": "tg_left",
    "coach_dismissed": "tg_dismissed",
    "draft_discarded": "tg_draft_discarded",
}


def notice_text(event: dict[str, Any], language: str = "en") -> str | None:
    """The chat line of a live ``coach_joined`` / ``coach_left`` / ``coach_dismissed`` / ``draft_discarded`` event
    (:mod:`app.handoff.live`) in ``language``, else ``None``."""
    line = _EVENT_LINES.get(str(event.get("type")))
    if line is None:
        return None
    return say(line, language, coach=str(event.get("coach_name") or say("tg_your_coach", language)))


def reviewing_text(coach_name: str, language: str = "en") -> str:
    """The chat line of a reply that waits for the coach's approval (draft mode), in ``language``: the widget
    shows the same."""
    return say("tg_reviewing", language, coach=coach_name)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def memory_items(memory: RememberedOut, language: str = "en") -> list[tuple[str, str]]:
    """What ``/forget`` lists: ``(callback data, plain text)`` per remembered item, insights first, then session
    summaries ("Our session of …" in ``language``), at most :data:`FORGET_ITEMS`. Callback data: ``m:i:<insight
    id hex>`` / ``m:s:<session id hex>`` (36 bytes)."""
    items = [(f"m:i:{i.id.hex}", i.text) for i in memory.insights]
    items += [
        (f"m:s:{s.id.hex}", say("tg_forget_session", language, day=f"{s.started_at:%Y-%m-%d}", summary=s.summary))
        for s in memory.summaries
    ]
    return items[:FORGET_ITEMS]


def memory_message(memory: RememberedOut, language: str = "en") -> tuple[str, dict[str, Any] | None]:
    """The ``/forget`` message: ``(HTML text, reply_markup)`` listing the remembered items numbered (each cut at
    :data:`FORGET_ITEM_CHARS`), each with a "🗑 n" button (:func:`memory_items`), five buttons a row; the list
    stops before the text would pass :data:`MAX_MESSAGE_CHARS`; its lines in ``language``. "I don't remember
    anything about you yet." and no keyboard when nothing is remembered."""
    text, buttons = escape(say("tg_forget_intro", language)) + "\n", []
    for n, (data, item) in enumerate(memory_items(memory, language), 1):
        line = f"\n{n}. {escape(shorten(item, FORGET_ITEM_CHARS))}"
        if utf16_len(text) + utf16_len(line) > MAX_MESSAGE_CHARS:
            break
        text += line
        buttons.append({"text": f"🗑 {n}", "callback_data": data})
    if not buttons:
        return escape(say("tg_nothing_remembered", language)), None
    return text, {"inline_keyboard": [buttons[i : i + 5] for i in range(0, len(buttons), 5)]}


def parse_forget(data: str) -> tuple[str, uuid.UUID] | None:
    """``("insight" | "summary", id)`` of a ``/forget`` button's callback data, ``None`` for anything else."""
    match = re.fullmatch(r"m:([is]):([0-9a-f]{32})", data)
    if match is None:
        return None
    return ("insight" if match.group(1) == "i" else "summary"), uuid.UUID(hex=match.group(2))
