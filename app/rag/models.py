"""Uploaded documents and their embedded chunks."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantMixin
from app.db.vectors import BinaryVector
from app.llm.base import EMBEDDING_DIMENSIONS
from app.rag.extract import LOCATOR_MAX, SRT, VTT, ExtractionError, detect_kind


class DocumentStatus:
    """Ingestion states: ``queued → processing → ready | failed``."""

    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    ACTIVE = (QUEUED, PROCESSING)
    """Not ended yet."""


class Document(TenantMixin, Base):
    """An uploaded original (kept in ``original``) plus its ingestion status and progress: ``pages_done``
    of ``pages`` read (``pages``: the numbered pages a citation can name, a PDF's or a Word document's pages or
    an EPUB's chapters; ``None`` for a document cited without a page number: plain text, Markdown and HTML, read
    as one page, and SRT and VTT transcripts alike, cited by time, whose ``pages_done`` counts their speaker
    turns: see :attr:`transcript`), ``chunks`` embedded and committed (searchable already while ``processing``) of
    ``chunks_total`` (``None`` until extraction and chunking have finished: with streaming the total is
    unknown before), ``pages_searchable`` the last page those chunks reach. ``indexed_chunks`` and
    ``indexed_tokens`` are the chunks stored and their summed ``token_count``, kept by triggers on ``chunks``
    (migration 0028) for BM25's collection statistics; the application never writes them. ``embedding_model``
    is set when processing starts, so retrieval can use the committed chunks of a document still being
    processed. ``replaces_id``: the document this one, the same file processed again, replaces once it is ready
    (:meth:`app.rag.service.DocumentService.reprocess`), and has replaced since (no foreign key: the original is
    gone then). ``title_by_coach``: the coach gave ``title`` (:func:`app.rag.titles.rename_document`); the
    title a file declares no longer replaces it, also when it is processed again (migration 0059)."""

    __tablename__ = "documents"

    title: Mapped[str] = mapped_column(String(300))
    filename: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    original: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    status: Mapped[str] = mapped_column(String(20), default=DocumentStatus.QUEUED, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    pages: Mapped[int | None] = mapped_column(Integer)
    pages_done: Mapped[int] = mapped_column(Integer, default=0)
    pages_searchable: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    indexed_chunks: Mapped[int] = mapped_column(Integer, server_default="0")
    indexed_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    chunks_total: Mapped[int | None] = mapped_column(Integer)
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replaces_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    title_by_coach: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")

    @property
    def transcript(self) -> bool:
        """Whether the file is an SRT or VTT transcript (by its name, then its type, as at upload): it has no
        ``pages`` and its ``pages_done`` counts speaker turns (:mod:`app.rag.formats.transcript`)."""
        try:
            return detect_kind(self.filename, self.content_type) in (SRT, VTT)
        except ExtractionError:  # (a kind no longer taken)
            return False


class Chunk(TenantMixin, Base):
    """A passage of a document: ``text`` spans pages ``page_start..page_end`` (1-based; ``None`` for
    text files); ``locator`` is cited instead of the page: a transcript chunk's start time (``"HH:MM:SS"``) or
    a PDF page's own label (``"p. xv"``; ``None`` for other documents and unlabelled pages); ``token_count``
    counts cl100k tokens; ``embedding`` is a unit-norm vector searched by cosine distance (exactly through the
    ``coach_id`` index, or through the coach's own partial HNSW index once it is big:
    :mod:`app.rag.vector_index`); ``header`` is the contextual header (document title and the section heading
    the chunk sits under) that is embedded and searched with ``text`` but never shown or cited; ``heading`` that
    section heading alone (``''``: none; ``None`` for a chunk stored before migration 0059), so the header can be
    rebuilt when the document is renamed (:mod:`app.rag.headers`); ``tsv`` is the English full-text vector of
    header and text for hybrid retrieval."""

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("document_id", "ordinal", name="uq_chunks_document_ordinal"),
        Index("ix_chunks_coach_id_tsv", "coach_id", "tsv", postgresql_using="gin"),
        # the chunks stored before migration 0059, until their backfill (app.rag.headers.queue_heading_backfill)
        Index("ix_chunks_heading_missing", "coach_id", "document_id", postgresql_where=text("heading IS NULL")),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    ordinal: Mapped[int] = mapped_column(Integer)
    page_start: Mapped[int | None] = mapped_column(Integer)
    page_end: Mapped[int | None] = mapped_column(Integer)
    locator: Mapped[str | None] = mapped_column(String(LOCATOR_MAX))
    text: Mapped[str] = mapped_column(Text)
    header: Mapped[str] = mapped_column(Text, default="", server_default="")
    heading: Mapped[str | None] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[list[float]] = mapped_column(BinaryVector(EMBEDDING_DIMENSIONS))
    tsv: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', header || ' ' || text)", persisted=True)
    )


class ChunkSuccessor(Base):
    """The chunk of a copy that replaced a document (its file processed again, ``Document.replaces_id``) holding
    the text of the original's chunk ``chunk_id``, which is gone: citations name chunks by id and are resolved
    through this row when read (:func:`app.rag.passages.cited_passage`; a transcript's citations name the copy's
    title and page: :func:`app.rag.passages.current_citations`). ``document_id`` is the original's (gone too).
    Written when the copy is ready (:func:`app.rag.passages.store_successors`, migration 0052); a row goes with the
    chunk it names."""

    __tablename__ = "chunk_successors"
    __table_args__ = (Index("ix_chunk_successors_coach_id_document_id", "coach_id", "document_id"),)

    chunk_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    coach_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("coaches.id", ondelete="CASCADE"))
    document_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    successor_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("chunks.id", ondelete="CASCADE"), index=True
    )


class DocumentTerm(Base):
    """One lexeme of a document's chunks (``term``, from their ``tsv``) and ``df``, the number of the
    document's chunks that hold it: BM25's document frequency of a word over a coach's searchable documents is
    a sum over these rows (:func:`app.rag.retrieval.lexical_ranking`). Kept by triggers on ``chunks`` (migration
    0028) on every insert, delete and update of the searched text; the application only reads it."""

    __tablename__ = "document_terms"
    __table_args__ = (
        Index("ix_document_terms_coach_id_term", "coach_id", "term", postgresql_include=["document_id", "df"]),
    )

    coach_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("coaches.id", ondelete="CASCADE"))
    document_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    term: Mapped[str] = mapped_column(Text, primary_key=True)
    df: Mapped[int] = mapped_column(Integer)
