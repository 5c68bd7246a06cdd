"""The passage behind a citation, for the client who was shown it: the cited chunk with the sentences that
follow it in the document (a chunk already starts with the last sentences of the previous one, and the next
chunk repeats its own last ones: see :mod:`app.rag.chunking`), its document's title and page. A document
processed again leaves its chunks' successors (:func:`store_successors`), through which its citations resolve:
the passage opened, and the title and page a transcript lists them with (:func:`current_citations`)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import column, exists, func, literal, select, text
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import Subquery

from app.accounts.unit_of_work import UnitOfWork
from app.conversations.models import Conversation, Message
from app.core.errors import NotFound
from app.db.engine import tenant_session
from app.rag.chunking import cited_locator, sentences
from app.rag.models import Chunk, ChunkSuccessor, Document
from app.rag.resemblance import shingles

FOLLOWING_SENTENCES = 2
"""Sentences of the next chunk shown after the cited one."""
LEAST_SHARED = 3
"""The fewest counted shingles a copy's chunk must share with an original chunk to be its successor, whatever the
share (a chunk of a repetitive text may have one or two telling shingles)."""
COMMON_SHINGLE = 32
"""A word 3-shingle found in more of a copy's chunks than this (a phrase the book repeats everywhere) says little
of where a passage went, and is not counted (:func:`successors`)."""
LEAST_CONTAINMENT = 0.35
"""The least share of an original chunk's word 3-shingles a copy's chunk must hold to be its successor
(Broder's containment); below it the passage is taken as gone. Measured on *Meditations*
chunked as ingested, with 3 to 60 words added at the start of every third page (1 to 35 % more chunks): every
changed chunk's best match held 0.38 or more of it (5th percentile 0.52), while a neighbouring chunk, which
shares its overlap, holds at most 0.21."""


@dataclass(frozen=True)
class CitedPassage:
    """A cited passage: ``text`` is the chunk as retrieved, ``after`` the next sentences of the document
    (``""`` at its end); ``page`` the chunk's first page (``None`` for documents without pages), ``locator``
    what is cited instead of it, as retrieval gives it (:func:`~app.rag.chunking.cited_locator`: a transcript
    chunk's start time ``"HH:MM:SS"``, a PDF page's label, the pages a chunk spans ``"pp. 42–43"``, else
    ``None``)."""

    chunk_id: uuid.UUID
    title: str
    page: int | None
    text: str
    after: str
    locator: str | None = None


async def cited_passage(uow: UnitOfWork, client_id: uuid.UUID, chunk_id: uuid.UUID) -> CitedPassage:
    """The passage of ``chunk_id`` when a message of one of ``client_id``'s conversations cites it (a client
    reads only what they were shown): the chunk, or the one that holds its text in the copy that replaced its
    document (processed again: :func:`current_chunks`), under the id cited. Raises ``NotFound`` otherwise, and for
    a chunk whose document was deleted since, or whose text its copy no longer holds."""
    session = uow.session
    cited = exists().where(
        Message.conversation_id == Conversation.id,
        Conversation.client_id == client_id,
        Message.citations.contains([{"chunk_id": str(chunk_id)}]),
    )
    row = (
        await session.execute(
            select(Chunk, Document.title)
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.id == (await current_chunks(session, [chunk_id]))[chunk_id], cited)
        )
    ).first()
    if row is None:
        raise NotFound("passage not found", code="passage_gone")
    chunk, title = row
    following = await session.scalar(
        select(Chunk.text).where(Chunk.document_id == chunk.document_id, Chunk.ordinal == chunk.ordinal + 1)
    )
    new = [sentence for sentence in sentences(following or "") if sentence not in chunk.text]  # skip the overlap
    after = " ".join(new[:FOLLOWING_SENTENCES])
    locator = cited_locator(chunk.page_start, chunk.page_end, chunk.locator)
    return CitedPassage(chunk_id, title, chunk.page_start, chunk.text, after, locator)


def successors(original: Sequence[str], copy: Sequence[str]) -> dict[int, int]:
    """Where each chunk of ``original`` (chunk texts in order) went in ``copy`` (the chunk texts of its file
    processed again): ``{original index: copy index}``. A chunk is found by its very text, or else as the copy's
    chunk that holds most of its word 3-shingles (Broder's containment, :data:`LEAST_CONTAINMENT` or more, and
    :data:`LEAST_SHARED` at least),
    counted through an inverted index of the copy's shingles (those in over :data:`COMMON_SHINGLE` of its chunks
    count neither way), so wherever text read that the old extraction missed pushed it. Ties go to the chunk
    nearest where it is expected: its own index moved by the shift of the last chunk found. Linear in the
    shingles."""
    at: dict[str, list[int]] = {}
    postings: dict[tuple[str, ...], list[int]] = {}
    for index, chunk in enumerate(copy):
        at.setdefault(chunk, []).append(index)
        for shingle in shingles(chunk):
            postings.setdefault(shingle, []).append(index)
    found: dict[int, int] = {}
    shift = 0
    for index, chunk in enumerate(original):
        expected = index + shift
        if chunk in at:
            found[index] = min(at[chunk], key=lambda j: (abs(j - expected), j))
        else:
            own = [shingle for shingle in shingles(chunk) if len(postings.get(shingle, ())) <= COMMON_SHINGLE]
            shared = Counter(j for shingle in own for j in postings.get(shingle, ()))
            best = max(shared, key=lambda j: (shared[j], -abs(j - expected), -j), default=None)
            if best is None or shared[best] < max(LEAST_SHARED, LEAST_CONTAINMENT * len(own)):
                continue
            found[index] = best
        shift = found[index] - index
    return found


_CHUNKS = select(Chunk.id, Chunk.text).order_by(Chunk.ordinal)


async def match_successors(
    sessionmaker: async_sessionmaker[AsyncSession], coach_id: uuid.UUID, copy: uuid.UUID, total: int
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``(original chunk id, successor chunk id)`` pairs for document ``copy`` when it replaces another (its file
    processed again: ``replaces_id``) and its ``total`` chunks are stored (:func:`successors`; chunks past
    ``total``, left by an earlier attempt, are not successors: the copy's end deletes them); none otherwise. Reads
    in a transaction of its own and computes in a worker thread, before the copy's end takes any lock."""
    async with tenant_session(sessionmaker, coach_id, autocommit=True) as session:
        original = await session.scalar(select(Document.replaces_id).where(Document.id == copy))
        if original is None:
            return []
        before = (await session.execute(_CHUNKS.where(Chunk.document_id == original))).all()
        after = (await session.execute(_CHUNKS.where(Chunk.document_id == copy, Chunk.ordinal < total))).all()
    found = await asyncio.to_thread(successors, [row.text for row in before], [row.text for row in after])
    return [(before[i].id, after[j].id) for i, j in found.items()]


