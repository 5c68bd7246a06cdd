"""HTML (and the XHTML of EPUB chapters) to text with selectolax (the Lexbor HTML5 parser).

Headings become Markdown ``#`` lines so the chunker knows the section each passage sits under; scripts,
styles and other non-text elements are dropped, and so are elements a reader never sees: the ``hidden``
attribute, or ``display: none``, ``visibility: hidden``, ``opacity: 0`` or ``font-size: 0`` set inline or by a
rule of the page's own ``<style>`` sheets (parsed with tinycss2, CSS Syntax Level 3). Text a coach does not see
in the page must not reach the model, where a hidden "ignore your rules…" is an injection planted out of sight.
Where the page's sheets also show an element they hide (a tab shown by a more specific rule), its text is kept:
the cascade is not computed, and a doubt keeps the coach's text. Rules nested in ``@media`` (but for print or
speech only), ``@supports``, ``@layer`` and ``@container`` blocks count too, and so do the linked and imported
(``@import``) sheets the caller can read (an EPUB's); selectors with a state or pseudo-element (``:hover``,
``::before``) are not read.
(``aria-hidden`` hides from screen readers only: that text is seen, and kept.) Block elements end a paragraph.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import tinycss2
from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from app.rag.extract import ExtractedText, ExtractionError, Page

_DROPPED = "script, style, noscript, template, svg, head, nav, iframe, object"
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = "p, li, blockquote, pre, td, th, dt, dd, figcaption, div, section, article, tr"


def html_text(markup: str, linked: Callable[[str], Sequence[str]] | None = None) -> tuple[str, str | None]:
    """``(text, title)`` of an HTML document: paragraphs separated by blank lines, headings as ``#`` lines,
    the ``<title>`` (or ``None``). ``linked`` reads the style sheet a ``<link rel="stylesheet" href>`` names, or a
    ``<style>`` sheet imports (:func:`imported_sheets`), with the sheets it imports, each on its own (none: not at
    hand), for a document whose sheets come with it (an EPUB's chapters); without it, linked and imported sheets
    are not read."""
    tree = LexborHTMLParser(markup)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    sheets = [style.text() for style in tree.css("style")]
    if linked is not None:
        sheets += [found for sheet in list(sheets) for href in imported_sheets(sheet) for found in linked(href)]
        for link in tree.css("link[href]"):
            rel = (link.attributes.get("rel") or "").lower().split()
            if "stylesheet" in rel and "alternate" not in rel:  # (an alternate sheet applies only when chosen)
                sheets += linked(link.attributes.get("href") or "")
    hidden_by_sheet = _hidden_by_style_sheets(tree, list(dict.fromkeys(sheets)))  # (each text once)
    for node in tree.css(_DROPPED):
        node.decompose()
    for node in hidden_by_sheet:
        node.decompose()
    for node in tree.css("[hidden], [style]"):
        attributes = node.attributes
        if "hidden" in attributes or any(_hides(d) for d in _declarations(attributes.get("style") or "")):
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


def _hidden_by_style_sheets(tree: LexborHTMLParser, sheets: list[str]) -> list[LexborNode]:
    """The elements a rule of the page's style ``sheets`` hides (:func:`_hides`) and none shows
    (:func:`_shows`), outermost first (a descendant of one is left out: it goes with it)."""
    hiding: list[str] = []
    showing: list[str] = []
    for sheet in sheets:
        hides, shows = _sheet_selectors(sheet)
        hiding += hides
        showing += shows
    shown = {node.mem_id for node in _matching(tree, showing)}  # (mem_id: the parser's node, not its wrapper)
    hidden = {node.mem_id: node for node in _matching(tree, hiding) if node.mem_id not in shown}
    inside = {child.mem_id for node in hidden.values() for child in node.traverse() if child.mem_id != node.mem_id}
    return [node for key, node in hidden.items() if key not in inside]


_UNREADABLE = (ValueError, OverflowError, RecursionError)
"""What tinycss2 raises on CSS it cannot hold: a number of thousands of digits (Python's int limit), brackets
nested thousands deep (its serialiser recurses). Such CSS hides nothing."""


@functools.lru_cache(maxsize=256)
def _sheet_selectors(sheet: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(hiding, showing)``: the selectors of a style sheet's rules that hide (:func:`_hides`) and that show
    (:func:`_shows`) the elements they match; none for a sheet tinycss2 cannot read. Cached: an EPUB's chapters
    share their sheets."""
    try:
        rules = tinycss2.parse_stylesheet(sheet, skip_comments=True, skip_whitespace=True)
    except _UNREADABLE:
        return (), ()
    hiding: list[str] = []
    showing: list[str] = []
    for rule in _style_rules(rules):
        declarations = _declarations(rule.content)
        try:
            selectors = [s.strip() for s in _serialize(rule.prelude).split(",")]
        except _UNREADABLE:
            continue
        selectors = [s for s in selectors if s and ":" not in s]  # (a state or pseudo-element: not always)
        if any(_hides(d) for d in declarations):
            hiding += selectors
        if any(_shows(d) for d in declarations):
            showing += selectors
    return tuple(hiding), tuple(showing)


_GROUPING = {"media", "supports", "layer", "container", "scope", "document"}
"""At-rules whose block holds style rules that apply (on the coach's screen, for ``@media``: :func:`_on_screen`)."""
MAX_NESTING = 16
"""Grouping at-rules read inside one another; deeper rules are not read (no browser sheet nests so deep, and
Python's recursion would end the extraction)."""


def _style_rules(rules: list[Any], depth: int = 0) -> Iterator[Any]:
    """The style rules of a sheet's rule list, and of the grouping at-rules in it (:data:`_GROUPING`), nested
    up to :data:`MAX_NESTING` deep (``@media screen { @supports (display: grid) { … } }``); a ``@media`` block
    that applies on no screen (:func:`_on_screen`) is skipped."""
    for rule in rules:
        if rule.type == "qualified-rule":
            yield rule
        elif rule.type == "at-rule" and rule.lower_at_keyword in _GROUPING and rule.content is not None:
            try:
                if depth == MAX_NESTING or (rule.lower_at_keyword == "media" and not _on_screen(rule.prelude)):
                    continue
                inner = tinycss2.parse_blocks_contents(rule.content, skip_comments=True, skip_whitespace=True)
            except _UNREADABLE:
                continue
            yield from _style_rules(inner, depth + 1)


@functools.lru_cache(maxsize=256)
def imported_sheets(sheet: str) -> tuple[str, ...]:
    """The URLs (as written) of the sheets ``sheet``'s top-level ``@import`` rules name, in order, but those whose
    media queries apply on no screen (:func:`_on_screen`). Every one counts wherever it stands: browsers ignore an
    ``@import`` after other rules (CSS Cascading and Inheritance Level 4 §2.1), but they differ on which rules
    count, and a doubt hides the text. Its ``layer`` and ``supports()`` conditions are taken as met, for the same
    reason. None for a sheet tinycss2 cannot read. Cached, as :func:`_sheet_selectors`: an EPUB's chapters share
    their sheets."""
    try:
        rules = tinycss2.parse_stylesheet(sheet, skip_comments=True, skip_whitespace=True)
    except _UNREADABLE:
        return ()
    urls: list[str] = []
    for rule in rules:
        if rule.type != "at-rule" or rule.lower_at_keyword != "import":
            continue
        tokens = [token for token in rule.prelude if token.type not in ("whitespace", "comment")]
        url = _import_url(tokens[0]) if tokens else None
        try:
            on_screen = _on_screen([token for token in tokens[1:] if not _is_condition(token)])
        except _UNREADABLE:
            on_screen = True
        if url and on_screen:
            urls.append(url)
    return tuple(urls)


def _import_url(token: Any) -> str | None:
    """The URL of an ``@import``'s first token: ``url(x)``, ``"x"`` or ``url("x")``."""
    if token.type in ("url", "string"):
        return str(token.value)
    if token.type == "function" and token.lower_name == "url":
        strings = [t.value for t in token.arguments if t.type == "string"]
        return str(strings[0]) if strings else None
    return None


def _is_condition(token: Any) -> bool:
    """An ``@import``'s ``layer``, ``layer(name)`` or ``supports(…)``: not a media query."""
    if token.type == "ident":
        return bool(token.lower_value == "layer")
    return token.type == "function" and token.lower_name in ("layer", "supports")


def _serialize(tokens: list[Any]) -> str:
    """CSS tokens as text, without their comments."""
    return str(tinycss2.serialize(token for token in tokens if token.type != "comment"))


def _on_screen(prelude: list[Any]) -> bool:
    """Whether a media query list (Media Queries Level 4, §2–3) may apply on the coach's screen: a query of type
    ``screen`` or ``all`` (or none), with any features (a width counts: hidden on some screens is hidden from
    the coach's, perhaps), or a negated query but ``not all`` and ``not screen`` without features. Other types
    (``print``, ``speech``; ``tv``, ``handheld`` and the like, which match nothing any more) apply on none."""
    queries = " ".join(token.serialize() for token in prelude if token.type not in ("comment", "whitespace"))
    for query in queries.lower().split(","):
        words = query.replace("(", " (").split()
        negated = bool(words) and words[0] == "not"
        words = words[1:] if words and words[0] in ("not", "only") else words
        media_type = words[0] if words and not words[0].startswith("(") else "all"
        applies = words not in (["all"], ["screen"]) if negated else media_type in ("all", "screen")
        if applies:
            return True
    return False


class Declaration(NamedTuple):
    """A CSS declaration as :func:`_declarations` reads it: the property's lower-case ``name``; its ``keyword``
    when the value is one identifier (lower-case); its ``number`` and ``unit`` when it is one number (``""``), a
    percentage (``"%"``) or a dimension (its lower-case unit)."""

    name: str
    keyword: str | None = None
    number: float | None = None
    unit: str | None = None


def _declarations(css: str | list[Any]) -> list[Declaration]:
    """The declarations of an inline ``style`` attribute or a rule's block (tinycss2 tokens), ``!important``
    or not; none from CSS whose numbers Python cannot hold (a number of thousands of digits)."""
    try:
        items = tinycss2.parse_blocks_contents(css, skip_comments=True, skip_whitespace=True)
    except _UNREADABLE:
        return []
    found: list[Declaration] = []
    for item in items:
        if item.type != "declaration":
            continue
        tokens = [t for t in item.value if t.type not in ("whitespace", "comment")]
        token = tokens[0] if len(tokens) == 1 else None
        if token is not None and token.type == "ident":
            found.append(Declaration(item.lower_name, keyword=token.lower_value))
        elif token is not None and token.type in ("number", "percentage", "dimension"):
            unit = token.lower_unit if token.type == "dimension" else "%" if token.type == "percentage" else ""
            found.append(Declaration(item.lower_name, number=_float(token.value), unit=unit))
        else:
            found.append(Declaration(item.lower_name))
    return found


def _float(value: float) -> float | None:
    try:
        return float(value)
    except OverflowError:
        return None


def _hides(declaration: Declaration) -> bool:
    """``display: none``, ``visibility: hidden | collapse``, an ``opacity`` of 0 or less (browsers clamp it; a
    number or a percentage), or a ``font-size`` of 0 (any unit)."""
    name, keyword, number, unit = declaration
    if name == "display":
        return keyword == "none"
    if name == "visibility":
        return keyword in ("hidden", "collapse")
    if number is None:
        return False
    if name == "opacity":
        return unit in ("", "%") and number <= 0
    return name == "font-size" and number == 0


def _shows(declaration: Declaration) -> bool:
    """A ``display`` other than ``none``, ``visibility: visible``, an ``opacity`` above 0, or a ``font-size``
    length above 0."""
    name, keyword, number, unit = declaration
    if name == "display":
        return keyword is not None and keyword != "none"
    if name == "visibility":
        return keyword == "visible"
    if number is None or number <= 0:
        return False
    return (name == "opacity" and unit in ("", "%")) or (name == "font-size" and unit != "")


def _matching(tree: LexborHTMLParser, selectors: list[str]) -> list[LexborNode]:
    """The elements matched by any of ``selectors`` (one the parser cannot read matches nothing)."""
    found: list[LexborNode] = []
    for selector in selectors:
        try:
            found += tree.css(selector)
        except SelectolaxError:
            continue
    return found


def extract_html(text: str) -> ExtractedText:
    """One page (number ``None``) holding the text of the HTML ``text``, with its ``<title>``.

    Raises ``ExtractionError`` when the page holds no text."""
    body, title = html_text(text)
    if not body.strip():
        raise ExtractionError("the HTML page holds no text")
    return ExtractedText([Page(None, body)], title[:300] if title else None)
