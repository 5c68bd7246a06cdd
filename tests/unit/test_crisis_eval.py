"""The C-SSRS loader, the screen arithmetic and ``opencoach eval crisis`` (:mod:`app.evals.crisis`).

Synthetic files follow ``../shared/data/crisis/cssrs_dev.csv``: columns ``User``, ``Post`` (a stringified
Python list of posts) and ``Label`` in Supportive / Indicator / Ideation / Behavior / Attempt.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.core.errors import EvalDataError
from app.evals.crisis import (
    METHODS,
    ChatNegatives,
    CssrsUser,
    EmbeddingCache,
    cross_validate,
    evaluate_crisis,
    load_chat_negatives,
    load_cssrs,
    parse_posts,
    screen_metrics,
    train_model,
)
from app.handoff.crisis_model import CrisisModel
from app.handoff.detector import CrisisDetector

DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "crisis" / "cssrs_dev.csv"


def write(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("User", "Post", "Label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_loader_parses_lists_and_repairs_a_truncated_post_cell(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        [
            ["user-1", "['I want to die', \"I can't go on\"]", "Ideation"],
            ["user-2", "['Hang in there, friend.', 'You matter and people car", "Supportive"],
            ["user-3", "[]", "Indicator"],
        ],
    )
    data = load_cssrs(path)
    assert [u.user for u in data.users] == ["user-1", "user-2", "user-3"]
    assert data.users[0].posts == ("I want to die", "I can't go on")
    assert data.users[1].posts == ("Hang in there, friend.", "You matter and people car")
    assert data.users[2].posts == ()
    assert (data.repaired_rows, data.unparseable_rows) == (1, 1)


def test_parse_posts_never_raises() -> None:
    assert parse_posts("['a', 'b']") == (["a", "b"], False)
    assert parse_posts("'just one'") == (["just one"], False)
    assert parse_posts("not a list at all") == (["not a list at all"], True)
    assert parse_posts("['unterminated") == (["unterminated"], True)
    assert parse_posts("") == ([], True)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="no such file"):
        load_cssrs(tmp_path / "absent.csv")


def test_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="directory"):
        load_cssrs(tmp_path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", [["user-1", "['x']"]], header=("User", "Post"))
    with pytest.raises(EvalDataError, match="missing column.*Label"):
        load_cssrs(path)


def test_a_json_lines_file_is_named_briefly(tmp_path: Path) -> None:
    """A JSONL file read as the CSV: its first record is the "header"; the error shows 200 characters of it."""
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "' + "word " * 400 + '"}\n')
    with pytest.raises(EvalDataError, match="missing column") as refused:
        load_cssrs(path)
    assert len(str(refused.value)) < 400 and "C-SSRS CSV" in str(refused.value)


def test_unknown_label_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", [["user-1", "['x']", "Ideation"], ["user-2", "['y']", "Severe"]])
    with pytest.raises(EvalDataError, match=r"line 3: unknown label 'Severe'"):
        load_cssrs(path)


def test_empty_and_binary_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="no users"):
        load_cssrs(write(tmp_path / "empty.csv", []))
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EvalDataError, match="not a readable CSV|missing column"):
        load_cssrs(binary)


def test_screen_metrics_arithmetic() -> None:
    flags = [
        ("Ideation", True),
        ("Ideation", True),
        ("Behavior", False),
        ("Attempt", True),
        ("Supportive", True),
        ("Supportive", False),
        ("Supportive", False),
        ("Indicator", True),
        ("Indicator", False),
        ("Indicator", False),
        ("Indicator", False),
    ]
    result = screen_metrics(flags)
    # TP 3, FN 1, FP 1 → precision 0.75, recall 0.75, F1 0.75; Indicator 1 of 4 flagged.
    assert (result["tp"], result["fn"], result["fp"]) == (3, 1, 1)
    assert result["precision"] == 0.75
    assert result["recall"] == 0.75
    assert result["f1"] == 0.75
    assert result["indicator_flag_rate"] == 0.25
    assert result["users"] == 11
    assert result["confusion"]["Supportive"] == {"flagged": 1, "not_flagged": 2}
    assert result["confusion"]["Behavior"] == {"flagged": 0, "not_flagged": 1}


def test_screen_metrics_with_empty_classes_is_zero_not_an_error() -> None:
    result = screen_metrics([("Supportive", False)])
    assert (result["precision"], result["recall"], result["f1"], result["indicator_flag_rate"]) == (0, 0, 0, 0)


def test_evaluate_crisis_runs_the_detector() -> None:
    users = [
        CssrsUser("a", "Ideation", ("I just want to die",)),
        CssrsUser("b", "Supportive", ("If you are thinking about suicide, please call the lifeline.",)),
        CssrsUser("c", "Indicator", ("Work was fine today.",)),
    ]
    result = evaluate_crisis(users)
    assert (result["precision"], result["recall"], result["indicator_flag_rate"]) == (1.0, 1.0, 0.0)
    assert result["levels"] == {"none": 2, "concern": 0, "crisis": 1}


def test_cli_bad_input_is_one_error_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "crisis", "--cssrs", str(tmp_path / "absent.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no such file" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not DEV.exists(), reason="needs ../shared/data/crisis/cssrs_dev.csv")
def test_cli_json_on_the_dev_file_meets_the_recall_goal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "crisis", "--cssrs", str(DEV), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"precision", "recall", "f1", "indicator_flag_rate", "users"} <= result.keys()
    assert result["users"] == 263
    assert result["recall"] >= 0.95
    assert result["precision"] > 151 / 207  # better than flagging everyone
    assert result["unparseable_rows"] == 0


@pytest.mark.skipif(not DEV.exists(), reason="needs ../shared/data/crisis/cssrs_dev.csv")
def test_cli_table_on_the_dev_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "crisis", "--cssrs", str(DEV)]) == 0
    out = capsys.readouterr().out
    assert "Supportive" in out and "Attempt" in out and "recall" in out


# --- cross-validation (stub embedder: no MiniLM) -------------------------------------------------------------


def _stub_embed(texts: Sequence[str]) -> np.ndarray:
    """Axis 0 carries "first-person despair" for the synthetic posts; the rest is noise seeded by the text."""
    x = np.zeros((len(texts), 384))
    for i, text in enumerate(texts):
        x[i] = np.random.default_rng(sum(text.encode())).normal(0.0, 0.05, 384)
        x[i, 0] = 2.0 if "vanish" in text else -2.0
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _synthetic_users() -> list[CssrsUser]:
    posts = {
        "Supportive": ("You are not alone, reach out to someone you trust.", "Sending you strength today."),
        "Indicator": ("Work has been rough lately.", "I feel tired all the time."),
        "Ideation": ("I keep wishing I could just vanish for good.", "Nothing feels worth it."),
        "Behavior": ("Tonight I want to vanish and never come back.", "I wrote letters to my family."),
        "Attempt": ("Last month I tried to vanish forever.", "I am still here somehow."),
    }
    return [CssrsUser(f"{label}-{n}", label, posts[label]) for label in posts for n in range(15)]


def test_cross_validate_fits_on_training_folds_and_scores_every_method(tmp_path: Path) -> None:
    users = _synthetic_users()
    cache = EmbeddingCache(tmp_path / "emb.npz")
    result = cross_validate(users, folds=3, embed=_stub_embed, cache=cache)
    assert set(METHODS) <= result.keys()
    assert (result["folds"], result["users"], len(result["per_fold"])) == (3, 75, 3)
    for method in METHODS:
        assert result[method]["tp"] + result[method]["fn"] == 45  # every positive scored once, out of fold
        assert (
            result[method]["confusion"]["Supportive"]["flagged"]
            + result[method]["confusion"]["Supportive"]["not_flagged"]
            == 15
        )
    assert result["learned"]["recall"] == 1.0 and result["learned"]["precision"] == 1.0
    assert result["combined"]["recall"] == 1.0
    assert all(0.0 < row["thresholds"]["learned"] < 1.0 for row in result["per_fold"])
    assert (tmp_path / "emb.npz").exists() and len(EmbeddingCache(tmp_path / "emb.npz").vectors) == 10


def test_cross_validate_rejects_too_many_folds() -> None:
    with pytest.raises(EvalDataError, match="rarest label"):
        cross_validate(_synthetic_users(), folds=16, embed=_stub_embed)
    with pytest.raises(EvalDataError, match="at least 2"):
        cross_validate(_synthetic_users(), folds=1, embed=_stub_embed)


def test_train_model_writes_loadable_weights(tmp_path: Path) -> None:
    result = train_model(_synthetic_users(), tmp_path / "model.npz", embed=_stub_embed)
    assert result["users"] == 60 and result["positive_users"] == 45
    model = CrisisModel.load(tmp_path / "model.npz")
    detector = CrisisDetector(model=model, embed=_stub_embed)
    assert detector.assess("Some days I just want to vanish.").learned > model.threshold  # type: ignore[operator]
    assert detector.assess_user(["Sending you strength today."]).level == "none"


def test_cli_folds_bad_value_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "c.csv", [["u1", "['x']", "Ideation"], ["u2", "['y']", "Supportive"]])
    assert main(["eval", "crisis", "--cssrs", str(path), "--folds", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "rarest label" in err


def test_cli_file_error_names_the_file_not_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ``--embedding-cache`` that is a folder: one usage error naming it (it blamed DATABASE_URL and REDIS_URL)."""
    path = write(tmp_path / "c.csv", [["u1", "['x']", "Ideation"], ["u2", "['y']", "Supportive"]])
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(SystemExit) as exited:
        main(["eval", "crisis", "--cssrs", str(path), "--folds", "2", "--embedding-cache", str(cache)])
    assert exited.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--embedding-cache: {str(cache)!r} is a folder" in err and "DATABASE_URL" not in err, err


