"""A corpus of hostile and broken files, generated (nothing stored in the repository): each is small on disk
and each attacks the extractor a different way. ``CORPUS`` maps a file name to its bytes' factory and the
words its failure reason must contain."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pypdf

PAGE_TEXT = b"BT /F1 12 Tf 72 720 Td (Hostile but polite text.) Tj ET"


def pdf(objects: list[bytes], *, root: int = 1, trailer_extra: bytes = b"", xref: bool = True) -> bytes:
    """A PDF file of ``objects`` (object ``i + 1`` is ``objects[i]``) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    start = len(out)
    if xref:
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        root,
        trailer_extra,
        start,
    )
    return bytes(out)


def _stream(data: bytes, *, flate: bool = False) -> bytes:
    head = b"<< /Length %d%s >>\nstream\n" % (len(data), b" /Filter /FlateDecode" if flate else b"")
    return head + data + b"\nendstream"


FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
RESOURCES = b"/Resources << /Font << /F1 4 0 R >> >> "


def text_pdf(pages: int, text: bytes = PAGE_TEXT, *, title: bytes | None = None) -> bytes:
    """An honest PDF of ``pages`` pages sharing one content stream (a line of text each); ``title``: the
    document information dictionary's ``/Title`` (a PDF literal string's body, escapes allowed)."""
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        _stream(text),
        FONT,
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R %s>>" % RESOURCES
    objects += [page] * pages
    if title is None:
        return pdf(objects)
    objects.append(b"<< /Title (%s) >>" % title)
    return pdf(objects, trailer_extra=b"/Info %d 0 R " % len(objects))


def book_pdf(pages: list[str], *, first_label: int | None = None) -> bytes:
    """An honest PDF whose page ``i`` shows ``pages[i]`` (one line of Latin-1 text), its pages labelled in
    decimals from ``first_label`` (``/PageLabels``: a book's own numbering, as viewers show it) when given."""
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        FONT,  # (object 3)
    ]
    for number, text in enumerate(pages):
        line = text.encode("latin-1").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % (5 + 2 * number)
        )
        objects.append(_stream(b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % line))
    if first_label is None:
        return pdf(objects)
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf(objects))))
    writer.set_page_label(0, len(pages) - 1, style="/D", start=first_label)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def flate_bomb(expanded_mb: int = 64) -> bytes:
    """One page whose content stream inflates about 1000-fold, to ``expanded_mb`` MB of text-showing
    operators (under pypdf's own 75 MB inflation cap, so the extractor's limits are what stop it)."""
    line = b"(Hostile text, shown again and again.) Tj\n"
    block = line * ((1 << 20) // len(line))
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b"BT /F1 12 Tf 72 720 Td\n")]
    parts += [compressor.compress(block) for _ in range(expanded_mb)]
    content = b"".join(parts) + compressor.flush()
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            _stream(content, flate=True),
            FONT,
        ]
    )


def deep_nesting(depth: int = 200_000) -> bytes:
    """A page whose /Annots is an array nested ``depth`` deep (recursion bombs a recursive parser)."""
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Annots "
            + b"[" * depth
            + b"]" * depth
            + b" >>",
            _stream(PAGE_TEXT),
        ]
    )


def xref_loop() -> bytes:
    """Two cross-reference sections whose /Prev pointers name each other, and a page tree that loops
    (the page-tree node is its own kid)."""
    body = pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            _stream(PAGE_TEXT),
        ],
        xref=False,
    )
    head = body[: body.index(b"trailer")]
    offsets = [head.index(b"%d 0 obj" % n) for n in range(1, 5)]
    table = b"xref\n0 5\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    first = len(head)
    second = first + len(table) + 64  # a fixed-width trailer keeps the arithmetic simple
    trailer_one = b"trailer\n<< /Size 5 /Root 1 0 R /Prev %010d >>\n" % second
    trailer_one = trailer_one.ljust(64, b" ")
    trailer_two = b"trailer\n<< /Size 5 /Root 1 0 R /Prev %010d >>\n" % first
    return head + table + trailer_one + table + trailer_two + b"startxref\n%d\n%%%%EOF\n" % second


def huge_page_count(fanout: int = 1000, levels: int = 3) -> bytes:
    """A page tree of ``levels`` levels under the root, each node listing the next ``fanout`` times:
    ``fanout ** levels`` pages (a billion by default) from a file of a few kilobytes."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(levels):
        number = 2 + level
        kid = b"%d 0 R " % (number + 1)
        parent = b"" if level == 0 else b"/Parent %d 0 R " % (number - 1)
        objects.append(
            b"<< /Type /Pages %s/Kids [%s] /Count %d >>" % (parent, kid * fanout, fanout ** (levels - level))
        )
    leaf_parent = 1 + levels
    objects.append(
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
        b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (leaf_parent, len(objects) + 2, len(objects) + 3)
    )
    objects += [_stream(PAGE_TEXT), FONT]
    return pdf(objects)


def encrypted() -> bytes:
    """A one-page PDF with a user password (AES-256)."""
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(text_pdf(1)))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def truncated() -> bytes:
    """The first half of an honest 40-page PDF (no cross-reference table, no trailer)."""
    whole = text_pdf(40)
    return whole[: len(whole) // 2]


def zip_named_pdf() -> bytes:
    """A ZIP archive (a spreadsheet, say) uploaded under a .pdf name: no kind its content names (a Word document or
    an EPUB would be read as one whatever its name: :func:`app.rag.extract.signature_kind`), so the name's."""
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook>not a pdf</workbook>")
    return out.getvalue()


@dataclass(frozen=True)
class Hostile:
    """One corpus entry: the upload name, its bytes' factory and a regular expression its reason matches."""

    name: str
    make: Callable[[], bytes]
    reason: str


CORPUS = [
    # pypdf >= 6.4 stops this one itself (a token limit) at about 400 MB; an older reader meets our limits
    Hostile("flate-bomb.pdf", flate_bomb, "memory|CPU|damaged"),
    Hostile("deep-nesting.pdf", deep_nesting, "damaged"),
    Hostile("xref-loop.pdf", xref_loop, "damaged"),
    Hostile("huge-page-count.pdf", huge_page_count, "1,000,000,000 pages, over the 2,000-page limit"),
    Hostile("encrypted.pdf", encrypted, "password-protected"),
    Hostile("truncated.pdf", truncated, "damaged"),
    Hostile("zip.pdf", zip_named_pdf, "not a PDF"),
    Hostile("zero-bytes.pdf", lambda: b"", "empty"),
]
