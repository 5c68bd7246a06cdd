"""The coach's technique in one message: an ESConv support strategy, predicted by a linear classifier.

Labels are the eight strategies of ESConv (Liu S. et al. 2021, "Towards Emotional Support Dialog Systems",
*ACL 2021*): Question, Restatement or Paraphrasing, Reflection of feelings, Self-disclosure, Affirmation and
Reassurance, Providing Suggestions, Information, Others.

Features (:func:`features`): the all-MiniLM-L6-v2 sentence embedding (Reimers & Gurevych 2019, 384-d,
unit-normalised) of the supporter's message and three lexical cues (ends with a question mark, contains a
question mark, log length in words). Adding the embedding of the seeker's message before it was tried and
scored lower on ``valid.jsonl`` (accuracy 0.516 vs 0.525, macro-F1 0.435 vs 0.440), so it is left out.
A multinomial logistic regression (scikit-learn ``LogisticRegression``) is fitted on ESConv's
``train.jsonl`` supporter turns and evaluated on ``valid.jsonl`` by :func:`train`; the fitted weights ship
as ``strategy_model.npz`` next to this module, and :class:`StrategyModel` scores with numpy alone (the data
set and scikit-learn are not needed at runtime).

Regenerate: ``opencoach learning train-strategy --esconv ../shared/data/esconv --out app/learning/strategy_model.npz``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.core.errors import EvalDataError
from app.llm.base import EMBEDDING_DIMENSIONS

CATCH_ALL = "Others"
"""ESConv's label for a reply that fits no strategy: it says nothing of what works for a client."""
STRATEGIES = (
    "Question",
    "Restatement or Paraphrasing",
    "Reflection of feelings",
    "Self-disclosure",
    "Affirmation and Reassurance",
    "Providing Suggestions",
    "Information",
    CATCH_ALL,
)
"""The ESConv strategy labels, in the order the classifier's rows use."""

MODEL_PATH = Path(__file__).with_name("strategy_model.npz")
LEXICAL_FEATURES = 3
FEATURE_DIMENSIONS = EMBEDDING_DIMENSIONS + LEXICAL_FEATURES

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SupporterTurn:
    """One ESConv supporter turn: its ``text``, the seeker's text just before it (``client_text``, the
    seeker's consecutive messages joined; empty at the start), its strategy ``label`` and the strategy of the
    supporter's previous turn in the dialogue (``None`` for the first)."""

    text: str
    client_text: str
    label: str
    previous_label: str | None


def lexical(text: str) -> list[float]:
    """The three lexical cues of :func:`features`: ends with ``?``, contains ``?``, ``log(1 + words) / 5``."""
    stripped = text.strip()
    return [
        1.0 if stripped.endswith("?") else 0.0,
        1.0 if "?" in stripped else 0.0,
        math.log1p(len(stripped.split())) / 5.0,
    ]


def features(text_embedding: Sequence[float], text: str) -> Vector:
    """Feature vector (``FEATURE_DIMENSIONS`` floats) of a coach message: its MiniLM embedding and the
    :func:`lexical` cues. Raises ``ValueError`` when the embedding is not 384-d."""
    a = np.asarray(text_embedding, dtype=np.float64)
    if a.shape != (EMBEDDING_DIMENSIONS,):
        raise ValueError(f"strategy features need a {EMBEDDING_DIMENSIONS}-d MiniLM embedding")
    return np.concatenate([a, np.asarray(lexical(text))])


class StrategyModel:
    """A fitted multinomial logistic regression: ``coef`` (8 × ``FEATURE_DIMENSIONS``), ``intercept`` (8),
    ``labels`` (8 ESConv strategies) and ``meta`` (how it was trained and its validation scores)."""

    def __init__(self, coef: Vector, intercept: Vector, labels: Sequence[str], meta: dict[str, Any]) -> None:
        self.coef = coef
        self.intercept = intercept
        self.labels = tuple(labels)
        self.meta = meta

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> StrategyModel:
        """Read a model written by :meth:`save`. Raises ``FileNotFoundError`` / ``ValueError``."""
        with np.load(path, allow_pickle=False) as data:
            return cls(
                np.asarray(data["coef"], dtype=np.float64),
                np.asarray(data["intercept"], dtype=np.float64),
                [str(label) for label in data["labels"]],
                json.loads(str(data["meta"])),
            )

    def save(self, path: Path) -> None:
        """Write the weights (float32) and metadata as one ``.npz`` file."""
        np.savez_compressed(
            path,
            coef=self.coef.astype(np.float32),
            intercept=self.intercept.astype(np.float32),
            labels=np.asarray(self.labels),
            meta=np.asarray(json.dumps(self.meta)),
        )

    def scores(self, x: Vector) -> dict[str, float]:
        """Class probabilities (softmax over the linear scores) of one feature vector, by label."""
        logits = self.coef @ x + self.intercept
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return {label: round(float(v), 4) for label, v in zip(self.labels, p, strict=True)}

    def predict(self, x: Vector) -> str:
        """The most probable strategy of one feature vector."""
        return self.labels[int(np.argmax(self.coef @ x + self.intercept))]


