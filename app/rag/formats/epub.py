"""EPUB (2 and 3) to pages with EbookLib: one page per document of the reading order (the OPF spine), so a
citation's "page" is the chapter's position in the book; each chapter's XHTML goes through
:func:`app.rag.formats.html.html_text`, with the style sheets it links from the package (text they hide is
left out)."""

from __future__ import annotations

import functools
import html
import io
import posixpath
import urllib.parse
import zipfile
from collections.abc import Callable

import ebooklib
from ebooklib import epub
from lxml import etree
from tinycss2.bytes import decode_stylesheet_bytes
from webencodings import UTF8, Encoding, lookup

from app.rag.extract import Caps, ExtractedText, ExtractionError, Page
from app.rag.formats.html import html_text, imported_sheets


def extract_epub(data: bytes, caps: Caps) -> ExtractedText:
    """Pages (1-based spine positions holding text) and the Dublin Core title of the EPUB ``data``.

    Raises ``ExtractionError``: not a zip, no EPUB package, damaged chapters, no text, over ``caps``."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ExtractionError("the file is not a readable EPUB (it is not a zip archive)")
    try:
        reader = epub.EpubReader(io.BytesIO(data), options={"ignore_ncx": True})  # (epub.read_epub, keeping opf_dir)
        book = reader.load()
        reader.process()
    except MemoryError:
        raise  # the isolated reader's memory limit: its own reason (app.rag.isolation)
    except Exception as exc:  # noqa: BLE001 - EbookLib and lxml raise many types on a damaged package
        raise ExtractionError(f"the EPUB is damaged and cannot be read ({exc})") from exc
    caps.check_pages(len(book.spine), "the EPUB", "chapter", "chapters")
    pages: list[Page] = []
    characters = 0
    sheets = _style_sheets(book, reader.opf_dir)
    for position, (idref, _linear) in enumerate(book.spine, start=1):
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        try:
            text, _ = html_text(_as_html(item.content), _linked(item, sheets, reader.opf_dir))
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged chapter
            raise ExtractionError(f"chapter {position} of the EPUB is damaged and cannot be read ({exc})") from exc
        characters += len(text)
        caps.check_characters(characters)
        pages.append(Page(position, text))
    if not any(page.text.strip() for page in pages):
        raise ExtractionError("the EPUB holds no text")
    titles = book.get_metadata("DC", "title")
    title = str(titles[0][0]).strip() if titles else ""
    return ExtractedText(pages, title[:300] or None)


_XHTML = {
    encoding: etree.HTMLParser(encoding=encoding, no_network=True, recover=True, huge_tree=True)
    for encoding in ("utf-8", "utf-16")
}
"""libxml2's HTML parser, which reads an XHTML chapter's ``<x/>`` as an empty element and knows HTML's named
entities (``&nbsp;``: undeclared in XML, and a lenient XML parser lost the ``&amp;`` after it); ``huge_tree``:
without it libxml2 stops at 256 levels of nesting or 10 MB of text and the rest of the chapter was lost (the
reader's child process is limited in memory and time instead)."""


def _as_html(xhtml: bytes) -> str:
    """A chapter's XHTML file as stored (EbookLib's ``get_content()`` renders it again without its ``<head>``:
    its ``<style>`` and ``<link>`` sheets, and so the text they hide, were lost), written out as HTML5 can read
    it: Lexbor, an HTML5 parser, takes an empty ``<title/>`` or ``<div/>`` for an open element, and the rest of
    the chapter with it. A file libxml2 cannot read at all is handed on as text. Chapters are UTF-8 (EPUB 3
    §3.1: UTF-8 or UTF-16; the text was read as UTF-8 before too)."""
    encoding = _encoding(xhtml)
    try:
        root = etree.fromstring(xhtml, _XHTML[encoding])
    except etree.XMLSyntaxError:
        root = None
    if root is None:
        return xhtml.decode(encoding, errors="replace")
    for style in root.iter("style"):  # XML's escapes and CDATA, which an HTML parser keeps as written in a sheet
        sheet = (style.text or "").replace("<![CDATA[", "").replace("]]>", "")
        style.text = html.unescape(sheet)
    return str(etree.tostring(root, method="html", encoding="unicode"))


def _encoding(xhtml: bytes) -> str:
    """A chapter's encoding: UTF-16 with a byte order mark, else UTF-8 (EPUB 3 §3.1 allows only those two)."""
    return "utf-16" if xhtml[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8"


Sheets = Callable[[str, str], tuple[str, ...]]
"""Reads a package path's style sheet with those it imports (:func:`_style_sheets`), given the encoding of the
file that refers to it."""


def _style_sheets(book: epub.EpubBook, package_dir: str) -> Sheets:
    """Reads the book's style sheet at a package path with the sheets it imports (:func:`~app.rag.formats.html.
    imported_sheets`, relative to the importing sheet: :func:`_resolved` in ``package_dir``), however deep, each
    sheet once (one that imports itself, or another twice, adds nothing more) and each on its own (a sheet that
    ends inside a comment or a block must not swallow the next); none when the book holds no CSS item there. A
    sheet is decoded as CSS Syntax Level 3 §3.2 says: its byte order mark, its ``@charset``, else the encoding of
    what refers to it (the chapter's, given by label, or the importing sheet's), as a reader does; and as UTF-8 too
    when that differs (readers differ, and a doubt hides the text). Cached per path and encoding; the order is not
    kept: the cascade is not computed."""

    # by normalised path: a manifest may name a sheet "text/../styles/a.css", which a reader finds at "styles/a.css"
    by_path = {posixpath.normpath(item.get_name()): item for item in book.get_items() if item.media_type == "text/css"}

    @functools.cache
    def css(path: str, environment: Encoding) -> tuple[tuple[str, ...], Encoding] | None:
        item = by_path.get(path)
        if item is None:
            return None
        data = bytes(item.content)
        text, encoding = decode_stylesheet_bytes(data, environment_encoding=environment)
        if environment is UTF8:
            return (str(text),), encoding
        texts = dict.fromkeys([str(text), str(decode_stylesheet_bytes(data)[0])])  # (and as UTF-8: a doubt hides)
        return tuple(texts), encoding

    @functools.cache
    def read(path: str, referrer: str) -> tuple[str, ...]:
        sheets: list[str] = []
        todo, seen = [(path, lookup(referrer) or UTF8)], {path}
        while todo:
            at, environment = todo.pop()
            decoded = css(at, environment)
            if decoded is None:
                continue
            texts, encoding = decoded
            sheets += texts
            for href in (href for sheet in texts for href in imported_sheets(sheet)):
                found = _resolved(at, href, package_dir)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append((found, encoding))
        return tuple(sheets)

    return read


def _linked(chapter: epub.EpubItem, sheets: Sheets, package_dir: str) -> Callable[[str], tuple[str, ...]]:
    """Reads the style sheets a chapter links or its ``<style>`` imports (each with those it imports): ``href`` is
    a URL relative to the chapter (:func:`_resolved` in ``package_dir``)."""
    encoding = _encoding(bytes(chapter.content))

    def read(href: str) -> tuple[str, ...]:
        path = _resolved(chapter.get_name(), href, package_dir)
        return sheets(path, encoding) if path is not None else ()

    return read


def _resolved(base: str, href: str, package_dir: str) -> str | None:
    """The package path (EbookLib's item name, normalised: relative to ``package_dir``, the OPF file's folder in the
    container) of ``href``: a URL relative to the file at package path ``base``, or to the container's root when
    its path starts with ``/`` (EPUB 3.3, "container root URL"); resolved in the container as a reader does (``..``
    stops at its root, so ``../../EPUB/a.css`` from ``EPUB/text/`` is ``a.css`` of package ``EPUB``), percent-encoded
    as in the package (a ``%2F`` stays part of a name), ``\\`` read as ``/`` as the WHATWG URL parser does.
    ``None`` for one outside the package (a scheme or a host), which is not read."""
    url = urllib.parse.urlsplit(href.replace("\\", "/"))  # (a reader's URL parser reads "\\" as "/")
    if url.scheme or url.netloc or not url.path:
        return None
    # resolved in the container, as a reader does ("/…" from its root; ".." stops there), then named in the package
    root = posixpath.join("/", package_dir)
    steps = url.path.split("/")  # (split before decoding: "%2F" is a character of a name, not a step)
    path = "/".join(urllib.parse.unquote(step).replace("/", "%2F") for step in steps)
    target = posixpath.normpath(posixpath.join(root, posixpath.dirname(base), path))
    return posixpath.relpath(target, root)
