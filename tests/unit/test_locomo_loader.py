"""The LoCoMo loader and the recall arithmetic of :mod:`app.evals.memory`, without a database.

Files are small synthetic samples in LoCoMo's shape (``../shared/data/locomo/locomo_dev.json``): a list of
``{"sample_id", "conversation": {speaker_a, speaker_b, session_N_date_time, session_N: [turns]}, "qa": [...]}``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.evals.memory import KS, TURN_SPACING, EvalDataError, Scores, load_locomo, max_session, parse_session_time
from app.rag.chunking import count_tokens


def turns(session: int, count: int, speakers: tuple[str, str] = ("Jordan", "Sam")) -> list[dict[str, str]]:
    return [
        {"speaker": speakers[i % 2], "dia_id": f"D{session}:{i + 1}", "text": f"Line {i + 1} of session {session}."}
        for i in range(count)
    ]


def sample(**conversation: Any) -> dict[str, Any]:
    """A LoCoMo sample with the given sessions (``session_N=[...]``, ``session_N_date_time="..."``)."""
    return {
        "sample_id": "conv-test",
        "conversation": {"speaker_a": "Jordan", "speaker_b": "Sam", **conversation},
        "qa": [
            {"question": "What did Jordan adopt?", "answer": "A beagle", "evidence": ["D1:1"], "category": 4},
            {"question": "Which two things?", "answer": "x and y", "evidence": ["D1:1; D2:2"], "category": 1},
            {
                "question": "What is Jordan's cat called?",
                "evidence": ["D1:2"],
                "category": 5,
                "adversarial_answer": "Tom",
            },
        ],
    }


def write(tmp_path: Path, data: Any, name: str = "locomo.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- session dates --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56, tzinfo=UTC)),
        ("10:37 am on 27 June, 2023", datetime(2023, 6, 27, 10, 37, tzinfo=UTC)),
        ("12:09 am on 13 August, 2023", datetime(2023, 8, 13, 0, 9, tzinfo=UTC)),
        ("12:30 pm on 1 January 2024", datetime(2024, 1, 1, 12, 30, tzinfo=UTC)),
        ("  7:05 PM on 22 october, 2023 ", datetime(2023, 10, 22, 19, 5, tzinfo=UTC)),
    ],
)
def test_parse_session_time(value: str, expected: datetime) -> None:
    assert parse_session_time(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "2023-05-08 13:56",
        "1:56 on 8 May, 2023",
        "13:56 pm on 8 May, 2023",
        "1:56 pm on 31 February, 2023",
    ],
)
def test_parse_session_time_rejects_bad_dates_naming_the_value(value: str) -> None:
    with pytest.raises(EvalDataError, match="unrecognised session date") as caught:
        parse_session_time(value)
    assert repr(value) in str(caught.value)


# --- load_locomo ----------------------------------------------------------------------------------------


def test_turns_are_stored_turn_spacing_apart_from_the_session_date(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            sample(
                session_1_date_time="1:56 pm on 8 May, 2023",
                session_1=turns(1, 3),
                session_2_date_time="9:00 am on 9 May, 2023",
                session_2=turns(2, 2),
            )
        ],
    )
    [conv] = load_locomo(path)
    assert (conv.sample_id, conv.speaker_a, conv.speaker_b) == ("conv-test", "Jordan", "Sam")
    start = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert [(t.dia_id, t.speaker, t.at) for t in conv.sessions[0]] == [
        ("D1:1", "Jordan", start),
        ("D1:2", "Sam", start + TURN_SPACING),
        ("D1:3", "Jordan", start + 2 * TURN_SPACING),
    ]
    assert conv.sessions[0][0].text == "Line 1 of session 1."
    assert [t.at for t in conv.sessions[1]] == [
        datetime(2023, 5, 9, 9, 0, tzinfo=UTC),
        datetime(2023, 5, 9, 9, 0, tzinfo=UTC) + TURN_SPACING,
    ]


def test_sessions_are_in_numeric_order_and_empty_ones_are_left_out(tmp_path: Path) -> None:
    dates = {f"session_{n}_date_time": f"1:00 pm on {n} May, 2023" for n in (1, 2, 3, 10)}
    # Keys in JSON order 10, 2, 1: lexical order would put session_10 before session_2.
    path = write(
        tmp_path, [sample(**dates, session_10=turns(10, 1), session_2=turns(2, 1), session_3=[], session_1=turns(1, 1))]
    )
    [conv] = load_locomo(path)
    assert [s[0].dia_id for s in conv.sessions] == ["D1:1", "D2:1", "D10:1"]


def test_max_sessions_keeps_the_first_sessions(tmp_path: Path) -> None:
    dates = {f"session_{n}_date_time": f"1:00 pm on {n} May, 2023" for n in range(1, 4)}
    path = write(tmp_path, [sample(**dates, session_1=turns(1, 2), session_2=turns(2, 2), session_3=turns(3, 2))])
    [conv] = load_locomo(path, max_sessions=2)
    assert [[t.dia_id for t in s] for s in conv.sessions] == [["D1:1", "D1:2"], ["D2:1", "D2:2"]]
    assert len(load_locomo(path)[0].sessions) == 3


def test_qa_items_keep_category_answer_and_split_evidence(tmp_path: Path) -> None:
    path = write(tmp_path, [sample(session_1_date_time="1:56 pm on 8 May, 2023", session_1=turns(1, 2))])
    [conv] = load_locomo(path)
    assert [(q.question, q.answer, q.evidence, q.category) for q in conv.qa] == [
        ("What did Jordan adopt?", "A beagle", ("D1:1",), 4),
        ("Which two things?", "x and y", ("D1:1", "D2:2"), 1),  # "D1:1; D2:2" is split
        ("What is Jordan's cat called?", "", ("D1:2",), 5),  # category 5 has no "answer"
    ]


def test_a_file_of_several_samples(tmp_path: Path) -> None:
    one = sample(session_1_date_time="1:56 pm on 8 May, 2023", session_1=turns(1, 2))
    two = sample(session_1_date_time="2:00 pm on 9 May, 2023", session_1=turns(1, 4))
    del two["sample_id"]  # the sample's index stands in for a missing id
    assert [(c.sample_id, len(c.sessions[0])) for c in load_locomo(write(tmp_path, [one, two]))] == [
        ("conv-test", 2),
        ("1", 4),
    ]


def test_the_dev_file_loads() -> None:
    path = Path(__file__).resolve().parents[3] / "shared" / "data" / "locomo" / "locomo_dev.json"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    conversations = load_locomo(path, max_sessions=2)
    assert conversations and all(1 <= len(c.sessions) <= 2 and c.qa for c in conversations)


# --- bad input: EvalDataError with a message that says what and where -----------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(EvalDataError) as caught:
        load_locomo(path)
    assert str(caught.value) == f"{path}: no such file"


@pytest.mark.parametrize("content", [b"not json at all", b'[{"conversation": ', b"\xff\xfe\x00garbage"])
def test_not_json(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(EvalDataError, match="not a readable JSON file") as caught:
        load_locomo(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="not a readable JSON file"):
        load_locomo(tmp_path)


@pytest.mark.parametrize("data", [{"conversation": {}}, "samples", 3, None, []])
def test_not_a_non_empty_list(tmp_path: Path, data: Any) -> None:
    path = write(tmp_path, data)
    with pytest.raises(EvalDataError) as caught:
        load_locomo(path)
    assert str(caught.value) == f"{path}: expected a non-empty JSON list of LoCoMo samples"


def test_sample_without_conversation(tmp_path: Path) -> None:
    good = sample(session_1_date_time="1:56 pm on 8 May, 2023", session_1=turns(1, 2))
    path = write(tmp_path, [good, {"qa": [], "sample_id": "x"}])
    with pytest.raises(EvalDataError) as caught:
        load_locomo(path)
    assert str(caught.value) == f"{path}: sample 1: not in LoCoMo's format (missing 'conversation')"


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ({"session_1_date_time": None}, r"\(missing 'session_1_date_time'\)"),
        ({"speaker_a": None}, r"\(missing 'speaker_a'\)"),
        ({"session_1": [{"speaker": "Jordan", "text": "hi"}]}, r"\(missing 'dia_id'\)"),
        ({"session_1": "not a list"}, r"not in LoCoMo's format \(string indices must be integers"),
    ],
)
def test_malformed_conversation(tmp_path: Path, broken: dict[str, Any], expected: str) -> None:
    data = sample(session_1_date_time="1:56 pm on 8 May, 2023", session_1=turns(1, 2))
    for key, value in broken.items():
        if value is None:
            del data["conversation"][key]
        else:
            data["conversation"][key] = value
    path = write(tmp_path, [data])
    with pytest.raises(EvalDataError, match=expected) as caught:
        load_locomo(path)
    assert str(caught.value).startswith(f"{path}: sample 0: ")


def test_bad_qa_item(tmp_path: Path) -> None:
    data = sample(session_1_date_time="1:56 pm on 8 May, 2023", session_1=turns(1, 2))
    data["qa"].append({"question": "Where?", "evidence": ["D1:1"], "category": "four"})
    with pytest.raises(EvalDataError, match=r"sample 0: not in LoCoMo's format \(invalid literal for int\(\)"):
        load_locomo(write(tmp_path, [data]))


def test_bad_session_date(tmp_path: Path) -> None:
    path = write(tmp_path, [sample(session_1_date_time="the eighth of May", session_1=turns(1, 2))])
    with pytest.raises(EvalDataError) as caught:
        load_locomo(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: sample 0: unrecognised session date ")
    assert "'the eighth of May'" in message


def test_sample_without_sessions(tmp_path: Path) -> None:
    path = write(tmp_path, [sample(session_1_date_time="1:56 pm on 8 May, 2023", session_1=[])])
    with pytest.raises(EvalDataError) as caught:
        load_locomo(path)
    assert str(caught.value) == f"{path}: sample 0: has no sessions"


# --- scoring --------------------------------------------------------------------------------------------


def test_scores_count_full_recall_coverage_and_tokens_per_k() -> None:
    """Question 1's two evidence turns are ranked 3rd and 8th: at k=5 one of two is covered (no hit, coverage
    0.5), from k=10 both. Question 2 retrieves nothing. Tokens sum over the top k only."""
    text = "Some retrieved turn about the beagle."
    size = count_tokens(text)
    ranked = [({f"D1:{i}"}, text) for i in range(1, 26)]
    ranked[2] = ({"D1:90"}, text)
    ranked[7] = ({"D1:91", "D2:1"}, text)  # an item (a summary) may stand for several turns
    scores = Scores()
    scores.add({"D1:90", "D1:91"}, ranked)
    assert (scores.hits, scores.coverage) == ({5: 0, 10: 1, 20: 1}, {5: 0.5, 10: 1.0, 20: 1.0})
    assert scores.tokens == {5: 5 * size, 10: 10 * size, 20: 20 * size}
    scores.add({"D3:3"}, [])
    assert scores.report(2) == {
        "evidence_recall@5": 0.0,
        "evidence_recall@10": 0.5,
        "evidence_recall@20": 0.5,
        "evidence_coverage@5": 0.25,
        "evidence_coverage@10": 0.5,
        "evidence_coverage@20": 0.5,
        "context_tokens@5": round(5 * size / 2, 1),
        "context_tokens@10": round(10 * size / 2, 1),
        "context_tokens@20": round(20 * size / 2, 1),
    }


def test_scores_with_fewer_items_than_k_and_no_questions() -> None:
    scores = Scores()
    scores.add({"D1:1", "D1:2", "D1:3"}, [({"D1:1"}, "a"), ({"D1:2"}, "b")])
    report = scores.report(1)
    assert [report[f"evidence_recall@{k}"] for k in KS] == [0.0, 0.0, 0.0]
    assert [report[f"evidence_coverage@{k}"] for k in KS] == [0.6667] * 3
    assert all(value == 0 for value in Scores().report(0).values()), "no questions: zeros, no ZeroDivisionError"


def test_max_session() -> None:
    assert max_session(["D1:3", "D10:2", "D2:7"]) == 10
    assert max_session(["D 1:3", "session 4", ""]) == 0
    assert max_session([]) == 0
