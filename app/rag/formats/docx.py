"""DOCX (Word) to pages with python-docx.

Page numbers come from the page breaks in the file: the breaks Word records where it last laid the document
out (``w:lastRenderedPageBreak``) when present, else the explicit page breaks (``w:br w:type="page"``), so a
citation's page matches the page in Word as far as the file says. Paragraphs in a Heading style become
Markdown ``#`` lines (the chunker's section headings), and the first ``Title`` or ``Heading 1`` paragraph titles
a document whose core properties name none (or a placeholder such as "Untitled"); table cells are read row by
row, tables nested in cells and content controls included. Hidden text (runs formatted hidden, ``w:vanish``,
directly, through their character or paragraph style, or by the document's default run properties) is left
out: Word does not show it, so the coach never saw it, and a hidden "ignore your rules…" would reach the model
out of sight.
"""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Iterator
from typing import Any

import docx
from docx.document import Document as DocxDocument
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml.ns import qn
from docx.text.hyperlink import Hyperlink
from docx.text.paragraph import Paragraph
from docx.text.run import Run

from app.rag.extract import Caps, ExtractedText, ExtractionError, Page
from app.rag.normalize import TITLE_MAX_CHARS, metadata_title

_P, _TBL, _TR, _TC = qn("w:p"), qn("w:tbl"), qn("w:tr"), qn("w:tc")
_R, _HYPERLINK, _SDT, _SDT_CONTENT = qn("w:r"), qn("w:hyperlink"), qn("w:sdt"), qn("w:sdtContent")
_RENDERED_BREAK = ".//w:lastRenderedPageBreak"
_EXPLICIT_BREAK = './/w:br[@w:type="page"]'
_TITLE_STYLES = ("Title", "Heading 1")


def extract_docx(data: bytes, caps: Caps) -> ExtractedText:
    """Pages (1-based) and title of the DOCX ``data``: its core properties' title, else its first heading
    (:func:`_heading_title`).

    Raises ``ExtractionError``: not a zip / not a Word document, damaged parts, no text, over ``caps``."""
    try:
        document = docx.Document(io.BytesIO(data))
    except MemoryError:
        raise  # the isolated reader's memory limit: its own reason (app.rag.isolation)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ExtractionError(f"the file is not a readable Word (.docx) document ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - python-docx and lxml raise many types on damaged parts
        raise ExtractionError(f"the Word document is damaged and cannot be read ({exc})") from exc
    _look_up_styles_once(document)
    pages = _pages(document, caps)
    if not any(page.text.strip() for page in pages):
        raise ExtractionError("the Word document holds no text")
    title = metadata_title(document.core_properties.title) or _heading_title(document)
    return ExtractedText(pages, title)


def _look_up_styles_once(document: DocxDocument) -> None:
    """Remember each style ``document`` is asked for: python-docx's ``Paragraph.style`` and ``Run.style`` (through
    ``DocumentPart.get_style``) search every style of the document on each call, a few of them for each paragraph
    and run, and a document of 20,000 short paragraphs took 37 s of the isolated reader's 30 s of CPU. The styles
    do not change while the file, opened for this extraction only, is read."""
    part = document.part
    part.get_style = functools.cache(part.get_style)  # type: ignore[method-assign]


def _heading_title(document: DocxDocument) -> str | None:
    """The visible text of the body's first paragraph styled ``Title`` or ``Heading 1`` that holds any, at most
    :data:`~app.rag.normalize.TITLE_MAX_CHARS` characters; ``None`` without one. Paragraphs are matched by their
    style's id (python-docx's ``Paragraph.style`` searches every style of the document on each call)."""
    titles = {s.style_id for s in document.styles if s.type == WD_STYLE_TYPE.PARAGRAPH and s.name in _TITLE_STYLES}
    default = _default_hidden(document)
    for block in _inner(document.element.body, _P):
        if block.style in titles and (text := " ".join(_visible_text(Paragraph(block, document), default).split())):
            return text[:TITLE_MAX_CHARS].rstrip()
    return None


