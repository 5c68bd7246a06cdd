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

Both are recorded in the reply's ``metadata.honesty`` (``asked`` | ``replaced``; the model's replaced text
in ``metadata.honesty_model_reply``, coach-only) and are not the model's content (never training data).
"""

from __future__ import annotations

from enum import StrEnum


class Honesty(StrEnum):
    """``metadata.honesty``: why the reply is the product's honest text rather than the model's."""

    ASKED = "asked"
    """The client asked whether they talk to a person: answered without the model."""
    REPLACED = "replaced"
    """The model's reply claimed to be human: replaced."""


def disclosure(coach_name: str) -> str:
    """The answer to "am I talking to a real person?"."""
    return (
        f"No — I'm {coach_name}'s AI assistant, not a person, and not {coach_name}. {coach_name} can read "
        f"this conversation and can join it: ask for {coach_name} (or type /human) whenever you'd like to talk "
        "to them. Until then, I'm glad to keep helping — what's on your mind?"
    )


def correction(coach_name: str) -> str:
    """What replaces a generated reply that claimed to be human."""
    return (
        f"I need to correct that: I'm {coach_name}'s AI assistant, not a person. {coach_name} can join this "
        f"conversation — ask for {coach_name} (or type /human) whenever you'd like to talk to them. Could you "
        "tell me again what you'd like help with?"
    )
