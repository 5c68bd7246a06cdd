"""``opencoach eval learning``: does the learning loop capture a coach's style? Replayed on ESConv.

ESConv (Liu S. et al. 2021, "Towards Emotional Support Dialog Systems", *ACL 2021*) holds emotional-support
dialogues between a help seeker and a trained supporter whose every turn carries one of eight strategies,
with the seeker's post-chat survey (empathy, relevance: 1–5). Use ``valid.jsonl``: the shipped strategy
classifier (:mod:`app.learning.strategy`) was fitted on ``train.jsonl``, so its labels on ``valid`` are
honest predictions.

All the supporters of the file are replayed as **one coach**. Each dialogue is one client conversation;
dialogues are split deterministically (SHA-256 of the dialogue's first turns, :data:`HELD_OUT_SHARE` held
out) into **history** and **held-out**. Every supporter turn of the history becomes an intervention,
analysed exactly like a live one (:func:`app.learning.analysis.analyse_message`: strategy by the classifier,
tone, formality, key phrases; its situation is the seeker's message before it) and scored by the survey:
empathy ≥ 4 and relevance ≥ 4 is a thumbs up, else a thumbs down (:func:`survey_thumbs`). The coach's style
profile is built from these (:func:`app.learning.style.build_style_profile`).

Reported on the held-out supporter turns (against ESConv's true strategy labels):

(a) **strategy accuracy** of the style profile's prediction (:func:`app.learning.style.predict_strategy`:
    the coach's most likely strategy given the client's mood, and given the mood and the coach's previous
    strategy in the dialogue — as the classifier labelled it) and of a kNN vote over the history
    interventions nearest by situation embedding (what few-shot retrieval sees; k = :data:`KNN_K`, cosine),
    against the majority-class baseline (the history's most frequent strategy); plus the classifier's own
    accuracy and macro-F1 (it reads the coach's actual reply, so it is an upper reference, not a prediction).
(b) **reply similarity**: for the first ``limit`` held-out turns with a client message, the local model
    (SmolLM2 via :meth:`ProviderRegistry.local_chat`, temperature 0) answers the seeker twice with the
    production prompt (:func:`app.chat.prompt.assemble_prompt`, the dialogue so far as history) — without
    and with the few-shot interventions (:meth:`InterventionService.similar`'s rule, on the history) and
    the style lines. Score: MiniLM cosine between the AI's reply and the supporter's real reply; mean of
    each and of the paired difference with a 95 % normal-approximation interval.

No database is needed: everything runs in memory with the same pure functions as the service.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.chat.prompt import assemble_prompt
from app.conversations.models import Message, SenderType
from app.core.errors import EvalDataError
from app.learning.analysis import Analysis, analyse_message
from app.learning.interventions import EXAMPLE_CHARS, MIN_SIMILARITY, FewShotExample, describe_situation
from app.learning.strategy import STRATEGIES, read_esconv
from app.learning.style import StyleSample, build_style_profile, predict_strategy, style_lines
from app.llm.base import ChatProvider, Embedder, Usage
from app.memory.retrieval import MemoryContext

HELD_OUT_SHARE = 0.2
KNN_K = 10
FEW_SHOT_K = 3
REPLY_MAX_TOKENS = 80
DEFAULT_LIMIT = 60
PERSONA = (
    "You are the AI assistant of an emotional-support coach. Reply to the client in one to three short "
    "sentences, warmly and in the coach's own style."
)


@dataclass(frozen=True)
class Turn:
    """A supporter turn in replay: the dialogue's index, the dialogue so far (``(speaker, text)``, oldest
    first), the seeker's text before it, the supporter's text and true strategy, and survey thumbs."""

    dialogue: int
    before: tuple[tuple[str, str], ...]
    client_text: str
    text: str
    label: str
    thumbs: bool | None


def survey_thumbs(dialogue: dict[str, Any]) -> bool | None:
    """The seeker's survey as thumbs: up when empathy ≥ 4 and relevance ≥ 4, down otherwise; ``None`` when
    the survey is missing or unreadable."""
    try:
        seeker = dialogue["survey_score"]["seeker"]
        return int(seeker["empathy"]) >= 4 and int(seeker["relevance"]) >= 4
    except (KeyError, TypeError, ValueError):
        return None


def held_out(dialogue: dict[str, Any]) -> bool:
    """Deterministic split: SHA-256 of the dialogue's first three turns' texts; ``HELD_OUT_SHARE`` held out."""
    key = "\n".join(str(t.get("text", "")) for t in dialogue["dialog"][:3]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") / 2**32 < HELD_OUT_SHARE


def turns_of(index: int, dialogue: dict[str, Any]) -> list[Turn]:
    """The supporter turns of one dialogue with a known strategy."""
    thumbs = survey_thumbs(dialogue)
    turns: list[Turn] = []
    before: list[tuple[str, str]] = []
    pending: list[str] = []
    for turn in dialogue["dialog"]:
        text = str(turn["text"]).strip()
        if turn["speaker"] == "usr":
            pending.append(text)
        else:
            label = turn.get("strategy")
            if label in STRATEGIES and text:
                turns.append(Turn(index, tuple(before), " ".join(pending), text, str(label), thumbs))
            pending = []
        if text:
            before.append((str(turn["speaker"]), text))
    return turns


def load_esconv(path: Path) -> list[dict[str, Any]]:
    """An ESConv JSONL file, or a directory holding ``valid.jsonl``. Raises ``EvalDataError``."""
    if path.is_dir():
        path = path / "valid.jsonl"
    return read_esconv(path)


def _cosines(query: np.ndarray[Any, Any], matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Cosines of unit vectors (MiniLM output is unit-normalised)."""
    return matrix @ query if len(matrix) else np.zeros(0)


