"""The documents page: upload, the live status table (polled by htmx while one is processing), delete."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, get, post
from litestar.response import Redirect, Template

from app.container import Container
from app.core.errors import DomainError
from app.deps import CoachId, ContainerDep, PathId
from app.rag.models import DocumentStatus
from app.web.api.documents import read_upload
from app.web.dashboard.auth import CoachPage, page_coach

ACTIVE_STATUSES = (DocumentStatus.QUEUED, DocumentStatus.PROCESSING)


async def _documents_page(
    container: Container, coach_id: uuid.UUID, error: str | None = None, status_code: int = 200
) -> Template:
    docs = await container.documents.list(coach_id)
    return Template(
        "dashboard/documents.html",
        context={
            "coach": await page_coach(container, coach_id),
            "documents": docs,
            "active": any(d.status in ACTIVE_STATUSES for d in docs),
            "error": error,
            "nav": "documents",
        },
        status_code=status_code,
    )


class DocumentPages(CoachPage):
    """The coach's documents."""

    @get("/documents")
    async def documents(self, coach_id: CoachId, container: ContainerDep) -> Template:
        return await _documents_page(container, coach_id)

    @get("/documents/table")
    async def documents_table(self, coach_id: CoachId, container: ContainerDep) -> Template:
        """The live status table, polled by htmx every 2 s while a document is queued or processing."""
        docs = await container.documents.list(coach_id)
        return Template(
            "partials/documents_table.html",
            context={"documents": docs, "active": any(d.status in ACTIVE_STATUSES for d in docs)},
        )

    @post("/documents")
    async def upload(
        self, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Template | Redirect:
        try:
            filename, content_type, data = await read_upload(request)
            await container.documents.upload(coach_id, filename, content_type, data)
        except DomainError as exc:
            return await _documents_page(container, coach_id, exc.message, exc.status_code)
        return Redirect("/dashboard/documents")

    @post("/documents/{document_id:uuid}/delete")
    async def delete_document(self, document_id: PathId, coach_id: CoachId, container: ContainerDep) -> Redirect:
        await container.documents.delete(coach_id, document_id)
        return Redirect("/dashboard/documents")
