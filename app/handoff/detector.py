"""The crisis detector the chat turn runs on every client message: lexicon OR learned, then the conversation.

- :class:`CrisisDetector` scores one message with the English lexicon and the non-English cues
  (:class:`app.handoff.risk.RiskDetector`, after :func:`app.handoff.normalise.normalise`) and, for English
  text, the learned component (:mod:`app.handoff.crisis_model`: calibrated logistic regression on MiniLM
  embeddings and pronoun rates). The two are OR-combined so that recall stays first, each with its own
  recall-first threshold (the lexicon's cues were tuned by hand on the C-SSRS dev file, so a threshold
  chosen for "lexicon OR learned" on that file would trust the lexicon's optimistic recall there): a
  message the lexicon misses but whose learned probability reaches the model's ``threshold`` (chosen on the
  training users for user recall ≥ 0.98) gets a cue ``"learned"`` of weight :data:`LEARNED_WEIGHT` — level
  ``concern``, never ``crisis`` on its own (the model was fitted on Reddit users; a coaching message is out
  of its distribution, so it surfaces the conversation to the coach and feeds the conversation score, while
  the crisis protocol on one message stays with explicit wording).
- :func:`screen_flag` is the at-risk screen :mod:`app.evals.crisis` measures as ``combined``.
- :func:`conversation_risk` raises the level over the conversation: the client's consecutive concerning
  messages (level ``concern`` or above, the latest included, at most :data:`CONVERSATION_WINDOW`) combine
  by noisy-or, like the cues inside one message; from :data:`CONVERSATION_CRISIS_SCORE` the conversation
  is ``crisis``. Three messages that each stay below the protocol — "I feel hopeless" (0.2), "I'm a burden
  to everyone" (0.45), "what's the point" (0.35) — make 0.71 together: crisis. A calm message in between
  breaks the run.

Limit, measured: the learned model was fitted on whole Reddit users (many long posts; ``assess_user``)
plus ordinary ESConv chat as negatives. On one short chat message its probability is usually far below the
threshold, explicit wording included ("I want to kill myself" → 0.005: the lexicon catches it), so per
message it adds little; its unit is a person's posts — in the chat, the client's recent messages taken
together (``assess_user(texts)``).

Cost: the lexicon ~0.1 ms; the learned part one MiniLM forward pass (a few ms for a short message on CPU,
see ``bench/crisis.py``), or ~0.05 ms when the caller passes the message's MiniLM embedding it already has.

Sources: Gaur M. et al. (2019), WWW 2019 (the C-SSRS Reddit data the thresholds were chosen on); Posner K.
et al. (2011), the C-SSRS; Reimers N. & Gurevych I. (2019), Sentence-BERT; Platt J. (1999) / scikit-learn
``CalibratedClassifierCV``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from app.handoff.crisis import needs_crisis_protocol
from app.handoff.crisis_model import CrisisModel, Embed, default_model, minilm_embed, windows
from app.handoff.risk import RiskAssessment, RiskDetector

LEARNED_WEIGHT = 0.25
"""Weight of the ``"learned"`` cue (a strong distress cue: level ``concern``, not ``crisis``, alone; two
learned-only messages in a row make 0.44 — still below :data:`CONVERSATION_CRISIS_SCORE` — three make 0.58)."""

CONVERSATION_WINDOW = 6
"""Most recent client messages :func:`conversation_risk` looks at (the same window as the sentiment trend)."""

CONVERSATION_CRISIS_SCORE = 0.5
"""Noisy-or score of a run of concerning messages from which the conversation is ``crisis`` (the crisis
protocol's own message score, :data:`app.handoff.crisis.PROTOCOL_SCORE`)."""

_LEVELS = {"none": 0, "concern": 1, "crisis": 2}


class CrisisDetector:
    """Lexicon OR learned, per message (see the module docstring). Thread-safe; the model and MiniLM load on
    the first English message that needs them.

    ``model``: the learned component (default: the shipped ``crisis_model.npz``; ``None`` disables it);
    ``embed``: texts → ``n × 384`` MiniLM embeddings (default: the local all-MiniLM-L6-v2).
    """

    def __init__(
        self,
        lexicon: RiskDetector | None = None,
        model: CrisisModel | None | str = "default",
        embed: Embed | None = None,
    ) -> None:
        self.lexicon = lexicon or RiskDetector()
        self._model = model
        self._embed = embed or minilm_embed

    @property
    def model(self) -> CrisisModel | None:
        """The learned component, or ``None`` when disabled or not shipped."""
        if isinstance(self._model, str):
            self._model = default_model()
        return self._model

    def _posts(self, texts: Sequence[str], embedding: Sequence[float] | None = None) -> list[np.ndarray]:
        """Per text the ``windows × 384`` MiniLM matrix; ``embedding`` stands for a one-window single text."""
        parts = [windows(text) for text in texts]
        if embedding is not None and len(parts) == 1 and len(parts[0]) == 1:
            return [np.asarray(embedding, dtype=np.float64).reshape(1, -1)]
        flat = self._embed([w for part in parts for w in part])
        out, start = [], 0
        for part in parts:
            out.append(np.asarray(flat[start : start + len(part)]))
            start += len(part)
        return out

    def learned_probability(
        self, texts: Sequence[str], lexicon_score: float, embedding: Sequence[float] | None = None
    ) -> float | None:
        """The learned probability of one message (``[text]``) or of a person's posts; ``None`` without a
        model. ``lexicon_score``: the lexicon's score of the same texts (a model feature). ``embedding``: the
        all-MiniLM-L6-v2 embedding (unit length) of a single short message, used instead of embedding it
        again — the turn can pass the vector it computed for retrieval."""
        model = self.model
        if model is None or not texts:
            return None
        return model.score(self._posts(texts, embedding), texts, lexicon_score)

    def _with_learned(self, risk: RiskAssessment, probability: float | None) -> RiskAssessment:
        model = self.model
        if probability is None or model is None:
            return risk
        if probability < model.threshold:
            return replace(risk, learned=round(probability, 4))
        score = 1.0 - (1.0 - risk.score) * (1.0 - LEARNED_WEIGHT)
        level = risk.level if risk.level != "none" else "concern"
        return replace(
            risk, level=level, score=round(score, 4), matched=[*risk.matched, "learned"], learned=round(probability, 4)
        )

    def assess(self, text: str, embedding: Sequence[float] | None = None) -> RiskAssessment:
        """The risk of one client message: the lexicon's assessment, with ``learned`` set for English text
        and, when it reaches the model's threshold, the ``"learned"`` cue (level ``concern`` at least)."""
        risk = self.lexicon.assess(text)
        if risk.language != "en" or not text.strip():
            return risk
        return self._with_learned(risk, self.learned_probability([text], risk.score, embedding))

    def assess_user(self, posts: Iterable[str]) -> RiskAssessment:
        """One person from all their posts (the C-SSRS evaluation's unit): the lexicon's user assessment OR
        the learned model on the posts together — the flag :func:`app.evals.crisis.cross_validate` scores as
        ``combined``."""
        posts = [post for post in posts if post.strip()]
        risk = self.lexicon.assess_user(posts)
        return self._with_learned(risk, self.learned_probability(posts, risk.score))


def screen_flag(risk: RiskAssessment) -> bool:
    """Whether a person or message is flagged at risk by the combined screen: the learned component fired
    (``"learned"`` in ``matched``) or the lexicon found explicit / indirect wording (level ``crisis``). The
    lexicon's ``concern`` from weak distress words alone ("I feel so alone") is left to the turn's
    confidence and trend signals. Under 5-fold user-level CV on ``cssrs_dev.csv`` with the shipped training
    recipe (``opencoach eval crisis --folds 5 --esconv ../shared/data/esconv``; threshold for the screen's
    inner out-of-fold recall ≥ 0.98) this screen scored recall 0.974 / precision 0.808 (F1 0.883, Indicator
    users flagged 0.804) and flagged 6.8 % of held-out ordinary ESConv chat messages (6.3 % before a message
    naming no one counted as the writer's); before the max-pooled
    and lexicon features: 0.980 / 0.796 and 14.9 %; with the earlier target 0.97:
    0.967 / 0.816 and 8.0 %."""
    return risk.level == "crisis" or "learned" in risk.matched


def with_unanswered(current: RiskAssessment, unanswered: Sequence[RiskAssessment]) -> RiskAssessment:
    """This turn's risk given the assessments of the client's earlier messages no turn answered (oldest first):
    the first of those that calls for the crisis protocol (:func:`~app.handoff.crisis.needs_crisis_protocol`)
    when this one does not (``"unanswered"`` added to ``matched``), so the
    crisis protocol runs now for a crisis whose own turn never ran (its process died) or failed, instead of
    never; else ``current``."""
    if needs_crisis_protocol(current):
        return current
    crisis = next((a for a in unanswered if needs_crisis_protocol(a)), None)
    return current if crisis is None else replace(crisis, matched=[*crisis.matched, "unanswered"])


def with_fragment(current: RiskAssessment, previous: RiskAssessment, joined: RiskAssessment) -> RiskAssessment:
    """This turn's risk given the client's previous message read alone (``previous``) and read with this one
    (``joined``: the lexicon on the two texts joined by a space): ``joined``, with ``"joined"`` added to
    ``matched``, when it calls for the crisis protocol (:func:`~app.handoff.crisis.needs_crisis_protocol`) and
    neither message does alone; else ``current``. A client who sends "i think tonight im finally going to" and
    then "do it. the pills are on the table" (or "i'm going to", "jump off the bridge tonight") wrote one crisis
    message in two; read apart, neither halves' cues fired. A previous message that called for the protocol itself
    is not read again with each later one (its crisis was handled at its own turn). Pure: no I/O, no model."""
    if needs_crisis_protocol(current) or needs_crisis_protocol(previous) or not needs_crisis_protocol(joined):
        return current
    return replace(joined, matched=[*joined.matched, "joined"], language=current.language)


def conversation_risk(recent: Sequence[RiskAssessment]) -> RiskAssessment:
    """The conversation's risk from the client's latest message assessments (oldest first, the current
    message last; any length — only the last :data:`CONVERSATION_WINDOW` count).

    The run is the trailing messages of level ``concern`` or ``crisis`` (a ``none`` breaks it). Its score
    is the noisy-or ``1 - Π(1 - score)``; the level is the highest in the run, raised to ``crisis`` when the
    score reaches :data:`CONVERSATION_CRISIS_SCORE` over two or more messages (``"conversation"`` is then
    added to ``matched``). With an empty list → level ``none``, score 0. ``explicit`` and ``learned`` are
    the run's any/max; ``language`` is the latest message's. Pure: no I/O, no model.
    """
    if not recent:
        return RiskAssessment("none", 0.0)
    latest = recent[-1]
    run: list[RiskAssessment] = []
    for assessment in reversed(recent[-CONVERSATION_WINDOW:]):
        if assessment.level == "none":
            break
        run.append(assessment)
    if len(run) < 2:
        return latest
    score = 1.0 - math.prod(1.0 - a.score for a in run)
    level = max((a.level for a in run), key=lambda lvl: _LEVELS[lvl])
    matched: list[str] = []
    for assessment in run:
        matched.extend(name for name in assessment.matched if name not in matched)
    if score >= CONVERSATION_CRISIS_SCORE and level != "crisis":
        level = "crisis"
        matched.append("conversation")
    learned = [a.learned for a in run if a.learned is not None]
    return RiskAssessment(
        level,
        round(max(score, latest.score), 4),
        matched,
        any(a.explicit for a in run),
        latest.language,
        max(learned) if learned else None,
    )
