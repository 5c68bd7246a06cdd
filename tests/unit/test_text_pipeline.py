"""Extraction, normalisation and chunking on small inputs."""

from __future__ import annotations

import codecs
import json

import pytest

from app.llm.local import minilm_path
from app.rag.chunking import (
    SWITCHABLE_INPUT_TOKENS,
    Chunker,
    ChunkSpec,
    chunk_header,
    chunk_pages,
    count_tokens,
)
from app.rag.extract import MARKDOWN, PDF, TEXT, ExtractionError, Page, detect_kind, extract_pages
from app.rag.normalize import metadata_title, normalize_text
from tests.conftest import MEDITATIONS


def test_tabs_and_runs_of_spaces_become_one_space() -> None:
    assert normalize_text("Well,\t you\t of\tthe  minority") == "Well, you of the minority"


def test_words_hyphenated_at_line_ends_are_rejoined() -> None:
    text = "the same portion of immor-\ntality. It is against na-\nture for men"
    assert normalize_text(text) == "the same portion of immortality. It is against nature for men"


def test_hyphen_before_a_capital_is_kept() -> None:
    assert normalize_text("the Anglo-\nSaxon chronicle") == "the Anglo-Saxon chronicle"


def test_page_number_lines_and_blank_pages_are_dropped() -> None:
    assert normalize_text("last line of the page.\n11\n", paged=True) == "last line of the page."
    assert normalize_text("xii\nFirst line of the page.", paged=True) == "First line of the page."
    assert normalize_text("  \n\t\n xii \n", paged=True) == ""


def test_numbers_and_short_words_on_lines_of_their_own_inside_a_page_are_kept() -> None:
    """A table's cells (a paragraph each in DOCX and HTML) and a Markdown line "I" or "civil" were deleted
    wherever they stood, in every kind of file, as if they were page numbers."""
    table = "Meal\n\nCalories\n\nBreakfast\n\n450\n\nLunch\n\n700\n\nSets per week:\n\n12"
    assert normalize_text(table) == table
    assert normalize_text("Page top\n\n450\n\ncivil\n\nI\n\nPage bottom", paged=True) == (
        "Page top\n\n450\n\ncivil\n\nI\n\nPage bottom"
    )


def test_lone_surrogates_are_dropped() -> None:
    """A PDF whose ToUnicode map points at U+D800 gave lone surrogates that the tokenizer refused: the whole
    document failed as an internal error."""
    assert normalize_text("AA\ud800 A\ud800") == "AA A"
    assert metadata_title("Meditations\udfff") == "Meditations"


def test_lines_join_within_paragraphs_and_paragraphs_stay_apart() -> None:
    assert (
        normalize_text("one line\nsame paragraph\n\n\n\nnext paragraph") == "one line same paragraph\n\nnext paragraph"
    )


def test_ligatures_and_control_characters() -> None:
    assert normalize_text("\ufb01rst\x07 of\x00f") == "first off"


@pytest.mark.parametrize(
    ("filename", "content_type", "kind"),
    [
        ("Book.PDF", None, PDF),
        ("notes.md", None, MARKDOWN),
        ("notes.markdown", None, MARKDOWN),
        ("t.txt", None, TEXT),
        ("upload", "application/pdf", PDF),
        ("upload", "text/plain; charset=utf-8", TEXT),
    ],
)
def test_detect_kind(filename: str, content_type: str | None, kind: str) -> None:
    assert detect_kind(filename, content_type) == kind


def test_detect_kind_rejects_other_types() -> None:
    with pytest.raises(ExtractionError, match="unsupported file type"):
        detect_kind("slides.pptx", "application/vnd.ms-powerpoint")


def test_text_extraction_keeps_unicode_and_strips_bom() -> None:
    extracted = extract_pages("\ufeffCafé crème, naïve".encode(), TEXT)
    assert extracted.pages == [Page(None, "Café crème, naïve")]


def _pages(n: int, sentences: int = 30) -> list[Page]:
    return [
        Page(p, " ".join(f"Sentence {i} on page {p} talks about habits and time." for i in range(sentences)))
        for p in range(1, n + 1)
    ]


def test_chunks_respect_the_size_and_overlap() -> None:
    spec = ChunkSpec(max_tokens=60, overlap_tokens=15)
    chunks = chunk_pages(_pages(3), spec)
    assert len(chunks) > 5
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.token_count == count_tokens(chunk.text) <= spec.max_tokens + 2
    for previous, current in zip(chunks, chunks[1:], strict=False):
        last_sentence = previous.text.split(". ")[-1]
        assert current.text.startswith(last_sentence.rstrip(".")), "each chunk starts with the previous tail"


