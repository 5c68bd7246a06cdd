"""``opencoach eval retrieval`` on a tiny BEIR corpus generated here, contextual headers (searched and embedded,
never shown or cited) and near-duplicate collapse, on the real database and embedder."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from app import cli
from app.container import Container
from app.core.config import Settings
from app.core.runtime import Services
from app.db.engine import tenant_session
from app.rag.models import Chunk
from app.rag.retrieval import lexical_ranking, retrieve
from tests.bm25_oracle import bm25_scores
from tests.conftest import Coach, upload

CORPUS = {
    "d1": ("Sleep and memory", "Deep sleep consolidates declarative memory in healthy adults."),
    "d2": ("Exercise and mood", "Aerobic running lowers depressive symptoms over twelve weeks."),
    "d3": ("Coffee", "Caffeine intake raises alertness but delays the onset of sleep."),
    "d4": ("Gardening", "Tomatoes need full sun and regular watering in summer."),
    "d5": ("Budgets", "A monthly budget tracks income against fixed and variable expenses."),
}
QUERIES = {
    "q1": ("Does deep sleep help memory consolidation?", "d1"),
    "q2": ("Running reduces depression symptoms", "d2"),
    "q3": ("How should tomatoes be watered?", "d4"),
}


def _write_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in CORPUS.items())
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items())
    )
    (root / "qrels" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items())
    )
    return root


def test_eval_retrieval_prints_the_json_shape(
    settings: Settings,
    services: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configured = settings.model_copy(
        update={
            "database_url": services.database_url,
            "migration_database_url": services.migration_database_url,
            "redis_url": services.redis_url,
        }
    )
    monkeypatch.setattr(cli, "get_settings", lambda: configured)
    code = cli.main(["eval", "retrieval", "--beir", str(_write_beir(tmp_path / "beir")), "--split", "dev", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"queries", "dense", "lexical", "fused", "latency_ms"}
    assert result["queries"] == 3
    for arm in ("dense", "lexical", "fused"):
        assert set(result[arm]) == {"ndcg@10", "recall@100", "mrr@10"}
        assert result[arm]["recall@100"] == 1.0  # five documents: every one is in the top 100
    assert result["fused"]["mrr@10"] == 1.0, result  # each query names its document's words
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p95"]


def test_eval_retrieval_bad_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "retrieval", "--beir", str(tmp_path)]) == 2
    assert "corpus.jsonl not found" in capsys.readouterr().err


GUIDE = b"## Breathing drills\n\nIn for four counts, hold for four, out for four, and hold again.\n"
"""A section heading and no level-1 heading: the document keeps its file name's title, which the text never says."""


async def test_headers_are_searched_but_never_shown_or_cited(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
) -> None:
    coach = await make_coach("Header Coach")
    doc = await upload(http, coach, "zanzibar-handbook.md", GUIDE)
    await run_jobs()
    coach_id = uuid.UUID(coach.coach_id)
    [vector] = await container.registry.local_embedder().embed(["zanzibar handbook"])
    async with tenant_session(container.sessionmaker, coach_id) as session:
        [chunk] = (await session.scalars(select(Chunk).where(Chunk.document_id == uuid.UUID(doc["id"])))).all()
        # the word is only in the document's title: found through the header
        found = await lexical_ranking(session, coach_id, "zanzibar", "all-MiniLM-L6-v2", 5)
        hits = await retrieve(
            session, coach_id, query="zanzibar", query_embedding=vector, embedding_model="all-MiniLM-L6-v2", k=3
        )
    assert chunk.header == "Zanzibar Handbook — Breathing drills"
    assert "Zanzibar" not in chunk.text
    assert found == [chunk.id]
    assert [h.chunk_id for h in hits] == [chunk.id]
    assert "Zanzibar" not in hits[0].text
    assert "header" not in hits[0].citation() and "Zanzibar Handbook —" not in json.dumps(hits[0].citation())


async def test_near_duplicate_chunks_are_collapsed(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
) -> None:
    coach = await make_coach("Duplicate Coach")
    body = b"Write down three things that went well today and why each of them happened."
    await upload(http, coach, "gratitude.txt", body)
    await upload(http, coach, "gratitude-copy.txt", body + b"\n")  # another file (the same one is refused)
    await upload(http, coach, "other.txt", b"Walk outside for ten minutes after lunch, without your phone.")
    await run_jobs()
    coach_id = uuid.UUID(coach.coach_id)
    query = "three things that went well today"
    [vector] = await container.registry.local_embedder().embed([query])
    async with tenant_session(container.sessionmaker, coach_id) as session:
        hits = await retrieve(
            session, coach_id, query=query, query_embedding=vector, embedding_model="all-MiniLM-L6-v2", k=3
        )
    texts = [h.text for h in hits]
    assert texts.count(body.decode()) == 1, texts
    assert len(hits) == 2


SLEEP_NOTES = {
    "rest.txt": b"Sleep early. Sleep well, sleep long: sleep is the first habit.",
    "focus.txt": b"Deep work needs a quiet room, a clear goal and a good night of sleep.",
    "money.txt": b"Track every expense for a month before you set a budget.",
    "walks.txt": b"A morning walk in daylight helps the night's sleep and the day's focus.",
}


async def test_bm25_ranks_by_the_formula_over_the_coachs_own_term_statistics(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
) -> None:
    """The lexical arm's SQL against BM25 (Robertson & Zaragoza 2009; k1 1.2, b 0.75) computed here from the
    same tsvectors: document frequency over the coach's chunks, term frequency = a lexeme's positions, length =
    the chunk's tokens. Another coach's chunks on the same words must not count."""
    coach, other = await make_coach("BM25 Coach"), await make_coach("BM25 Other")
    for name, body in SLEEP_NOTES.items():
        await upload(http, coach, name, body)
    await upload(http, other, "sleep.txt", b"Sleep, sleep, sleep and more sleep for focus.")
    await run_jobs()
    coach_id = uuid.UUID(coach.coach_id)
    query = "sleep and focus at night"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        found = await lexical_ranking(session, coach_id, query, "all-MiniLM-L6-v2", 10)
        words = set(
            (
                await session.scalars(
                    text("SELECT unnest(tsvector_to_array(to_tsvector('english', :q)))"), {"q": query}
                )
            ).all()
        )
        rows = (
            await session.execute(
                text(
                    "SELECT c.id, c.token_count, t.lexeme, coalesce(array_length(t.positions, 1), 1) "
                    "FROM chunks c, unnest(c.tsv) AS t(lexeme, positions, weights) WHERE c.coach_id = :cid"
                ),
                {"cid": coach_id},
            )
        ).all()
    scores = bm25_scores(rows, words, k1=1.2, b=0.75)
    expected = sorted(scores, key=lambda c: (-scores[c], str(c)))
    assert len(expected) == 3 and found == expected  # money.txt holds none of the words
