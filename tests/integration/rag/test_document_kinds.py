"""DOCX, EPUB, HTML, Markdown and SRT/VTT transcripts through the real upload API, worker and isolated reader:
chunks carry the page (DOCX page, EPUB chapter) or the transcript timestamp, a chat citation shows the
timestamp, and a broken file of each kind ends ``failed`` with a reason."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Awaitable, Callable

import docx
import httpx
import pytest
import respx
from ebooklib import epub
from selectolax.lexbor import LexborHTMLParser
from sqlalchemy import func, select

from app.container import Container
from app.core.config import Settings
from app.core.runtime import Services
from app.db.engine import tenant_session
from app.llm.registry import ProviderRegistry
from app.rag.extract import ExtractionError
from app.rag.isolation import ExtractionLimits, extract_isolated
from app.rag.models import Chunk
from app.rag.retrieval import source_label
from tests.conftest import Coach, make_client, upload
from tests.hostile_files import text_pdf
from tests.integration.rag.test_hostile_files import _run_worker
from tests.integration.web.test_dashboard import DELTAS, browser, client_chat, llm_api, log_in
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS, stream_reply

__all__ = ["browser", "llm_api"]  # a logged-out browser tab and the mocked coach endpoint, fixtures


def _docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Morning Habits"
    document.add_heading("Waking up", level=1)
    document.add_paragraph("Drink a glass of water before coffee. Open the curtains at once.")
    document.add_page_break()
    document.add_heading("Evening", level=1)
    document.add_paragraph("Put the phone in another room at nine. Read paper books before sleep.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _epub() -> bytes:
    book = epub.EpubBook()
    book.set_identifier("habits-1")
    book.set_title("The Habit Book")
    book.set_language("en")
    chapters = []
    for n, text in enumerate(("Chapter one talks about streaks of small wins.", "Chapter two covers relapse."), 1):
        chapter = epub.EpubHtml(title=f"Chapter {n}", file_name=f"ch{n}.xhtml", lang="en")
        chapter.content = f"<html><body><h1>Chapter {n}</h1><p>{text}</p></body></html>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *chapters]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


HTML = b"""<!doctype html><html><head><title>Sleep Guide</title><style>p{color:red}</style></head>
<body><nav>Home | About</nav><h2>Light</h2><p>Dim the <b>lights</b> an hour before bed.</p>
<script>alert('x')</script></body></html>"""
MARKDOWN = b"# Focus\n\nSingle-tasking beats multitasking.\n"
VTT = b"""WEBVTT

00:00:02.000 --> 00:00:06.000
<v Coach>Welcome back. How did the week go?

00:12:31.000 --> 00:12:36.000
<v Anna>I kept the cold shower streak for nine days.

00:12:37.000 --> 00:12:40.000
<v Anna>Then I skipped it on Sunday.
"""
SRT = b"""1
00:00:01,000 --> 00:00:03,000
Coach: Let's review the journaling habit.

