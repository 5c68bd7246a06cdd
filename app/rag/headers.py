"""Contextual headers of stored chunks kept in step with their document's title.

A chunk's header (:func:`app.rag.chunking.chunk_header`: the document's title and the chunk's section heading) is
embedded with its text and is part of its full-text vector (``chunks.tsv``), so when the title changes (the coach
renames the document, or an ingestion learns the title only after some chunks were stored) every chunk whose
header names another title gets the new header and a new vector in place: its id, text, page and citations stay.
The heading comes from ``chunks.heading``; a chunk stored before it existed (migration 0059) has its heading read
back from its header (:func:`heading_of`) and recorded. Such chunks also have the upload's file name in their
headers where the file declares a title; the worker's ``backfill_headings`` cron re-heads their documents once
(:func:`queue_heading_backfill`).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.unit_of_work import unit_of_work
from app.db import jobs
from app.llm.base import Embedder
from app.llm.registry import SWITCH_RETRIES, EmbedderSwitched, ProviderRegistry, lock_embedding_model
from app.rag.chunking import HEADER_SEPARATOR, chunk_header, embedding_input
from app.rag.models import Chunk, Document, DocumentStatus

REHEADER_BATCH = 64
"""Chunks read, embedded and updated at a time (one embedding call and one transaction each)."""
BACKFILL_PER_RUN = 10
"""Documents :func:`queue_heading_backfill` queues at most per run (the cron runs every 10 minutes): after an
upgrade, the re-heading of every old document would otherwise fill the worker's main queue at once, and the chat
turns' follow-up jobs (episodes, summaries, insights) would wait behind it."""


def heading_of(header: str, title: str) -> str:
    """The section heading inside a stored ``header`` (``''`` for none), for a chunk that does not record it: what
    follows ``title`` and :data:`~app.rag.chunking.HEADER_SEPARATOR` when the header starts with the document's
    ``title``; else what follows the first separator (the header was made with another title, which holds none).
    A heading that was the title itself is lost: :func:`~app.rag.chunking.chunk_header` stored it once."""
    if header == title:
        return ""
    if header.startswith(title + HEADER_SEPARATOR):
        return header[len(title) + len(HEADER_SEPARATOR) :]
    _, separator, heading = header.partition(HEADER_SEPARATOR)
    return heading if separator else ""


@dataclass(frozen=True)
class _Stale:
    id: uuid.UUID
    header: str
    heading: str
    new_header: str
    text: str


async def _batch(
    session: AsyncSession, document_id: uuid.UUID, after: int
) -> tuple[str | None, int | None, list[_Stale]]:
    """The document's title (``None``: it is gone), the last ordinal read and the chunks after ordinal ``after``
    (at most :data:`REHEADER_BATCH`) whose header is not the one its title gives. A chunk read whose header stays
    but which does not record its heading (stored before migration 0059) gets it recorded here."""
    title = await session.scalar(select(Document.title).where(Document.id == document_id))
    if title is None:
        return None, None, []
    rows = (
        await session.execute(
            select(Chunk.id, Chunk.ordinal, Chunk.header, Chunk.heading, Chunk.text)
            .where(Chunk.document_id == document_id, Chunk.ordinal > after)
            .order_by(Chunk.ordinal)
            .limit(REHEADER_BATCH)
        )
    ).all()
    stale = []
    for row in rows:
        heading = row.heading if row.heading is not None else heading_of(row.header, title)
        if (new_header := chunk_header(title, heading)) != row.header:
            stale.append(_Stale(row.id, row.header, heading, new_header, row.text))
        elif row.heading is None:
            await session.execute(
                update(Chunk).where(Chunk.id == row.id, Chunk.header == row.header).values(heading=heading)
            )
    return title, rows[-1].ordinal if rows else None, stale


async def _store(
    session: AsyncSession, coach_id: uuid.UUID, model: str, stale: Sequence[_Stale], vectors: Sequence[list[float]]
) -> int:
    """Write the new headers and vectors (a chunk whose header changed meanwhile is left to the next pass);
    returns how many were written. Raises ``EmbedderSwitched`` when ``model`` is no longer the coach's in use."""
    in_use = await lock_embedding_model(session, coach_id)
    if in_use is None:
        return 0
    if in_use != model:
        raise EmbedderSwitched(f"the embedding model in use is now {in_use}, not {model}")
    written = 0
    for chunk, vector in zip(stale, vectors, strict=True):
        result = await session.execute(
            update(Chunk)
            .where(Chunk.id == chunk.id, Chunk.header == chunk.header)
            .values(header=chunk.new_header, heading=chunk.heading, embedding=vector)
        )
        written += result.rowcount  # type: ignore[attr-defined]
    return written


