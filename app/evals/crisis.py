"""User-level evaluation of :class:`app.handoff.risk.RiskDetector` on a C-SSRS Reddit file.

The data set (Gaur M. et al., "Knowledge-aware Assessment of Severity of Suicide Risk for Early
Intervention", WWW 2019) labels Reddit users by the Columbia Suicide Severity Rating Scale: ``Supportive``
(posts only to support others), ``Indicator`` (risk indicators, no ideation), ``Ideation``, ``Behavior`` and
``Attempt``. A CSV with columns ``User``, ``Post`` (a stringified Python list of that user's posts) and
``Label`` (e.g. ``../shared/data/crisis/cssrs_dev.csv``) is read by :func:`load_cssrs`; some ``Post`` cells
are truncated lists that :func:`ast.literal_eval` rejects, and those are split on the ``', '`` separators
instead (counted in :attr:`CssrsData.repaired_rows`).

:func:`evaluate_crisis` flags a user when :meth:`RiskDetector.assess_user` gives level ``concern`` or
``crisis`` and scores it as a binary screen: Ideation, Behavior and Attempt are positive, Supportive is
negative, and Indicator users are left out of precision/recall and reported as ``indicator_flag_rate``
(the share flagged).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import EvalDataError
from app.handoff.crisis_model import (
    FEATURE_DIMENSIONS,
    TARGET_RECALL,
    CrisisModel,
    Embed,
    features,
    fit,
    lexicon_score,
    minilm_embed,
    recall_threshold,
    training_rows,
    windows,
)
from app.handoff.risk import RiskAssessment, RiskDetector

LABELS = ("Supportive", "Indicator", "Ideation", "Behavior", "Attempt")
"""The C-SSRS labels of the data set, from no risk to the most severe."""
POSITIVE = frozenset({"Ideation", "Behavior", "Attempt"})
NEGATIVE = frozenset({"Supportive"})
COLUMNS = ("User", "Post", "Label")
_SPLIT = re.compile(r"""['"]\s*,\s*['"]""")


@dataclass(frozen=True)
class CssrsUser:
    """One labelled user: ``posts`` in file order (empty strings dropped)."""

    user: str
    label: str
    posts: tuple[str, ...]


@dataclass(frozen=True)
class CssrsData:
    """The users of a C-SSRS file; ``repaired_rows``: Post cells split by the fallback, ``unparseable_rows``:
    cells that yielded no post at all (those users are kept with no posts)."""

    users: tuple[CssrsUser, ...]
    repaired_rows: int = 0
    unparseable_rows: int = 0


def parse_posts(cell: str) -> tuple[list[str], bool]:
    """The posts in one ``Post`` cell and whether the tolerant fallback was needed.

    ``"['a', 'b']"`` → ``(["a", "b"], False)``. A cell ``ast.literal_eval`` rejects (truncated, stray quotes)
    is stripped of its brackets and split on quote-comma-quote; a cell that is not a list at all is one post.
    """
    text = cell.strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, (list, tuple)):
        return [str(post) for post in value if str(post).strip()], False
    if isinstance(value, str):
        return ([value] if value.strip() else []), False
    inner = text[1:] if text.startswith("[") else text
    inner = inner[:-1] if inner.endswith("]") else inner
    inner = inner.strip()
    if inner[:1] in ("'", '"'):
        inner = inner[1:]
    if inner[-1:] in ("'", '"'):
        inner = inner[:-1]
    return [post for post in _SPLIT.split(inner) if post.strip()], True


