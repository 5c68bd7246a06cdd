"""The passage behind a citation, for the client who was shown it: the cited chunk with the sentences that
follow it in the document (a chunk already starts with the last sentences of the previous one, and the next
chunk repeats its own last ones: see :mod:`app.rag.chunking`), its document's title and page."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from sqlalchemy import exists, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.unit_of_work import UnitOfWork
from app.conversations.models import Conversation, Message
from app.core.errors import NotFound
from app.rag.chunking import sentences
from app.rag.models import Chunk, Document

FOLLOWING_SENTENCES = 2
"""Sentences of the next chunk shown after the cited one."""


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
    reads only what they were shown). Raises ``NotFound`` otherwise, and for a chunk whose document was
    deleted or re-ingested since."""
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
            .where(Chunk.id == chunk_id, cited)
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
    return CitedPassage(chunk.id, title, chunk.page_start, chunk.text, after, chunk.locator)


_SUCCESSORS = text(
    """
    WITH cited AS (
        SELECT DISTINCT citation ->> 'chunk_id' AS chunk_id
        FROM (
            SELECT citations FROM messages WHERE coach_id = :coach_id AND citations @> CAST(:cites AS jsonb)
            UNION ALL
            SELECT citations FROM drafts WHERE coach_id = :coach_id AND citations @> CAST(:cites AS jsonb)
        ) AS citing, jsonb_array_elements(citing.citations) AS citation
        WHERE citation ->> 'document_id' = :original
    )
    SELECT old.id::text AS chunk_id, new.id, new.page_start, new.locator
    FROM cited JOIN chunks AS old ON old.id::text = cited.chunk_id AND old.document_id = CAST(:original AS uuid)
    CROSS JOIN LATERAL (
        SELECT id, page_start, locator FROM chunks
        WHERE document_id = :copy AND ordinal < :total
        ORDER BY text = old.text DESC, abs(ordinal - old.ordinal), ordinal
        LIMIT 1
    ) AS new
    """
)
_CARRIED = """
    UPDATE {table} SET citations = (
        SELECT jsonb_agg(
            CASE WHEN CAST(:successors AS jsonb) ? (citation ->> 'chunk_id')
                 THEN (citation - 'locator') || (CAST(:successors AS jsonb) -> (citation ->> 'chunk_id'))
                 ELSE citation END
            ORDER BY position
        )
        FROM jsonb_array_elements(citations) WITH ORDINALITY AS cited(citation, position)
    )
    WHERE coach_id = :coach_id AND citations @> CAST(:cites AS jsonb)
"""


async def carry_citations(
    session: AsyncSession, coach_id: uuid.UUID, *, original: uuid.UUID, copy: uuid.UUID, title: str, total: int
) -> int:
    """Point the citations of ``original`` (a document whose file was processed again) at its ``copy``, which
    replaces it: in every message and draft of ``coach_id`` that cites it, each cited chunk becomes the copy's
    chunk with the same text, or else the one nearest its position (ordinal), among the copy's first ``total``;
    its ``document_id``, ``title``, ``page`` and ``locator`` follow. A client's citation then still opens its
    passage (:func:`cited_passage`), and a draft still cites a document the coach has, however many times the
    file is processed again. Drafts are rewritten before messages: an approval under way (it locks its draft
    first) then commits first, and the message it sends is rewritten too. Returns the number of cited chunks
    carried."""
    cites = json.dumps([{"document_id": str(original)}])
    params = {"coach_id": coach_id, "cites": cites, "original": str(original)}
    rows = await session.execute(_SUCCESSORS.bindparams(copy=copy, total=total), params)
    successors = {
        chunk_id: {"chunk_id": str(new_id), "document_id": str(copy), "title": title, "page": page}
        | ({"locator": locator} if locator else {})
        for chunk_id, new_id, page, locator in rows
    }
    if successors:
        for table in ("drafts", "messages"):
            await session.execute(text(_CARRIED.format(table=table)), params | {"successors": json.dumps(successors)})
    return len(successors)
