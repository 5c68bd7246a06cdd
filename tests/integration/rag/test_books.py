"""All three public-domain books from ../shared/data/books through the real pipeline."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import select

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.db.engine import tenant_session
from app.rag.models import Chunk
from tests.conftest import BOOKS, Coach, upload

EXPECTED_PAGES = {
    "meditations-marcus-aurelius.pdf": 162,
    "self-help-samuel-smiles.pdf": 321,
    "how-to-live-on-24-hours-a-day-arnold-bennett.pdf": 42,
}


@pytest.fixture(scope="module")
async def library(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> tuple[Coach, dict[str, str]]:
    coach = await make_coach("Library Coach")
    ids = {name: (await upload(http, coach, BOOKS / name))["id"] for name in EXPECTED_PAGES}
    await run_jobs()
    return coach, ids


async def _chunks(container: Container, coach: Coach, document_id: str) -> list[Chunk]:
    coach_id = uuid.UUID(coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        rows = await session.scalars(
            select(Chunk).where(Chunk.document_id == uuid.UUID(document_id)).order_by(Chunk.ordinal)
        )
        return list(rows.all())


@pytest.mark.slow
async def test_every_book_is_ready_with_all_pages(http: httpx.AsyncClient, library: tuple[Coach, dict]) -> None:
    coach, ids = library
    for name, pages in EXPECTED_PAGES.items():
        doc = (await http.get(f"/api/v1/documents/{ids[name]}", headers=coach.headers)).json()
        assert doc["status"] == "ready", doc
        assert doc["pages"] == pages
        assert doc["chunks"] >= pages  # roughly a page of prose holds one or more 179-token chunks
    titles = {
        name: (await http.get(f"/api/v1/documents/{ids[name]}", headers=coach.headers)).json()["title"] for name in ids
    }
    assert titles["self-help-samuel-smiles.pdf"] == "Self Help; with Illustrations of Conduct and Perseverance"
    assert titles["meditations-marcus-aurelius.pdf"] == "Meditations Marcus Aurelius"  # no /Title: from the name


@pytest.mark.slow
async def test_chunks_fit_the_embedder_and_keep_pages(container: Container, library: tuple[Coach, dict]) -> None:
    coach, ids = library
    embedder = container.registry.local_embedder()
    for name, pages in EXPECTED_PAGES.items():
        chunks = await _chunks(container, coach, ids[name])
        assert [c.ordinal for c in chunks] == list(range(len(chunks)))
        for chunk in chunks:
            assert embedder.count_tokens(chunk.text) <= embedder.max_input_tokens, (name, chunk.ordinal)
            assert 1 <= chunk.page_start <= chunk.page_end <= pages
            assert "\t" not in chunk.text and "  " not in chunk.text
            assert len(chunk.embedding) == 384
        pages_covered = {c.page_start for c in chunks}
        assert len(pages_covered) > pages * 0.8, "nearly every page contributes a chunk"


@pytest.mark.slow
async def test_hyphenation_at_line_ends_is_repaired(container: Container, library: tuple[Coach, dict]) -> None:
    coach, ids = library
    text = " ".join(c.text for c in await _chunks(container, coach, ids["meditations-marcus-aurelius.pdf"]))
    # the PDF breaks "immor-/tality" and "na-/ture" across lines (page 21)
    assert "immortality" in text and "immor- tality" not in text
    assert "It is against nature for men to oppose each other" in text


@pytest.mark.slow
async def test_rerunning_the_job_never_duplicates_chunks(
    http: httpx.AsyncClient, container: Container, library: tuple[Coach, dict], run_jobs: Callable[[], Awaitable[None]]
) -> None:
    coach, ids = library
    doc_id = ids["how-to-live-on-24-hours-a-day-arnold-bennett.pdf"]
    before = await _chunks(container, coach, doc_id)
    await container.documents.ingest(uuid.UUID(coach.coach_id), uuid.UUID(doc_id))  # direct re-run
    await container.redis.enqueue_job("ingest_document", coach.coach_id, doc_id)  # and a duplicate delivery
    await run_jobs()
    after = await _chunks(container, coach, doc_id)
    assert [c.text for c in after] == [c.text for c in before]
    doc = (await http.get(f"/api/v1/documents/{doc_id}", headers=coach.headers)).json()
    assert doc["status"] == "ready" and doc["chunks"] == len(after)


@pytest.mark.slow
async def test_deleting_a_document_deletes_its_chunks(
    http: httpx.AsyncClient, container: Container, library: tuple[Coach, dict]
) -> None:
    coach, ids = library
    doc_id = ids["self-help-samuel-smiles.pdf"]
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        assert await container.documents.count_chunks(uow, uuid.UUID(doc_id)) > 0
    assert (await http.delete(f"/api/v1/documents/{doc_id}", headers=coach.headers)).status_code == 204
    assert (await http.get(f"/api/v1/documents/{doc_id}", headers=coach.headers)).status_code == 404
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        assert await container.documents.count_chunks(uow, uuid.UUID(doc_id)) == 0
    assert (await http.delete(f"/api/v1/documents/{doc_id}", headers=coach.headers)).status_code == 404