def _not_caches(folder: Path) -> list[Path]:
    """Files an ``--embedding-cache`` may name by mistake: text, an empty file, a broken zip, an ``.npz`` without
    ``keys``, an ``.npy`` array, and an ``.npz`` whose keys are pickled objects."""
    (folder / "bad.json").write_text("not json")
    (folder / "empty.npz").write_bytes(b"")
    (folder / "broken.npz").write_bytes(b"PK\x03\x04 not a zip")
    np.savez(folder / "other.npz", a=np.zeros(3))
    np.save(folder / "array.npy", np.zeros(3))
    np.savez(folder / "pickled.npz", keys=np.array([{"a": 1}], dtype=object), vectors=np.zeros((1, 3)))
    np.savez(folder / "flat.npz", keys=np.array(["a"]), vectors=np.zeros(3))
    names = ("bad.json", "empty.npz", "broken.npz", "other.npz", "array.npy", "pickled.npz", "flat.npz")
    return [folder / name for name in names]


def test_a_file_that_is_no_embedding_cache_is_refused_and_kept(tmp_path: Path) -> None:
    """np.load's pickle refusal, a KeyError for a missing ``keys`` array: now one :class:`EvalDataError` naming
    the file, which is left as it was."""
    for path in _not_caches(tmp_path):
        before = path.read_bytes()
        with pytest.raises(EvalDataError) as refused:
            EmbeddingCache(path)
        assert str(refused.value) == f"{path}: not an embedding cache (.npz with keys and vectors)"
        assert path.read_bytes() == before