def test_chunks_track_page_spans() -> None:
    chunks = chunk_pages(_pages(3, sentences=3), ChunkSpec(max_tokens=60, overlap_tokens=0))
    assert chunks[0].page_start == 1
    assert chunks[-1].page_end == 3
    assert any(c.page_start != c.page_end for c in chunks), "a chunk can straddle a page break"
    for chunk in chunks:
        for page in range(1, 4):
            if f"on page {page}" in chunk.text:
                assert chunk.page_start <= page <= chunk.page_end


def test_a_chunks_page_and_time_are_those_of_its_new_text_not_of_the_overlap() -> None:
    """The sentences a chunk carries over from the chunk before are that chunk's to cite: a chunk whose overlap
    lies on page 1 and whose new text is all on page 2 cites page 2 (it cited page 1, where the reader found only
    its first sentence); the same for a transcript turn's time."""
    spec = ChunkSpec(max_tokens=60, overlap_tokens=15)
    chunks = chunk_pages(_pages(3, sentences=7), spec)
    assert any(c.page_start == 2 and "on page 1" in c.text for c in chunks), "an overlap on the page before"
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        overlap = previous.text.split(". ")[-1].rstrip(".")
        new_text = chunk.text.removeprefix(overlap)
        pages = [p for p in range(1, 4) if f"on page {p}" in new_text]
        assert (chunk.page_start, chunk.page_end) == (min(pages), max(pages)), chunk.text
    turns = [Page(None, " ".join(f"Turn {t} sentence {i} on patience." for i in range(6)), locator=f"00:0{t}:00")
             for t in range(3)]  # fmt: skip
    timed = chunk_pages(turns, spec)
    for previous, chunk in zip(timed, timed[1:], strict=False):
        new_text = chunk.text.removeprefix(previous.text.split(". ")[-1].rstrip("."))
        first_turn = int(new_text.split("Turn ", 1)[1][0])
        assert chunk.locator == f"00:0{first_turn}:00", chunk.text


def test_a_sentence_longer_than_a_chunk_is_cut_at_token_boundaries() -> None:
    long_sentence = "word " * 500
    chunks = chunk_pages([Page(None, long_sentence)], ChunkSpec(max_tokens=100, overlap_tokens=10))
    assert len(chunks) >= 5
    assert all(c.token_count <= 102 for c in chunks)
    assert all(c.page_start is None for c in chunks)


def test_a_word_hyphenated_across_a_page_break_is_rejoined_on_the_first_page() -> None:
    pages = [Page(53, "be painstaking; scorn plea-\n54"), Page(54, "sure, repine not at fate. Need little.")]
    [chunk] = chunk_pages(pages, ChunkSpec(max_tokens=100, overlap_tokens=0))
    assert chunk.text == "be painstaking; scorn pleasure, repine not at fate. Need little."
    assert (chunk.page_start, chunk.page_end) == (53, 54)


def test_blank_pages_make_no_chunks() -> None:
    assert chunk_pages([Page(1, " \n\t "), Page(2, "12")], ChunkSpec(100, 10)) == []


@pytest.mark.parametrize("batch", [1, 3, 8, 50])
def test_chunks_fed_in_batches_are_the_chunks_of_the_whole_book(batch: int) -> None:
    """The streaming chunker (pages arrive from the reader a batch at a time) cuts Meditations (hyphenation
    across page breaks) exactly as the whole book at once."""
    pages = extract_pages(MEDITATIONS.read_bytes(), PDF).pages[:60]
    spec = ChunkSpec.for_embedder(256)
    chunker = Chunker(spec)
    streamed = []
    for start in range(0, len(pages), batch):
        streamed += chunker.feed(pages[start : start + batch])
    streamed += chunker.finish()
    assert len(streamed) > 50
    assert streamed == chunk_pages(pages, spec)


def test_headings_carry_across_batches_of_pages() -> None:
    """A section heading read in one batch is still the heading of the chunks cut from later batches."""
    pages = [
        Page(1, "# Breathing\n" + "Breathe in slowly. " * 20),
        Page(2, "Breathe out slowly. " * 20),
        Page(3, "## Box method\n" + "In for four, hold for four. " * 10),
    ]
    spec = ChunkSpec(max_tokens=40, overlap_tokens=5)
    chunker = Chunker(spec)
    streamed = [chunk for page in pages for chunk in chunker.feed([page])] + chunker.finish()
    assert streamed == chunk_pages(pages, spec)
    page_two = [c for c in streamed if c.page_start == 2]  # (cut after the batch with the heading)
    assert page_two and {c.heading for c in page_two} == {"Breathing"}
    assert streamed[0].heading == "Breathing" and streamed[-1].heading == "Box method"


