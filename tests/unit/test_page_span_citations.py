"""A passage that runs across a page break is cited by every page it spans ("Meditations, pp. 42–43"), not by its
first page alone (which may hold only the end of the chapter before): by the pages' own labels where the PDF has
them, else by their numbers; and the four places that label a citation (the prompt and Telegram through
``source_label``, the widget's ``sourceLabel``, the transcript's ``partials/message.html``) label it alike, a
citation stored before as it was."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pypdf
import pytest

from app.channels.telegram.render import footnotes
from app.rag.chunking import ChunkSpec, chunk_pages, cited_locator
from app.rag.extract import extract_pages
from app.rag.retrieval import RetrievedChunk, source_label
from tests.hostile_files import text_pdf

ROOT = Path(__file__).resolve().parents[2]
TWO_PAGES_A_CHUNK = ChunkSpec(max_tokens=14, overlap_tokens=0)
"""``text_pdf``'s pages are six tokens each: two pages a chunk."""


def _labelled(pages: int, **label: Any) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(text_pdf(pages))))
    writer.set_page_label(0, pages - 1, **label)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _cited(pdf: bytes, spec: ChunkSpec = TWO_PAGES_A_CHUNK) -> list[str]:
    """Each chunk of ``pdf`` as retrieval cites it (``source_label`` over ``cited_locator``)."""
    chunks = chunk_pages(extract_pages(pdf, "pdf").pages, spec)
    return [source_label("Book", c.page_start, cited_locator(c.page_start, c.page_end, c.locator)) for c in chunks]


def test_a_chunk_across_a_page_break_is_cited_by_both_pages_labels() -> None:
    """The tester's case: a book numbered from 42 on its first page (PDF pages 1, 2 are pp. 42, 43): a chunk of
    both pages was cited "p. 42", the page that held only the end of the chapter before."""
    chunks = chunk_pages(extract_pages(_labelled(4, style="/D", start=42), "pdf").pages, TWO_PAGES_A_CHUNK)
    assert [(c.page_start, c.page_end, c.locator) for c in chunks] == [(1, 2, "pp. 42–43"), (3, 4, "pp. 44–45")]
    assert _cited(_labelled(4, style="/D", start=42)) == ["Book, pp. 42–43", "Book, pp. 44–45"]
    assert _cited(_labelled(2, style="/r", start=14)) == ["Book, pp. xiv–xv"]
    one_page_a_chunk = ChunkSpec(max_tokens=8, overlap_tokens=0)
    assert _cited(_labelled(2, style="/D", start=42), one_page_a_chunk) == ["Book, p. 42", "Book, p. 43"]


def test_a_chunk_across_a_page_break_of_a_pdf_without_labels_is_cited_by_both_page_numbers() -> None:
    """No labels: the chunk stores none (its page span is in ``page_start``/``page_end``) and is cited by the
    numbers of the pages it spans; a chunk of one page by its number, as before."""
    chunks = chunk_pages(extract_pages(text_pdf(3), "pdf").pages, TWO_PAGES_A_CHUNK)
    assert [(c.page_start, c.page_end, c.locator) for c in chunks] == [(1, 2, None), (3, 3, None)]
    assert _cited(text_pdf(3)) == ["Book, pp. 1–2", "Book, p. 3"]


def test_an_end_label_that_does_not_fit_or_says_nothing_more_leaves_the_first_pages_label() -> None:
    """Labels too long for the locator column together ("pp. Appendix 1–Appendix 2" is over 20 characters) cite the
    first page's label as before; two pages with the same label cite it once."""
    assert _cited(_labelled(2, style="/D", prefix="Appendix ")) == ["Book, p. Appendix 1"]
    assert _cited(_labelled(2, prefix="Plate")) == ["Book, p. Plate"]


