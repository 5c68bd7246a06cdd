"""What the client reads about who is answering: the AI says plainly that it is the coach's AI assistant.

Two rules of the turn, neither left to the model (its persona asks for honesty, but a model — or a
fine-tuned version, or a cached reply — can still claim to be a person):

- **asked** — the client asks whether they are talking to a person, a bot or an AI
  (:func:`app.handoff.signals.asks_if_ai`): the turn answers with :func:`disclosure` *without the model*
  (:attr:`app.chat.turn.decide.Before.DISCLOSE`). Chosen over checking the model's answer because nothing
  the model says can reach the client first (the reply is streamed) and the answer is the same every time;
  the cost is that another question in the same message is not answered — the disclosure invites the client
  to go on.
- **replaced** — any generated reply (streamed, cached or drafted) that claims to be human
  (:func:`app.handoff.signals.claims_human`: "I'm a real person", "I am not an AI", "as a human, I…") is
  replaced by :func:`correction` (:func:`app.chat.turn.decide.honest_reply`). A stream stops before the
  claim reaches the client (it runs words behind the model: :class:`app.chat.turn.injection.StreamedReply`); the
  correction is streamed after what went out, and the stored, REST, Telegram and history reply is the
  correction alone (the widget swaps the streamed text for the stored one at ``done``).

Both speak the client's language (``en es fr de pt``, :mod:`app.handoff.catalogue`): the disclosure that of the
question (:func:`app.handoff.signals.ai_question_language`) when it is not English, else that of the client's
message (:attr:`app.handoff.risk.RiskAssessment.language`); the correction that of the claim
(:func:`app.handoff.signals.human_claim_language`) when it is not English, else that of the client's message.

Both are recorded in the reply's ``metadata.honesty`` (``asked`` | ``replaced``; the model's replaced text
in ``metadata.honesty_model_reply``, coach-only) and are not the model's content (never training data).
"""

from __future__ import annotations

from enum import StrEnum

from app.handoff.catalogue import say


class Honesty(StrEnum):
    """``metadata.honesty``: why the reply is the product's honest text rather than the model's."""

    ASKED = "asked"
    """The client asked whether they talk to a person: answered without the model."""
    REPLACED = "replaced"
    """The model's reply claimed to be human: replaced."""


def disclosure(coach_name: str, language: str = "en") -> str:
    """The answer to "am I talking to a real person?", in ``language`` (``en es fr de pt``, anything else →
    English; :data:`app.handoff.catalogue.CATALOGUE` ``disclosure``)."""
    return say("disclosure", language, coach=coach_name)


def correction(coach_name: str, language: str = "en") -> str:
    """What replaces a generated reply that claimed to be human, in ``language`` (as :func:`disclosure`;
    ``correction``)."""
    return say("correction", language, coach=coach_name)
