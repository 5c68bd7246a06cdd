"""Text extraction from uploads: PDF (pypdf, page numbers kept) and plain text; Markdown, DOCX, EPUB, HTML and
transcripts (SRT/VTT) through :mod:`app.rag.formats`.

Every way a file can be unusable raises ``ExtractionError`` with a message written for the coach. Uploads are
untrusted: :mod:`app.rag.isolation` runs this module in a child process with memory, CPU and time limits;
the page and character caps here bound the work a file can ask for.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import pypdf
from pypdf.errors import FileNotDecryptedError, PdfReadError, PyPdfError

PDF = "pdf"
TEXT = "text"
MARKDOWN = "markdown"
DOCX = "docx"
EPUB = "epub"
HTML = "html"
VTT = "vtt"
SRT = "srt"

_EXTENSIONS = {".pdf": PDF, ".txt": TEXT, ".text": TEXT, ".md": MARKDOWN, ".markdown": MARKDOWN}
_EXTENSIONS |= {".docx": DOCX, ".epub": EPUB, ".html": HTML, ".htm": HTML, ".vtt": VTT, ".srt": SRT}
_CONTENT_TYPES = {
    "application/pdf": PDF,
    "text/markdown": MARKDOWN,
    "text/plain": TEXT,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": DOCX,
    "application/epub+zip": EPUB,
    "text/html": HTML,
    "text/vtt": VTT,
    "application/x-subrip": SRT,
}
_ZIP_KINDS = (DOCX, EPUB)
_PDF_SIGNATURE = re.compile(rb"\s*%PDF-")
"""A PDF's header, after blanks (ASCII whitespace, as ``bytes.strip``)."""
_ZIP_SIGNATURE = b"PK\x03\x04"
_ZIP_PARTS = {DOCX: b"word/document.xml", EPUB: b"META-INF/container.xml"}
"""The part that names a ZIP archive's kind: a Word document's main part, an EPUB's container (every EPUB holds it:
the EPUB Open Container Format)."""
_NAMES = {
    PDF: ("the PDF", "a PDF viewer"),
    TEXT: ("the text file", "a text editor"),
    MARKDOWN: ("the Markdown file", "a text editor"),
    DOCX: ("the Word document", "Word"),
    EPUB: ("the EPUB", "an e-book reader"),
    HTML: ("the HTML page", "a web browser"),
    VTT: ("the VTT transcript", "a text editor"),
    SRT: ("the SRT transcript", "a text editor"),
}

logging.getLogger("pypdf").setLevel(logging.ERROR)


class ExtractionError(Exception):
    """The file cannot be turned into text; ``str(exc)`` says why, for the coach."""


@dataclass(frozen=True)
class Page:
    """Raw text of one page; ``number`` is 1-based for PDFs, DOCX pages and EPUB chapters and ``None`` for
    text files; ``locator`` (cited instead of the number, at most :data:`LOCATOR_MAX` characters) is the start
    time (``"HH:MM:SS"``) of a transcript's speaker turn, or a PDF page's own label where it has one other than
    its number (``"p. xv"``), else ``None``."""

    number: int | None
    text: str
    locator: str | None = None


@dataclass(frozen=True)
class ExtractedText:
    """Pages of a file plus the title it declares, if any: its metadata's (PDF ``/Title``, DOCX core properties,
    EPUB ``dc:title``, HTML ``<title>``), else its first level-1 heading (Markdown; DOCX: ``Title`` or ``Heading 1``
    paragraph)."""

    pages: list[Page]
    title: str | None = None


def detect_kind(filename: str, content_type: str | None, data: bytes = b"") -> str:
    """One of the kinds above (``pdf``, ``text``, ``markdown``, ``docx``, ``epub``, ``html``, ``vtt``, ``srt``)
    from the file's content where it has a signature (:func:`signature_kind`: a PDF, Word document or EPUB is read
    as what it is whatever its name, so a PDF saved as ``notes.txt`` is not refused as text that is not UTF-8), else
    from the file name's extension, then the MIME type. A file whose name promises a signature its content lacks
    (a text file named ``.pdf``) keeps the name's kind, and its reader says what is wrong with it.

    Raises ``ExtractionError`` for any other type.
    """
    if sniffed := signature_kind(data):
        return sniffed
    lower = filename.lower()
    for ext, kind in _EXTENSIONS.items():
        if lower.endswith(ext):
            return kind
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in _CONTENT_TYPES:
        return _CONTENT_TYPES[ctype]
    raise ExtractionError(
        f"unsupported file type for {filename!r}: upload a PDF, Word (.docx), EPUB, HTML, Markdown, .txt, "
        "or a .vtt/.srt transcript"
    )


