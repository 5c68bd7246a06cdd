"""The passage behind a citation, for the client who was shown it: the cited chunk with the sentences that
follow it in the document (a chunk already starts with the last sentences of the previous one, and the next
chunk repeats its own last ones: see :mod:`app.rag.chunking`), its document's title and page."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import exists, select

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
