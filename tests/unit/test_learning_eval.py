"""``opencoach eval learning``: bad input gets one ``error:`` line and exit code 2; a small run on a tiny
ESConv-format file reports strategy accuracies and the with/without few-shot reply similarity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from app.evals.learning import held_out, survey_thumbs, turns_of

SITUATIONS = [
    ("I failed my exam and I feel like a total failure.", "exam"),
    ("My partner left me last week and I can't stop crying.", "breakup"),
    ("I'm so stressed about losing my job.", "job"),
    ("I feel lonely since I moved to a new city.", "lonely"),
    ("My mother is sick and I'm scared.", "family"),
    ("I can't sleep because I worry all night.", "sleep"),
    ("My friends ignore me at school.", "friends"),
    ("I have too much debt and I panic about money.", "money"),
    ("My boss yells at me every day.", "boss"),
    ("I lost my dog and the house feels empty.", "pet"),
    ("I keep arguing with my brother.", "brother"),
    ("I'm anxious about my wedding next month.", "wedding"),
]


def dialogue(opening: str, topic: str, empathy: int) -> dict:
    return {
        "emotion_type": "sadness",
        "problem_type": topic,
        "situation": opening,
        "survey_score": {"seeker": {"empathy": str(empathy), "relevance": "5"}},
        "dialog": [
            {"speaker": "usr", "text": f"Hi. {opening}"},
            {"speaker": "sys", "text": "How long have you been feeling this way?", "strategy": "Question"},
            {"speaker": "usr", "text": f"For weeks now, the {topic} thing is getting worse."},
            {
                "speaker": "sys",
                "text": f"It sounds like the {topic} situation leaves you feeling really sad and worn out.",
                "strategy": "Reflection of feelings",
            },
            {"speaker": "usr", "text": "Yes, exactly. What should I do?"},
            {
                "speaker": "sys",
                "text": "Maybe try writing down your worries each evening and talking to someone you trust.",
                "strategy": "Providing Suggestions",
            },
        ],
    }


@pytest.fixture
def esconv(tmp_path: Path) -> Path:
    path = tmp_path / "valid.jsonl"
    lines = [json.dumps(dialogue(text, topic, 5 if i % 3 else 2)) for i, (text, topic) in enumerate(SITUATIONS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_fixture_splits_into_history_and_held_out(esconv: Path) -> None:
    dialogues = [json.loads(line) for line in esconv.read_text().splitlines()]
    split = [held_out(d) for d in dialogues]
    assert any(split) and not all(split)
    assert [held_out(d) for d in dialogues] == split  # deterministic
    turns = turns_of(0, dialogues[0])
    assert [t.label for t in turns] == ["Question", "Reflection of feelings", "Providing Suggestions"]
    assert turns[1].client_text.startswith("For weeks now") and turns[0].before[0][0] == "usr"
    assert survey_thumbs(dialogues[0]) is False and survey_thumbs(dialogues[1]) is True
    assert survey_thumbs({"dialog": []}) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not json\n", "line 1 is not JSON"),
        ('{"dialog": "nope"}\n', "not an ESConv dialogue"),
        ('{"dialog": [{"speaker": "bot", "text": "x"}]}\n', "'speaker' (usr/sys)"),
        ("\n", "no dialogues"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "esconv.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["eval", "learning", "--esconv", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error:" in captured.err and message in captured.err


def test_a_negative_limit_is_refused(esconv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's usage error, before anything starts
        main(["eval", "learning", "--esconv", str(esconv), "--limit", "-1"])
    assert exited.value.code == 2
    assert "argument --limit: must be 0 or more, got -1" in capsys.readouterr().err


def test_too_few_dialogues_for_a_split_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(dialogue(*SITUATIONS[0], 5)) + "\n", encoding="utf-8")
    assert main(["eval", "learning", "--esconv", str(path), "--limit", "0", "--data-dir", str(tmp_path)]) == 2
    assert "no history or no held-out" in capsys.readouterr().err


def test_a_small_run_reports_accuracies_and_similarity(
    esconv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["eval", "learning", "--esconv", str(esconv), "--json", "--limit", "2", "--data-dir", str(tmp_path)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dialogues"] == len(SITUATIONS)
    assert result["history_turns"] + result["held_out_turns"] == 3 * len(SITUATIONS)
    strategy = result["strategy"]
    for name in ("majority", "style_profile", "style_profile_sequence", "knn_history", "classifier"):
        assert 0 <= strategy[name] <= 1
    # every dialogue uses the same three strategies in the same order: one label of three is the majority
    assert strategy["majority"] == pytest.approx(1 / 3, abs=0.01)
    # the near-identical history makes kNN over situations beat the majority baseline
    assert strategy["knn_history"] > strategy["majority"]
    similarity = result["similarity"]
    assert similarity["n"] == 2
    assert -1 <= similarity["without_few_shot"] <= 1 and -1 <= similarity["with_few_shot"] <= 1
    assert similarity["examples_per_prompt"] > 0
    low, high = similarity["difference_ci95"]
    assert low <= similarity["difference"] <= high


def unlabelled(opening: str, topic: str, empathy: int) -> dict:
    """:func:`dialogue` with its supporter turns' strategies removed."""
    bare = dialogue(opening, topic, empathy)
    bare["dialog"] = [{k: v for k, v in turn.items() if k != "strategy"} for turn in bare["dialog"]]
    return bare


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (dialogue, "train.jsonl: no supporter turn is labelled Restatement or Paraphrasing, Self-disclosure"),
        (unlabelled, "train.jsonl: no supporter turn is labelled with a strategy"),
    ],
    ids=["a-strategy-missing", "no-labelled-turns"],
)
def test_train_strategy_on_data_it_cannot_learn_from_exits_2_with_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    """It ended in a traceback from scikit-learn or NumPy after the embedding; nothing is written."""
    for name in ("train.jsonl", "valid.jsonl"):
        lines = [json.dumps(make(text, topic, 5)) for text, topic in SITUATIONS]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "model.npz"
    assert main(["learning", "train-strategy", "--esconv", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in " ".join(err.split()) and "Traceback" not in err, err
    assert not out.exists()
