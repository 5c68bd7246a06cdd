"""Documents: upload, status, delete, and the ingestion job (extract → normalise → chunk → embed → store)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import Any, TypeVar

from arq.connections import ArqRedis
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Coach
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.core.config import Settings
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.pagination import Keyset, Page, PageRequest
from app.core.validation import plain_text
from app.db import jobs
from app.db.outbox import pending_job_args
from app.llm.base import ProviderError
from app.llm.registry import SWITCH_RETRIES, EmbedderSwitched, ProviderRegistry
from app.rag.extract import ExtractionError, detect_kind
from app.rag.isolation import ExtractionLimits
from app.rag.models import Chunk, Document, DocumentStatus
from app.rag.pipeline import IngestRun, IngestTimings, invalidate_cached_replies, lock_file, set_document

log = logging.getLogger(__name__)

_Candidate = TypeVar("_Candidate", bound=tuple[Any, ...])

MAX_FILENAME_CHARS = 300
"""The longest file name an upload may have (the ``filename`` and ``title`` columns' size); systems' own limit is
255 bytes, so only a hand-made request meets it."""
STALLED_GRACE_S = 60
"""Seconds past ``INGEST_TIMEOUT_SECONDS`` before the sweep takes a ``processing`` document for abandoned."""
DEADLINE_SLACK_S = 2.0
"""A cancelled ingestion this close to ``INGEST_TIMEOUT_SECONDS`` after it started met its job's deadline."""
LOST_AFTER_S = 300
"""Seconds after its upload before a never-started document that no job will run is queued again
(:meth:`DocumentService.requeue_lost`): a margin over the moment a job is between the outbox and arq."""
STOPPED = (
    "processing stopped before it finished (the job ran past its {timeout} s deadline, or its worker was "
    "stopped); upload the file again"
)


_MARKUP_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_END_TAG = re.compile(r"</[A-Za-z]")
_DIRECTORY = re.compile(r"^.*[/\\]", re.DOTALL)


def upload_filename(name: str) -> str:
    """The file name an upload is stored under (``""`` for none): ``name`` without bidirectional controls and line
    breaks (:func:`~app.core.validation.plain_text`), with blanks around it removed, and without a directory part:
    whatever precedes its last ``/`` or ``\\`` (RFC 7578 §4.2: a receiver ignores the directory a ``filename``
    names; browsers send the base name, but a hand-made or Windows client may send ``..\\..\\win Path.txt`` or
    ``C:\\notes\\a.txt``, kept whole, backslashes and all, until now). A name holding an HTML end tag is markup,
    made by hand or pasted from a page: its tags go first, so the ``/`` of ``</b>`` is not taken for a directory
    (``<b>My notes</b> 🎉.txt`` is ``My notes 🎉.txt``; it was cut to ``b> 🎉.txt``, titled "B> 🎉"). A ``<`` or
    ``>`` of a name without an end tag stays (``Session <Anna>.txt``)."""
    name = plain_text(name)
    if _END_TAG.search(name):
        name = _MARKUP_TAG.sub("", name)
    return _DIRECTORY.sub("", name).strip()


def title_from_filename(filename: str) -> str:
    """``"meditations-marcus_aurelius.pdf"`` → ``"Meditations Marcus Aurelius"`` (until metadata says better)."""
    words = PurePath(filename).stem.replace("_", " ").replace("-", " ").split()
    return " ".join(w[:1].upper() + w[1:] for w in words)[:MAX_FILENAME_CHARS] or filename


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

        A file over ``MAX_UPLOAD_MB`` is recorded as ``failed`` with the reason, without its bytes. Raises
        ``InvalidInput`` for a missing file name (:func:`upload_filename`), one over :data:`MAX_FILENAME_CHARS`
        characters or an unsupported file type (:func:`~app.rag.extract.detect_kind`), and ``Conflict``
        (``Location``: the document) for a file the coach's library already holds (the same bytes, by SHA-256, in a
        document not ``failed``: its passages would be retrieved and cited twice). Two uploads of one file at once
        take turns on a transaction-scoped advisory lock, so one of them is refused."""
        filename = upload_filename(filename or "")
        if not filename:
            raise InvalidInput("the upload has no file name")
        if len(filename) > MAX_FILENAME_CHARS:
            raise InvalidInput(f"the file name must be at most {MAX_FILENAME_CHARS} characters: rename the file")
        try:
            detect_kind(filename, content_type, data)
        except ExtractionError as exc:
            raise InvalidInput(str(exc)) from exc
        limit = int(self._settings.max_upload_mb * 1024 * 1024)
        too_large = len(data) > limit
        sha256 = hashlib.sha256(data).hexdigest()
        if not too_large:
            await self._refuse_duplicate(uow, sha256)
        document = Document(
            coach_id=uow.coach_id,
            title=title_from_filename(filename),
            filename=filename,
            content_type=(content_type or "application/octet-stream")[:100],
            size_bytes=len(data),
            sha256=sha256,
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

    async def _refuse_duplicate(self, uow: UnitOfWork, sha256: str) -> None:
        """Raise ``Conflict`` naming the coach's document, not ``failed``, whose file has this SHA-256."""
        session, coach_id = uow.session, uow.coach_id
        await lock_file(session, coach_id, sha256)
        same = await session.scalar(
            select(Document)
            .where(Document.coach_id == coach_id, Document.sha256 == sha256, Document.status != DocumentStatus.FAILED)
            .order_by(Document.created_at)
            .limit(1)
        )
        if same is not None:
            raise Conflict(
                f"this file is already in your library as “{same.title}” (uploaded "
                f"{same.created_at:%Y-%m-%d}); delete that document first to upload the file again",
                location=f"/api/v1/documents/{same.id}",
            )

    async def reprocess(self, uow: UnitOfWork, document_id: uuid.UUID) -> Document:
        """Process a document's file again (after an extraction fix, or a failure that was not the file's): a new
        document of the same file, queued, that replaces the original once it is ready (the original, still
        answering meanwhile, is deleted then with its chunks, and so are failed copies of the file; a failure
        leaves the original as it was). A failed copy processed again replaces the original it was to replace.
        A failed original (nothing answers from it) is processed again itself (:meth:`_retry`): retries do not
        pile up failed rows. Returns the document queued. Raises ``NotFound``, and ``Conflict`` while a document
        of the file is being processed (first or again), when another ready document holds the file (process
        that one), or when the file is empty or was not kept (over the upload limit). Serialised with uploads,
        deletions and the copy's end by the file's advisory lock (no row lock: one taken here after the coach's
        was a deadlock with re-embedding)."""
        session, coach_id = uow.session, uow.coach_id
        await self._lock_file_of(uow, document_id)
        original = await session.scalar(  # as of the lock: a deletion may have committed meanwhile
            select(Document)
            .where(Document.id == document_id, Document.coach_id == coach_id)
            .execution_options(populate_existing=True)
        )
        if original is None:
            raise NotFound("document not found")
        target = original
        if original.status == DocumentStatus.FAILED and original.replaces_id is not None:
            target = await session.get(Document, original.replaces_id) or original
        same_file = (
            await session.execute(
                select(Document.id, Document.status, Document.title).where(
                    Document.coach_id == coach_id, Document.sha256 == original.sha256, Document.id != target.id
                )
            )
        ).all()
        for other_id, status, title in [(target.id, target.status, target.title), *same_file]:
            if status in DocumentStatus.ACTIVE:
                doing = "being processed" if other_id == original.id else "being processed again already"
                raise Conflict(f"“{original.title}” is {doing}", location=f"/api/v1/documents/{other_id}")
            if status == DocumentStatus.READY and other_id != target.id:
                raise Conflict(
                    f"“{title}” holds this file already: process that document again",
                    location=f"/api/v1/documents/{other_id}",
                )
        data = await session.scalar(select(Document.original).where(Document.id == document_id))
        if not data:
            if not original.size_bytes:
                raise Conflict(f"the file of “{original.title}” is empty: there is nothing to read")
            raise Conflict(f"the file of “{original.title}” was not kept (over the upload limit): upload it again")
        if target.status == DocumentStatus.FAILED:
            return await self._retry(session, target)
        document = Document(
            coach_id=coach_id,
            title=target.title,
            filename=original.filename,
            content_type=original.content_type,
            size_bytes=original.size_bytes,
            sha256=original.sha256,
            original=data,
            status=DocumentStatus.QUEUED,
            pages_done=0,
            chunks=0,
            replaces_id=target.id,
            title_by_coach=target.title_by_coach,
        )
        session.add(document)
        await session.flush()
        jobs.ingest_document(session, coach_id, document.id)
        return document

    @staticmethod
    async def _retry(session: AsyncSession, document: Document) -> Document:
        """Queue failed ``document`` (its file's advisory lock held) to be processed again from the start, itself:
        what an earlier attempt left (chunks, progress, the reason, the start that the stalled-job sweeps read, a
        ``replaces_id`` naming a document deleted since) goes, and so do the coach's failed copies of its file."""
        coach_id = document.coach_id
        # the coach's row first, as deletion and the re-embedding job take it (one lock order)
        await session.execute(select(Coach.id).where(Coach.id == coach_id).with_for_update(key_share=True))
        await session.execute(
            delete(Document).where(
                Document.coach_id == coach_id,
                Document.sha256 == document.sha256,
                Document.status == DocumentStatus.FAILED,
                Document.id != document.id,
            )
        )
        await session.execute(delete(Chunk).where(Chunk.document_id == document.id))
        if document.replaces_id is not None and await session.get(Document, document.replaces_id) is None:
            document.replaces_id = None
        document.status, document.error, document.pages, document.pages_done = DocumentStatus.QUEUED, None, None, 0
        document.pages_searchable, document.chunks, document.chunks_total = 0, 0, None
        document.started_at = document.finished_at = None
        await session.flush()
        jobs.ingest_document(session, coach_id, document.id)
        return document

    async def _lock_file_of(self, uow: UnitOfWork, document_id: uuid.UUID) -> str:
        """Take the advisory lock of the coach's document's file (:func:`~app.rag.pipeline.lock_file`); returns
        its SHA-256. Raises ``NotFound``."""
        sha256 = await uow.session.scalar(
            select(Document.sha256).where(Document.id == document_id, Document.coach_id == uow.coach_id)
        )
        if sha256 is None:
            raise NotFound("document not found")
        await lock_file(uow.session, uow.coach_id, sha256)
        return sha256

    async def get(self, uow: UnitOfWork, document_id: uuid.UUID) -> Document:
        """One document of this coach. Raises ``NotFound`` (also for another coach's id)."""
        session, coach_id = uow.session, uow.coach_id
        document = await session.scalar(
            select(Document).where(Document.id == document_id, Document.coach_id == coach_id)
        )
        if document is None:
            raise NotFound("document not found")
        return document

    async def list(self, uow: UnitOfWork, page: PageRequest) -> Page[Document]:
        """One page of the coach's documents, newest first."""
        stmt = select(Document).where(Document.coach_id == uow.coach_id)
        stmt = page.apply(stmt, Document.created_at, Document.id, newest_first=True)
        return page.page((await uow.session.scalars(stmt)).all(), lambda d: Keyset(d.created_at, d.id))

    async def counts(self, uow: UnitOfWork) -> dict[str, int]:
        """How many of the coach's documents are in each status, ``{status: n}`` (absent: none)."""
        stmt = select(Document.status, func.count()).where(Document.coach_id == uow.coach_id).group_by(Document.status)
        return {status: int(n) for status, n in (await uow.session.execute(stmt)).all()}

    async def delete(self, uow: UnitOfWork, document_id: uuid.UUID) -> None:
        """Delete a document and (ON DELETE CASCADE) its chunks, and its copy still being processed again, which
        would otherwise replace it and bring back the text the coach deleted (a copy of the same file that
        replaces another document stays: deleting a failed copy leaves the one processed again after it).
        Raises ``NotFound``."""
        session, coach_id = uow.session, uow.coach_id
        await self._lock_file_of(uow, document_id)
        await invalidate_cached_replies(session, coach_id)  # (the coach's row first: the re-embedding job's order)
        await session.execute(
            delete(Document).where(
                Document.coach_id == coach_id,
                Document.replaces_id == document_id,
                Document.status.in_(DocumentStatus.ACTIVE),
            )
        )
        result = await session.execute(
            delete(Document).where(Document.id == document_id, Document.coach_id == coach_id)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound("document not found")

    async def count_chunks(self, uow: UnitOfWork, document_id: uuid.UUID | None = None) -> int:
        """Chunks stored for this coach (optionally one document)."""
        session, coach_id = uow.session, uow.coach_id
        stmt = select(func.count()).select_from(Chunk).where(Chunk.coach_id == coach_id)
        if document_id is not None:
            stmt = stmt.where(Chunk.document_id == document_id)
        return int(await session.scalar(stmt) or 0)

    async def ingest(
        self, coach_id: uuid.UUID, document_id: uuid.UUID, *, trusted: bool = False
    ) -> IngestTimings | None:
        """Run the whole pipeline for one document; safe to run more than once (arq is at-least-once).

        Chunks become searchable a batch at a time while the document is ``processing``
        (:mod:`app.rag.pipeline`; a re-run resumes after the chunks already committed, so none is lost or
        doubled). Ends with status ``ready`` or ``failed`` with a message (the committed chunks are kept for
        a re-run but not retrieved). When the coach switches embedding models meanwhile, the run starts again
        with the new model (:class:`~app.llm.registry.EmbedderSwitched`). Returns the stage timings, or
        ``None`` when the document is gone or was already failed at upload. ``trusted`` extracts in this
        process instead of a limited child (only for files the operator supplies, such as an evaluation
        corpus: thousands of small files would spend most of their time starting processes).

        Cancelled, the document never stays ``processing``: at the job's deadline (``INGEST_TIMEOUT_SECONDS``,
        after which arq does not run it again) it is failed with the reason; earlier, its worker is shutting down
        and arq runs the job again when a worker starts, so it goes back to ``queued`` (it used to be failed with
        "upload the file again", then finished by that re-run: a coach who followed the advice had it twice).
        """
        started = time.monotonic()
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
            kind = detect_kind(document.filename, document.content_type, data or b"")
            title = document.title
        try:
            for attempt in range(1 + SWITCH_RETRIES):
                async with unit_of_work(self._sessionmaker, coach_id) as uow:
                    embedder = await self._registry.embedder_for(await uow.coach())
                run = IngestRun(self._sessionmaker, coach_id, document_id, embedder, self._limits)
                try:
                    await run.start()
                    return await run.run(kind, data or b"", title=title, trusted=trusted)
                except EmbedderSwitched as switched:
                    if attempt == SWITCH_RETRIES:
                        raise
                    log.info("document %s: %s; ingesting again with it", document_id, switched)
        except (ExtractionError, ProviderError, EmbedderSwitched) as exc:
            await self._fail(coach_id, document_id, str(exc))
        except asyncio.CancelledError:
            # arq's job deadline, or the worker shutting down: never leave the document "processing"
            timeout = self._settings.ingest_timeout_seconds
            if time.monotonic() - started >= timeout - DEADLINE_SLACK_S:
                await asyncio.shield(self._fail(coach_id, document_id, STOPPED.format(timeout=timeout)))
            else:
                await asyncio.shield(
                    set_document(
                        self._sessionmaker, coach_id, document_id, unless_ready=True, status=DocumentStatus.QUEUED
                    )
                )
            raise
        except Exception as exc:
            log.exception("ingestion of document %s failed", document_id)
            await self._fail(coach_id, document_id, f"internal error while processing the file ({type(exc).__name__})")
        return None

    async def fail_stalled(self, redis: ArqRedis, *, abandoned_after_s: float) -> int:
        """Fail, with the reason for the coach, every document that no ingestion job will finish: one left
        ``processing`` longer than an ingestion job may run (its worker was killed mid-job), and one put back to
        ``queued`` by a cancelled ingestion (its worker shutting down) that started more than
        ``abandoned_after_s`` seconds ago (every try of its job), when no job of it waits in the outbox or in
        arq's queue (:func:`~app.db.outbox.pending_job_args`): arq has given it up. A document whose job arq
        still holds is left to it: arq runs a killed or cancelled job again (a document failed with "upload the
        file again", then finished by that run, was uploaded twice). Returns how many.

        Runs before any tenant is known (the worker's cron): candidates come from the ``stalled_documents()`` and
        ``abandoned_documents()`` SECURITY DEFINER functions; each is re-checked and failed inside its own
        tenant's transaction. Raises one of :data:`~app.db.outbox.UNAVAILABLE` when Redis is out of reach
        (nothing is failed blind)."""
        timeout = self._settings.ingest_timeout_seconds
        sweeps = [
            ("stalled_documents", DocumentStatus.PROCESSING, timeout + STALLED_GRACE_S),
            ("abandoned_documents", DocumentStatus.QUEUED, abandoned_after_s),
        ]
        candidates = [
            (coach_id, document_id, status, seconds)
            for function, status, seconds in sweeps
            for coach_id, document_id in await self._candidates(function, seconds)
        ]
        failed = 0
        for coach_id, document_id, status, seconds in await self._jobless(redis, candidates):
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                result = await uow.session.execute(
                    update(Document)
                    .where(
                        Document.id == document_id,
                        Document.status == status,
                        Document.started_at < func.now() - timedelta(seconds=seconds),
                    )
                    .values(
                        status=DocumentStatus.FAILED,
                        error=STOPPED.format(timeout=timeout),
                        finished_at=datetime.now(UTC),
                    )
                )
                failed += result.rowcount  # type: ignore[attr-defined]
        if failed:
            log.warning("%d stalled or abandoned documents failed", failed)
        return failed

    async def _candidates(self, function: str, older_than_s: float) -> Sequence[tuple[uuid.UUID, uuid.UUID]]:
        """``(coach_id, document_id)`` rows of a sweep's SECURITY DEFINER function (read across tenants)."""
        async with self._sessionmaker() as session:
            rows = await session.execute(
                text(f"SELECT coach_id, document_id FROM {function}(:seconds)"), {"seconds": int(older_than_s)}
            )
            return [(coach_id, document_id) for coach_id, document_id in rows]

    async def _jobless(self, redis: ArqRedis, candidates: Sequence[_Candidate]) -> Sequence[_Candidate]:
        """The ``candidates`` (tuples starting ``coach_id, document_id``) that no ingestion job will run: none
        waits in the outbox or in arq's queue (:func:`~app.db.outbox.pending_job_args`, read only when there
        are candidates)."""
        if not candidates:
            return []
        pending = await pending_job_args(self._sessionmaker, redis, jobs.INGEST_DOCUMENT)
        return [c for c in candidates if (str(c[0]), str(c[1])) not in pending]

    async def requeue_lost(self, redis: ArqRedis, *, older_than_s: float = LOST_AFTER_S) -> int:
        """Queue again the ingestion of every document still ``queued`` and never started, uploaded more than
        ``older_than_s`` seconds ago, that no job will run: none waits in the outbox or in arq's queue
        (:func:`~app.db.outbox.pending_job_args`). arq drops a job unrun once its data expired (a day with no
        worker, arq's ``expires_extra_ms``), and a Redis restarted without persistence forgets its queue; such a
        document stayed ``queued`` for good. Returns how many were queued again.

        Runs before any tenant is known (the worker's cron): candidates come from the ``unstarted_documents()``
        SECURITY DEFINER function; each is re-checked inside its own tenant's transaction, which adds its job to
        the outbox under one id per document (:func:`app.db.jobs.ingest_document`), so sweeps running at once (a
        start-up sweep beside the minute's) queue one job: arq refuses the copy. Raises one of
        :data:`~app.db.outbox.UNAVAILABLE` when Redis is out of reach."""
        candidates = await self._candidates("unstarted_documents", older_than_s)
        requeued = 0
        for coach_id, document_id in await self._jobless(redis, candidates):
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                still = await uow.session.scalar(
                    select(Document.id)
                    .where(
                        Document.id == document_id,
                        Document.status == DocumentStatus.QUEUED,
                        Document.started_at.is_(None),
                    )
                    .with_for_update()
                )
                if still is not None:
                    jobs.ingest_document(uow.session, coach_id, document_id, lost=True)
                    requeued += 1
        if requeued:
            log.warning("%d queued documents had lost their ingestion job; queued again", requeued)
        return requeued

    async def _fail(self, coach_id: uuid.UUID, document_id: uuid.UUID, message: str) -> None:
        """Mark the document ``failed`` with ``message`` for the coach, unless a run of its job finished it."""
        await set_document(
            self._sessionmaker,
            coach_id,
            document_id,
            unless_ready=True,
            status=DocumentStatus.FAILED,
            error=message,
            finished_at=datetime.now(UTC),
        )
