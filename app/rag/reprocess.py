"""Every library processed again: the operator's "Process again" after an upgrade that reads files better (an
extraction fix: hidden text left out, content controls read, page labels), for the documents ingested before it.

:func:`reprocess_libraries` is the body of ``opencoach documents reprocess``; each document goes through
:meth:`app.rag.service.DocumentService.reprocess`, as the coach's own button does, so the original answers until
its copy is ready, then the copy replaces it and takes over its citations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.core.errors import Conflict, NotFound
from app.rag.models import Document, DocumentStatus
from app.rag.service import DocumentService


@dataclass
class ReprocessReport:
    """What :func:`reprocess_libraries` did: ``queued`` the documents processed again, ``skipped`` those
    refused with the reason (a copy already being processed, a file not kept), each ``(coach_id, title)`` and
    ``(coach_id, title, reason)``, in the order they were tried; ``started`` once the coaches were listed."""

    queued: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    skipped: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)
    started: bool = False
    """Set once the database was reached as the schema owner (an error after that is not a wrong URL)."""


async def reprocess_libraries(
    documents: DocumentService,
    sessionmaker: async_sessionmaker[AsyncSession],
    report: ReprocessReport,
    *,
    finished_before: datetime,
    coach_id: uuid.UUID | None = None,
    failed: bool = False,
) -> None:
    """Process again every document that finished processing before ``finished_before`` (timezone-aware): those
    ``ready``, and the ``failed`` ones too when ``failed``; of every coach, or of ``coach_id`` only. A copy
    finishes after the run started, so a run stopped half-way and started again with the same
    ``finished_before`` skips the documents already done (those still being processed again are reported
    skipped). Each document is its own transaction in its coach's scope; its ingestion job goes through the
    outbox (the worker's relay sends it). Each document is noted in ``report`` once its transaction ended, so a run
    that stops (a database gone) still tells what it did. ``sessionmaker`` must be able to list every coach (the
    schema owner's, as for ``rotate-secret``). Raises ``NotFound`` for a ``coach_id`` that is no coach."""
    statuses = (DocumentStatus.READY, DocumentStatus.FAILED) if failed else (DocumentStatus.READY,)
    async with sessionmaker() as session:
        listed = select(Coach.id).order_by(Coach.created_at, Coach.id)
        coach_ids = (await session.scalars(listed if coach_id is None else listed.where(Coach.id == coach_id))).all()
    report.started = True
    if coach_id is not None and not coach_ids:
        raise NotFound(f"no coach has the id {coach_id}")
    for coach in coach_ids:
        async with unit_of_work(sessionmaker, coach) as uow:
            done = (
                await uow.session.execute(
                    select(Document.id, Document.title)
                    .where(
                        Document.coach_id == coach,
                        Document.status.in_(statuses),
                        # (an upload over the limit failed at once, never started: reported as a file not kept)
                        func.coalesce(Document.finished_at, Document.created_at) < finished_before,
                    )
                    .order_by(Document.created_at, Document.id)
                )
            ).all()
        for document_id, title in done:
            try:
                async with unit_of_work(sessionmaker, coach) as uow:
                    await documents.reprocess(uow, document_id)
            except (Conflict, NotFound) as refused:  # a copy under way, a file not kept, deleted meanwhile
                report.skipped.append((coach, title, str(refused)))
            else:
                report.queued.append((coach, title))