def load_cssrs(path: Path) -> CssrsData:
    """Read a C-SSRS CSV (columns ``User``, ``Post``, ``Label``; extra columns ignored).

    Raises :class:`EvalDataError` for a missing or unreadable file, a missing column, an unknown label or
    a file without users. Malformed ``Post`` cells never raise: they are repaired or counted.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [column for column in COLUMNS if column not in header]
            if missing:
                found = ", ".join(header)
                found = found if len(found) <= 200 else found[:199] + "…"  # (a JSON line read as a header)
                raise EvalDataError(
                    f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)}; found "
                    f"{found or 'no header'}): is it the C-SSRS CSV?"
                )
            users: list[CssrsUser] = []
            repaired = unparseable = 0
            for line, row in enumerate(reader, start=2):
                label = (row.get("Label") or "").strip()
                if label not in LABELS:
                    raise EvalDataError(
                        f"{path}, line {line}: unknown label {label!r} (expected one of {', '.join(LABELS)})"
                    )
                posts, fallback = parse_posts(row.get("Post") or "")
                repaired += fallback and bool(posts)
                unparseable += not posts
                users.append(CssrsUser((row.get("User") or "").strip(), label, tuple(posts)))
    except FileNotFoundError as exc:
        raise EvalDataError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise EvalDataError(f"{path}: is a directory, not a CSV file") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvalDataError(f"{path}: not a readable CSV file ({exc})") from exc
    if not users:
        raise EvalDataError(f"{path}: no users (expected rows of {', '.join(COLUMNS)})")
    return CssrsData(tuple(users), repaired, unparseable)


def screen_metrics(flags: Sequence[tuple[str, bool]]) -> dict[str, Any]:
    """Precision, recall, F1 (positives Ideation/Behavior/Attempt, negatives Supportive), the Indicator flag
    rate and a confusion matrix ``{label: {"flagged": n, "not_flagged": n}}`` from ``(label, flagged)`` pairs.

    A ratio with an empty denominator is 0.0.
    """
    confusion = {label: {"flagged": 0, "not_flagged": 0} for label in LABELS}
    for label, flagged in flags:
        confusion[label]["flagged" if flagged else "not_flagged"] += 1
    tp = sum(confusion[label]["flagged"] for label in POSITIVE)
    fn = sum(confusion[label]["not_flagged"] for label in POSITIVE)
    fp = sum(confusion[label]["flagged"] for label in NEGATIVE)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    indicators = confusion["Indicator"]["flagged"] + confusion["Indicator"]["not_flagged"]
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "indicator_flag_rate": round(confusion["Indicator"]["flagged"] / indicators, 4) if indicators else 0.0,
        "users": len(flags),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "confusion": confusion,
    }


def evaluate_crisis(users: Sequence[CssrsUser], detector: RiskDetector | None = None) -> dict[str, Any]:
    """Run the detector over each user's posts and score the screen (see :func:`screen_metrics`); the result
    also counts users per level under ``levels``."""
    detector = detector or RiskDetector()
    flags: list[tuple[str, bool]] = []
    levels = {"none": 0, "concern": 0, "crisis": 0}
    for user in users:
        assessment = detector.assess_user(user.posts)
        levels[assessment.level] += 1
        flags.append((user.label, assessment.level != "none"))
    return {**screen_metrics(flags), "levels": levels}


# --- user-level K-fold cross-validation (lexicon, learned, combined) ---------------------------------------

METHODS = ("lexicon", "lexicon_tuned", "learned", "combined", "combined_sensitive")
"""The screens :func:`cross_validate` scores: the shipped lexicon (flag at level ``concern``); the lexicon's
score with its flag threshold chosen on the training folds; the learned model alone (threshold from the
training folds); ``combined`` = learned OR lexicon level ``crisis`` (explicit wording) — the screen of the
shipped detector (:func:`app.handoff.detector.screen_flag`); ``combined_sensitive`` = learned OR lexicon
level ``concern`` (any lexicon flag, weak distress words included)."""


class EmbeddingCache:
    """Window embeddings by SHA-256 of the text, kept in an ``.npz`` file between runs (``path`` None: in
    memory only). Embedding is unsupervised and label-free, so sharing it across folds leaks nothing. Raises
    :class:`EvalDataError` when ``path`` holds something else (no ``.npz`` file with ``keys`` and ``vectors``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.vectors: dict[str, np.ndarray] = {}
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    keys, vectors = data["keys"], data["vectors"]
                    if keys.ndim != 1 or vectors.ndim != 2:
                        raise ValueError(f"keys of shape {keys.shape}, vectors of shape {vectors.shape}")
                    self.vectors = dict(zip((str(k) for k in keys), vectors, strict=True))
            except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
                # (ValueError: not NumPy's format, or object arrays; TypeError: an .npy array, not an .npz archive)
                raise EvalDataError(f"{path}: not an embedding cache (.npz with keys and vectors)") from exc

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]

    def embed(self, texts: Sequence[str], embed: Embed, batch: int = 256) -> dict[str, np.ndarray]:
        """Vectors for ``texts`` (by key), embedding only the missing ones with ``embed`` and saving."""
        missing = sorted({t for t in texts if self.key(t) not in self.vectors})
        for start in range(0, len(missing), batch):
            part = missing[start : start + batch]
            for text, vector in zip(part, embed(part), strict=True):
                self.vectors[self.key(text)] = np.asarray(vector, dtype=np.float32)
            self.save()
        return {self.key(t): self.vectors[self.key(t)] for t in texts}

    def save(self) -> None:
        if self.path is None or not self.vectors:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        np.savez(self.path, keys=np.asarray(keys), vectors=np.vstack([self.vectors[k] for k in keys]))