def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % normal-approximation interval."""
    if not values:
        return 0.0, 0.0
    arr = np.asarray(values, dtype=np.float64)
    half = 1.96 * float(arr.std(ddof=1)) / math.sqrt(len(arr)) if len(arr) > 1 else 0.0
    return float(arr.mean()), half


def _history_messages(before: Sequence[tuple[str, str]], keep: int) -> list[Message]:
    """The dialogue so far as transient messages for :func:`assemble_prompt` (last ``keep``)."""
    return [
        Message(sender_type=SenderType.CLIENT if speaker == "usr" else SenderType.HUMAN_COACH, text=text)
        for speaker, text in before[-keep:]
    ]


def _before_client(before: Sequence[tuple[str, str]]) -> Sequence[tuple[str, str]]:
    """The dialogue before the seeker's latest message(s) (those become the new user message)."""
    end = len(before)
    while end and before[end - 1][0] == "usr":
        end -= 1
    return before[:end]


async def _reply(chat: ChatProvider, messages: Sequence[Any]) -> str:
    parts: list[str] = []
    async for piece in chat.stream(messages, max_tokens=REPLY_MAX_TOKENS, temperature=0.0):
        if not isinstance(piece, Usage):
            parts.append(piece)
    return "".join(parts).strip()


@dataclass(frozen=True)
class _Replay:
    """The supporter turns of the replay, embedded and analysed: ``history`` then ``test`` (held out) in
    ``analyses`` and ``client_vectors`` (MiniLM, unit-normalised); ``previous``: each turn's previous
    strategy in its dialogue as the classifier labelled it; the coach's style ``profile``, the history's
    ``majority`` strategy, and ``has_client``: which history turns answer a client message."""

    history: list[Turn]
    test: list[Turn]
    analyses: list[Analysis]
    previous: list[str | None]
    profile: dict[str, Any]
    majority: str
    client_vectors: np.ndarray[Any, Any]
    has_client: np.ndarray[Any, Any]

    def held_out_analysis(self, i: int) -> Analysis:
        """The analysis of held-out turn ``i``."""
        return self.analyses[len(self.history) + i]

    def neighbours(self, i: int, k: int) -> list[tuple[int, float]]:
        """History interventions nearest to held-out turn ``i``'s situation (cosine, best first)."""
        hist_n = len(self.history)
        sims = np.where(self.has_client, _cosines(self.client_vectors[hist_n + i], self.client_vectors[:hist_n]), -1.0)
        order = np.argsort(-sims)[:k]
        return [(int(j), float(sims[j])) for j in order if sims[j] > -1.0]