def signature_kind(data: bytes) -> str | None:
    """The kind the content of ``data`` declares by its signature, ``None`` for none: ``pdf`` for a file starting
    with ``%PDF-`` (after blanks, as the PDF reader here takes it); for a ZIP archive (``PK\\x03\\x04``), ``docx``
    when it holds a ``word/document.xml`` part and ``epub`` when it holds ``META-INF/container.xml``, looked for as
    the names its directory stores uncompressed (neither, or both: ``None``; nothing is unpacked here, in the web
    process or the worker, before the isolated reader). Text formats have no signature."""
    if _PDF_SIGNATURE.match(data):
        return PDF
    if not data.startswith(_ZIP_SIGNATURE):
        return None
    parts = {kind for kind, part in _ZIP_PARTS.items() if part in data}
    return parts.pop() if len(parts) == 1 else None


def kind_name(kind: str) -> str:
    """How a reason for the coach names a file of ``kind``: ``"the PDF"``, ``"the Word document"``,
    ``"the Markdown file"``…; ``"the file"`` for a kind not listed."""
    return _NAMES.get(kind, ("the file", ""))[0]


def open_advice(kind: str) -> str:
    """The advice that ends a reason for a file the reader could not finish: ``"check that the Word document
    opens in Word, or split it"`` (``"check that the file opens, or split it"`` for a kind not listed)."""
    name, viewer = _NAMES.get(kind, ("the file", ""))
    return f"check that {name} opens{f' in {viewer}' if viewer else ''}, or split it"


@dataclass(frozen=True)
class Caps:
    """How much a file may hold: ``max_pages`` pages (a PDF's or a Word document's pages, an EPUB's chapters, a
    transcript's speaker turns) and ``max_characters`` characters of text."""

    max_pages: int = 2000
    max_characters: int = 5_000_000

    def check_pages(self, pages: int, what: str = "the PDF", unit: str = "page", units: str = "pages") -> None:
        """Raises ``ExtractionError`` when ``pages`` is over ``max_pages``, worded for the file: ``what`` holds
        ``pages`` ``units`` (e.g. "the transcript", "turn", "speaker turns")."""
        if pages > self.max_pages:
            raise ExtractionError(
                f"{what} has {pages:,} {units}, over the {self.max_pages:,}-{unit} limit; split it into smaller files"
            )

    def check_characters(self, characters: int) -> None:
        """Raises ``ExtractionError`` when ``characters`` is over ``max_characters``."""
        if characters > self.max_characters:
            raise ExtractionError(
                f"the file holds more than {self.max_characters:,} characters of text, over the character "
                "limit; split it into smaller files"
            )


PageSink = Callable[[list[Page]], None]
"""Receives pages as they are read, in reading order, a batch at a time."""
TitleSink = Callable[[str | None], None]
"""Receives the title a file declares (:attr:`ExtractedText.title`), once, before its first page."""
LOCATOR_MAX = 20
"""The longest :attr:`Page.locator` (the ``chunks.locator`` column's size)."""
SINK_PAGES = 8
"""Pages per batch handed to a :data:`PageSink` (about a second of pypdf work on a book page)."""


def extract_pages(
    data: bytes,
    kind: str,
    *,
    on_page: Callable[[int, int], None] | None = None,
    caps: Caps | None = None,
    sink: PageSink | None = None,
    on_title: TitleSink | None = None,
) -> ExtractedText:
    """Extract the pages (and metadata title) of ``data``. ``on_page(done, total)`` reports PDF progress:
    first ``(0, total)`` once the page count is known, then after each page. With a ``sink``, pages go to
    it in batches of :data:`SINK_PAGES` as they are read (so a caller can work on the first pages while
    later ones are read) and the returned ``pages`` is empty; an ``ExtractionError`` can still come after
    some batches were handed over. ``on_title`` gets the title the result will carry before any page is
    handed over (a PDF's ``/Title`` is read when the file is opened), so the first chunks can be headed with it.

    Raises ``ExtractionError``: empty file, not really a PDF, damaged PDF, password-protected PDF, no text layer (a
    scan), text that is neither UTF-8 nor UTF-16 with a byte-order mark, a damaged DOCX or EPUB, an HTML page or
    transcript without text, more pages or characters than ``caps`` allow (default :class:`Caps`). ``MemoryError`` is
    not turned into a reason here: the caller knows the limit.
    """
    caps = caps or Caps()
    name = kind_name(kind)
    if not data.strip():
        raise ExtractionError(f"{name} is empty")
    if kind == PDF:
        return _extract_pdf(data, on_page, caps, sink, on_title)
    if kind in _ZIP_KINDS:
        return _to_sink(_extract_format(kind, data, caps), sink, on_title)
    # UTF-16 with its byte-order mark is what Windows Notepad saves as "Unicode"
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ExtractionError(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded): save it as UTF-8 and upload it again"
        ) from exc
    if "\x00" in text:
        raise ExtractionError(f"{name} is binary, not text")
    caps.check_characters(len(text))
    if kind in (MARKDOWN, HTML, VTT, SRT):
        return _to_sink(_extract_format(kind, text, caps), sink, on_title)
    return _to_sink(ExtractedText([Page(None, text)]), sink, on_title)


