"""The lexical arm's BM25: the collection statistics the triggers of migration 0028 keep stay equal to a count
over the chunks through every kind of write, and the ranking is BM25 over the chunks its postings budget
allows (all of them for a small coach)."""

from __future__ import annotations

import json
import random
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text, update

from app.accounts.models import Coach as CoachRow
from app.container import Container
from app.core.runtime import Services
from app.db.engine import make_engine, tenant_session
from app.rag import retrieval
from app.rag.models import Chunk, Document, DocumentStatus, DocumentTerm
from tests.bm25_oracle import bm25_scores
from tests.conftest import Coach

SCIFACT = Path(__file__).resolve().parents[4] / "shared" / "data" / "scifact"
MODEL = "all-MiniLM-L6-v2"
VECTOR = [1.0] + [0.0] * 383

_COUNTED = text(
    """
    SELECT c.document_id, t.term, count(*) AS df
    FROM chunks c CROSS JOIN LATERAL unnest(tsvector_to_array(c.tsv)) AS t(term)
    WHERE c.coach_id = :coach_id GROUP BY c.document_id, t.term
    """
)


def _abstracts(count: int, seed: int) -> list[str]:
    """``count`` SciFact abstracts (a real word distribution), drawn with ``seed``."""
    with (SCIFACT / "corpus.jsonl").open() as corpus:
        texts = [json.loads(line)["text"] for line in corpus]
    return random.Random(seed).sample(texts, count)


async def _document(container: Container, coach_id: uuid.UUID, texts: list[str]) -> uuid.UUID:
    """A ready document of ``texts`` as chunks (lengths: their word counts), stored in one transaction."""
    async with tenant_session(container.sessionmaker, coach_id) as session:
        document = Document(
            coach_id=coach_id,
            title="Abstracts",
            filename="abstracts.txt",
            content_type="text/plain",
            size_bytes=1,
            sha256="0" * 64,
            original=b"-",
            status=DocumentStatus.READY,
            embedding_model=MODEL,
        )
        session.add(document)
        await session.flush()
        session.add_all(
            Chunk(
                coach_id=coach_id,
                document_id=document.id,
                ordinal=i,
                text=body,
                header="Abstracts",
                heading="",
                token_count=len(body.split()),
                embedding=VECTOR,
            )
            for i, body in enumerate(texts)
        )
    return document.id


async def _assert_statistics_match(container: Container, coach_id: uuid.UUID) -> None:
    """``document_terms`` and the documents' counters equal a count over the coach's chunks."""
    async with tenant_session(container.sessionmaker, coach_id) as session:
        counted = {(r.document_id, r.term): r.df for r in await session.execute(_COUNTED, {"coach_id": coach_id})}
        kept = {(t.document_id, t.term): t.df for t in await session.scalars(select(DocumentTerm))}
        stored = select(Chunk.document_id, func.count(), func.sum(Chunk.token_count)).group_by(Chunk.document_id)
        counts = {r[0]: (r[1], r[2]) for r in await session.execute(stored)}
        documents = (await session.execute(select(Document.id, Document.indexed_chunks, Document.indexed_tokens))).all()
    assert kept == counted
    assert {d.id: (d.indexed_chunks, d.indexed_tokens) for d in documents} == {
        d.id: counts.get(d.id, (0, 0)) for d in documents
    }