_MOVE = text(
    """
    UPDATE chunk_successors AS earlier SET successor_id = now.successor_id
    FROM chunk_successors AS now
    WHERE now.document_id = :original AND earlier.successor_id = now.chunk_id
    """
)


async def store_successors(
    session: AsyncSession, coach_id: uuid.UUID, *, original: uuid.UUID, pairs: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> None:
    """In the transaction that deletes ``original`` (replaced by its copy): store the successors
    :func:`match_successors` found (:class:`~app.rag.models.ChunkSuccessor`), and move the rows that earlier
    replacements led to the original's chunks on to their successors, so a citation resolves however many times
    the file is processed again (a chunk with no successor takes its rows with it when it is deleted)."""
    if pairs:  # (rows as executemany parameters: SQLAlchemy sends them in batches under PostgreSQL's bind limit)
        rows = [
            {"chunk_id": chunk_id, "coach_id": coach_id, "document_id": original, "successor_id": successor_id}
            for chunk_id, successor_id in pairs
        ]
        stmt = insert(ChunkSuccessor)
        moved = {"successor_id": stmt.excluded.successor_id}
        upsert = stmt.on_conflict_do_update(index_elements=["chunk_id"], set_=moved)
        await session.execute(upsert, rows)
    await session.execute(_MOVE, {"original": original})


_IDS = ARRAY(PG_UUID(as_uuid=True))


def _holding(chunk_ids: Iterable[uuid.UUID]) -> Subquery:
    """Rows ``(cited, now)``, one per id of ``chunk_ids`` (cited chunk ids): ``now`` the chunk that holds its text
    now, its successor when its document was processed again since (:func:`store_successors`), else itself
    (which may be gone too)."""
    ids = func.unnest(literal(list(chunk_ids), _IDS))
    cited = ids.table_valued(column("id", PG_UUID(as_uuid=True))).render_derived("cited")
    now = func.coalesce(ChunkSuccessor.successor_id, cited.c.id)
    stmt = select(cited.c.id.label("cited"), now.label("now")).select_from(cited)
    return stmt.outerjoin(ChunkSuccessor, ChunkSuccessor.chunk_id == cited.c.id).subquery("holding")


async def current_chunks(session: AsyncSession, chunk_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """``{cited chunk id: the chunk that holds its text now}``: its successor when its document was processed
    again since (:func:`store_successors`), else itself (which may be gone too)."""
    holding = _holding(chunk_ids)
    return {cited: now for cited, now in await session.execute(select(holding.c.cited, holding.c.now))}


@dataclass(frozen=True)
class CitedSource:
    """Where a cited passage is now: the document that holds it (``document_id``, ``title``), the first ``page``
    of its chunk (``None`` for documents without pages) and its ``locator``
    (:func:`~app.rag.chunking.cited_locator`: a transcript's ``"HH:MM:SS"``, a PDF page's own label, the pages
    the chunk spans, ``"pp. 42–43"``, else ``None``): what a citation names besides the chunk
    (``RetrievedChunk.citation``)."""

    document_id: uuid.UUID
    title: str
    page: int | None
    locator: str | None


async def cited_sources(session: AsyncSession, chunk_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, CitedSource]:
    """``{cited chunk id: where its passage is now}`` for ``chunk_ids``, resolved as :func:`current_chunks` does
    (a document processed again: the copy's chunk, page and title); a chunk whose passage is gone (its document
    deleted, or the copy no longer holds its text) is left out. One query for them all."""
    holding = _holding(chunk_ids)
    stmt = (
        select(holding.c.cited, Chunk.document_id, Document.title, Chunk.page_start, Chunk.page_end, Chunk.locator)
        .join(Chunk, Chunk.id == holding.c.now)
        .join(Document, Document.id == Chunk.document_id)
    )
    rows = (await session.execute(stmt)).all()
    return {
        cited: CitedSource(document_id, title, page, cited_locator(page, page_end, locator))
        for cited, document_id, title, page, page_end, locator in rows
    }


def cited_chunk_id(citation: Any) -> uuid.UUID | None:
    """The id of the chunk a stored citation (``{document_id, title, page, chunk_id, score}``, ``locator``: see
    ``RetrievedChunk.citation``) cites; ``None`` when it names none (no ``chunk_id``, one that is no UUID, or a
    citation that is not an object)."""
    if not isinstance(citation, Mapping):
        return None
    try:
        return uuid.UUID(str(citation["chunk_id"]))
    except (KeyError, TypeError, ValueError):
        return None


async def current_citations(session: AsyncSession, listed: Sequence[Any]) -> list[Any]:
    """Stored citation lists (``listed``: each listed message's ``citations``, in order) as a listing shows them
    now (:func:`resolved_citations` with the :func:`cited_sources` of every chunk they cite): one query for all of
    them (none when nothing is cited). The stored lists are not changed."""
    ids = {
        chunk_id
        for citations in listed
        if isinstance(citations, list)
        for citation in citations
        if (chunk_id := cited_chunk_id(citation)) is not None
    }
    return resolved_citations(listed, await cited_sources(session, ids) if ids else {})


def resolved_citations(listed: Sequence[Any], sources: Mapping[uuid.UUID, CitedSource]) -> list[Any]:
    """Stored citation lists (``listed``, in order) with each citation's ``document_id``, ``title``, ``page`` and
    ``locator`` those of where its passage is now (``sources``: :func:`cited_sources` of the chunks cited; the
    copy's, its document processed again since; a citation stored with its first page alone names every page its
    passage spans now, ``"pp. 52–53"``), its other keys as stored (``chunk_id`` the id cited, which
    :func:`cited_passage` resolves; ``score``). A citation whose passage is gone (not in ``sources``), or that names
    no chunk, is listed as stored, as is one that is not an object (or a stored value that is not a list: JSON
    another writer left)."""

    def now(citation: Any) -> Any:
        chunk_id = cited_chunk_id(citation)
        source = sources.get(chunk_id) if chunk_id is not None else None
        if source is None:
            return citation
        shown = {key: value for key, value in citation.items() if key != "locator"}
        shown |= {"document_id": str(source.document_id), "title": source.title, "page": source.page}
        return shown | ({"locator": source.locator} if source.locator else {})

    return [
        [now(citation) for citation in citations] if isinstance(citations, list) else citations for citations in listed
    ]
