"""Streaming ingestion: chunks are searchable batch by batch while the document is ``processing``; a failure
midway leaves it ``failed`` with the reason; a re-run completes it with every chunk stored once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence

import httpx
import pytest
from sqlalchemy import func, select

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.llm.base import Embedder, ProviderError
from app.llm.registry import ProviderRegistry
from app.rag import pipeline
from app.rag.chunking import ChunkSpec, chunk_pages
from app.rag.extract import PDF, extract_pages
from app.rag.models import Chunk
from app.rag.retrieval import retrieve
from tests.conftest import BOOKS, Coach, upload

BENNETT = BOOKS / "how-to-live-on-24-hours-a-day-arnold-bennett.pdf"


class GatedEmbedder:
    """The real embedder, whose second call waits for ``gate`` and then raises ``fail`` if it is set."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.model, self.max_input_tokens = inner, inner.model, inner.max_input_tokens
        self.dimensions = inner.dimensions
        self.calls = 0
        self.waiting, self.gate = asyncio.Event(), asyncio.Event()
        self.fail: Exception | None = None

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls == 2:
            self.waiting.set()
            await self.gate.wait()
            if self.fail is not None:
                raise self.fail
        return await self.inner.embed(texts)


async def _state(container: Container, coach: Coach, document_id: uuid.UUID) -> tuple[str, int, int, int, int]:
    """(status, chunks on the document, chunk rows, distinct ordinals, pages_searchable)."""
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        document = await container.documents.get(uow, document_id)
        rows, ordinals = (
            await uow.session.execute(
                select(func.count(), func.count(func.distinct(Chunk.ordinal))).where(Chunk.document_id == document_id)
            )
        ).one()
        return document.status, document.chunks, rows, ordinals, document.pages_searchable


async def _found(container: Container, coach: Coach, embedder: Embedder, query: str) -> set[uuid.UUID]:
    """Documents of the chunks hybrid retrieval returns for ``query``."""
    [vector] = await embedder.embed([query])
    coach_id = uuid.UUID(coach.coach_id)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        hits = await retrieve(
            uow.session, coach_id, query=query, query_embedding=vector, embedding_model=embedder.model, k=5
        )
    return {hit.document_id for hit in hits}


async def test_chunks_are_searchable_while_processing_and_a_failure_midway_then_a_retry_stores_each_once(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    registry: ProviderRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coach = await make_coach("Streaming")
    document_id = uuid.UUID((await upload(http, coach, BENNETT))["id"])
    gated = GatedEmbedder(registry.local_embedder())

    async def gated_for(coach: object) -> GatedEmbedder:
        return gated

    monkeypatch.setattr(registry, "embedder_for", gated_for)
    monkeypatch.setattr(pipeline, "COMMIT_CHUNKS", 8)
    query = "twenty-four hours a day"

    first = asyncio.create_task(container.documents.ingest(uuid.UUID(coach.coach_id), document_id))
    await asyncio.wait_for(gated.waiting.wait(), 120)
    status, chunks, rows, ordinals, pages = await _state(container, coach, document_id)
    assert (status, chunks, rows, ordinals) == ("processing", 8, 8, 8)
    assert pages >= 1
    assert document_id in await _found(container, coach, gated.inner, query)  # searchable while processing

    gated.fail = ProviderError("embedding endpoint timed out")
    gated.gate.set()
    assert await asyncio.wait_for(first, 120) is None
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        failed = await container.documents.get(uow, document_id)
    assert (failed.status, failed.error) == ("failed", "embedding endpoint timed out")
    assert document_id not in await _found(container, coach, gated.inner, query)  # a failed document is not used

    timings = await container.documents.ingest(uuid.UUID(coach.coach_id), document_id)
    assert timings is not None and timings.first_searchable is not None
    expected = len(chunk_pages(extract_pages(BENNETT.read_bytes(), PDF).pages, ChunkSpec.for_embedder(256)))
    assert await _state(container, coach, document_id) == ("ready", expected, expected, expected, 42)
    assert timings.chunks == expected
    assert document_id in await _found(container, coach, gated.inner, query)


async def test_a_re_run_of_a_ready_document_keeps_its_chunks_and_doubles_none(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """arq runs a job at least once: running the ingestion of a ready document again stores nothing twice."""
    coach = await make_coach("Twice")
    document_id = uuid.UUID((await upload(http, coach, "plan.txt", b"Walk every day. Write one line. " * 400))["id"])
    await run_jobs()
    before = await _state(container, coach, document_id)
    assert before[0] == "ready" and before[1] == before[2] == before[3] > 8
    await container.documents.ingest(uuid.UUID(coach.coach_id), document_id)
    assert await _state(container, coach, document_id) == before