async def _replay(dialogues: Sequence[dict[str, Any]], embedder: Embedder, progress: Callable[[str], None]) -> _Replay:
    """Split the dialogues, embed and analyse every supporter turn, build the style profile from the
    history. Raises ``EvalDataError`` when the split leaves no history or no held-out turn."""
    history: list[Turn] = []
    test: list[Turn] = []
    for index, dialogue in enumerate(dialogues):
        (test if held_out(dialogue) else history).extend(turns_of(index, dialogue))
    if not history or not test:
        raise EvalDataError("the split left no history or no held-out supporter turn: give more dialogues")
    progress(f"Embedding {len(history) + len(test)} supporter turns…")
    turns = [*history, *test]
    text_vectors = np.asarray(await embedder.embed([t.text for t in turns]))
    client_vectors = np.asarray(await embedder.embed([t.client_text or " " for t in turns]))
    analyses = [analyse_message(t.text, t.client_text, text_vectors[i].tolist()) for i, t in enumerate(turns)]
    hist_n = len(history)
    # the coach's previous strategy in the same dialogue, as the classifier labelled it (known at prediction time)
    previous: list[str | None] = [
        analyses[k - 1].strategy if k and turns[k - 1].dialogue == t.dialogue else None for k, t in enumerate(turns)
    ]
    profile = build_style_profile(
        [
            StyleSample(a.strategy, a.client_mood, a.formality, a.tone, tuple(a.key_phrases), t.thumbs, previous[k])
            for k, (t, a) in enumerate(zip(history, analyses[:hist_n], strict=True))
        ]
    )
    majority = Counter(a.strategy for a in analyses[:hist_n]).most_common(1)[0][0]
    has_client = np.asarray([bool(t.client_text) for t in history])
    return _Replay(history, test, analyses, previous, profile, majority, client_vectors, has_client)


def _strategy_accuracy(replay: _Replay) -> dict[str, Any]:
    """(a): accuracy on the held-out turns of the majority class, the style profile (by mood; by mood and
    previous strategy), the kNN vote and the classifier, the classifier's macro-F1 and the majority label."""
    hist_n, test = len(replay.history), replay.test
    hits: Counter[str] = Counter()
    for i, t in enumerate(test):
        a = replay.held_out_analysis(i)
        hits["majority"] += replay.majority == t.label
        hits["style_profile"] += predict_strategy(replay.profile, a.client_mood) == t.label
        hits["style_profile_sequence"] += (
            predict_strategy(replay.profile, a.client_mood, replay.previous[hist_n + i]) == t.label
        )
        votes: dict[str, float] = {}
        for j, sim in replay.neighbours(i, KNN_K) if t.client_text else []:
            votes[replay.analyses[j].strategy] = votes.get(replay.analyses[j].strategy, 0.0) + sim
        knn = max(votes, key=lambda label: votes[label]) if votes else replay.majority
        hits["knn_history"] += knn == t.label
        hits["classifier"] += a.strategy == t.label
    n_test = len(test)
    f1s = []
    for label in STRATEGIES:
        tp = sum(replay.held_out_analysis(i).strategy == label == t.label for i, t in enumerate(test))
        pred = sum(replay.held_out_analysis(i).strategy == label for i in range(n_test))
        true = sum(t.label == label for t in test)
        f1s.append(2 * tp / (pred + true) if pred + true else 0.0)
    strategy: dict[str, Any] = {
        name: round(hits[name] / n_test, 4)
        for name in ("majority", "style_profile", "style_profile_sequence", "knn_history")
    }
    strategy["classifier"] = round(hits["classifier"] / n_test, 4)
    strategy["classifier_macro_f1"] = round(sum(f1s) / len(f1s), 4)
    strategy["majority_label"] = replay.majority
    return strategy


