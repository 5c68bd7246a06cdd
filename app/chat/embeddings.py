"""The coach's embedding model: the offline all-MiniLM-L6-v2 (the default) or an OpenAI-compatible model
(``text-embedding-3-small`` at ``dimensions`` = 384, the vector columns' width) with the coach's own key.

Every vector of a coach must come from one model, and every query must be embedded by the model its stored
vectors were made with. So a change is only *requested* (:meth:`EmbeddingService.request`, the
``embedding_requested_*`` fields of :class:`~app.accounts.models.Coach`); the ``reembed_coach`` job
(:meth:`EmbeddingService.run`) embeds every text behind a vector of the coach with the requested model —
document chunks, episodes, insights, session summaries, interventions' situations — reporting its progress
on the coach row, and then, in one transaction, writes the new vectors and copies the request into the
embedder in use (``embedding_*``). Until that commit every query keeps the old model and the old vectors; a
provider error (a bad key, a 4xx) fails the job with the error stored and changes nothing, and so does any
failure the worker does not retry (``app.worker.reembed_coach``: its deadline, a bug, a killed worker's last
try). Rows stored with the old model while the job ran are re-embedded right after the switch, and so are the
chunks a rename re-headed meanwhile (:func:`write_vectors` writes a chunk's vector only over the header it embedded).

Not re-embedded: an insight the client or coach deleted keeps its old vector (its text is erased; the vector
only stops the same fact from being extracted again).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import ARRAY, Select, all_, any_, bindparam, select, update
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.learning_settings import MAX_MODEL_NAME_CHARS
from app.accounts.models import Coach
from app.accounts.service import LLM_PROVIDERS, AccountService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.conversations.models import Message
from app.core.errors import InvalidInput
from app.core.security import SecretBox
from app.core.validation import bounded_text, provider_api_key
from app.db import jobs
from app.learning.models import Intervention
from app.llm.base import Embedder, ProviderError
from app.llm.registry import ProviderRegistry, embedding_model_name
from app.memory.models import ChatSession, Episode, Insight
from app.memory.summaries import summary_vector_text
from app.rag.chunking import embedding_input
from app.rag.models import Chunk, Document

log = logging.getLogger(__name__)

REEMBED_BATCH = 64
"""Texts per embedding request of the job (and per progress update)."""

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


class Superseded(Exception):
    """A newer request replaced the one this job works for."""


@dataclass(frozen=True)
class EmbeddingStatus:
    """The coach's embedder: ``in_use`` (model name of the stored vectors and of every query), ``requested``
    (the model a running or failed job switches to; ``None`` when none), the job's ``status`` (``queued`` |
    ``running`` | ``done`` | ``failed`` | ``None``), ``done`` of ``total`` texts embedded, and ``error`` (why
    it failed)."""

    in_use: str
    in_use_provider: str
    requested: str | None
    status: str | None
    done: int
    total: int
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "in_use": self.in_use,
            "in_use_provider": self.in_use_provider,
            "requested": self.requested,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "error": self.error,
        }


@dataclass
class Pending:
    """Rows of one vector column to re-embed: ``table`` (an ORM class with ``id`` and ``embedding``), their
    ``ids``, the ``texts`` they are embeddings of, and for chunks the ``headers`` read with them (part of their
    texts) and the ``documents`` whose model name changes."""

    table: Any
    ids: list[uuid.UUID] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    documents: set[uuid.UUID] = field(default_factory=set)


async def pending_vectors(session: AsyncSession, coach_id: uuid.UUID, model: str) -> list[Pending]:
    """Every vector of ``coach_id`` not made by ``model``, with the text it embeds (as the code that stored
    it embedded it: chunk header and text, the message, the insight, the summary and topics, the client's
    situation)."""
    chunks = Pending(Chunk)
    rows = await session.execute(
        select(Chunk.id, Chunk.header, Chunk.text, Chunk.document_id)
        .join(Document, Document.id == Chunk.document_id)
        .where(Document.coach_id == coach_id, Document.embedding_model.is_not(None), Document.embedding_model != model)
    )
    for chunk_id, header, text, document_id in rows:
        chunks.ids.append(chunk_id)
        chunks.texts.append(embedding_input(header, text))
        chunks.headers.append(header)
        chunks.documents.add(document_id)
    sessions = Pending(ChatSession)
    for session_id, summary in await session.execute(
        select(ChatSession.id, ChatSession.summary).where(
            ChatSession.coach_id == coach_id, ChatSession.embedding.is_not(None), ChatSession.embedding_model != model
        )
    ):
        sessions.ids.append(session_id)
        sessions.texts.append(
            summary_vector_text((summary or {}).get("summary", ""), (summary or {}).get("topics", []))
        )
    return [
        chunks,
        await _simple(
            session,
            Episode,
            select(Episode.id, Message.text)
            .join(Message, Message.id == Episode.message_id)
            .where(Episode.coach_id == coach_id, Episode.embedding_model != model),
        ),
        await _simple(
            session,
            Insight,
            select(Insight.id, Insight.text).where(
                Insight.coach_id == coach_id, Insight.embedding_model != model, Insight.text != ""
            ),
        ),
        sessions,
        await _simple(
            session,
            Intervention,
            select(Intervention.id, Intervention.client_text).where(
                Intervention.coach_id == coach_id,
                Intervention.embedding.is_not(None),
                Intervention.embedding_model != model,
            ),
        ),
    ]


async def _simple(session: AsyncSession, table: Any, query: Select[uuid.UUID, str]) -> Pending:
    """The rows of ``query`` (id, text) as a :class:`Pending` of ``table``."""
    pending = Pending(table)
    for row_id, row_text in await session.execute(query):
        pending.ids.append(row_id)
        pending.texts.append(row_text)
    return pending


async def write_vectors(
    session: AsyncSession, pending: Sequence[Pending], vectors: Sequence[np.ndarray], model: str, *, switching: bool
) -> None:
    """Store ``vectors[i]`` (float32, one row per id of ``pending[i]``) and ``model`` as their model name (a
    chunk's is its document's: set only for documents whose every chunk is in ``pending``). A chunk re-headed
    since ``pending`` was read (a rename's :func:`~app.rag.headers.reheader_chunks`) keeps the vector of its new
    header. ``switching``: the switch's transaction (the coach's row locked ``FOR UPDATE``, so no re-header
    writes meanwhile): such a vector is then the old model's, so its document keeps the old model for the
    catch-up to re-embed it whole; after the switch, a re-header embeds with the new model."""
    for part, matrix in zip(pending, vectors, strict=True):
        if not part.ids:
            continue
        table = part.table.__table__
        values: dict[str, Any] = {"embedding": bindparam("_vector")}
        statement = update(table).where(table.c.id == bindparam("_id"))
        rows = [{"_id": row_id, "_vector": vector} for row_id, vector in zip(part.ids, matrix, strict=True)]
        if part.table is Chunk:
            statement = statement.where(table.c.header == bindparam("_header"))
            for row, header in zip(rows, part.headers, strict=True):
                row["_header"] = header
        else:
            values["embedding_model"] = model
        await session.execute(statement.values(values), rows)
        if part.documents:
            await _mark_documents(session, part, model, switching=switching)


async def _mark_documents(session: AsyncSession, chunks: Pending, model: str, *, switching: bool) -> None:
    """Record ``model`` for the documents of ``chunks`` whose every chunk is in it and, when ``switching``, whose
    chunks all still have the headers read (:func:`write_vectors`)."""
    ids = bindparam("_ids", chunks.ids, type_=ARRAY(PG_UUID(as_uuid=True)))
    # a document that got chunks after ``pending`` was read (an ingestion still running) keeps its old
    # model, so the catch-up re-embeds it whole: the model is recorded per document, not per chunk
    partial = select(Chunk.document_id).where(Chunk.document_id.in_(chunks.documents), Chunk.id != all_(ids))
    kept: set[uuid.UUID] = set()
    if switching:
        read = dict(zip(chunks.ids, chunks.headers, strict=True))
        now = await session.execute(select(Chunk.id, Chunk.header, Chunk.document_id).where(Chunk.id == any_(ids)))
        kept = {document_id for chunk_id, header, document_id in now if header != read[chunk_id]}
    await session.execute(
        update(Document)
        .where(Document.id.in_(chunks.documents - kept), Document.id.not_in(partial))
        .values(embedding_model=model)
    )


class EmbeddingService:
    """Requests a coach's change of embedding model and runs the job that re-embeds and switches."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: ProviderRegistry,
        accounts: AccountService,
        secrets: SecretBox,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._registry = registry
        self._accounts = accounts
        self._secrets = secrets

    def status(self, coach: Coach) -> EmbeddingStatus:
        """The coach's embedder in use, the requested one and the job's progress (names only: nothing is
        loaded)."""
        requested = None
        if coach.embedding_job_status in (QUEUED, RUNNING, FAILED) and coach.embedding_requested_provider:
            requested = embedding_model_name(coach.embedding_requested_provider, coach.embedding_requested_model)
        return EmbeddingStatus(
            in_use=embedding_model_name(coach.embedding_provider, coach.embedding_model),
            in_use_provider=coach.embedding_provider,
            requested=requested,
            status=coach.embedding_job_status,
            done=coach.embedding_job_done,
            total=coach.embedding_job_total,
            error=coach.embedding_job_error,
        )

    async def request(
        self, uow: UnitOfWork, *, provider: str, model: str | None, base_url: str | None, api_key: str | None
    ) -> EmbeddingStatus:
        """Ask to switch the coach to ``provider`` (``local`` | ``openai``; ``openai`` needs ``model``, and
        takes an optional ``base_url``, default OpenAI's, and ``api_key``, stored encrypted), replacing any
        earlier request, and queue the ``reembed_coach`` job. Raises ``InvalidInput`` for an unknown
        provider, a missing model or one over :data:`~app.accounts.learning_settings.MAX_MODEL_NAME_CHARS`
        characters, a base URL the egress guard refuses, or an API key that cannot be sent
        (:func:`app.core.validation.provider_api_key`); nothing changes then."""
        if provider not in LLM_PROVIDERS:
            raise InvalidInput(f"provider must be one of {', '.join(LLM_PROVIDERS)}")
        model = bounded_text("model", model or "", MAX_MODEL_NAME_CHARS) or None
        if provider == "openai" and not model:
            raise InvalidInput("model is required for the openai provider")
        url = await self._accounts.check_outbound_url("base_url", base_url) if base_url else None
        key = provider_api_key("api_key", api_key or "")
        coach = await uow.coach()
        openai = provider == "openai"
        coach.embedding_requested_provider = provider
        coach.embedding_requested_model = model if openai else None
        coach.embedding_requested_base_url = url if openai else None
        coach.embedding_requested_api_key_encrypted = self._secrets.encrypt(key) if openai and key else None
        coach.embedding_request_id = uuid.uuid4()
        coach.embedding_job_status, coach.embedding_job_done, coach.embedding_job_total = QUEUED, 0, 0
        coach.embedding_job_error = None
        jobs.reembed_coach(uow.session, coach.id, coach.embedding_request_id)
        await uow.session.flush()
        return self.status(coach)

    async def run(self, coach_id: uuid.UUID, request_id: uuid.UUID) -> str:
        """The ``reembed_coach`` job: embed every text behind a vector of the coach with the requested model
        (:data:`REEMBED_BATCH` per call, progress on the coach row after each), then write the vectors and
        switch the embedder in use in one transaction; then catch up on rows stored meanwhile. A provider
        error marks the request ``failed`` with its message (the embedder in use stays); a newer request
        stops this one. Returns a one-line result."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            coach = await uow.coach()
            if coach.embedding_request_id != request_id or coach.embedding_job_status not in (QUEUED, RUNNING):
                return "superseded"
            embedder = await self._registry.requested_embedder(coach)
            pending = await pending_vectors(uow.session, coach_id, embedder.model)
            coach.embedding_job_status, coach.embedding_job_done = RUNNING, 0
            coach.embedding_job_total = sum(len(p.ids) for p in pending)
        try:
            vectors = [await self._embed(coach_id, request_id, embedder, p.texts) for p in pending]
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                coach = await self._current(uow, request_id)
                await write_vectors(uow.session, pending, vectors, embedder.model, switching=True)
                _switch(coach)
        except Superseded:
            return "superseded"
        except ProviderError as exc:
            await self.fail(coach_id, request_id, str(exc))
            return f"failed: {exc}"
        total = sum(len(p.ids) for p in pending)
        caught_up = await self._catch_up(coach_id, embedder)
        return f"{total} vectors re-embedded with {embedder.model} ({caught_up} stored meanwhile)"

    async def _current(self, uow: UnitOfWork, request_id: uuid.UUID) -> Coach:
        """The coach row, locked until the transaction ends; raises ``Superseded`` when ``request_id`` is no
        longer the coach's latest request."""
        coach = await uow.session.get(Coach, uow.coach_id, with_for_update=True, populate_existing=True)
        if coach is None or coach.embedding_request_id != request_id:
            raise Superseded
        return coach

    async def _embed(
        self, coach_id: uuid.UUID, request_id: uuid.UUID | None, embedder: Embedder, texts: Sequence[str]
    ) -> np.ndarray:
        """``texts``' vectors (float32, one row each), a batch at a time, adding each batch to the progress of
        ``request_id`` (none: no progress). Raises ``ProviderError``, or ``Superseded`` by a newer request."""
        out = np.empty((len(texts), embedder.dimensions), dtype=np.float32)
        for start in range(0, len(texts), REEMBED_BATCH):
            batch = texts[start : start + REEMBED_BATCH]
            out[start : start + len(batch)] = np.asarray(await embedder.embed(batch), dtype=np.float32)
            if request_id is None:
                continue
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                coach = await self._current(uow, request_id)
                coach.embedding_job_done += len(batch)
        return out

    async def fail(self, coach_id: uuid.UUID, request_id: uuid.UUID, error: str) -> None:
        """Mark request ``request_id`` of the coach ``failed`` with ``error`` (its first 1000 characters) unless a
        newer request replaced it; the embedder in use stays, and a new request can be made."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            try:
                coach = await self._current(uow, request_id)
            except Superseded:
                return
            coach.embedding_job_status, coach.embedding_job_error = FAILED, error[:1000]
        log.warning("coach %s: re-embedding failed, old embedder kept: %s", coach_id, error)

    async def _catch_up(self, coach_id: uuid.UUID, embedder: Embedder) -> int:
        """Re-embed in place the rows stored with the old model while the job ran, and the documents with chunks
        re-headed meanwhile (the model in use is now ``embedder``'s). Returns how many; a provider error is
        logged (those rows wait for the next change)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            pending = await pending_vectors(uow.session, coach_id, embedder.model)
        count = sum(len(p.ids) for p in pending)
        if not count:
            return 0
        try:
            vectors = [await self._embed(coach_id, None, embedder, p.texts) for p in pending]
        except ProviderError as exc:
            log.warning(
                "coach %s: %d vectors stored during the re-embedding kept their model: %s", coach_id, count, exc
            )
            return 0
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            await write_vectors(uow.session, pending, vectors, embedder.model, switching=False)
        return count


def _switch(coach: Coach) -> None:
    """Make the requested embedder the one in use and mark the request done."""
    coach.embedding_provider = coach.embedding_requested_provider or "local"
    coach.embedding_model = coach.embedding_requested_model
    coach.embedding_base_url = coach.embedding_requested_base_url
    coach.embedding_api_key_encrypted = coach.embedding_requested_api_key_encrypted
    coach.embedding_requested_provider = coach.embedding_requested_model = None
    coach.embedding_requested_base_url = coach.embedding_requested_api_key_encrypted = None
    coach.embedding_job_status, coach.embedding_job_error = DONE, None