def _to_sink(extracted: ExtractedText, sink: PageSink | None, on_title: TitleSink | None) -> ExtractedText:
    """``extracted`` as is without a ``sink``; else its pages handed to the sink in batches of
    :data:`SINK_PAGES` and ``extracted`` returned with no pages (its title kept). Its title goes to ``on_title``
    first."""
    if on_title is not None:
        on_title(extracted.title)
    if sink is None:
        return extracted
    for start in range(0, len(extracted.pages), SINK_PAGES):
        sink(extracted.pages[start : start + SINK_PAGES])
    return ExtractedText([], extracted.title)


def _extract_format(kind: str, content: bytes | str, caps: Caps) -> ExtractedText:
    """The hook to :mod:`app.rag.formats`: ``content`` is the file's bytes (DOCX, EPUB) or its UTF-8 text
    (Markdown, HTML, VTT, SRT). Imported here because the format modules build on this module's ``Page``."""
    from app.rag.formats import docx, epub, html, markdown, transcript  # noqa: PLC0415 - see the docstring

    if isinstance(content, bytes):
        return docx.extract_docx(content, caps) if kind == DOCX else epub.extract_epub(content, caps)
    if kind == MARKDOWN:
        return markdown.extract_markdown(content)
    if kind == HTML:
        return html.extract_html(content)
    return transcript.extract_transcript(content, kind, caps)


def _open_pdf(data: bytes, caps: Caps) -> tuple[pypdf.PdfReader, int]:
    """The reader and its page count, checking the page tree's declared ``/Count`` against the cap before
    pypdf walks the tree (a few kilobytes can declare a billion pages)."""
    if not _PDF_SIGNATURE.match(data):
        raise ExtractionError("the file is not a PDF (it does not start with %PDF-)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("the PDF is password-protected; upload an unprotected copy")
        declared = reader.root_object["/Pages"].get_object().get("/Count")  # type: ignore[union-attr]
        if isinstance(declared, int):
            caps.check_pages(declared)
        total = len(reader.pages)
    except (ExtractionError, MemoryError):
        raise
    except FileNotDecryptedError as exc:
        raise ExtractionError("the PDF is password-protected; upload an unprotected copy") from exc
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ExtractionError(f"the PDF is damaged and cannot be read ({exc})") from exc
    caps.check_pages(total)
    return reader, total


def _page_labels(reader: pypdf.PdfReader, total: int) -> list[str | None]:
    """Each page's locator: ``"p. <label>"`` where the PDF labels the page other than by its number (front matter
    in roman numerals, a book's own numbering: the ``/PageLabels`` of ISO 32000-1 §12.4.2, which PDF viewers
    show), so a citation names the page the coach finds in their viewer; else ``None`` (the number is cited). A
    damaged or over-long label, or one holding a character that is not printable, is left out."""
    try:
        labels = reader.page_labels if "/PageLabels" in reader.root_object else []
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
        labels = []
    located: list[str | None] = []
    for index in range(total):
        raw = labels[index] if index < len(labels) and isinstance(labels[index], str) else ""
        label = " ".join(unicodedata.normalize("NFKC", raw).split())
        shown = f"p. {label}"
        usable = label.isprintable() and len(shown) <= LOCATOR_MAX  # (no NUL, control or bidi character)
        located.append(shown if label and usable and label != str(index + 1) else None)
    return located


def _pdf_title(reader: pypdf.PdfReader) -> str | None:
    """The PDF's metadata ``/Title``, stripped and at most 300 characters; ``None`` without one or when the
    metadata cannot be read."""
    try:
        title = (reader.metadata.title or "").strip() if reader.metadata else ""
    except (PyPdfError, ValueError, TypeError, AttributeError):
        title = ""
    return title[:300] or None


def _extract_pdf(
    data: bytes,
    on_page: Callable[[int, int], None] | None,
    caps: Caps,
    sink: PageSink | None,
    on_title: TitleSink | None,
) -> ExtractedText:
    reader, total = _open_pdf(data, caps)
    if total == 0:
        raise ExtractionError("the PDF has no pages")
    title = _pdf_title(reader)
    if on_title is not None:
        on_title(title)
    if on_page:
        on_page(0, total)
    pages: list[Page] = []  # read and not yet handed to the sink
    characters = 0
    has_text = False
    labels = _page_labels(reader, total)
    for index in range(total):
        try:
            text = reader.pages[index].extract_text() or ""
        except MemoryError:
            raise
        except FileNotDecryptedError as exc:
            raise ExtractionError("the PDF is password-protected; upload an unprotected copy") from exc
        except Exception as exc:  # noqa: BLE001 - pypdf raises many types on malformed content streams
            raise ExtractionError(f"page {index + 1} of the PDF is damaged and cannot be read ({exc})") from exc
        characters += len(text)
        caps.check_characters(characters)
        pages.append(Page(index + 1, text, labels[index]))
        has_text = has_text or bool(text.strip())
        if sink is not None and len(pages) >= SINK_PAGES:
            sink(pages)
            pages = []
        if on_page:
            on_page(index + 1, total)
    if not has_text:
        raise ExtractionError("the PDF has no text layer (it looks like a scan); run OCR on it and upload the result")
    if sink is not None and pages:
        sink(pages)
        pages = []
    return ExtractedText(pages, title)