async def _similarity_pair(
    replay: _Replay,
    i: int,
    embedder: Embedder,
    chat: ChatProvider,
    lines: list[str],
    *,
    budget_tokens: int,
    history_turns: int,
) -> tuple[float, float, int]:
    """(b) for held-out turn ``i``: the cosines to the supporter's real reply of the model's reply without
    and with the few-shot interventions and the style ``lines``, and how many examples the prompt got."""
    t = replay.test[i]
    examples = [
        FewShotExample(
            uuid.uuid5(uuid.NAMESPACE_OID, f"esconv:{j}"),
            describe_situation(replay.analyses[j].client_mood),
            replay.history[j].text[:EXAMPLE_CHARS],
            replay.analyses[j].strategy,
            round(sim, 4),
        )
        for j, sim in replay.neighbours(i, FEW_SHOT_K)
        if sim >= MIN_SIMILARITY
    ]
    common = {
        "persona": PERSONA,
        "passages": [],
        "memory": MemoryContext(),
        "history": _history_messages(_before_client(t.before), history_turns),
        "user_text": t.client_text,
        "budget_tokens": budget_tokens,
        "coach_name": "Coach",
    }
    plain = assemble_prompt(**common)  # type: ignore[arg-type]
    shot = assemble_prompt(**common, examples=examples, style=lines)  # type: ignore[arg-type]
    replies = [await _reply(chat, plain.messages), await _reply(chat, shot.messages)]
    vectors = np.asarray(await embedder.embed([t.text, *replies]))
    return float(vectors[1] @ vectors[0]), float(vectors[2] @ vectors[0]), len(examples)


async def _reply_similarity(
    replay: _Replay,
    embedder: Embedder,
    chat: ChatProvider,
    *,
    limit: int,
    budget_tokens: int,
    history_turns: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """(b) over the first ``limit`` held-out turns with a client message: means without / with few-shot,
    the paired difference with its 95 % interval, examples per prompt, style lines, ``n``."""
    lines = style_lines(replay.profile)
    candidates = [i for i, t in enumerate(replay.test) if t.client_text][:limit]
    without: list[float] = []
    with_: list[float] = []
    used = 0
    for done, i in enumerate(candidates, start=1):
        progress(f"Generating replies {done}/{len(candidates)}…")
        plain, shot, examples = await _similarity_pair(
            replay, i, embedder, chat, lines, budget_tokens=budget_tokens, history_turns=history_turns
        )
        without.append(plain)
        with_.append(shot)
        used += examples
    diff = [b - a for a, b in zip(without, with_, strict=True)]
    mean_diff, half = _mean_ci(diff)
    return {
        "n": len(diff),
        "without_few_shot": round(_mean_ci(without)[0], 4),
        "with_few_shot": round(_mean_ci(with_)[0], 4),
        "difference": round(mean_diff, 4),
        "difference_ci95": [round(mean_diff - half, 4), round(mean_diff + half, 4)],
        "examples_per_prompt": round(used / max(len(diff), 1), 2),
        "style_lines": len(lines),
    }


async def evaluate(
    dialogues: Sequence[dict[str, Any]],
    embedder: Embedder,
    chat: ChatProvider | None,
    *,
    limit: int = DEFAULT_LIMIT,
    budget_tokens: int = 1500,
    history_turns: int = 6,
    progress: Callable[[str], None] = lambda _text: None,
) -> dict[str, Any]:
    """Run the evaluation (module docstring). ``embedder``: all-MiniLM-L6-v2 (the classifier's features
    need it); ``chat``: the model for (b), ``None`` to skip it; ``limit``: held-out turns generated for (b).
    Returns a JSON-able dict: ``dialogues``, ``history_turns``, ``held_out_turns``, ``strategy`` (accuracies),
    ``similarity`` (with/without means, difference and its interval, ``n``) and ``seconds``. Raises
    ``EvalDataError`` when the split leaves no history or no held-out turn."""
    started = time.perf_counter()
    replay = await _replay(dialogues, embedder, progress)
    strategy = _strategy_accuracy(replay)
    similarity: dict[str, Any] = {"n": 0}
    if chat is not None and limit > 0:
        similarity = await _reply_similarity(
            replay,
            embedder,
            chat,
            limit=limit,
            budget_tokens=budget_tokens,
            history_turns=history_turns,
            progress=progress,
        )
    profile = replay.profile
    return {
        "dialogues": len(dialogues),
        "history_dialogues": len({t.dialogue for t in replay.history}),
        "held_out_dialogues": len({t.dialogue for t in replay.test}),
        "history_turns": len(replay.history),
        "held_out_turns": len(replay.test),
        "strategy": strategy,
        "similarity": similarity,
        "style_profile": {k: profile[k] for k in ("n", "strategies", "formality", "tone") if k in profile},
        "seconds": round(time.perf_counter() - started, 1),
    }
