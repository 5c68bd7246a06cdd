"""The crisis detector the chat turn runs on every client message: lexicon OR learned, then the conversation.

- :class:`CrisisDetector` scores one message with the English lexicon and the non-English cues
  (:class:`app.handoff.risk.RiskDetector`, after :func:`app.handoff.normalise.normalise`) and, for English
  text, the learned component (:mod:`app.handoff.crisis_model`: calibrated logistic regression on MiniLM
  embeddings). The two are OR-combined so that recall stays first: a message the lexicon misses but whose
  learned probability reaches the shipped ``combined_threshold`` (chosen on the training users for user
  recall ≥ 0.97) gets a cue ``"learned"`` of weight :data:`LEARNED_WEIGHT` — level ``concern`` at least,
  never ``crisis`` on its own (the model was fitted on Reddit posts; a chat message is out of its
  distribution, so it surfaces the conversation to the coach and feeds the conversation score, while the
  crisis protocol on one message stays with explicit wording).
- :func:`conversation_risk` raises the level over the conversation: the client's consecutive concerning
  messages (level ``concern`` or above, the latest included, at most :data:`CONVERSATION_WINDOW`) combine
  by noisy-or, like the cues inside one message; from :data:`CONVERSATION_CRISIS_SCORE` the conversation
  is ``crisis``. Three messages that each stay below the protocol — "I feel hopeless" (0.2), "I'm a burden
  to everyone" (0.45), "what's the point" (0.35) — make 0.71 together: crisis. A calm message in between
  breaks the run.

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

from app.handoff.crisis_model import CrisisModel, Embed, default_model, minilm_embed, windows
from app.handoff.risk import CONCERN_THRESHOLD, RiskAssessment, RiskDetector

LEARNED_WEIGHT = 0.3
"""Weight of the ``"learned"`` cue (a strong distress cue: level ``concern``, not ``crisis``, alone)."""

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

    def learned_probability(self, text: str, embedding: Sequence[float] | None = None) -> float | None:
        """The learned probability of one message (largest over its windows); ``None`` without a model.
        ``embedding``: the all-MiniLM-L6-v2 embedding of the message (unit length), used when the message
        fits one window — the turn can pass the vector it computed for retrieval."""
        model = self.model
        if model is None:
            return None
        parts = windows(text)
        if embedding is not None and len(parts) == 1:
            vectors = np.asarray(embedding, dtype=np.float64).reshape(1, -1)
        else:
            vectors = self._embed(parts)
        return float(model.probabilities(vectors).max())

    def assess(self, text: str, embedding: Sequence[float] | None = None) -> RiskAssessment:
        """The risk of one client message: the lexicon's assessment, with ``learned`` set for English text
        and the ``"learned"`` cue added when the probability reaches the model's ``combined_threshold``."""
        risk = self.lexicon.assess(text)
        if risk.language != "en" or not text.strip():
            return risk
        probability = self.learned_probability(text, embedding)
        model = self.model
        if probability is None or model is None:
            return risk
        if probability < model.combined_threshold:
            return replace(risk, learned=round(probability, 4))
        score = 1.0 - (1.0 - risk.score) * (1.0 - LEARNED_WEIGHT)
        level = risk.level if risk.level != "none" else ("concern" if score >= CONCERN_THRESHOLD else "none")
        return replace(
            risk, level=level, score=round(score, 4), matched=[*risk.matched, "learned"], learned=round(probability, 4)
        )

    def assess_user(self, posts: Iterable[str]) -> RiskAssessment:
        """One person from all their posts (the C-SSRS evaluation's unit): the lexicon's user assessment,
        flagged ``concern`` at least when the learned user score (:func:`app.handoff.crisis_model.aggregate`
        of the posts' probabilities) reaches ``combined_threshold``."""
        from app.handoff.crisis_model import aggregate

        posts = list(posts)
        risk = self.lexicon.assess_user(posts)
        model = self.model
        if model is None or not posts:
            return risk
        score = aggregate([self.learned_probability(post) or 0.0 for post in posts])
        if score < model.combined_threshold:
            return replace(risk, learned=round(score, 4))
        level = risk.level if risk.level != "none" else "concern"
        return replace(risk, level=level, matched=[*risk.matched, "learned"], learned=round(score, 4))


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
