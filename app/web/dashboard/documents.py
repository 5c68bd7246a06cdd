"""The documents page: upload, the live status table (polled by htmx while one is processing), delete."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.response import Redirect, Template

from app.accounts.unit_of_work import UnitOfWork
from app.container import Container
from app.core.errors import DomainError
from app.deps import ContainerDep, PathId, Uow
from app.rag.models import DocumentStatus
from app.web.api.documents import read_upload
from app.web.dashboard.auth import CoachPage

ACTIVE_STATUSES = (DocumentStatus.QUEUED, DocumentStatus.PROCESSING)


async def _documents_page(
    container: Container, uow: UnitOfWork, error: str | None = None, status_code: int = 200
) -> Template:
    docs = await container.documents.list(uow)
    return Template(
        "dashboard/documents.html",
        context={
            "coach": await uow.coach(),
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
    async def documents(self, uow: Uow, container: ContainerDep) -> Template:
        return await _documents_page(container, uow)

    @get("/documents/table")
    async def documents_table(self, uow: Uow, container: ContainerDep) -> Template:
        """The live status table, polled by htmx every 2 s while a document is queued or processing."""
        docs = await container.documents.list(uow)
        return Template(
            "partials/documents_table.html",
            context={"documents": docs, "active": any(d.status in ACTIVE_STATUSES for d in docs)},
        )

    @post("/documents")
    async def upload(self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep) -> Template | Redirect:
        try:
            async with uow.savepoint():  # a refused change is rolled back alone; the page shows why
                filename, content_type, data = await read_upload(request)
                await container.documents.upload(uow, filename, content_type, data)
        except DomainError as exc:
            return await _documents_page(container, uow, exc.message, exc.status_code)
        return Redirect("/dashboard/documents")

    @post("/documents/{document_id:uuid}/delete")
    async def delete_document(self, document_id: PathId, uow: Uow, container: ContainerDep) -> Redirect:
        await container.documents.delete(uow, document_id)
        return Redirect("/dashboard/documents")