@pytest.mark.parametrize(
    ("page_start", "page_end", "locator", "cited"),
    [
        (52, 53, None, "pp. 52–53"),  # pages without labels
        (52, 52, None, None),  # one page: cited by its number
        (52, 53, "pp. 42–43", "pp. 42–43"),  # the chunk's labels
        (52, 53, "p. 42", "p. 42"),  # stored before its last page's label was kept: no label is made up
        (None, None, "00:12:31", "00:12:31"),  # a transcript
        (None, None, None, None),  # a text file
    ],
)
def test_cited_locator(page_start: int | None, page_end: int | None, locator: str | None, cited: str | None) -> None:
    assert cited_locator(page_start, page_end, locator) == cited


STORED: list[dict[str, Any]] = [
    {"document_id": "a", "title": "Meditations", "page": 42, "chunk_id": "c1", "score": 0.5},  # before the change
    {"document_id": "a", "title": "Meditations", "page": 52, "locator": "pp. 42–43", "chunk_id": "c2", "score": 0.5},
    {"document_id": "b", "title": "Letters", "page": 52, "locator": "pp. 52–53", "chunk_id": "c3", "score": 0.5},
    {"document_id": "a", "title": "Meditations", "page": 5, "locator": "p. xv", "chunk_id": "c4", "score": 0.5},
    {"document_id": "s", "title": "Session 3", "page": None, "locator": "00:12:31", "chunk_id": "c5", "score": 0.5},
    {"document_id": "n", "title": "Notes", "page": None, "chunk_id": "c6", "score": 0.5},
]
LABELS = [
    "Meditations, p. 42",
    "Meditations, pp. 42–43",
    "Letters, pp. 52–53",
    "Meditations, p. xv",
    "Session 3, 00:12:31",
    "Notes",
]


def test_a_retrieved_passage_across_a_page_break_is_stored_and_shown_with_its_pages() -> None:
    """What the prompt and the stored citation name for a passage of pages 52–53 labelled 42 and 43."""
    passage = RetrievedChunk(uuid.uuid4(), uuid.uuid4(), "Meditations", 52, "text", 0.5, 0.01, "pp. 42–43")
    assert passage.citation()["page"] == 52 and passage.citation()["locator"] == "pp. 42–43"
    assert source_label(passage.title, passage.page, passage.locator) == "Meditations, pp. 42–43"


def test_the_prompt_telegram_and_the_transcript_label_citations_alike_old_ones_as_before() -> None:
    """``source_label`` (the prompt), Telegram's footnotes and ``partials/message.html`` (the dashboard's and
    the widget page's transcript) give each stored citation the same label; one stored before passages were
    cited by every page they span still reads "p. 42"."""
    assert [source_label(c["title"], c.get("page"), c.get("locator")) for c in STORED] == LABELS
    assert footnotes(STORED).splitlines() == [f"[{n}] {label}" for n, label in enumerate(LABELS, start=1)]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROOT / "templates"), autoescape=True)
    message = SimpleNamespace(
        id=uuid.uuid4(),
        sender_type="ai",
        created_at=datetime(2026, 12, 7, tzinfo=UTC),
        text="Rise to the work of a human being.",
        citations=STORED,
        reply_meta=SimpleNamespace(),
        forgotten=False,
    )
    html = env.get_template("partials/message.html").render(msg=message)
    assert [re.sub(r"\s+", " ", item).strip() for item in re.findall(r"<li[^>]*>(.*?)</li>", html)] == LABELS


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js (ESLint's runtime)")
def test_the_widget_labels_citations_as_the_server_does() -> None:
    """``static/chat.js``'s ``sourceLabel``, run by Node.js on the stored citations, gives :data:`LABELS`."""
    script = (ROOT / "static" / "chat.js").read_text()
    match = re.search(r"^ *function sourceLabel\(c\) \{\n.*?^ *\}\n", script, re.MULTILINE | re.DOTALL)
    assert match, "chat.js has no sourceLabel(c)"
    run = f"{match.group(0)}\nprocess.stdout.write(JSON.stringify({json.dumps(STORED)}.map(sourceLabel)));"
    labels = subprocess.run(["node", "-e", run], capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(labels) == LABELS
