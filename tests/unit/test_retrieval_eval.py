"""BEIR evaluation pieces without a database: the metrics against hand-computed values, the loader's errors,
the seeded query split, near-duplicate collapse and contextual chunk headers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from app.core.errors import EvalDataError
from app.evals.retrieval import load_beir, mrr_at, ndcg_at, recall_at, scores, split_queries, support_anchors
from app.rag.chunking import ChunkSpec, chunk_header, chunk_pages, embedding_input
from app.rag.extract import Page
from app.rag.retrieval import Fusion, collapse_near_duplicates, fuse


def test_ndcg_matches_a_hand_computed_value() -> None:
    # relevant: a (2), b (1); ranking: x, a, b → DCG = 2/log2(3) + 1/log2(4); IDCG = 2/log2(2) + 1/log2(3)
    expected = (2 / math.log2(3) + 1 / 2) / (2 + 1 / math.log2(3))
    assert ndcg_at(["x", "a", "b"], {"a": 2, "b": 1}) == pytest.approx(expected)
    assert ndcg_at(["a", "b"], {"a": 2, "b": 1}) == pytest.approx(1.0)
    assert ndcg_at(["x"] * 10 + ["a"], {"a": 1}) == 0.0  # past the cut-off


def test_recall_and_mrr_match_hand_computed_values() -> None:
    ranked = [f"d{i}" for i in range(150)]
    assert recall_at(ranked, {"d3": 1, "d99": 1, "d120": 1}) == pytest.approx(2 / 3)
    assert mrr_at(ranked, {"d3": 1, "d5": 1}) == pytest.approx(1 / 4)
    assert mrr_at(ranked, {"d10": 1}) == 0.0  # rank 11 is outside MRR@10
    mean = scores({"q1": ["a"], "q2": ["x", "b"]}, {"q1": {"a": 1}, "q2": {"b": 1}})
    assert mean["mrr@10"] == pytest.approx(0.75)
    assert mean["recall@100"] == 1.0


def test_weighted_rrf() -> None:
    a, b = "a", "b"
    scored = fuse([a, b], [b], Fusion(k=10, dense_weight=1.0, lexical_weight=2.0))  # type: ignore[list-item]
    assert scored[a] == pytest.approx(1 / 11)
    assert scored[b] == pytest.approx(1 / 12 + 2 / 11)


def _beir(tmp_path: Path, qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\n") -> Path:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "body"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "question"}) + "\n")
    (tmp_path / "qrels" / "dev.tsv").write_text(qrels)
    return tmp_path


def test_load_beir_reads_the_layout(tmp_path: Path) -> None:
    beir = load_beir(_beir(tmp_path))
    assert beir.corpus == {"d1": ("T", "body")}
    assert beir.queries == {"q1": "question"}
    assert beir.qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    ("qrels", "split", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\n", "dev", "expected query-id<TAB>corpus-id<TAB>score"),
        ("query-id\tcorpus-id\tscore\nq9\td1\t1\n", "dev", "judges no query"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\n", "test", "qrels/test.tsv"),
    ],
)
def test_load_beir_errors_say_what_is_wrong(tmp_path: Path, qrels: str, split: str, message: str) -> None:
    with pytest.raises(EvalDataError, match=message.replace("(", r"\(")):
        load_beir(_beir(tmp_path, qrels), split)


def test_load_beir_rejects_a_bad_corpus_line(tmp_path: Path) -> None:
    root = _beir(tmp_path)
    (root / "corpus.jsonl").write_text("{not json\n")
    with pytest.raises(EvalDataError, match="corpus.jsonl:1: not JSON"):
        load_beir(root)


def test_query_split_is_seeded_and_disjoint() -> None:
    ids = [str(i) for i in range(400)]
    tuning, held_out = split_queries(ids, seed=16)
    assert set(tuning).isdisjoint(held_out) and len(tuning) + len(held_out) == 400
    assert 150 < len(tuning) < 250
    assert split_queries(list(reversed(ids)), seed=16)[0] == list(reversed(tuning))
    assert split_queries(ids, seed=17)[0] != tuning


def test_near_duplicates_collapse_and_overlap_does_not() -> None:
    passage = "Notice the urge, name it, and wait ninety seconds before acting on it at all today."
    overlapping = "wait ninety seconds before acting. Then breathe out slowly and count to ten before you reply."
    kept = collapse_near_duplicates([passage, overlapping, passage.upper() + " ", "Something else entirely here."])
    assert kept == [0, 1, 3]


class _NeverRead(str):
    def lower(self) -> str:
        raise AssertionError("a text after the limit was split into trigrams")


def test_collapsing_stops_once_the_limit_is_kept() -> None:
    """With ``limit`` (retrieval without a reranker needs only the first k kept), a duplicate before the limit is
    still skipped, and the texts after it are never read."""
    passage = "Notice the urge, name it, and wait ninety seconds before acting on it at all today."
    other = "Write down three things that went well, however small, before you go to sleep."
    texts = [passage, passage.upper(), other, _NeverRead("anything")]
    assert collapse_near_duplicates(texts, limit=2) == [0, 2]
    assert collapse_near_duplicates(texts[:3]) == [0, 2]


def test_chunks_know_their_markdown_heading_and_headers_stay_out_of_the_text() -> None:
    page = Page(None, "# Breathing\nSlow breaths calm the body.\n\n## Box method\nIn for four, hold for four.")
    chunks = chunk_pages([page], ChunkSpec(max_tokens=12, overlap_tokens=0))
    assert [c.heading for c in chunks][0] == "Breathing"
    assert {c.heading for c in chunks} == {"Breathing", "Box method"}
    last = chunks[-1]
    assert (last.heading, last.text) == ("Box method", "In for four, hold for four.")
    assert chunk_header("Calm Guide", last.heading) == "Calm Guide — Box method"
    assert chunk_header("Calm Guide", None) == "Calm Guide"
    assert all("Calm Guide" not in c.text for c in chunks)
    assert embedding_input("Calm Guide — Box method", last.text).startswith("Calm Guide — Box method\n")


def test_support_anchors_are_the_class_medians_and_auc_counts_ties_half() -> None:
    anchors = support_anchors([0.9, 0.7, 0.5], [0.5, 0.3, 0.1, 0.2])
    assert (anchors.low, anchors.high) == (0.25, 0.7)
    # pairs answerable > unanswerable: 0.9 and 0.7 beat all 4, 0.5 beats 3 and ties 1 → (4 + 4 + 3 + 0.5) / 12
    assert anchors.auc == pytest.approx(round(11.5 / 12, 3))
    assert anchors.separation([0.9, 0.7, 0.4], [0.5, 0.3]) == {
        "answerable_supported": pytest.approx(0.667),
        "unanswerable_unsupported": 0.5,
    }


def test_support_anchors_need_both_kinds_of_query() -> None:
    with pytest.raises(EvalDataError, match="answerable and unanswerable"):
        support_anchors([0.5], [])