def _pages(document: DocxDocument, caps: Caps) -> list[Page]:
    body = document.element.body
    breaks = _RENDERED_BREAK if body.xpath(_RENDERED_BREAK) else _EXPLICIT_BREAK
    pages: list[list[str]] = [[]]
    characters = 0
    default = _default_hidden(document)

    def add(page_breaks: int, text: str) -> None:
        """``text`` of a paragraph or a table row on the page after the ``page_breaks`` in it."""
        nonlocal characters
        for _ in range(page_breaks):
            pages.append([])
            caps.check_pages(len(pages), "the Word document")
        characters += len(text)
        caps.check_characters(characters)
        pages[-1].append(text)

    for block in _inner(body, _P, _TBL):
        if block.tag == _P:
            add(len(block.xpath(breaks)), _paragraph_text(Paragraph(block, document), default))
        else:
            for row in _inner(block, _TR):  # a row at a time: a table can run over a page break
                # each cell whose text runs on over the break records it: the row's breaks are its cells' most
                cells = list(_inner(row, _TC))
                add(max((len(cell.xpath(breaks)) for cell in cells), default=0), _row_text(cells, document, default))
    return [Page(number, "\n\n".join(p for p in texts if p)) for number, texts in enumerate(pages, start=1)]


def _inner(container: Any, *tags: str) -> Iterator[Any]:
    """The XML children of ``container`` with one of ``tags``, in reading order, those inside content controls
    (``w:sdt``, ECMA-376 Part 1 §17.5.2; templates and forms hold their text in them) in place: block-level ones
    hold paragraphs and tables, row-level ones rows, cell-level ones cells, run-level ones runs. python-docx
    reads a container's own children only, and the text inside content controls was lost."""
    for child in container.iterchildren():
        if child.tag in tags:
            yield child
        elif child.tag == _SDT and (content := child.find(_SDT_CONTENT)) is not None:
            yield from _inner(content, *tags)


def _default_hidden(document: DocxDocument) -> bool | None:
    """Whether the document's default run properties (``w:docDefaults/w:rPrDefault``, ECMA-376 Part 1 §17.7.5.5)
    format text hidden; ``None``: they do not say."""
    [vanish, *_] = document.styles.element.xpath("./w:docDefaults/w:rPrDefault/w:rPr/w:vanish") or [None]
    if vanish is None:
        return None
    return vanish.get(qn("w:val")) not in ("0", "false", "off")  # (an ST_OnOff; no value: on)


def _style_hidden(style: Any) -> bool | None:
    """Whether ``style`` (or the first of its base styles that says) formats text hidden; ``None``: none says."""
    while style is not None:
        if style.font.hidden is not None:
            return bool(style.font.hidden)
        style = style.base_style
    return None


def _visible_text(paragraph: Paragraph, default: bool | None) -> str:
    """The paragraph's text without its hidden runs (those inside hyperlinks and content controls too): hidden by
    the run's own formatting, else by its character style, else by the paragraph's style (each with its base
    styles), else by the document's ``default`` (:func:`_default_hidden`)."""
    runs = (
        run
        for child in _inner(paragraph._p, _R, _HYPERLINK)  # noqa: SLF001 - the paragraph's XML element
        for run in (Hyperlink(child, paragraph).runs if child.tag == _HYPERLINK else [Run(child, paragraph)])
    )
    paragraph_hidden = _style_hidden(paragraph.style)

    def hidden(run: Run) -> bool:
        for says in (run.font.hidden, _style_hidden(run.style), paragraph_hidden, default):
            if says is not None:
                return bool(says)
        return False

    return "".join(run.text for run in runs if not hidden(run))


def _paragraph_text(paragraph: Paragraph, default: bool | None) -> str:
    text = _visible_text(paragraph, default).strip()
    style = paragraph.style.name if paragraph.style is not None else ""
    if text and style and style.startswith("Heading "):
        level = style.removeprefix("Heading ").strip()
        return "#" * (int(level) if level.isdigit() and 1 <= int(level) <= 6 else 1) + " " + text
    if text and style == "Title":
        return "# " + text
    return text


def _row_text(cells: list[Any], document: DocxDocument, default: bool | None) -> str:
    """A table row's cells (``w:tc``), ``" | "``-joined (the same text once); ``""`` for a row with no text."""
    text = " | ".join(dict.fromkeys(_cell_text(cell, document, default) for cell in cells))
    return text if text.strip(" |") else ""


def _cell_text(cell: Any, document: DocxDocument, default: bool | None) -> str:
    """A cell's paragraphs and the rows of the tables nested in it, a line each."""
    lines = []
    for block in _inner(cell, _P, _TBL):
        if block.tag == _P:
            lines.append(_visible_text(Paragraph(block, document), default))
        else:
            lines += [_row_text(list(_inner(row, _TC)), document, default) for row in _inner(block, _TR)]
    return "\n".join(lines).strip()
