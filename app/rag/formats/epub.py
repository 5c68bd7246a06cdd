"""EPUB (2 and 3) to pages with EbookLib: one page per document of the reading order (the OPF spine), so a
citation's "page" is the chapter's position in the book; each chapter's XHTML goes through
:func:`app.rag.formats.html.html_text`, with the style sheets it links from the package (text they hide is
left out)."""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Callable

import ebooklib
from ebooklib import epub

from app.rag.extract import Caps, ExtractedText, ExtractionError, Page
from app.rag.formats.html import html_text


def extract_epub(data: bytes, caps: Caps) -> ExtractedText:
    """Pages (1-based spine positions holding text) and the Dublin Core title of the EPUB ``data``.

    Raises ``ExtractionError``: not a zip, no EPUB package, damaged chapters, no text, over ``caps``."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ExtractionError("the file is not a readable EPUB (it is not a zip archive)")
    try:
        book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    except MemoryError:
        raise  # the isolated reader's memory limit: its own reason (app.rag.isolation)
    except Exception as exc:  # noqa: BLE001 - EbookLib and lxml raise many types on a damaged package
        raise ExtractionError(f"the EPUB is damaged and cannot be read ({exc})") from exc
    caps.check_pages(len(book.spine), "the EPUB", "chapter", "chapters")
    pages: list[Page] = []
    characters = 0
    for position, (idref, _linear) in enumerate(book.spine, start=1):
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        try:
            # the file as stored: EbookLib's get_content() renders the chapter again without its <head> (its
            # <style> and <link> sheets, and so the text they hide, were lost)
            text, _ = html_text(item.content.decode("utf-8", errors="replace"), _sheets(book, item))
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


def _sheets(book: epub.EpubBook, chapter: epub.EpubItem) -> Callable[[str], str | None]:
    """Reads the style sheet a chapter links (``href`` relative to the chapter, as in the package), or
    ``None`` for one the book does not hold."""

    def read(href: str) -> str | None:
        path = posixpath.normpath(posixpath.join(posixpath.dirname(chapter.get_name()), href.split("#")[0]))
        sheet = book.get_item_with_href(path)
        return None if sheet is None else sheet.content.decode("utf-8", errors="replace")

    return read
