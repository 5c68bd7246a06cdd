"""The C-SSRS loader, the screen arithmetic and ``opencoach eval crisis`` (:mod:`app.evals.crisis`).

Synthetic files follow ``../shared/data/crisis/cssrs_dev.csv``: columns ``User``, ``Post`` (a stringified
Python list of posts) and ``Label`` in Supportive / Indicator / Ideation / Behavior / Attempt.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from app.cli import main
from app.core.errors import EvalDataError
from app.evals.crisis import CssrsUser, evaluate_crisis, load_cssrs, parse_posts, screen_metrics

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