def embed_posts(post_sets: Sequence[Sequence[str]], embed: Embed, cache: EmbeddingCache) -> list[list[np.ndarray]]:
    """Per set (a user's posts), per post the ``windows × 384`` embedding matrix
    (:func:`app.handoff.crisis_model.windows`)."""
    texts = [[windows(post) for post in posts] for posts in post_sets]
    vectors = cache.embed([w for posts in texts for post in posts for w in post], embed)
    return [[np.vstack([vectors[cache.key(w)] for w in post]) for post in posts] for posts in texts]


def embed_users(users: Sequence[CssrsUser], embed: Embed, cache: EmbeddingCache) -> list[list[np.ndarray]]:
    """:func:`embed_posts` of each user's posts."""
    return embed_posts([user.posts for user in users], embed, cache)


def _features(post_sets: Sequence[Sequence[str]], embed: Embed, cache: EmbeddingCache) -> np.ndarray:
    posts = embed_posts(post_sets, embed, cache)
    rows = [features(p, texts, lexicon_score(texts)) for p, texts in zip(posts, post_sets, strict=True)]
    return np.vstack(rows) if rows else np.zeros((0, FEATURE_DIMENSIONS))


@dataclass(frozen=True)
class ChatNegatives:
    """Ordinary support-seeking chat as extra training negatives and as a held-out false-flag check.

    ``train``: message sets (one ESConv seeker's messages of a dialogue, and single messages) added as
    negatives to every training fold — never scored; ``check``: single seeker messages of other dialogues
    whose flag rate :func:`cross_validate` reports (``chat_flag_rate``), the share of ordinary chat messages
    the screen would flag. ESConv (Liu et al. 2021) seekers talk about depression, break-ups, job loss…;
    a handful mention suicide, so the check's rate is an upper bound of false flags."""

    train: tuple[tuple[str, ...], ...]
    check: tuple[str, ...]


def load_chat_negatives(
    esconv_dir: Path, *, dialogues: int = 150, singles: int = 2, check_dialogues: int = 100, seed: int = 0
) -> ChatNegatives:
    """From ``esconv_dir/train.jsonl``: the seeker messages of the first ``dialogues`` dialogues as one set
    each plus ``singles`` random single messages of each; from ``valid.jsonl``: every seeker message of the
    first ``check_dialogues`` as the check. Raises :class:`EvalDataError` for missing or malformed files."""
    from app.learning.strategy import read_esconv

    def seeker(dialogue: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(t["text"]).strip() for t in dialogue["dialog"] if t["speaker"] == "usr" and t["text"])

    rng = np.random.default_rng(seed)
    train: list[tuple[str, ...]] = []
    for dialogue in read_esconv(esconv_dir / "train.jsonl")[:dialogues]:
        messages = seeker(dialogue)
        if messages:
            train.append(messages)
            picks = rng.choice(len(messages), size=min(singles, len(messages)), replace=False)
            train.extend((messages[int(i)],) for i in picks)
    check = [m for dialogue in read_esconv(esconv_dir / "valid.jsonl")[:check_dialogues] for m in seeker(dialogue)]
    return ChatNegatives(tuple(train), tuple(check))