@pytest.mark.parametrize(
    ("line", "heading"),
    [
        ("## Step 1. Breathe", "Step 1. Breathe"),
        ("## Why do we procrastinate? A short answer", "Why do we procrastinate? A short answer"),
        ("## Sleep: the foundation", "Sleep: the foundation"),
        ("# Coaching Notes: Morning Routines", "Coaching Notes: Morning Routines"),
        ("### Stop; then start! Again ###", "Stop; then start! Again"),
        ("## Notes on C#", "Notes on C#"),
    ],
)
def test_a_markdown_heading_is_the_whole_heading_line_whatever_punctuation_it_holds(line: str, heading: str) -> None:
    """Headings were cut at their first ". ? : ; !" (the chunker split them into sentences before reading them
    as headings: "Step 1.", "Sleep:"), and the "#" of "C#" was taken for a closing sequence; the cut heading went
    into every passage's embedded and searched header."""
    extracted = extract_pages(f"{line}\nFirst sentence under it. Second one: more.\n".encode(), MARKDOWN)
    [chunk] = chunk_pages(extracted.pages, ChunkSpec(max_tokens=100, overlap_tokens=0))
    assert chunk.text == f"{line} First sentence under it. Second one: more."
    assert chunk.heading == heading
    assert chunk_header("Notes", chunk.heading) == f"Notes — {heading}"


def test_the_chunker_returns_chunks_before_the_last_page() -> None:
    chunker = Chunker(ChunkSpec(max_tokens=40, overlap_tokens=5))
    first = chunker.feed([Page(1, "One sentence here. " * 30)])
    assert first == []  # the last page fed waits for the next (a word may continue on it)
    second = chunker.feed([Page(2, "Another page. ")])
    assert len(second) >= 3 and second[0].ordinal == 0 and second[0].page_start == 1
    [last] = chunker.finish()
    assert last.ordinal == second[-1].ordinal + 1 and last.page_end == 2


def test_a_sink_gets_the_pages_in_batches_as_they_are_read() -> None:
    batches: list[list[Page]] = []
    extracted = extract_pages(MEDITATIONS.read_bytes(), PDF, sink=batches.append)
    assert extracted.pages == []
    numbers = [p.number for b in batches for p in b]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) > 100
    assert {len(b) for b in batches[:-1]} == {8}


@pytest.mark.parametrize(
    ("declared", "title"),
    [
        ("Coaching Notes\x00", "Coaching Notes"),
        ("  The\tInner\n Citadel ", "The Inner Citadel"),
        ("ﬁrst Steps", "first Steps"),
        ("x" * 400, "x" * 300),
        ("", None),
        (None, None),
        ("\x00\x01", None),
        ("Untitled", None),
        ("Word Document", None),
        ("Microsoft Word - draft3", None),
        ("draft3.docx", None),
    ],
)
def test_metadata_title_is_cleaned_and_placeholders_are_dropped(declared: str | None, title: str | None) -> None:
    assert metadata_title(declared) == title


def test_chunks_fit_every_embedder_a_coach_can_switch_to() -> None:
    """A change of embedder re-embeds stored chunks without cutting them again: chunks cut for a long-input
    model (512 tokens for an OpenAI-compatible one) were truncated by MiniLM after a switch back, and an
    ingestion resumed across a switch cut at other places than its stored chunks."""
    config = json.loads((minilm_path() / "sentence_bert_config.json").read_text())
    assert config["max_seq_length"] == SWITCHABLE_INPUT_TOKENS
    assert ChunkSpec.for_embedder(256) == ChunkSpec(max_tokens=179, overlap_tokens=26)
    assert ChunkSpec.for_embedder(8191) == ChunkSpec.for_embedder(SWITCHABLE_INPUT_TOKENS)
    assert ChunkSpec.for_embedder(128).max_tokens < ChunkSpec.for_embedder(8191).max_tokens


def test_a_utf16_text_file_with_its_byte_order_mark_is_read() -> None:
    """Windows Notepad saves "Unicode" as UTF-16 with a byte-order mark: it was refused as not UTF-8, with no
    hint how to fix it. Other encodings are still refused, now saying how."""
    text = "Café crème: one small step a day."
    for data in (codecs.BOM_UTF16_LE + text.encode("utf-16-le"), codecs.BOM_UTF16_BE + text.encode("utf-16-be")):
        [page] = extract_pages(data, TEXT).pages
        assert page.text == text
    with pytest.raises(ExtractionError, match="save it as UTF-8"):
        extract_pages(text.encode("cp1252"), TEXT)
