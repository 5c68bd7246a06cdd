"""Markdown to one page with markdown-it-py: the text as it is (the chunker reads its ``#`` headings), and the
document's title from its first level-1 heading, ATX (``# Title``) or Setext (``Title`` over ``=====``), so a
citation shows the title the coach wrote rather than the file name. A ``#`` line in a fenced or indented code
block is code, not a heading (CommonMark). Only the start of the file (:data:`TITLE_SCAN_CHARS`) is searched."""

from __future__ import annotations

from markdown_it import MarkdownIt

from app.rag.extract import ExtractedText, Page
from app.rag.normalize import TITLE_MAX_CHARS

TITLE_SCAN_CHARS = 32_000
"""How far into a Markdown text (about ten pages) its title is looked for: a document's title heads it, and
markdown-it keeps tokens for every block, so the whole of a 5 MB list (a million items) would take gigabytes
and most of a minute."""
_PLAIN = ("text", "code_inline")
"""Inline tokens whose content a title shows: the words of emphasis and links, code spans; not raw HTML."""
_WORDS = (*_PLAIN, "softbreak", "hardbreak")
"""... and line breaks inside a heading (a Setext heading can span lines), each a space in the title."""


def extract_markdown(text: str) -> ExtractedText:
    """One page (number ``None``) holding ``text``, titled by :func:`markdown_title`."""
    return ExtractedText([Page(None, text)], markdown_title(text))


def markdown_title(text: str) -> str | None:
    """The plain text of the first level-1 heading with words in the first :data:`TITLE_SCAN_CHARS` characters
    (whole lines) of the Markdown ``text``, emphasis, links and code spans reduced to their words, at most
    :data:`~app.rag.normalize.TITLE_MAX_CHARS` characters; ``None`` without one. Only the block structure is
    parsed (inline markup of the heading alone)."""
    start = text if len(text) <= TITLE_SCAN_CHARS else text[: text.rfind("\n", 0, TITLE_SCAN_CHARS) + 1]
    inline = MarkdownIt("commonmark")
    blocks = MarkdownIt("commonmark").disable("inline").parse(start)
    for opening, heading in zip(blocks, blocks[1:], strict=False):
        if opening.type == "heading_open" and opening.tag == "h1":
            [parsed] = inline.parseInline(heading.content)
            words = [t.content if t.type in _PLAIN else " " for t in parsed.children or [] if t.type in _WORDS]
            if title := " ".join("".join(words).split())[:TITLE_MAX_CHARS].rstrip():
                return title
    return None
