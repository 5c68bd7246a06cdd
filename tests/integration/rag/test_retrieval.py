"""Retrieval: a small tenant next to a large one still gets k hits (it is searched exactly, without an HNSW
index: big tenants have indexes of their own, tests/integration/rag/test_vector_index.py), and the hybrid
ranking surfaces the passage that answers the question."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import select

from app.chat.turn.state import TurnResult
from app.container import Container
from app.db.engine import tenant_session
from app.rag import retrieval
from app.rag.models import Chunk
from app.rag.retrieval import CANDIDATES_PER_K, FUSION, Fusion, collapse_near_duplicates, rank, retrieve
from tests.conftest import Coach, ReadyCoach, upload

SMALL_NOTES = "\n\n".join(
    f"## Practice {i}\n\n" + f"Exercise {i}: notice the urge, name it, and wait ninety seconds before acting. " * 12
    for i in range(8)
).encode()


async def test_small_tenant_gets_k_hits_next_to_a_large_one(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
    meditations_coach: ReadyCoach,  # a large neighbour: hundreds of chunks of another tenant
) -> None:
    coach = await make_coach("Small Coach")
    doc = await upload(http, coach, "practices.md", SMALL_NOTES)
    await run_jobs()
    chunks = (await http.get(f"/api/v1/documents/{doc['id']}", headers=coach.headers)).json()["chunks"]
    assert 5 <= chunks < 20

    coach_id = uuid.UUID(coach.coach_id)
    # a query far from this tenant's notes and close to the neighbour's book: a shared HNSW graph's first
    # candidates would all belong to the neighbour
    [vector] = await container.registry.local_embedder().embed(["the gods, the universe and the nature of all things"])
    async with tenant_session(container.sessionmaker, coach_id) as session:
        hits = await retrieve(
            session, coach_id, query="zzz", query_embedding=vector, embedding_model="all-MiniLM-L6-v2", k=5
        )
    assert len(hits) == 5
    assert {h.document_id for h in hits} == {uuid.UUID(doc["id"])}


async def test_hybrid_ranking_finds_the_answering_passage(container: Container, meditations_coach: ReadyCoach) -> None:
    coach_id = uuid.UUID(meditations_coach.coach.coach_id)
    query = "meddlers, the ungrateful, the insolent: I cannot be angry with my brother"
    [vector] = await container.registry.local_embedder().embed([query])
    async with tenant_session(container.sessionmaker, coach_id) as session:
        hits = await retrieve(
            session, coach_id, query=query, query_embedding=vector, embedding_model="all-MiniLM-L6-v2", k=3
        )
    assert "Today I shall have to do with meddlers" in hits[0].text, [(h.page, h.text[:60]) for h in hits]
    assert hits[0].page in (20, 21)  # Book II opens on page 21; its chunk starts at the end of page 20


QUERIES = [
    "How do I stay calm when people are rude to me?",
    "death is nothing to fear",
    "what should I do when I wake up and do not want to get out of bed",
    "the universe is change; our life is what our thoughts make it",
    "gratitude to my teachers and family",
]


@pytest.mark.parametrize("fusion", [FUSION, Fusion(k=60)], ids=["production", "equal-weights"])
async def test_the_one_statement_ranks_as_the_arms_and_their_fusion_do(
    container: Container, meditations_coach: ReadyCoach, monkeypatch: pytest.MonkeyPatch, fusion: Fusion
) -> None:
    """``retrieve``'s one statement against :func:`rank` (both arms, then RRF in Python) followed by the near-duplicate
    collapse: the same passages in the same order with the same fused scores, to the bit. With equal weights a
    chunk only one arm found ties with one only the other arm found at the same rank: the tie keeps Python's
    order (the stable sort over dense candidates first), which the statement must reproduce."""
    monkeypatch.setattr(retrieval, "FUSION", fusion)
    coach_id = uuid.UUID(meditations_coach.coach.coach_id)
    k, ties = 10, 0
    for query in QUERIES:
        [vector] = await container.registry.local_embedder().embed([query])
        async with tenant_session(container.sessionmaker, coach_id) as session:
            ranked = await rank(
                session,
                coach_id,
                query=query,
                query_embedding=vector,
                embedding_model="all-MiniLM-L6-v2",
                n=k * CANDIDATES_PER_K,
                fusion=fusion,
            )
            hits = await retrieve(
                session, coach_id, query=query, query_embedding=vector, embedding_model="all-MiniLM-L6-v2", k=k
            )
            top = ranked.fused[: 2 * k]
            texts = dict((await session.execute(select(Chunk.id, Chunk.text).where(Chunk.id.in_(top)))).all())
        expected = [top[i] for i in collapse_near_duplicates([texts[c] for c in top], limit=k)]
        assert [h.chunk_id for h in hits] == expected, query
        assert [h.rrf for h in hits] == [ranked.fused_scores[c] for c in expected], query
        scores = [ranked.fused_scores[c] for c in top]
        ties += sum(a == b for a, b in zip(scores, scores[1:], strict=False))
    assert ties > 0 or fusion.lexical_weight != fusion.dense_weight  # the tie order was checked


async def test_the_reranker_is_asked_with_no_database_connection_held(
    container: Container, meditations_coach: ReadyCoach, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's reranker is an HTTP call: it ran inside the retrieval's transaction, so a slow one held a
    pooled connection per turn, the connections every tenant's turns need. It now gets the candidates after the
    connection is back in the pool."""
    held: list[int] = []

    class Reranker:
        async def scores(self, query: str, texts: list[str]) -> list[float]:
            await asyncio.sleep(0.5)  # the turn's other reads (memory, learning) are done meanwhile
            held.append(container.engine.pool.checkedout())
            return [float(i) for i in range(len(texts))]  # the last candidate first

    monkeypatch.setattr(container.registry, "reranker", Reranker)
    coach_id, client_id = uuid.UUID(meditations_coach.coach.coach_id), uuid.UUID(meditations_coach.client_id)
    results = [item async for item in container.chat.turn(coach_id, client_id, "How should I face death calmly?")]

    assert held == [0], "no connection checked out while the reranker answers"
    assert isinstance(results[-1], TurnResult)