async def test_term_statistics_follow_every_write_to_chunks(
    container: Container, services: Services, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach_id = uuid.UUID((await make_coach("Statistics Coach")).coach_id)
    first = await _document(container, coach_id, _abstracts(30, seed=1))
    second = await _document(container, coach_id, _abstracts(20, seed=2))
    await _assert_statistics_match(container, coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        assert await session.scalar(select(func.count()).select_from(DocumentTerm)) > 1000

    async with tenant_session(container.sessionmaker, coach_id) as session:  # a re-run drops the tail
        await session.execute(delete(Chunk).where(Chunk.document_id == first, Chunk.ordinal >= 20))
    await _assert_statistics_match(container, coach_id)

    async with tenant_session(container.sessionmaker, coach_id) as session:  # the searched text changes
        await session.execute(
            update(Chunk)
            .where(Chunk.document_id == second, Chunk.ordinal < 5)
            .values(text="Zebrafish regenerate cardiac tissue after injury.", token_count=7)
        )
    await _assert_statistics_match(container, coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        zebrafish = await session.scalar(select(DocumentTerm.df).where(DocumentTerm.term == "zebrafish"))
    assert zebrafish == 5

    async with tenant_session(container.sessionmaker, coach_id) as session:  # a new vector changes nothing here
        await session.execute(
            update(Chunk).where(Chunk.document_id == second).values(embedding=[0.0, 1.0] + [0.0] * 382)
        )
    await _assert_statistics_match(container, coach_id)

    async with tenant_session(container.sessionmaker, coach_id) as session:  # cascades from the document
        await session.execute(delete(Document).where(Document.id == first))
    await _assert_statistics_match(container, coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        assert set(await session.scalars(select(DocumentTerm.document_id).distinct())) == {second}

    async with tenant_session(container.sessionmaker, coach_id) as session:  # and from the coach
        await session.execute(delete(CoachRow).where(CoachRow.id == coach_id))
    owner = make_engine(services.migration_database_url, pool_size=1)
    try:
        async with owner.connect() as conn:
            left = await conn.scalar(text("SELECT count(*) FROM document_terms WHERE coach_id = :c"), {"c": coach_id})
    finally:
        await owner.dispose()
    assert left == 0


def _oracle(
    rows: list[tuple[uuid.UUID, int, str, int]], words: set[str], n: int, budget: int
) -> list[tuple[uuid.UUID, float]]:
    """BM25 (Lucene's idf, k1 = 1.2, b = 0.75) from every chunk's (id, length, lexeme, tf) rows, over the chunks
    holding the rarest query words whose document frequencies fit in ``budget`` (at least the rarest)."""
    df = Counter(word for _, _, word, _ in rows if word in words)
    essential: set[str] = set()
    postings = 0
    for word in sorted(df, key=lambda w: (df[w], w)):
        postings += df[word]
        if postings <= budget or not essential:
            essential.add(word)
    candidates = {chunk_id for chunk_id, _, word, _ in rows if word in essential}
    scores = bm25_scores(rows, words, retrieval.BM25_K1, retrieval.BM25_B)
    ranked = [(chunk_id, score) for chunk_id, score in scores.items() if chunk_id in candidates]
    return sorted(ranked, key=lambda item: (-item[1], item[0]))[:n]


@pytest.mark.parametrize("budget", [sys.maxsize, 40])
async def test_bm25_scores_the_chunks_of_the_rarest_words_within_the_budget(
    container: Container,
    make_coach: Callable[..., Awaitable[Coach]],
    monkeypatch: pytest.MonkeyPatch,
    budget: int,
) -> None:
    """Unbounded, the ranking is exhaustive BM25; with a budget below the query words' postings, it is BM25
    over the chunks holding the rarest words only, and differs from the exhaustive one for some claims."""
    coach_id = uuid.UUID((await make_coach("Budget Coach")).coach_id)
    await _document(container, coach_id, _abstracts(250, seed=3))
    await _document(container, coach_id, _abstracts(150, seed=4))
    with (SCIFACT / "queries.jsonl").open() as queries:
        claims = [json.loads(line)["text"] for line in queries][:40]
    monkeypatch.setattr(retrieval, "BM25_CANDIDATES", budget)
    narrowed = 0
    async with tenant_session(container.sessionmaker, coach_id) as session:
        rows: list[tuple[uuid.UUID, int, str, int]] = (
            await session.execute(
                text(
                    "SELECT c.id, c.token_count, t.word, coalesce(array_length(t.positions, 1), 1) "
                    "FROM chunks c CROSS JOIN LATERAL unnest(c.tsv) AS t(word, positions, weights) "
                    "WHERE c.coach_id = :c"
                ),
                {"c": coach_id},
            )
        ).all()
        for claim in claims:
            words = set(
                await session.scalars(
                    text("SELECT DISTINCT t.word FROM unnest(to_tsvector('english', :q)) AS t(word, p, w)"),
                    {"q": claim},
                )
            )
            expected = _oracle(rows, words, 20, budget)
            ranked = await retrieval.lexical_ranking(session, coach_id, claim, MODEL, 20)
            assert len(ranked) == len(expected), claim
            for got, (want, score) in zip(ranked, expected, strict=True):
                # equal, or swapped with a chunk of the same score (summed in another order)
                assert got == want or any(abs(s - score) < 1e-9 for c, s in expected if c == got), claim
            narrowed += [c for c, _ in expected] != [c for c, _ in _oracle(rows, words, 20, sys.maxsize)]
    assert (narrowed > 0) == (budget < sys.maxsize), narrowed


async def test_bm25_ranks_only_the_current_tenants_chunks(
    container: Container, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """``bm25_ranking`` reads as its owner (to use the full-text index under row-level security) and must filter
    by the tenant itself: a word only another coach's chunks hold finds nothing."""
    owner_id = uuid.UUID((await make_coach("Owning Coach")).coach_id)
    other_id = uuid.UUID((await make_coach("Other Coach")).coach_id)
    await _document(container, owner_id, ["Quokkas thrive on Rottnest Island."])
    await _document(container, other_id, ["Wombats dig long burrows."])
    async with tenant_session(container.sessionmaker, other_id) as session:
        assert await retrieval.lexical_ranking(session, other_id, "quokkas", MODEL, 5) == []
        assert len(await retrieval.lexical_ranking(session, other_id, "quokkas wombats", MODEL, 5)) == 1
    async with tenant_session(container.sessionmaker, owner_id) as session:
        assert len(await retrieval.lexical_ranking(session, owner_id, "quokkas", MODEL, 5)) == 1
