"""A document's title given by the coach (``PATCH /api/v1/documents/{id}``, the dashboard's Rename).

The title is what citations name from then on (they read the document's title when listed) and what "Process
again" keeps over the title the file declares (``Document.title_by_coach``); the chunks' contextual headers follow
in the ``reheader_document`` job (:func:`app.rag.headers.reheader_document`), which rewrites them in place.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.accounts.unit_of_work import UnitOfWork
from app.core.errors import NotFound
from app.core.validation import bounded_text
from app.db import jobs
from app.rag.headers import retitle
from app.rag.models import Document
from app.rag.pipeline import invalidate_cached_replies
from app.rag.service import MAX_FILENAME_CHARS


async def rename_document(uow: UnitOfWork, document_id: uuid.UUID, title: str) -> Document:
    """Give the coach's document ``title`` (blanks around it removed, runs of blanks and line breaks made one space;
    1 to :data:`~app.rag.service.MAX_FILENAME_CHARS` characters, the column's size), and so its copy being
    processed again (:func:`~app.rag.headers.retitle`); queues the ``reheader_document`` job of each and drops the
    coach's cached replies (their citations name the old title). Returns the document. Raises ``InvalidInput`` for
    a blank or over-long title, ``NotFound`` for a missing document or another coach's."""
    title = " ".join(bounded_text("title", title, MAX_FILENAME_CHARS, required=True).split())
    document = await uow.session.scalar(
        select(Document).where(Document.id == document_id, Document.coach_id == uow.coach_id)
    )
    if document is None:
        raise NotFound("document not found")
    if document.title != title or not document.title_by_coach:
        for renamed_id in await retitle(uow.session, document, title):
            jobs.reheader_document(uow.session, uow.coach_id, renamed_id)
        await invalidate_cached_replies(uow.session, uow.coach_id)
    return document
