"""Text extraction from uploads: PDF (pypdf, page numbers kept), plain text and Markdown.

Every way a file can be unusable raises ``ExtractionError`` with a message written for the coach.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pypdf
from pypdf.errors import FileNotDecryptedError, PdfReadError, PyPdfError

PDF = "pdf"
TEXT = "text"
MARKDOWN = "markdown"

_EXTENSIONS = {".pdf": PDF, ".txt": TEXT, ".text": TEXT, ".md": MARKDOWN, ".markdown": MARKDOWN}

logging.getLogger("pypdf").setLevel(logging.ERROR)


class ExtractionError(Exception):
    """The file cannot be turned into text; ``str(exc)`` says why, for the coach."""


@dataclass(frozen=True)
class Page:
    """Raw text of one page; ``number`` is 1-based for PDFs and ``None`` for text files."""

    number: int | None
    text: str


@dataclass(frozen=True)
class ExtractedText:
    """Pages of a file plus the title its metadata declares (PDF ``/Title``), if any."""

    pages: list[Page]
    title: str | None = None


def detect_kind(filename: str, content_type: str | None) -> str:
    """``pdf``, ``text`` or ``markdown`` from the file name (then the MIME type).

    Raises ``ExtractionError`` for any other type.
    """
    lower = filename.lower()
    for ext, kind in _EXTENSIONS.items():
        if lower.endswith(ext):
            return kind
    if content_type:
        ctype = content_type.split(";")[0].strip().lower()
        if ctype == "application/pdf":
            return PDF
        if ctype == "text/markdown":
            return MARKDOWN
        if ctype == "text/plain":
            return TEXT
    raise ExtractionError(f"unsupported file type for {filename!r}: upload a PDF, .txt or .md file")


def extract_pages(data: bytes, kind: str, *, on_page: Callable[[int, int], None] | None = None) -> ExtractedText:
    """Extract the pages (and metadata title) of ``data``. ``on_page(done, total)`` reports PDF progress.

    Raises ``ExtractionError``: empty file, not really a PDF, damaged PDF, password-protected PDF,
    no text layer (a scan), text that is not UTF-8.
    """
    if not data.strip():
        raise ExtractionError("the file is empty")
    if kind == PDF:
        return _extract_pdf(data, on_page)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(f"the file is not UTF-8 text (byte {exc.start} cannot be decoded)") from exc
    if "\x00" in text:
        raise ExtractionError("the file is binary, not text")
    return ExtractedText([Page(None, text)])


def _extract_pdf(data: bytes, on_page: Callable[[int, int], None] | None) -> ExtractedText:
    if not data.lstrip()[:5] == b"%PDF-":
        raise ExtractionError("the file is not a PDF (it does not start with %PDF-)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("the PDF is password-protected; upload an unprotected copy")
        total = len(reader.pages)
    except ExtractionError:
        raise
    except FileNotDecryptedError as exc:
        raise ExtractionError("the PDF is password-protected; upload an unprotected copy") from exc
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ExtractionError(f"the PDF is damaged and cannot be read ({exc})") from exc
    if total == 0:
        raise ExtractionError("the PDF has no pages")
    pages: list[Page] = []
    for index in range(total):
        try:
            text = reader.pages[index].extract_text() or ""
        except FileNotDecryptedError as exc:
            raise ExtractionError("the PDF is password-protected; upload an unprotected copy") from exc
        except Exception as exc:  # noqa: BLE001 - pypdf raises many types on malformed content streams
            raise ExtractionError(f"page {index + 1} of the PDF is damaged and cannot be read ({exc})") from exc
        pages.append(Page(index + 1, text))
        if on_page:
            on_page(index + 1, total)
    if not any(p.text.strip() for p in pages):
        raise ExtractionError("the PDF has no text layer (it looks like a scan); run OCR on it and upload the result")
    try:
        title = (reader.metadata.title or "").strip() if reader.metadata else ""
    except (PyPdfError, ValueError, TypeError, AttributeError):
        title = ""
    return ExtractedText(pages, title[:300] or None)