@pytest.mark.parametrize("command", ["eval", "train"])
def test_cli_embedding_cache_that_is_no_cache_is_one_error_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eval crisis --folds 2`` and ``handoff train-crisis`` printed a traceback (or, for train-crisis, numpy's
    pickle message) for a cache that is not one: one ``error:`` line naming the file, exit 2, before any
    embedding."""
    path = write(tmp_path / "c.csv", [["u1", "['x']", "Ideation"], ["u2", "['y']", "Supportive"]])
    argv = (
        ["eval", "crisis", "--cssrs", str(path), "--folds", "2"]
        if command == "eval"
        else ["handoff", "train-crisis", "--cssrs", str(path), "--out", str(tmp_path / "out.npz")]
    )
    for cache in (tmp_path / "bad.json", tmp_path / "other.npz"):
        _not_caches(tmp_path)
        assert main([*argv, "--embedding-cache", str(cache)]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert err == f"error: {cache}: not an embedding cache (.npz with keys and vectors)", err
    assert not (tmp_path / "out.npz").exists()


def test_chat_negatives_from_esconv_are_training_sets_and_a_held_out_check(tmp_path: Path) -> None:
    def dialogue(n: int) -> str:
        turns = [{"speaker": "usr", "text": f"seeker {n} says {i}"} for i in range(4)]
        turns.insert(1, {"speaker": "sys", "text": "supporter", "strategy": "Question"})
        return json.dumps({"dialog": turns})

    (tmp_path / "train.jsonl").write_text("\n".join(dialogue(n) for n in range(5)))
    (tmp_path / "valid.jsonl").write_text("\n".join(dialogue(n) for n in range(5, 8)))
    negatives = load_chat_negatives(tmp_path, dialogues=3, singles=2, check_dialogues=2)
    assert len(negatives.train) == 3 * 3  # a set of 4 messages and 2 single messages per dialogue
    assert sum(len(s) == 4 for s in negatives.train) == 3 and sum(len(s) == 1 for s in negatives.train) == 6
    assert len(negatives.check) == 8 and negatives.check[0] == "seeker 5 says 0"
    with pytest.raises(EvalDataError, match="no such file"):
        load_chat_negatives(tmp_path / "absent")


def test_cross_validate_reports_the_chat_flag_rate_of_held_out_messages() -> None:
    negatives = ChatNegatives(
        train=tuple((f"Work was long today, day {n}.", "I need to sleep more.") for n in range(12)),
        check=("Had a calm day at work.", "I keep wanting to vanish."),
    )
    result = cross_validate(_synthetic_users(), folds=3, embed=_stub_embed, negatives=negatives)
    assert result["chat_negatives"] == 12
    assert result["chat_flag_rate"] == {"messages": 2, "learned": 0.5, "combined": 0.5}
