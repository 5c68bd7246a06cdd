"""Normalisation of extracted text before chunking."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
"""Control characters, and lone surrogates (a PDF's broken ToUnicode map decodes to them; neither the
embedder's tokenizer nor PostgreSQL takes them)."""
_HYPHEN_BREAK = re.compile(r"(\w)[-\u00ad]\n[ \t]*([a-z])")
_COMPOUND_BREAK = re.compile(r"(\w)-\n[ \t]*(?=[A-Z])")
_PAGE_NUMBER = re.compile(r"(?:\d{1,4}|[ivxlcdm]{1,7})", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\u00a0]+")
_SINGLE_NEWLINE = re.compile(r"(?<!\n)\n(?!\n)")
_BLANK_LINES = re.compile(r"\n{3,}")
TITLE_MAX_CHARS = 300
_PLACEHOLDER_TITLES = {"untitled", "document", "word document", "microsoft word document", "title", "no title"}
_APPLICATION_PREFIX = re.compile(r"^microsoft (?:word|powerpoint|excel) - ", re.IGNORECASE)
_FILE_NAME = re.compile(r"\.(?:docx?|pdf|odt|rtf|txt|pages|indd|pptx?|epub)$", re.IGNORECASE)


def metadata_title(title: str | None) -> str | None:
    """The title a file's metadata declares (PDF ``/Title``, DOCX core properties, EPUB ``dc:title``, HTML
    ``<title>``) as the document's title: NFKC, control characters (NUL among them: PostgreSQL refuses it) dropped,
    whitespace collapsed, at most :data:`TITLE_MAX_CHARS` characters. ``None`` (the coach's file name stays) for
    an empty title or a placeholder an application wrote: "Untitled", python-docx's "Word Document", a file name
    such as "Microsoft Word - draft3.docx"."""
    if not title:
        return None
    cleaned = " ".join(_CONTROL.sub("", unicodedata.normalize("NFKC", title)).split())
    if cleaned.casefold() in _PLACEHOLDER_TITLES or _APPLICATION_PREFIX.match(cleaned) or _FILE_NAME.search(cleaned):
        return None
    return cleaned[:TITLE_MAX_CHARS] or None


def _without_page_numbers(lines: list[str]) -> list[str]:
    """``lines`` (stripped) without a first and a last non-blank line that hold only a page number (arabic,
    or roman as in front matter): a running header's or footer's. A number inside the page (a table cell, a
    count on a line of its own) stays."""
    filled = [index for index, line in enumerate(lines) if line]
    ends = {filled[0], filled[-1]} if filled else set()
    return [line for index, line in enumerate(lines) if index not in ends or not _PAGE_NUMBER.fullmatch(line)]


def normalize_text(text: str, *, paged: bool = False) -> str:
    """Clean one page of extracted text.

    NFKC (ligatures such as "ﬁ" → "fi"); control characters and lone surrogates dropped; tabs and runs of
    spaces → one space (pypdf separates words of some PDFs with tabs); words hyphenated across a line end
    re-joined ("immor-\\ntality" → "immortality", only before a lower-case letter so "Anglo-\\nSaxon" keeps its
    hyphen); for a ``paged`` text (a page of a PDF or DOCX, an EPUB chapter) a page number at the top or the
    bottom removed; lines within a paragraph joined; at most one blank line between paragraphs. Returns ``""``
    for a blank page.
    """
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(_without_page_numbers(lines) if paged else lines)
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    text = _COMPOUND_BREAK.sub(r"\1-", text)
    text = _BLANK_LINES.sub("\n\n", text.strip())
    text = _SINGLE_NEWLINE.sub(" ", text)
    return _SPACES.sub(" ", text).strip()