2
00:05:10,500 --> 00:05:14,000
Ben: I journaled about gratitude every evening.
"""


async def _chunks(container: Container, coach: Coach, document_id: str) -> list[Chunk]:
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        rows = await session.scalars(
            select(Chunk).where(Chunk.document_id == uuid.UUID(document_id)).order_by(Chunk.ordinal)
        )
        return list(rows.all())


async def _ready(http: httpx.AsyncClient, coach: Coach, document_id: str) -> dict:
    doc = (await http.get(f"/api/v1/documents/{document_id}", headers=coach.headers)).json()
    assert doc["status"] == "ready", doc
    return doc


async def test_each_kind_becomes_chunks_with_its_page_or_timestamp(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
) -> None:
    coach = await make_coach("Kinds Coach")
    files = {
        "habits.docx": _docx(),
        "book.epub": _epub(),
        "sleep.html": HTML,
        "focus.md": MARKDOWN,
        "session.vtt": VTT,
        "review.srt": SRT,
    }
    ids = {name: (await upload(http, coach, name, data))["id"] for name, data in files.items()}
    await run_jobs()
    for name in files:
        doc = await _ready(http, coach, ids[name])
        assert doc["chunks_total"] == doc["chunks"] == 1, "the embedding stage is counted against its total"
    # small documents become one chunk each: the chunk's page span covers the whole file
    (word,) = await _chunks(container, coach, ids["habits.docx"])
    assert (word.page_start, word.page_end, word.locator) == (1, 2, None)
    assert "Drink a glass of water" in word.text and "Put the phone" in word.text
    assert (await _ready(http, coach, ids["habits.docx"]))["title"] == "Morning Habits"
    (book,) = await _chunks(container, coach, ids["book.epub"])
    assert "streaks of small wins" in book.text and "relapse" in book.text
    assert (book.page_start, book.page_end) == (2, 3), "spine positions: the nav document is position 1"
    assert (await _ready(http, coach, ids["book.epub"]))["title"] == "The Habit Book"
    (page,) = await _chunks(container, coach, ids["sleep.html"])
    assert "Dim the lights an hour before bed." in page.text
    assert "alert" not in page.text and "color" not in page.text and "Home | About" not in page.text
    assert page.header.endswith("Light") and page.page_start is None
    (notes,) = await _chunks(container, coach, ids["focus.md"])
    assert notes.header.endswith("Focus")
    (session,) = await _chunks(container, coach, ids["session.vtt"])
    assert session.locator == "00:00:02"
    assert "Coach: Welcome back." in session.text
    assert "Anna: I kept the cold shower streak for nine days. Then I skipped it on Sunday." in session.text
    (review,) = await _chunks(container, coach, ids["review.srt"])
    assert review.locator == "00:00:01" and "Ben: I journaled about gratitude" in review.text


BAD_FILES = [
    ("broken.docx", b"PK\x03\x04 this is not really a zip", "not a readable Word"),
    ("zip-not-word.docx", None, "not a readable Word"),
    ("broken.epub", b"PK\x03\x04 garbage", "not a readable EPUB"),
    ("no-cues.vtt", b"WEBVTT\n\n", "no cues"),
    ("not-a-transcript.vtt", b"hello there, no header\n", "malformed"),
    ("empty-body.html", b"<html><head><title>x</title></head><body>  <script>1</script></body></html>", "no text"),
    ("blank.srt", b"1\n00:00:01,000 --> 00:00:02,000\n\n", "no cues"),
]


def _zip_without_word_parts() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("hello.txt", "not a document")
    return out.getvalue()


async def test_a_broken_file_of_each_kind_fails_with_a_reason(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> None:
    coach = await make_coach("Broken Kinds Coach")
    ids = {
        name: (await upload(http, coach, name, data if data is not None else _zip_without_word_parts()))["id"]
        for name, data, _ in BAD_FILES
    }
    await run_jobs()
    for name, _, reason in BAD_FILES:
        doc = (await http.get(f"/api/v1/documents/{ids[name]}", headers=coach.headers)).json()
        assert doc["status"] == "failed", (name, doc)
        assert reason in doc["error"], (name, doc["error"])
        assert doc["chunks"] == 0


@pytest.mark.parametrize("name", ["notes.xlsx", "talk.mp3"])
async def test_other_kinds_are_still_refused(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], name: str
) -> None:
    coach = await make_coach()
    response = await http.post("/api/v1/documents", headers=coach.headers, files={"file": (name, b"PK\x03\x04")})
    assert response.status_code == 400
    assert "unsupported file type" in response.json()["detail"] and ".vtt/.srt" in response.json()["detail"]


async def test_a_chat_citation_of_a_transcript_shows_its_timestamp(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    llm_api: respx.MockRouter,
) -> None:
    coach = await make_coach("Transcript Coach")
    document = await upload(http, coach, "session.vtt", VTT)
    await run_jobs()
    await _ready(http, coach, document["id"])
    settings = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=settings)).status_code == 200
    client = await make_client(http, coach, "Anna")
    stream_reply(llm_api, [*DELTAS, " [1]"], (50, 5))  # the reply cites the best passage
    turn = await client_chat(http, client["widget_token"], "How long did I keep the cold shower streak?")
    [cited] = [c for c in turn["citations"] if c["document_id"] == document["id"]]
    assert cited["locator"] == "00:00:02" and "score" not in cited
    passage = await http.get(
        f"/api/v1/widget/passages/{cited['chunk_id']}",
        headers={"Authorization": f"Bearer {client['widget_token']}"},
    )
    assert passage.status_code == 200 and passage.json()["locator"] == "00:00:02"


def _docx_bomb(expanded_mb: int) -> bytes:
    """A DOCX whose ``word/document.xml`` inflates to ``expanded_mb`` MB of paragraphs (a zip bomb)."""
    source = zipfile.ZipFile(io.BytesIO(_docx()))
    xml = source.read("word/document.xml")
    head, tail = xml.split(b"<w:body>", 1)
    paragraph = b"<w:p><w:r><w:t>Hostile text, again and again.</w:t></w:r></w:p>"
    block = paragraph * ((1 << 20) // len(paragraph))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                bomb.writestr(item, source.read(item.filename))
        with bomb.open("word/document.xml", "w", force_zip64=True) as document:
            document.write(head + b"<w:body>")
            for _ in range(expanded_mb):
                document.write(block)
            document.write(tail)
    return out.getvalue()


async def test_a_docx_zip_bomb_is_stopped_by_the_readers_memory_limit() -> None:
    bomb = _docx_bomb(expanded_mb=320)
    assert len(bomb) < 5 * 1024 * 1024
    with pytest.raises(ExtractionError, match="more than 256 MB of memory"):
        await extract_isolated(bomb, "docx", ExtractionLimits(memory_mb=256, wall_seconds=120))


async def test_a_broken_word_markdown_or_text_file_is_named_by_its_kind_in_the_reason(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
) -> None:
    """Every reason the reader gave past its limits said "check that it opens in a PDF viewer", and a text file's
    "the file is not UTF-8 text": a broken Word document or Markdown file was reported as a PDF or as no kind."""
    coach = await make_coach("Kind Reasons Coach")
    files = {
        "bomb.docx": (_docx_bomb(expanded_mb=320), "the Word document opens in Word"),
        "blank.docx": (b"  \n", "the Word document is empty"),
        "latin1.md": (b"# Caf\xe9 notes\n\nBe kind.\n", "the Markdown file is not UTF-8 text (byte 5"),
        "binary.txt": (b"notes\x00\x01\x02", "the text file is binary, not text"),
        "bells.md": (b"\x07\x07\x07\n", "the Markdown file holds no text"),
    }
    ids = {name: (await upload(http, coach, name, data))["id"] for name, (data, _) in files.items()}
    await _run_worker(settings.model_copy(update={"extract_memory_mb": 256}), services, registry)
    for name, (_, reason) in files.items():
        doc = (await http.get(f"/api/v1/documents/{ids[name]}", headers=coach.headers)).json()
        assert doc["status"] == "failed", (name, doc)
        assert reason in doc["error"] and "PDF" not in doc["error"], (name, doc["error"])


NOTES_MD = b"""Notes I keep for clients, draft two.

