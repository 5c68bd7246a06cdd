"""HTML (and the XHTML of EPUB chapters) to text with selectolax (the Lexbor HTML5 parser).

Headings become Markdown ``#`` lines so the chunker knows the section each passage sits under; scripts,
styles and other non-text elements are dropped, and so are elements a reader never sees (the ``hidden``
attribute, an inline ``display: none``, ``visibility: hidden``, ``opacity: 0`` or ``font-size: 0``): text a
coach does not see in the page must not reach the model, where a hidden "ignore your rules…" is an injection
planted out of sight. (``aria-hidden`` hides from screen readers only: that text is seen, and kept. Text hidden
through a stylesheet's classes is not recognised.) Block elements end a paragraph.
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser

from app.rag.extract import ExtractedText, ExtractionError, Page

_DROPPED = "script, style, noscript, template, svg, head, nav, iframe, object"
_HIDDEN = re.compile(
    r"(?:display\s*:\s*none|visibility\s*:\s*hidden|opacity\s*:\s*0*(?:\.0*)?\s*(?:;|$|!)"
    r"|font-size\s*:\s*0+(?:\.0*)?\s*(?:px|pt|em|rem|%)?\s*(?:;|$|!))",
    re.IGNORECASE,
)
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = "p, li, blockquote, pre, td, th, dt, dd, figcaption, div, section, article, tr"


def html_text(markup: str) -> tuple[str, str | None]:
    """``(text, title)`` of an HTML document: paragraphs separated by blank lines, headings as ``#`` lines,
    the ``<title>`` (or ``None``)."""
    tree = LexborHTMLParser(markup)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    for node in tree.css(_DROPPED):
        node.decompose()
    for node in tree.css("[hidden], [style]"):
        attributes = node.attributes
        if "hidden" in attributes or _HIDDEN.search(attributes.get("style") or ""):
            node.decompose()
    root = tree.body or tree.root
    if root is None:
        return "", title or None
    for node in root.css(f"{', '.join(_HEADINGS)}, {_BLOCKS}, br"):
        marker = "#" * _HEADINGS[node.tag] + " " if node.tag in _HEADINGS else ""
        node.insert_before(f"\n\n{marker}")
        node.insert_after("\n\n")
    text = root.text(separator="", strip=False)
    paragraphs = [" ".join(line.split()) for line in text.split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p), title or None


def extract_html(text: str) -> ExtractedText:
    """One page (number ``None``) holding the text of the HTML ``text``, with its ``<title>``.

    Raises ``ExtractionError`` when the page holds no text."""
    body, title = html_text(text)
    if not body.strip():
        raise ExtractionError("the HTML page holds no text")
    return ExtractedText([Page(None, body)], title[:300] if title else None)