async def reheader_chunks(
    sessionmaker: async_sessionmaker[AsyncSession], coach_id: uuid.UUID, document_id: uuid.UUID, embedder: Embedder
) -> int:
    """Give every stored chunk of the document the header of its title now, re-embedding those whose header
    changes (``embedder``: the coach's in use), :data:`REHEADER_BATCH` at a time, each batch embedded outside a
    transaction and written in one. Idempotent (a second run finds nothing stale); returns how many chunks were
    re-headed, 0 when the document is gone. Raises ``EmbedderSwitched`` when the coach switched embedding
    models meanwhile (the re-embedding job then embeds the headers stored), and what ``embed`` raises
    (``ProviderError``)."""
    after, written = -1, 0
    while True:
        async with unit_of_work(sessionmaker, coach_id) as uow:
            title, last, stale = await _batch(uow.session, document_id, after)
        if title is None or last is None:
            return written
        after = last
        if not stale:
            continue
        vectors = await embedder.embed([embedding_input(c.new_header, c.text) for c in stale])
        async with unit_of_work(sessionmaker, coach_id) as uow:
            written += await _store(uow.session, coach_id, embedder.model, stale, vectors)


async def reheader_document(
    sessionmaker: async_sessionmaker[AsyncSession],
    registry: ProviderRegistry,
    coach_id: uuid.UUID,
    document_id: uuid.UUID,
) -> int:
    """:func:`reheader_chunks` with the coach's embedder in use, again with the new one when the coach switches
    models meanwhile (at most :data:`~app.llm.registry.SWITCH_RETRIES` times, then ``EmbedderSwitched``): the body
    of the ``reheader_document`` job queued by a rename. Returns how many chunks were re-headed."""
    for attempt in range(1 + SWITCH_RETRIES):
        async with unit_of_work(sessionmaker, coach_id) as uow:
            embedder = await registry.embedder_for(await uow.coach())
        try:
            return await reheader_chunks(sessionmaker, coach_id, document_id, embedder)
        except EmbedderSwitched:
            if attempt == SWITCH_RETRIES:
                raise
    return 0


async def retitle(session: AsyncSession, document: Document, title: str) -> list[uuid.UUID]:
    """Give ``document`` the coach's ``title`` (``title_by_coach``: the title a file declares no longer replaces it,
    also when it is processed again), and so its copy being processed again, which would replace it under the
    file's title; returns the ids of the documents renamed (their chunks are to be re-headed)."""
    copies = await session.scalars(
        select(Document).where(
            Document.coach_id == document.coach_id,
            Document.replaces_id == document.id,
            Document.status.in_(DocumentStatus.ACTIVE),
        )
    )
    renamed = [document, *copies.all()]
    for each in renamed:
        each.title, each.title_by_coach = title, True
    return [each.id for each in renamed]


async def queue_heading_backfill(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Queue the ``reheader_document`` job of at most :data:`BACKFILL_PER_RUN` documents, of any coaches, with
    chunks stored before migration 0059 (no ``chunks.heading``; ``unheaded_documents()``, migration 0061): the job
    records their headings and gives them the headers of the document's title, where the file name stood. The
    documents are drawn at random, so one whose job keeps failing does not hold the others back. One transaction
    per coach; a job already queued for a document is not queued twice (its ``_job_id``). Idempotent: a document
    done is not found again, and with none left this is one read of an empty index. Returns how many documents
    were queued."""
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                text("SELECT coach_id, document_id FROM unheaded_documents() ORDER BY random() LIMIT :n"),
                {"n": BACKFILL_PER_RUN},
            )
        ).all()
    by_coach: defaultdict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for coach_id, document_id in rows:
        by_coach[coach_id].append(document_id)
    for coach_id, document_ids in by_coach.items():
        async with unit_of_work(sessionmaker, coach_id) as uow:
            for document_id in document_ids:
                jobs.reheader_document(uow.session, coach_id, document_id, backfill=True)
    return len(rows)