def _stratified_folds(labels: Sequence[str], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    from sklearn.model_selection import StratifiedKFold

    if k < 2:
        raise EvalDataError("--folds must be at least 2")
    smallest = min(labels.count(label) for label in set(labels))
    if smallest < k:
        raise EvalDataError(f"--folds {k} is more than the {smallest} users of the rarest label")
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    return [(list(a), list(b)) for a, b in splitter.split(np.zeros(len(labels)), labels)]


def _fit_on(
    users: Sequence[CssrsUser],
    posts: Sequence[Sequence[np.ndarray]],
    crisis: Sequence[bool],
    x_negative: np.ndarray,
    seed: int,
) -> CrisisModel:
    """The learned model fitted on ``users`` (Indicator left out; :func:`training_rows`) and the negatives;
    ``crisis`` per user whether the lexicon flags them (level ``crisis``), for the screen-level threshold."""
    kept = [i for i, user in enumerate(users) if user.label != "Indicator"]
    x, y, groups, scored = training_rows(
        [posts[i] for i in kept], [users[i].posts for i in kept], [users[i].label in POSITIVE for i in kept], seed=seed
    )
    n = len(x_negative)
    return fit(
        np.vstack([x, x_negative]),
        [*y.tolist(), *([False] * n)],
        groups=[*groups.tolist(), *range(len(kept), len(kept) + n)],
        scored=[*scored.tolist(), *([False] * n)],
        sure=[*(crisis[kept[g]] for g in groups.tolist()), *([False] * n)],
        seed=seed,
    )


def _fold(
    users: Sequence[CssrsUser],
    data: tuple[np.ndarray, Sequence[Sequence[np.ndarray]]],
    lexicon: Sequence[RiskAssessment],
    split: tuple[list[int], list[int]],
    chat: tuple[np.ndarray, np.ndarray, list[bool]],
    seed: int,
) -> dict[str, Any]:
    """Fit on one fold's training users (Indicator left out) plus the chat negatives; flag its test users
    by every method and the held-out chat messages by the learned part and the screen."""
    x, posts = data
    x_negative, x_check, check_crisis = chat
    train_crisis = [lexicon[i].level == "crisis" for i in split[0]]
    model = _fit_on([users[i] for i in split[0]], [posts[i] for i in split[0]], train_crisis, x_negative, seed)
    train = [i for i in split[0] if users[i].label != "Indicator"]
    lexicon_threshold = recall_threshold([lexicon[i].score for i in train], [users[i].label in POSITIVE for i in train])
    flags: dict[str, list[tuple[str, bool]]] = {method: [] for method in METHODS}
    scores = model.probabilities(x[split[1]])
    for i, score in zip(split[1], scores, strict=True):
        label, lexicon_flag, learned_flag = users[i].label, lexicon[i].level != "none", score >= model.threshold
        flags["lexicon"].append((label, lexicon_flag))
        flags["lexicon_tuned"].append((label, lexicon[i].score >= lexicon_threshold))
        flags["learned"].append((label, bool(learned_flag)))
        flags["combined"].append((label, bool(learned_flag or lexicon[i].level == "crisis")))
        flags["combined_sensitive"].append((label, bool(lexicon_flag or learned_flag)))
    chat_learned = model.probabilities(x_check) >= model.threshold if len(x_check) else np.zeros(0, dtype=bool)
    return {
        "flags": flags,
        "thresholds": {"lexicon_tuned": round(lexicon_threshold, 4), "learned": round(model.threshold, 4)},
        "chat_flag_rate": {
            "learned": float(chat_learned.mean()) if len(x_check) else 0.0,
            "combined": float((chat_learned | np.asarray(check_crisis, dtype=bool)).mean()) if len(x_check) else 0.0,
        },
    }


def cross_validate(
    users: Sequence[CssrsUser],
    *,
    folds: int = 5,
    seed: int = 0,
    embed: Embed | None = None,
    cache: EmbeddingCache | None = None,
    negatives: ChatNegatives | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Stratified (by the five labels), user-level ``folds``-fold cross-validation of every :data:`METHODS`
    screen. Per fold, the learned model, its Platt calibration and every threshold are fitted on the training
    users only (:func:`app.handoff.crisis_model.fit`), with ``negatives.train`` added as negatives; the
    combinations OR the learned flag with the lexicon's, each part with its own recall-first threshold. The
    lexicon's cues and weights are fixed: they were tuned on ``cssrs_dev.csv`` by hand, so on that file its
    figures stay optimistic whatever the folds.

    Returns ``{"folds", "seed", "users", "target_recall", "chat_negatives", "<method>": screen_metrics of the
    pooled out-of-fold flags, "per_fold": [{"<method>": {"precision","recall","f1","indicator_flag_rate"},
    "thresholds", "chat_flag_rate"}], "fold_mean": {"<method>": {metric: [mean, sd]}}, "chat_flag_rate":
    {"messages", "learned", "combined"} (mean over the fold models)}``. Raises :class:`EvalDataError` for
    ``folds`` < 2 or more folds than users of the rarest label.
    """
    say = progress or (lambda _text: None)
    splits = _stratified_folds([user.label for user in users], folds, seed)
    embed, cache = embed or minilm_embed, cache or EmbeddingCache(None)
    negatives = negatives or ChatNegatives((), ())
    say("embedding posts (MiniLM)…")
    posts = embed_users(users, embed, cache)
    detector = RiskDetector()
    lexicon = [detector.assess_user(user.posts) for user in users]
    x = np.vstack([features(p, u.posts, r.score) for p, u, r in zip(posts, users, lexicon, strict=True)])
    x_negative = _features(negatives.train, embed, cache)
    x_check = _features([(message,) for message in negatives.check], embed, cache)
    check_crisis = [detector.assess(message).level == "crisis" for message in negatives.check]
    pooled: dict[str, list[tuple[str, bool]]] = {method: [] for method in METHODS}
    per_fold: list[dict[str, Any]] = []
    for n, split in enumerate(splits, start=1):
        say(f"fold {n}/{folds}: fitting on {len(split[0])} users…")
        result = _fold(users, (x, posts), lexicon, split, (x_negative, x_check, check_crisis), seed)
        row: dict[str, Any] = {"thresholds": result["thresholds"], "chat_flag_rate": result["chat_flag_rate"]}
        for method, flags in result["flags"].items():
            pooled[method].extend(flags)
            metrics = screen_metrics(flags)
            row[method] = {key: metrics[key] for key in ("precision", "recall", "f1", "indicator_flag_rate")}
        per_fold.append(row)
    fold_mean = {
        method: {
            key: [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]
            for key in ("precision", "recall", "f1", "indicator_flag_rate")
            for values in [[row[method][key] for row in per_fold]]
        }
        for method in METHODS
    }
    chat = {
        "messages": len(negatives.check),
        **{k: round(float(np.mean([r["chat_flag_rate"][k] for r in per_fold])), 4) for k in ("learned", "combined")},
    }
    return {
        "folds": folds,
        "seed": seed,
        "users": len(users),
        "target_recall": TARGET_RECALL,
        "chat_negatives": len(negatives.train),
        **{method: screen_metrics(pooled[method]) for method in METHODS},
        "per_fold": per_fold,
        "fold_mean": fold_mean,
        "chat_flag_rate": chat,
    }


def train_model(
    users: Sequence[CssrsUser],
    out: Path,
    *,
    embed: Embed | None = None,
    cache: EmbeddingCache | None = None,
    negatives: ChatNegatives | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the shipped learned component on every non-Indicator user of a C-SSRS file plus
    ``negatives.train`` (:func:`app.handoff.crisis_model.fit`, threshold from inner out-of-fold scores) and
    write it to ``out``. Run it after :func:`cross_validate` has measured the method. Returns the model's
    metadata and threshold. Raises ``ValueError`` when a class has too few users."""
    embed, cache = embed or minilm_embed, cache or EmbeddingCache(None)
    negatives = negatives or ChatNegatives((), ())
    crisis = [RiskDetector().assess_user(user.posts).level == "crisis" for user in users]
    model = _fit_on(users, embed_users(users, embed, cache), crisis, _features(negatives.train, embed, cache), seed)
    model.meta["trained_on"] = (
        "C-SSRS Reddit users (Gaur et al. 2019): Ideation/Behavior/Attempt vs Supportive; "
        f"{len(negatives.train)} ESConv seeker message sets as extra negatives"
    )
    model.meta["seed"] = seed
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return {**model.meta, "threshold": round(model.threshold, 4)}