@cache
def default_model() -> StrategyModel:
    """The shipped model (``strategy_model.npz``), loaded once per process."""
    return StrategyModel.load()


# --- ESConv and training -------------------------------------------------------------------------------------


def read_esconv(path: Path) -> list[dict[str, Any]]:
    """Read an ESConv JSONL file (one dialogue per line: ``dialog`` = ``[{"speaker": "usr"|"sys", "text",
    "strategy"?}]``, ``survey_score``, ``emotion_type``, ``problem_type``, ``situation``). Raises
    ``EvalDataError`` for a missing, unreadable or malformed file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise EvalDataError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(f"{path}: not a readable text file ({exc})") from exc
    dialogues = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}: line {n} is not JSON ({exc.msg})") from exc
        if not isinstance(item, dict) or not isinstance(item.get("dialog"), list):
            raise EvalDataError(f"{path}: line {n} is not an ESConv dialogue (no 'dialog' list)")
        for turn in item["dialog"]:
            if not isinstance(turn, dict) or turn.get("speaker") not in ("usr", "sys") or "text" not in turn:
                raise EvalDataError(f"{path}: line {n}: each turn needs 'speaker' (usr/sys) and 'text'")
        dialogues.append(item)
    if not dialogues:
        raise EvalDataError(f"{path}: no dialogues")
    return dialogues


def supporter_turns(dialogue: dict[str, Any]) -> Iterator[SupporterTurn]:
    """The supporter turns of one ESConv dialogue with a known strategy, each with the seeker's message(s)
    since the supporter's previous turn and the previous supporter strategy."""
    pending: list[str] = []
    previous: str | None = None
    for turn in dialogue["dialog"]:
        text = str(turn["text"]).strip()
        if turn["speaker"] == "usr":
            pending.append(text)
            continue
        label = turn.get("strategy")
        client_text = " ".join(pending)
        pending = []
        if label in STRATEGIES and text:
            yield SupporterTurn(text, client_text, str(label), previous)
            previous = str(label)


def _matrix(turns: Sequence[SupporterTurn]) -> Vector:
    """Feature rows for ``turns`` with the local MiniLM (unit-normalised), encoded synchronously."""
    from app.llm.local import MiniLMEmbedder

    vectors = MiniLMEmbedder().encode([t.text for t in turns])
    return np.vstack([features(v, t.text) for t, v in zip(turns, vectors, strict=True)])


def train(esconv_dir: Path, out: Path, *, c: float = 0.5) -> dict[str, Any]:
    """Fit the strategy classifier on ``esconv_dir/train.jsonl`` and score it on ``valid.jsonl``; write it to
    ``out``. Returns ``{"train_turns", "valid_turns", "accuracy", "macro_f1", "majority_baseline", "per_label"}``.
    Needs scikit-learn (a training-time dependency only). Raises ``EvalDataError`` for bad data files, a file
    without supporter turns labelled with a strategy, or a training file missing one of :data:`STRATEGIES`
    (checked before the minutes of embedding)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    train_turns = [t for d in read_esconv(esconv_dir / "train.jsonl") for t in supporter_turns(d)]
    valid_turns = [t for d in read_esconv(esconv_dir / "valid.jsonl") for t in supporter_turns(d)]
    for name, turns in (("train.jsonl", train_turns), ("valid.jsonl", valid_turns)):
        if not turns:
            raise EvalDataError(f"{esconv_dir / name}: no supporter turn is labelled with a strategy")
    missing = [label for label in STRATEGIES if label not in {t.label for t in train_turns}]
    if missing:
        raise EvalDataError(
            f"{esconv_dir / 'train.jsonl'}: no supporter turn is labelled {', '.join(missing)}: the classifier "
            "learns every strategy"
        )
    x_train, x_valid = _matrix(train_turns), _matrix(valid_turns)
    y_train = [t.label for t in train_turns]
    y_valid = [t.label for t in valid_turns]
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(x_train, y_train)
    order = [list(clf.classes_).index(label) for label in STRATEGIES]
    predicted = list(clf.predict(x_valid))
    majority = max(set(y_train), key=y_train.count)
    per_label = f1_score(y_valid, predicted, labels=list(STRATEGIES), average=None, zero_division=0)
    result: dict[str, Any] = {
        "train_turns": len(train_turns),
        "valid_turns": len(valid_turns),
        "accuracy": round(float(accuracy_score(y_valid, predicted)), 4),
        "macro_f1": round(float(f1_score(y_valid, predicted, average="macro", zero_division=0)), 4),
        "majority_baseline": round(sum(y == majority for y in y_valid) / len(y_valid), 4),
        "per_label_f1": {label: round(float(v), 4) for label, v in zip(STRATEGIES, per_label, strict=True)},
        "c": c,
        "features": "all-MiniLM-L6-v2(text) + 3 lexical cues",
    }
    model = StrategyModel(
        np.asarray(clf.coef_)[order], np.asarray(clf.intercept_)[order], STRATEGIES, {"validation": result}
    )
    model.save(out)
    return result