# The Morning Pages Method
Write three pages by hand each morning before checking the phone.

# Second heading
More notes.
"""


def _docx_with_heading_title() -> bytes:
    document = docx.Document()  # (python-docx leaves the core-properties title empty)
    document.add_paragraph("Coaching handout")
    document.add_heading("Evening Wind-Down Routine", level=1)
    document.add_paragraph("Dim the screens at nine and write tomorrow's three tasks on paper.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


async def test_a_markdown_and_a_word_document_are_titled_and_cited_by_their_heading_not_the_file_name(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    llm_api: respx.MockRouter,
) -> None:
    """A .md and a .docx were titled after their file names ("My Notes V2", "Handout Final") although their
    first level-1 heading names them; the citation showed the file name too."""
    coach = await make_coach("Heading Title Coach")
    notes = await upload(http, coach, "my-notes_v2.md", NOTES_MD)
    handout = await upload(http, coach, "handout_final.docx", _docx_with_heading_title())
    await run_jobs()
    assert (await _ready(http, coach, notes["id"]))["title"] == "The Morning Pages Method"
    assert (await _ready(http, coach, handout["id"]))["title"] == "Evening Wind-Down Routine"
    settings = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=settings)).status_code == 200
    client = await make_client(http, coach, "Dana")
    stream_reply(llm_api, [*DELTAS, " [1]"], (50, 5))  # each reply cites its question's best passage
    for question, document, label in [
        ("How many morning pages should I write by hand?", notes, "The Morning Pages Method"),
        ("When should I dim the screens in the evening?", handout, "Evening Wind-Down Routine, p. 1"),
    ]:
        turn = await client_chat(http, client["widget_token"], question)
        [cited] = [c for c in turn["citations"] if c["document_id"] == document["id"]]
        assert source_label(cited["title"], cited.get("page"), cited.get("locator")) == label


def _long_markdown() -> bytes:
    """A Markdown document titled by its first heading, long enough for several chunks in two sections."""
    habits = ["sleep", "water", "walking", "journaling", "reading", "stretching", "breathing", "planning"]
    paragraph = "Keep the {0} habit small on hard days: two minutes of {0} still counts as a win for the streak. "
    body = "\n\n".join(paragraph.format(habit) * 6 for habit in habits)
    return f"# Lantern Harbour Method\n\n{body}\n\n## Relapse\n\n{body}\n".encode()


async def test_every_chunk_is_headed_with_the_title_the_file_declares_not_its_file_name(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
) -> None:
    """A Markdown heading title (and a PDF's ``/Title``) reached the document's row only at the end of its
    ingestion: every chunk's contextual header, embedded and in the full-text vector, kept the file name's title
    ("Zebra Quokka") until "Process again"."""
    coach = await make_coach("Header Title Coach")
    notes = await upload(http, coach, "zebra-quokka.md", _long_markdown())
    book = await upload(http, coach, "zebra-pdf.pdf", text_pdf(80, title=b"Lantern Harbour Ledger"))
    await run_jobs()
    for document, title in ((notes, "Lantern Harbour Method"), (book, "Lantern Harbour Ledger")):
        assert (await _ready(http, coach, document["id"]))["title"] == title
        chunks = await _chunks(container, coach, document["id"])
        assert len(chunks) > 1
        assert all(c.header.startswith(title) and "Zebra" not in c.header for c in chunks), [c.header for c in chunks]
        async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
            found = await session.execute(
                select(
                    func.count().filter(Chunk.tsv.op("@@")(func.to_tsquery("english", "lantern & harbour"))),
                    func.count().filter(Chunk.tsv.op("@@")(func.to_tsquery("english", "zebra"))),
                ).where(Chunk.document_id == uuid.UUID(document["id"]))
            )
            assert tuple(found.one()) == (len(chunks), 0)
    assert any(c.header == "Lantern Harbour Method — Relapse" for c in await _chunks(container, coach, notes["id"]))


SECTION_HEADINGS = [
    "Coaching Notes: Morning Routines",
    "Step 1. Breathe",
    "Why do we procrastinate? A short answer",
    "Sleep: the foundation",
]


async def test_a_markdown_sections_heading_is_whole_in_its_passages_headers(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
) -> None:
    """Uploaded notes had their headings cut at the first ". ? :" in ``chunks.heading`` and in the embedded and
    searched header: "Coaching Notes:", "Step 1.", "Why do we procrastinate?", "Sleep:"."""
    coach = await make_coach("Sections Coach")
    body = "Keep the habit small on hard days, and write down what worked before you stop for the night. " * 12
    text = "".join(f"{'#' if n == 0 else '##'} {heading}\n{body}\n\n" for n, heading in enumerate(SECTION_HEADINGS))
    notes = await upload(http, coach, "notes.md", text.encode())
    await run_jobs()
    title = (await _ready(http, coach, notes["id"]))["title"]
    assert title == "Coaching Notes: Morning Routines"
    chunks = await _chunks(container, coach, notes["id"])
    assert {c.heading for c in chunks} == set(SECTION_HEADINGS), [c.heading for c in chunks]
    assert {c.header for c in chunks} == {title, *(f"{title} — {heading}" for heading in SECTION_HEADINGS[1:])}


async def test_a_pdf_word_document_or_epub_under_another_name_is_read_as_what_it_is(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A PDF renamed ``bennett-wrongext.txt`` failed with "the text file is not UTF-8 text (byte 242 cannot be
    decoded): save it as UTF-8 and upload it again", the wrong advice for a PDF, and a PDF with no extension was
    refused. Each is read by its content now; the same file uploaded again under its right name is the 409 of a
    file the library holds (it no longer fails, so the coach needs no third upload)."""
    coach = await make_coach("Wrong Names Coach")
    pdf = text_pdf(2, title=b"Renamed Ledger")
    files = {
        "bennett-wrongext.txt": (pdf, "text/plain", "Renamed Ledger", 2),
        "scan-export": (text_pdf(3), "application/octet-stream", "Scan Export", 3),
        "handout.txt": (_docx(), "text/plain", "Morning Habits", 2),
        "book.docx": (_epub(), None, "The Habit Book", 3),
    }
    ids = {}
    for name, (data, content_type, _, _) in files.items():
        accepted = await http.post(
            "/api/v1/documents", headers=coach.headers, files={"file": (name, data, content_type)}
        )
        assert accepted.status_code == 202, (name, accepted.text)
        ids[name] = accepted.json()["id"]
    await run_jobs()
    for name, (_, _, title, pages) in files.items():
        doc = await _ready(http, coach, ids[name])
        assert (doc["title"], doc["pages"], doc["error"]) == (title, pages, None), (name, doc)
    again = await http.post("/api/v1/documents", headers=coach.headers, files={"file": ("bennett.pdf", pdf)})
    assert again.status_code == 409 and "already in your library as “Renamed Ledger”" in again.json()["detail"]


async def test_an_srt_and_a_vtt_transcript_count_their_speaker_turns_alike_not_pages(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Both kinds of transcript have no pages (``pages`` null: they are cited by time) and count their speaker
    turns in ``pages_done``; the dashboard's Pages column showed "—" for them, as if nothing had been read, and now
    shows the turns."""
    coach = await make_coach("Turns Coach")
    ids = {name: (await upload(http, coach, name, data))["id"] for name, data in (("a.srt", SRT), ("b.vtt", VTT))}
    await run_jobs()
    for document_id in ids.values():
        doc = await _ready(http, coach, document_id)
        assert (doc["pages"], doc["pages_done"], doc["pages_searchable"]) == (None, 2, 0), doc
    await log_in(browser, coach)
    table = LexborHTMLParser((await browser.get("/dashboard/documents/table")).text)
    shown = {
        row.css("td")[0].css_first("span").text().split(" · ")[0]: row.css("td")[2] for row in table.css("tbody tr")
    }
    assert {name: cell.text(strip=True) for name, cell in shown.items()} == {"a.srt": "2 turns", "b.vtt": "2 turns"}
    assert shown["a.srt"].attributes["title"] == "speaker turns: a transcript is cited by time, not by page"


async def test_a_markdown_list_of_a_million_items_is_read_within_the_readers_memory_limit() -> None:
    """Looking for the title in the whole of a 5 MB Markdown list took gigabytes: the upload failed."""
    extracted = await extract_isolated(b"- a\n" * 1_250_000, "markdown", ExtractionLimits(memory_mb=256))
    assert extracted.title is None and extracted.pages[0].text.startswith("- a\n- a\n")
