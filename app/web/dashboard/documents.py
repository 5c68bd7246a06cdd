"""The documents page: upload, the live status table (polled by htmx while one is processing), rename, delete."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.response import Redirect, Template

from app.accounts.unit_of_work import UnitOfWork
from app.container import Container
from app.core.errors import DomainError
from app.core.pagination import PageRequest, page_query
from app.deps import PAGE, ContainerDep, PathId, Uow, WantedPage
from app.rag.models import DocumentStatus
from app.rag.titles import rename_document
from app.web.api.documents import read_upload
from app.web.dashboard.auth import CoachPage
from app.web.dashboard.forms import form_str


async def _table_context(container: Container, uow: UnitOfWork, page: PageRequest) -> dict[str, Any]:
    """The documents table's context: one page of the documents (newest first), whether one of them is still
    being read (the table then polls itself), this page's cursor and the next one's (``None``: the last)."""
    docs = await container.documents.list(uow, page)
    return {
        "documents": docs.items,
        "active": any(d.status in DocumentStatus.ACTIVE for d in docs.items),
        "this_page": page_query(page, page.after),
        "older": page_query(page, docs.next),
    }


async def _documents_page(
    container: Container, uow: UnitOfWork, page: PageRequest, error: str | None = None, status_code: int = 200
) -> Template:
    context = await _table_context(container, uow, page)
    context |= {"coach": await uow.coach(), "error": error, "nav": "documents"}
    return Template("dashboard/documents.html", context=context, status_code=status_code)


class DocumentPages(CoachPage):
    """The coach's documents."""

    @get("/documents", dependencies=PAGE)
    async def documents(self, uow: Uow, container: ContainerDep, page: WantedPage) -> Template:
        """The upload form and the documents, newest first, a page at a time (an "Older documents" link to the
        next page, ``cursor``; 400 page for a bad cursor or limit)."""
        return await _documents_page(container, uow, page)

    @get("/documents/table", dependencies=PAGE)
    async def documents_table(self, uow: Uow, container: ContainerDep, page: WantedPage) -> Template:
        """The live status table (the page of ``cursor``), polled by htmx every 2 s while a document on it is
        queued or processing."""
        return Template("partials/documents_table.html", context=await _table_context(container, uow, page))

    @post("/documents")
    async def upload(self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep) -> Template | Redirect:
        try:
            async with uow.savepoint():  # a refused change is rolled back alone; the page shows why
                filename, content_type, data = await read_upload(request)
                await container.documents.upload(uow, filename, content_type, data)
        except DomainError as exc:
            return await _documents_page(container, uow, PageRequest(), exc.message, exc.status_code)
        return Redirect("/dashboard/documents")

    @post("/documents/{document_id:str}/reprocess")
    async def reprocess_document(self, document_id: PathId, uow: Uow, container: ContainerDep) -> Template | Redirect:
        """Process a document's file again (:meth:`app.rag.service.DocumentService.reprocess`); a refusal (being
        processed, its file not kept) shows the page with the reason."""
        try:
            async with uow.savepoint():
                await container.documents.reprocess(uow, document_id)
        except DomainError as exc:
            return await _documents_page(container, uow, PageRequest(), exc.message, exc.status_code)
        return Redirect("/dashboard/documents")

    @post("/documents/{document_id:str}/rename")
    async def rename_document(
        self, document_id: PathId, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep
    ) -> Template | Redirect:
        """Rename a document (form field ``title``: :func:`app.rag.titles.rename_document`); a refused
        title (blank, over 300 characters) shows the page with the reason."""
        form = await request.form()
        try:
            async with uow.savepoint():
                await rename_document(uow, document_id, form_str(form, "title"))
        except DomainError as exc:
            return await _documents_page(container, uow, PageRequest(), exc.message, exc.status_code)
        return Redirect("/dashboard/documents")

    @post("/documents/{document_id:str}/delete")
    async def delete_document(self, document_id: PathId, uow: Uow, container: ContainerDep) -> Redirect:
        await container.documents.delete(uow, document_id)
        return Redirect("/dashboard/documents")
