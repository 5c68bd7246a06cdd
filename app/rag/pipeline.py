"""One ingestion attempt of one document: read → chunk → embed → commit, overlapped, a batch at a time.

The isolated reader (:mod:`app.rag.isolation`) sends pages as it reads them; each batch is chunked at once
(:class:`app.rag.chunking.Chunker`) and its chunks embedded and committed ``COMMIT_CHUNKS`` at a time while
the reader goes on with the next pages, so the first pages are searchable seconds after the start and the
embedder (the slow stage) never waits for the whole file. Every commit also moves the document's progress
(``chunks``, ``pages_searchable``) and invalidates the coach's cached replies (new material).

Re-runs (arq runs a job at least once; a killed worker's job runs again) neither lose nor double chunks:
chunking is deterministic, so an attempt resumes after the chunks already committed (their count, under a
per-document advisory lock) and inserts with ``ON CONFLICT (document_id, ordinal) DO NOTHING``; the final
commit drops ordinals past the new total. Chunks of another embedding model are deleted when an attempt
starts.

Each chunk is embedded and stored with its contextual header (:func:`app.rag.chunking.chunk_header` of the
document's title and the chunk's section heading). The title is the document's final one from the first chunk
on: the reader sends the title the file declares (a PDF's ``/Title``, read when it is opened; a Markdown or Word
document's first level-1 heading, found before its pages are handed over) ahead of its first pages, and it
replaces the upload's file-name title in the headers as it does in the document's row at the end. (It used to
rename the document only at the end, leaving the file name in every header until "Process again".) A title the
coach gave (``Document.title_by_coach``) stays, whatever the file declares; when the title at the end is not the
one the headers were made with (the coach renamed the document meanwhile, or an earlier attempt stored chunks under
another), the stored chunks are re-headed in the same job (:func:`app.rag.headers.reheader_chunks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.llm.base import Embedder
from app.llm.registry import EmbedderSwitched, lock_embedding_model
from app.rag.chunking import Chunker, ChunkSpec, TextChunk, chunk_header, embedding_input
from app.rag.extract import ExtractedText, ExtractionError, Page, extract_pages, kind_name
from app.rag.headers import reheader_chunks
from app.rag.isolation import ExtractionLimits, extract_isolated
from app.rag.models import Chunk, Document, DocumentStatus
from app.rag.normalize import metadata_title
from app.rag.passages import match_successors, store_successors

COMMIT_CHUNKS = 64
"""Chunks per embedding call and per commit (one commit every few seconds with the local embedder)."""
PROGRESS_INTERVAL_S = 0.5
STAGES = ("extract", "chunk", "embed", "store")


@dataclass
class IngestTimings:
    """Sizes and seconds of one ingestion (for ``bench/ingest.py``). ``seconds`` per stage: ``extract`` is
    the reader's wall time (it overlaps the others), ``chunk``/``embed``/``store`` are summed over batches;
    ``first_searchable`` and ``searchable`` are seconds from the start until the first chunk, and every
    chunk, was committed (``None``: nothing committed in this attempt)."""

    pages: int = 0
    characters: int = 0
    chunks: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    first_searchable: float | None = None
    searchable: float | None = None


async def invalidate_cached_replies(session: AsyncSession, coach_id: uuid.UUID) -> None:
    """The coach's material changed: bump ``cache_epoch`` so no earlier cached reply is served
    (:mod:`app.learning.cache`)."""
    await session.execute(update(Coach).where(Coach.id == coach_id).values(cache_epoch=Coach.cache_epoch + 1))


async def set_document(
    sessionmaker: async_sessionmaker[AsyncSession],
    coach_id: uuid.UUID,
    document_id: uuid.UUID,
    *,
    unless_ready: bool = False,
    **values: object,
) -> None:
    """Update columns of one document in a transaction of its own; with ``unless_ready``, not once it is ``ready``
    (arq runs a job at least once: a duplicate run's late failure or cancellation must not undo the finished one)."""
    stmt = update(Document).where(Document.id == document_id, Document.coach_id == coach_id)
    if unless_ready:
        stmt = stmt.where(Document.status != DocumentStatus.READY)
    async with unit_of_work(sessionmaker, coach_id) as uow:
        await uow.session.execute(stmt.values(**values))


async def lock_file(session: AsyncSession, coach_id: uuid.UUID, sha256: str) -> None:
    """Take the transaction-scoped advisory lock on one file (by SHA-256) of the coach's library: an upload,
    a reprocessing, a deletion and the end of a reprocessing that touch one file take turns, and each takes it
    before any document row's lock (one order: no deadlock)."""
    key = f"document:{coach_id}:{sha256}"
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


async def _lock_document(session: AsyncSession, document_id: uuid.UUID) -> Document | None:
    """Take the document's transaction-scoped advisory lock (one writer of its chunks at a time); returns
    the document, or ``None`` when it was deleted."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:id, 0))"), {"id": str(document_id)})
    return await session.get(Document, document_id, populate_existing=True)


class IngestRun:
    """One attempt at ingesting ``document_id`` of ``coach_id`` with ``embedder`` (see the module docstring).

    ``start()`` marks the document ``processing`` and returns how many chunks an earlier attempt committed;
    ``run(kind, data)`` does the work and marks it ``ready``. Raises ``ExtractionError`` (unusable file, or
    one without text) and what the embedder raises (``ProviderError``); the caller fails the document. Raises
    ``EmbedderSwitched`` when the coach switched embedding models meanwhile (the caller starts again)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        coach_id: uuid.UUID,
        document_id: uuid.UUID,
        embedder: Embedder,
        limits: ExtractionLimits,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._coach_id = coach_id
        self._document_id = document_id
        self._embedder = embedder
        self._limits = limits
        self._resume = 0
        self._title = ""
        self._final_title = ""
        self._fixed_title = False  # the coach gave the title: the file's does not replace it
        self._paged = False  # a page came with a number (PDF, DOCX, EPUB)
        self.timings = IngestTimings()
        self._started = time.perf_counter()

    async def _locked(self, session: AsyncSession) -> Document | None:
        """The document under its lock (``None`` when it or its coach was deleted), after checking that the
        coach's embedding model in use is still the run's (:func:`~app.llm.registry.lock_embedding_model`,
        which holds until the transaction ends). Raises ``EmbedderSwitched`` when it is not."""
        in_use = await lock_embedding_model(session, self._coach_id)
        if in_use is None:
            return None
        if in_use != self._embedder.model:
            raise EmbedderSwitched(f"the embedding model in use is now {in_use}, not {self._embedder.model}")
        return await _lock_document(session, self._document_id)

    async def start(self) -> int:
        """Mark the document ``processing`` with this embedder's model (chunks of another model deleted);
        returns the chunks kept from an earlier attempt, which this one skips."""
        async with unit_of_work(self._sessionmaker, self._coach_id) as uow:
            session = uow.session
            document = await self._locked(session)
            if document is None:
                return 0
            if document.embedding_model != self._embedder.model:
                await session.execute(delete(Chunk).where(Chunk.document_id == self._document_id))
                document.pages_searchable = 0
            kept = select(func.count()).select_from(Chunk).where(Chunk.document_id == self._document_id)
            self._resume = int(await session.scalar(kept) or 0)
            document.status, document.error = DocumentStatus.PROCESSING, None
            self._fixed_title = document.title_by_coach
            document.embedding_model, document.chunks = self._embedder.model, self._resume
            document.pages_done, document.started_at, document.finished_at = 0, datetime.now(UTC), None
            document.chunks_total = None
        self._started = time.perf_counter()
        return self._resume

    async def run(self, kind: str, data: bytes, *, title: str, trusted: bool = False) -> IngestTimings | None:
        """Read, chunk, embed and commit the document batch by batch; ``None`` when it was deleted meanwhile.
        ``title``: the document's title (for the chunks' headers); ``trusted``: read in this process, the whole
        file at once (operator-supplied files only), instead of streaming from the limited child."""
        self._title = title
        queue: asyncio.Queue[list[Page] | None] = asyncio.Queue()
        reader = self._read_trusted if trusted else self._read
        reading = asyncio.create_task(reader(kind, data, queue.put_nowait))
        reading.add_done_callback(lambda _: queue.put_nowait(None))
        chunker = Chunker(ChunkSpec.for_embedder(self._embedder.max_input_tokens))
        total = 0
        try:
            while (pages := await _taken(queue)) is not None:
                chunks = self._cut(chunker.feed, pages)
                total += len(chunks)
                if not await self._add(chunks):
                    return None
            extracted = await reading  # (raises the reader's ExtractionError)
            chunks = self._cut(lambda _: chunker.finish(), [])
            total += len(chunks)
            await set_document(self._sessionmaker, self._coach_id, self._document_id, chunks_total=total)
            if not await self._add(chunks):
                return None
        finally:
            if not reading.done():
                reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ExtractionError):
                await reading
        if total == 0:
            raise ExtractionError(f"{kind_name(kind)} holds no text")
        if not await self._finish(total, extracted):
            return None
        if self._final_title != self._title or self._resume:
            await reheader_chunks(self._sessionmaker, self._coach_id, self._document_id, self._embedder)
        return self.timings

    async def _read(self, kind: str, data: bytes, sink: Callable[[list[Page]], None]) -> ExtractedText:
        """The reader, reporting pages read every ``PROGRESS_INTERVAL_S``."""
        progress = {"pages": 0, "total": 0}

        def on_page(done: int, total: int) -> None:
            progress["pages"], progress["total"] = done, total

        async def report() -> None:
            reported = -1
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL_S)
                if progress["pages"] != reported:
                    reported = progress["pages"]
                    await set_document(
                        self._sessionmaker,
                        self._coach_id,
                        self._document_id,
                        pages=progress["total"] or None,
                        pages_done=reported,
                    )

        reporter = asyncio.create_task(report())
        try:
            return await extract_isolated(
                data, kind, self._limits, on_page=on_page, sink=sink, on_title=self._found_title
            )
        finally:
            self.timings.seconds["extract"] = time.perf_counter() - self._started
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter

    async def _read_trusted(self, kind: str, data: bytes, sink: Callable[[list[Page]], None]) -> ExtractedText:
        """The in-process reader: the whole file at once."""
        extracted = extract_pages(data, kind, on_title=self._found_title)
        self.timings.seconds["extract"] = time.perf_counter() - self._started
        sink(extracted.pages)
        return ExtractedText([], extracted.title)

    def _found_title(self, title: str | None) -> None:
        """The reader found the title the file declares (before its first pages): the chunks' headers use it,
        as the document's row will (:meth:`_finish`), unless it is a placeholder or none, or the coach gave the
        document its title."""
        if not self._fixed_title:
            self._title = metadata_title(title) or self._title

    def _cut(self, cut: Callable[[list[Page]], list[TextChunk]], pages: list[Page]) -> list[TextChunk]:
        started = time.perf_counter()
        chunks = cut(pages)
        self.timings.pages += len(pages)
        self._paged = self._paged or any(p.number is not None for p in pages)
        self.timings.characters += sum(len(p.text) for p in pages)
        self.timings.seconds["chunk"] += time.perf_counter() - started
        return chunks

    async def _add(self, chunks: list[TextChunk]) -> bool:
        """Embed and commit the new ``chunks`` (skipping those an earlier attempt committed),
        ``COMMIT_CHUNKS`` at a time. Returns ``False`` when the document is gone."""
        todo = [c for c in chunks if c.ordinal >= self._resume]
        for start in range(0, len(todo), COMMIT_CHUNKS):
            group = todo[start : start + COMMIT_CHUNKS]
            headers = [chunk_header(self._title, c.heading) for c in group]
            started = time.perf_counter()
            vectors = await self._embedder.embed(
                [embedding_input(h, c.text) for c, h in zip(group, headers, strict=True)]
            )
            self.timings.seconds["embed"] += time.perf_counter() - started
            started = time.perf_counter()
            if not await self._commit(group, headers, vectors):
                return False
            self.timings.seconds["store"] += time.perf_counter() - started
            self.timings.first_searchable = self.timings.first_searchable or time.perf_counter() - self._started
        return True

    async def _commit(
        self, chunks: Sequence[TextChunk], headers: Sequence[str], vectors: Sequence[Sequence[float]]
    ) -> bool:
        """Insert ``chunks`` with their ``headers`` and ``vectors`` (an ordinal already stored is left as
        it is) and move the progress, in one transaction. Returns ``False`` when the document was deleted
        meanwhile (nothing stored)."""
        async with unit_of_work(self._sessionmaker, self._coach_id) as uow:
            session = uow.session
            document = await self._locked(session)
            if document is None:
                return False
            rows = [
                {
                    "id": uuid.uuid4(),
                    "coach_id": self._coach_id,
                    "document_id": self._document_id,
                    "ordinal": c.ordinal,
                    "page_start": c.page_start,
                    "page_end": c.page_end,
                    "locator": c.locator,
                    "text": c.text,
                    "header": header,
                    "heading": c.heading or "",
                    "token_count": c.token_count,
                    "embedding": vector,
                }
                for c, header, vector in zip(chunks, headers, vectors, strict=True)
            ]
            await session.execute(insert(Chunk).on_conflict_do_nothing(constraint="uq_chunks_document_ordinal"), rows)
            document.chunks = max(document.chunks, chunks[-1].ordinal + 1)
            document.pages_searchable = max(document.pages_searchable, chunks[-1].page_end or 0)
            await invalidate_cached_replies(session, self._coach_id)
        return True

    async def _finish(self, total: int, extracted: ExtractedText) -> bool:
        """Drop chunks past ``total`` (left by an attempt that cut more) and mark the document ``ready``
        with ``total`` chunks (its pages counted when they came numbered: PDF, DOCX, EPUB); a document that
        replaces another (``replaces_id``) notes which of its chunks holds each of the original's
        (:func:`~app.rag.passages.match_successors`: citations resolve through them) and deletes the original
        and the failed documents of the same file (an earlier copy that failed); one being processed, or another
        ready one, stays."""
        pairs = await match_successors(self._sessionmaker, self._coach_id, self._document_id, total)  # (no lock yet)
        async with unit_of_work(self._sessionmaker, self._coach_id) as uow:
            session = uow.session
            copy = (
                await session.execute(
                    select(Document.sha256, Document.replaces_id).where(Document.id == self._document_id)
                )
            ).first()
            if copy is not None and copy.replaces_id is not None:
                await lock_file(session, self._coach_id, copy.sha256)
            document = await self._locked(session)
            if document is None:
                return False
            await session.execute(delete(Chunk).where(Chunk.document_id == self._document_id, Chunk.ordinal >= total))
            if document.replaces_id is not None:  # processed again: the original goes, and failed copies
                await store_successors(session, self._coach_id, original=document.replaces_id, pairs=pairs)
                await session.execute(
                    delete(Document).where(
                        Document.coach_id == self._coach_id,
                        Document.id != document.id,
                        or_(
                            Document.id == document.replaces_id,
                            and_(Document.sha256 == document.sha256, Document.status == DocumentStatus.FAILED),
                        ),
                    )
                )
            document.status, document.chunks, document.finished_at = DocumentStatus.READY, total, datetime.now(UTC)
            document.chunks_total, document.pages_done = total, self.timings.pages
            document.pages = self.timings.pages if self._paged else None
            document.pages_searchable = self.timings.pages if self._paged else 0
            if not document.title_by_coach and (title := metadata_title(extracted.title)):
                document.title = title
            self._final_title = document.title
            await invalidate_cached_replies(session, self._coach_id)
        self.timings.chunks = total
        self.timings.searchable = time.perf_counter() - self._started
        return True


async def _taken(queue: asyncio.Queue[list[Page] | None]) -> list[Page] | None:
    """Every batch of pages waiting (waits for one), joined; ``None`` once the reader ended and all were
    taken."""
    first = await queue.get()
    if first is None:
        return None
    pages = list(first)
    while not queue.empty():
        more = queue.get_nowait()
        if more is None:
            queue.put_nowait(None)  # seen again by the next call
            break
        pages += more
    return pages
