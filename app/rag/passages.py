"""The passage behind a citation, for the client who was shown it: the cited chunk with the sentences that
follow it in the document (a chunk already starts with the last sentences of the previous one, and the next
chunk repeats its own last ones: see :mod:`app.rag.chunking`), its document's title and page. A document
processed again leaves its chunks' successors (:func:`record_successors`), through which its citations resolve."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.unit_of_work import UnitOfWork
from app.conversations.models import Conversation, Message
from app.core.errors import NotFound
from app.rag.chunking import sentences
from app.rag.models import Chunk, ChunkSuccessor, Document

FOLLOWING_SENTENCES = 2
"""Sentences of the next chunk shown after the cited one."""
SIMILAR_WITHIN = 8
"""How far (in chunks, either way) from an original chunk's position a copy's chunk with other text is looked
for: an extraction that reads a file better (hidden text left out, content controls read) shifts the chunk
boundaries after each change a little."""
LEAST_SIMILARITY = 0.5
"""The least trigram similarity (pg_trgm's ``similarity``: shared trigrams over all trigrams of the two texts)
of a copy's chunk to an original chunk whose text it replaces; below it the passage is taken as gone. Measured on
*Meditations* chunked as ingested, with words added at a page's start: a chunk whose boundaries moved scored 0.56
to 1.0 against its best match, neighbouring chunks (which share their overlap) at most 0.41, chunks five apart at
most 0.35."""


@dataclass(frozen=True)
class CitedPassage:
    """A cited passage: ``text`` is the chunk as retrieved, ``after`` the next sentences of the document
    (``""`` at its end); ``page`` the chunk's first page (``None`` for documents without pages), ``locator``
    a transcript chunk's start time (``"HH:MM:SS"``, else ``None``)."""

    chunk_id: uuid.UUID
    title: str
    page: int | None
    text: str
    after: str
    locator: str | None = None


async def cited_passage(uow: UnitOfWork, client_id: uuid.UUID, chunk_id: uuid.UUID) -> CitedPassage:
    """The passage of ``chunk_id`` when a message of one of ``client_id``'s conversations cites it (a client
    reads only what they were shown): the chunk, or the one that holds its text in the copy that replaced its
    document (processed again: :func:`current_chunk`), under the id cited. Raises ``NotFound`` otherwise, and for
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
            .where(Chunk.id == current_chunk(chunk_id), cited)
        )
    ).first()
    if row is None:
        raise NotFound("passage not found")
    chunk, title = row
    following = await session.scalar(
        select(Chunk.text).where(Chunk.document_id == chunk.document_id, Chunk.ordinal == chunk.ordinal + 1)
    )
    new = [sentence for sentence in sentences(following or "") if sentence not in chunk.text]  # skip the overlap
    after = " ".join(new[:FOLLOWING_SENTENCES])
    return CitedPassage(chunk_id, title, chunk.page_start, chunk.text, after, chunk.locator)


_RECORD = text(
    """
    WITH original AS (
        SELECT id, ordinal, text FROM chunks WHERE document_id = :original
    ), same AS (
        SELECT DISTINCT ON (o.id) o.id AS chunk_id, c.id AS successor_id
        FROM original AS o JOIN chunks AS c ON c.document_id = :copy AND c.text = o.text
        ORDER BY o.id, abs(c.ordinal - o.ordinal), c.ordinal
    ), alike AS (
        SELECT o.id AS chunk_id, best.id AS successor_id
        FROM original AS o CROSS JOIN LATERAL (
            SELECT c.id FROM chunks AS c
            WHERE c.document_id = :copy
              AND c.ordinal BETWEEN o.ordinal - :within AND o.ordinal + :within
              AND similarity(c.text, o.text) >= :least
            ORDER BY similarity(c.text, o.text) DESC, abs(c.ordinal - o.ordinal), c.ordinal
            LIMIT 1
        ) AS best
        WHERE o.id NOT IN (SELECT chunk_id FROM same)
    )
    INSERT INTO chunk_successors (chunk_id, coach_id, document_id, successor_id)
    SELECT chunk_id, CAST(:coach_id AS uuid), CAST(:original AS uuid), successor_id
    FROM (SELECT * FROM same UNION ALL SELECT * FROM alike) AS found
    ON CONFLICT (chunk_id) DO UPDATE SET successor_id = excluded.successor_id
    """
)
_MOVE = text(
    """
    UPDATE chunk_successors AS earlier SET successor_id = now.successor_id
    FROM chunk_successors AS now
    WHERE now.document_id = :original AND earlier.successor_id = now.chunk_id
    """
)


async def record_successors(
    session: AsyncSession, coach_id: uuid.UUID, *, original: uuid.UUID, copy: uuid.UUID
) -> None:
    """Before ``original`` (a document whose file was processed again) is deleted: note, for each of its chunks,
    the chunk of ``copy`` (ready: all its chunks stored) that holds its text
    (:class:`~app.rag.models.ChunkSuccessor`): the same text (the nearest such chunk), or else the most similar
    text (:data:`LEAST_SIMILARITY`) within :data:`SIMILAR_WITHIN` chunks of its position; a chunk with neither
    has none (its passage is gone). The chunks that earlier replacements led to the original's now lead to the
    copy's, so a citation resolves however many times the file is processed again."""
    params = {"coach_id": coach_id, "original": original, "copy": copy}
    await session.execute(_RECORD, params | {"within": SIMILAR_WITHIN, "least": LEAST_SIMILARITY})
    await session.execute(_MOVE, {"original": original})


def current_chunk(chunk_id: uuid.UUID) -> ColumnElement[uuid.UUID]:
    """The chunk that holds cited chunk ``chunk_id``'s text now: its successor (:func:`record_successors`) when its
    document was processed again since, else itself (SQL expression)."""
    successor = select(ChunkSuccessor.successor_id).where(ChunkSuccessor.chunk_id == chunk_id).scalar_subquery()
    return func.coalesce(successor, chunk_id)
