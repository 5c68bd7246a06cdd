"""REST API: documents."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.params import JSONBody

from app.auth import COACH_DEPENDENCIES
from app.core.errors import InvalidInput
from app.deps import PAGE, ContainerDep, PathId, Uow, WantedPage, page_response
from app.rag.models import Document
from app.rag.titles import rename_document


class DocumentAccepted(msgspec.Struct):
    id: uuid.UUID
    status: str


class DocumentPatch(msgspec.Struct, forbid_unknown_fields=True):
    """A coach's change to a document: its ``title`` (1–300 characters once blanks around it are removed)."""

    title: str


class DocumentOut(msgspec.Struct):
    """Status and progress: ``pages_done`` of ``pages`` extracted (``pages``: the numbered pages citations name, of
    a PDF, a Word document, an EPUB's chapters; ``null`` for text, Markdown and HTML, read as one page, and for SRT
    and VTT transcripts alike, cited by time, whose ``pages_done`` counts their speaker turns), ``chunks`` embedded
    and committed so far (searchable already while ``processing``; final once ``ready``), reaching page
    ``pages_searchable``, of ``chunks_total`` (``null`` until extraction and chunking have finished); ``error`` says
    why a ``failed`` document failed (its chunks are then not used); ``replaces_id``: the document this one, its
    file processed again, replaces once it is ready (or has replaced); ``title_by_coach``: the coach gave ``title``
    (a "Process again" keeps it)."""

    id: uuid.UUID
    title: str
    filename: str
    status: str
    pages: int | None
    pages_done: int
    pages_searchable: int
    chunks: int
    error: str | None
    size_bytes: int
    created_at: datetime
    chunks_total: int | None = None
    replaces_id: uuid.UUID | None = None
    title_by_coach: bool = False


def document_out(d: Document) -> DocumentOut:
    """Serialise a document for the API."""
    return DocumentOut(
        d.id,
        d.title,
        d.filename,
        d.status,
        d.pages,
        d.pages_done,
        d.pages_searchable,
        d.chunks,
        d.error,
        d.size_bytes,
        d.created_at,
        d.chunks_total,
        d.replaces_id,
        d.title_by_coach,
    )


async def read_upload(request: Request[Any, Any, Any]) -> tuple[str, str | None, bytes]:
    """The ``file`` field of a multipart form as ``(filename, content type, bytes)``.

    Raises ``InvalidInput`` when the body is not multipart or has no ``file`` field.
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput("send the document as multipart/form-data with a field named 'file'")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("the multipart body has no file field named 'file'")
    data = await upload.read()
    return upload.filename or "", upload.content_type, data


class DocumentController(Controller):
    path = "/api/v1/documents"
    tags = ["documents"]
    dependencies = COACH_DEPENDENCIES

    @post("/", status_code=202)
    async def upload(self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep) -> DocumentAccepted:
        """Upload a PDF, Word (.docx), EPUB, HTML, Markdown, .txt, .vtt or .srt file (multipart field ``file``);
        ingestion runs in the worker."""
        filename, content_type, data = await read_upload(request)
        document = await container.documents.upload(uow, filename, content_type, data)
        return DocumentAccepted(document.id, document.status)

    @get("/", dependencies=PAGE)
    async def list_documents(
        self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep, page: WantedPage
    ) -> Response[list[DocumentOut]]:
        """The coach's documents with status and progress, newest first, a page at a time (``?limit=``, the
        ``Link`` header's next page: :func:`app.deps.page_response`; 400 for a bad cursor or limit)."""
        return page_response(request, await container.documents.list(uow, page), document_out)

    @get("/{document_id:str}")
    async def get_document(self, document_id: PathId, uow: Uow, container: ContainerDep) -> DocumentOut:
        """One document's status and progress."""
        return document_out(await container.documents.get(uow, document_id))

    @patch("/{document_id:str}")
    async def rename(
        self, document_id: PathId, data: JSONBody[DocumentPatch], uow: Uow, container: ContainerDep
    ) -> DocumentOut:
        """Rename the document: ``title`` (1–300 characters; blank or longer is a 400 saying so) is what citations
        name from now on, and stays over the title the file declares when it is processed again; its passages'
        search headers follow in a background job. 404 for another coach's or a missing document."""
        return document_out(await rename_document(uow, document_id, data.title))

    @post("/{document_id:str}/reprocess", status_code=202)
    async def reprocess(self, document_id: PathId, uow: Uow, container: ContainerDep) -> DocumentAccepted:
        """Process the document's file again (after an extraction fix): a new document, queued, that replaces
        this one once it is ready (this one answers meanwhile; a failure leaves it). 404 for another coach's or
        a missing document; 409 while it is being processed, or when its file was not kept."""
        document = await container.documents.reprocess(uow, document_id)
        return DocumentAccepted(document.id, document.status)

    @delete("/{document_id:str}", status_code=204)
    async def delete_document(self, document_id: PathId, uow: Uow, container: ContainerDep) -> None:
        """Delete a document and its chunks."""
        await container.documents.delete(uow, document_id)
