"""Documents: upload, status, delete, and the ingestion job (extract → normalise → chunk → embed → store)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePath

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Coach
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.core.config import Settings
from app.core.errors import InvalidInput, NotFound
from app.db import jobs
from app.llm.base import Embedder, ProviderError
from app.llm.registry import ProviderRegistry
from app.rag.chunking import ChunkSpec, TextChunk, chunk_header, chunk_pages, embedding_input
from app.rag.extract import ExtractedText, ExtractionError, detect_kind, extract_pages
from app.rag.isolation import ExtractionLimits, extract_isolated
from app.rag.models import Chunk, Document, DocumentStatus

log = logging.getLogger(__name__)

EMBED_BATCH = 64
PROGRESS_INTERVAL_S = 0.5
STALLED_GRACE_S = 60
"""Seconds past ``INGEST_TIMEOUT_SECONDS`` before the sweep takes a ``processing`` document for abandoned."""
STOPPED = (
    "processing stopped before it finished (the job ran past its {timeout} s deadline, or its worker was "
    "stopped); upload the file again"
)


@dataclass
class IngestTimings:
    """Seconds spent per ingestion stage, and the sizes involved (for ``bench/ingest.py``)."""

    pages: int = 0
    characters: int = 0
    chunks: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def title_from_filename(filename: str) -> str:
    """``"meditations-marcus_aurelius.pdf"`` → ``"Meditations Marcus Aurelius"`` (until metadata says better)."""
    words = PurePath(filename).stem.replace("_", " ").replace("-", " ").split()
    return " ".join(w[:1].upper() + w[1:] for w in words)[:300] or filename[:300]


async def _invalidate_cached_replies(session: AsyncSession, coach_id: uuid.UUID) -> None:
    """The coach's material changed: bump ``cache_epoch`` so no earlier cached reply is served
    (:mod:`app.learning.cache`)."""
    await session.execute(update(Coach).where(Coach.id == coach_id).values(cache_epoch=Coach.cache_epoch + 1))


@dataclass(frozen=True)
class _Source:
    """What ingestion reads: the file's kind and bytes, the document's title, and whether to extract in-process."""

    kind: str
    data: bytes
    title: str
    trusted: bool


class DocumentService:
    """Upload and manage a coach's documents; ``ingest`` is the body of the arq job."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        accounts: AccountService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._accounts = accounts
        self._limits = ExtractionLimits.from_settings(settings)

    async def upload(self, uow: UnitOfWork, filename: str, content_type: str | None, data: bytes) -> Document:
        """Store the original and queue ingestion; returns the document (status ``queued``).

        A file over ``MAX_UPLOAD_MB`` is recorded as ``failed`` with the reason, without its bytes.
        Raises ``InvalidInput`` for a missing file name or an unsupported file type.
        """
        filename = PurePath(filename or "").name.strip()
        if not filename:
            raise InvalidInput("the upload has no file name")
        try:
            detect_kind(filename, content_type)
        except ExtractionError as exc:
            raise InvalidInput(str(exc)) from exc
        limit = int(self._settings.max_upload_mb * 1024 * 1024)
        too_large = len(data) > limit
        document = Document(
            coach_id=uow.coach_id,
            title=title_from_filename(filename),
            filename=filename,
            content_type=(content_type or "application/octet-stream")[:100],
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            original=b"" if too_large else data,
            status=DocumentStatus.FAILED if too_large else DocumentStatus.QUEUED,
            error=(
                f"the file is {len(data) / 1048576:.1f} MB, over the {self._settings.max_upload_mb:g} MB upload limit"
                if too_large
                else None
            ),
            pages_done=0,
            chunks=0,
        )
        session, coach_id = uow.session, uow.coach_id
        session.add(document)
        await session.flush()
        if not too_large:
            jobs.ingest_document(session, coach_id, document.id)
        return document

    async def get(self, uow: UnitOfWork, document_id: uuid.UUID) -> Document:
        """One document of this coach. Raises ``NotFound`` (also for another coach's id)."""
        session, coach_id = uow.session, uow.coach_id
        document = await session.scalar(
            select(Document).where(Document.id == document_id, Document.coach_id == coach_id)
        )
        if document is None:
            raise NotFound("document not found")
        return document

    async def list(self, uow: UnitOfWork) -> list[Document]:
        """The coach's documents, newest first."""
        session, coach_id = uow.session, uow.coach_id
        stmt = select(Document).where(Document.coach_id == coach_id).order_by(Document.created_at.desc())
        return list((await session.scalars(stmt)).all())

    async def delete(self, uow: UnitOfWork, document_id: uuid.UUID) -> None:
        """Delete a document and (ON DELETE CASCADE) its chunks. Raises ``NotFound``."""
        session, coach_id = uow.session, uow.coach_id
        result = await session.execute(
            delete(Document).where(Document.id == document_id, Document.coach_id == coach_id)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound("document not found")
        await _invalidate_cached_replies(session, coach_id)

    async def count_chunks(self, uow: UnitOfWork, document_id: uuid.UUID | None = None) -> int:
        """Chunks stored for this coach (optionally one document)."""
        session, coach_id = uow.session, uow.coach_id
        stmt = select(func.count()).select_from(Chunk).where(Chunk.coach_id == coach_id)
        if document_id is not None:
            stmt = stmt.where(Chunk.document_id == document_id)
        return int(await session.scalar(stmt) or 0)

    async def _set(self, coach_id: uuid.UUID, document_id: uuid.UUID, **values: object) -> None:
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            await session.execute(
                update(Document).where(Document.id == document_id, Document.coach_id == coach_id).values(**values)
            )

    async def ingest(
        self, coach_id: uuid.UUID, document_id: uuid.UUID, *, trusted: bool = False
    ) -> IngestTimings | None:
        """Run the whole pipeline for one document; safe to run more than once (arq is at-least-once).

        Ends with status ``ready`` (chunks replaced atomically) or ``failed`` with a message. Returns the
        stage timings, or ``None`` when the document is gone or was already failed at upload. ``trusted``
        extracts in this process instead of a limited child (only for files the operator supplies, such as
        an evaluation corpus: thousands of small files would spend most of their time starting processes).
        """
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            document = await session.scalar(
                select(Document).where(Document.id == document_id, Document.coach_id == coach_id)
            )
            if document is None:
                return None
            # ``original`` is deferred: read it with a query (an attribute access would lazy-load outside the loop)
            data = await session.scalar(select(Document.original).where(Document.id == document_id))
            if document.status == DocumentStatus.FAILED and not data:
                return None
            coach = await uow.coach()
            kind = detect_kind(document.filename, document.content_type)
            title = document.title
        await self._set(
            coach_id,
            document_id,
            status=DocumentStatus.PROCESSING,
            error=None,
            pages_done=0,
            chunks=0,
            chunks_total=None,
            started_at=datetime.now(UTC),
            finished_at=None,
        )
        try:
            source = _Source(kind, data or b"", title, trusted)
            return await self._run_pipeline(coach_id, document_id, coach, source)
        except (ExtractionError, ProviderError) as exc:
            await self._fail(coach_id, document_id, str(exc))
        except asyncio.CancelledError:
            # arq's job deadline, or the worker shutting down: never leave the document "processing"
            timeout = self._settings.ingest_timeout_seconds
            await asyncio.shield(self._fail(coach_id, document_id, STOPPED.format(timeout=timeout)))
            raise
        except Exception as exc:
            log.exception("ingestion of document %s failed", document_id)
            await self._fail(coach_id, document_id, f"internal error while processing the file ({type(exc).__name__})")
        return None

    async def fail_stalled(self) -> int:
        """Fail every document left ``processing`` longer than an ingestion job may run (its worker was killed
        mid-job, so no one will finish it), with the reason for the coach. Returns how many.

        Runs before any tenant is known (the worker's cron): candidates come from the ``stalled_documents()``
        SECURITY DEFINER function; each is re-checked and failed inside its own tenant's transaction."""
        timeout = self._settings.ingest_timeout_seconds
        async with self._sessionmaker() as session:
            candidates = (
                await session.execute(
                    text("SELECT coach_id, document_id FROM stalled_documents(:seconds)"),
                    {"seconds": timeout + STALLED_GRACE_S},
                )
            ).all()
        failed = 0
        for coach_id, document_id in candidates:
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                result = await uow.session.execute(
                    update(Document)
                    .where(
                        Document.id == document_id,
                        Document.status == DocumentStatus.PROCESSING,
                        Document.started_at < func.now() - timedelta(seconds=timeout + STALLED_GRACE_S),
                    )
                    .values(
                        status=DocumentStatus.FAILED,
                        error=STOPPED.format(timeout=timeout),
                        finished_at=datetime.now(UTC),
                    )
                )
                failed += result.rowcount  # type: ignore[attr-defined]
        if failed:
            log.warning("%d stalled documents failed (processing for over %d s)", failed, timeout + STALLED_GRACE_S)
        return failed

    async def _fail(self, coach_id: uuid.UUID, document_id: uuid.UUID, message: str) -> None:
        await self._set(
            coach_id, document_id, status=DocumentStatus.FAILED, error=message, finished_at=datetime.now(UTC)
        )

    async def _run_pipeline(
        self, coach_id: uuid.UUID, document_id: uuid.UUID, coach: Coach, source: _Source
    ) -> IngestTimings:
        """Extract → chunk → embed → store one document, timing each stage. Raises ``ExtractionError`` for
        a file without text; a document deleted meanwhile is left deleted (nothing is stored)."""
        timings = IngestTimings()
        started = time.perf_counter()
        if source.trusted:
            extracted = extract_pages(source.data, source.kind)
        else:
            extracted = await self._extract(coach_id, document_id, source.kind, source.data)
        timings.seconds["extract"] = time.perf_counter() - started
        pages = extracted.pages
        timings.pages = len(pages)
        timings.characters = sum(len(p.text) for p in pages)
        page_count = len(pages) if pages[0].number is not None else None
        title = {"title": extracted.title[:300]} if extracted.title else {}
        await self._set(coach_id, document_id, pages=page_count, pages_done=len(pages), **title)
        document_title = extracted.title or source.title

        embedder = self._registry.embedder_for(coach)
        started = time.perf_counter()
        chunks = chunk_pages(pages, ChunkSpec.for_embedder(embedder.max_input_tokens))
        timings.seconds["chunk"] = time.perf_counter() - started
        if not chunks:
            raise ExtractionError("the file contains no text")
        timings.chunks = len(chunks)
        await self._set(coach_id, document_id, chunks_total=len(chunks))

        started = time.perf_counter()
        headers = [chunk_header(document_title, c.heading) for c in chunks]
        vectors = await self._embed(coach_id, document_id, embedder, chunks, headers)
        timings.seconds["embed"] = time.perf_counter() - started

        started = time.perf_counter()
        if await self._store(coach_id, document_id, embedder.model, chunks, headers, vectors):
            timings.seconds["store"] = time.perf_counter() - started
        return timings

    async def _extract(self, coach_id: uuid.UUID, document_id: uuid.UUID, kind: str, data: bytes) -> ExtractedText:
        """The document's pages, read in a limited child process (:mod:`app.rag.isolation`), reporting pages
        done every ``PROGRESS_INTERVAL_S``."""
        progress = {"pages": 0, "total": 0}

        def on_page(done: int, total: int) -> None:
            progress["pages"], progress["total"] = done, total

        async def report() -> None:
            reported = -1
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL_S)
                if progress["pages"] != reported:
                    reported = progress["pages"]
                    await self._set(coach_id, document_id, pages=progress["total"], pages_done=reported)

        reporter = asyncio.create_task(report())
        try:
            return await extract_isolated(data, kind, self._limits, on_page=on_page)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter

    async def _embed(
        self,
        coach_id: uuid.UUID,
        document_id: uuid.UUID,
        embedder: Embedder,
        chunks: Sequence[TextChunk],
        headers: Sequence[str],
    ) -> Sequence[Sequence[float]]:
        """The chunks' vectors (each of its header and text), ``EMBED_BATCH`` at a time, reporting the count
        embedded after each batch."""
        inputs = [embedding_input(h, c.text) for c, h in zip(chunks, headers, strict=True)]
        vectors: list[list[float]] = []
        for start in range(0, len(inputs), EMBED_BATCH):
            vectors.extend(await embedder.embed(inputs[start : start + EMBED_BATCH]))
            await self._set(coach_id, document_id, chunks=len(vectors))
        return vectors

    async def _store(
        self,
        coach_id: uuid.UUID,
        document_id: uuid.UUID,
        embedding_model: str,
        chunks: Sequence[TextChunk],
        headers: Sequence[str],
        vectors: Sequence[Sequence[float]],
    ) -> bool:
        """Replace the document's chunks and mark it ``ready`` (and the coach's cached replies stale) in one
        transaction. Returns ``False`` when the document was deleted meanwhile (nothing stored)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            # one writer per document at a time; the delete + insert makes a re-run replace, not duplicate
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:id, 0))"), {"id": str(document_id)}
            )
            if await session.get(Document, document_id) is None:  # deleted meanwhile
                return False
            await session.execute(delete(Chunk).where(Chunk.document_id == document_id))
            await session.execute(
                insert(Chunk),
                [
                    {
                        "id": uuid.uuid4(),
                        "coach_id": coach_id,
                        "document_id": document_id,
                        "ordinal": c.ordinal,
                        "page_start": c.page_start,
                        "page_end": c.page_end,
                        "locator": c.locator,
                        "text": c.text,
                        "header": header,
                        "token_count": c.token_count,
                        "embedding": vector,
                    }
                    for c, header, vector in zip(chunks, headers, vectors, strict=True)
                ],
            )
            await session.execute(
                update(Document)
                .where(Document.id == document_id)
                .values(
                    status=DocumentStatus.READY,
                    chunks=len(chunks),
                    embedding_model=embedding_model,
                    finished_at=datetime.now(UTC),
                )
            )
            await _invalidate_cached_replies(session, coach_id)
        return True
