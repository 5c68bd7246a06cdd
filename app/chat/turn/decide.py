"""The turn's decisions, as pure functions of values (no I/O, no clock): what happens before the model,
after retrieval, and around generation. :mod:`app.chat.turn.pipeline` acts on what they return;
``tests/unit/chat/test_decide.py`` covers every branch with tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from app.accounts.models import HandoffMode
from app.chat.turn.honesty import correction
from app.conversations.handoffs import HandoffReason
from app.handoff.confidence import Confidence
from app.handoff.signals import TurnSignals, human_claim_language


class Before(StrEnum):
    """What a turn does before any retrieval or model call."""

    CRISIS = "crisis"
    """The crisis reply, at once (also during a handoff, which it makes urgent)."""
    PAUSED = "paused"
    """A handoff is active: the coach has the conversation, the AI stays silent."""
    HAND_OFF = "hand_off"
    """A rule hands the conversation to the coach; the client gets a notice."""
    DISCLOSE = "disclose"
    """The client asks whether they talk to a person: the AI says it is the coach's AI assistant, without
    the model (:mod:`app.chat.turn.honesty`)."""
    ANSWER = "answer"
    """Retrieve, then decide again (:func:`after_retrieval`)."""


@dataclass(frozen=True)
class BeforeModel:
    """The decision before the model: ``action``; for ``HAND_OFF`` the handoff ``reason`` and ``detail``; for
    ``CRISIS`` whether an ``active`` handoff is escalated instead of a new one opened."""

    action: Before
    reason: str | None = None
    detail: str = ""
    active: bool = False


def before_model(
    *, crisis: bool, handoff_active: bool, signals: TurnSignals, mode: str, asks_if_ai: bool = False
) -> BeforeModel:
    """Decide before retrieval. Order: crisis (always first, even while the coach has the conversation) →
    an active handoff pauses the AI → an explicit ask for a human → an always-escalate topic → ``human_only``
    mode → the client asks whether they talk to a person (``asks_if_ai``,
    :func:`app.handoff.signals.asks_if_ai`: disclose, in every mode, also ``draft`` — it is the product's
    text, not the model's) → answer. ``mode`` is the coach's :class:`app.accounts.models.HandoffMode`.

    A request for a person beats the question ("are you a bot? I want a human" hands off: the notice says
    the coach was asked to join); while the coach holds the conversation the question goes to the coach."""
    if crisis:
        return BeforeModel(Before.CRISIS, HandoffReason.CRISIS, active=handoff_active)
    if handoff_active:
        return BeforeModel(Before.PAUSED)
    if signals.human_request:
        return BeforeModel(Before.HAND_OFF, HandoffReason.HUMAN_REQUEST, "the client asked for a human")
    if signals.escalate_topics:
        return BeforeModel(Before.HAND_OFF, HandoffReason.ESCALATE_TOPIC, ", ".join(signals.escalate_topics))
    if mode == HandoffMode.HUMAN_ONLY:
        return BeforeModel(Before.HAND_OFF, HandoffReason.HUMAN_ONLY)
    if asks_if_ai:
        return BeforeModel(Before.DISCLOSE)
    return BeforeModel(Before.ANSWER)


class After(StrEnum):
    """What a turn does once its passages are retrieved and its confidence scored."""

    HAND_OFF = "hand_off"
    """Confidence below the coach's threshold in ``auto`` mode: a low-confidence handoff, no model call."""
    DRAFT = "draft"
    """``draft`` mode: generate, keep the reply for the coach's approval, stream nothing."""
    SEND = "send"
    """Generate and stream the reply to the client."""


@dataclass(frozen=True)
class AfterRetrieval:
    """The decision after retrieval: ``action`` and, for ``HAND_OFF``, the handoff's ``detail``."""

    action: After
    detail: str = ""


def after_retrieval(
    *, mode: str, confidence: Confidence, threshold: float, handed_back: bool = False
) -> AfterRetrieval:
    """Decide after retrieval: ``draft`` mode always drafts (the coach reviews every reply, whatever the
    confidence); otherwise confidence (0–1) below ``threshold`` hands off, else the reply is sent. A message the
    coach ``handed_back`` after a low-confidence handoff took it (:data:`~app.conversations.metadata.HANDED_BACK`)
    is sent whatever the confidence: the coach decided the AI answers it."""
    if mode == HandoffMode.DRAFT:
        return AfterRetrieval(After.DRAFT)
    if confidence.value < threshold and not handed_back:
        detail = f"confidence {confidence.value:.2f} < {threshold:.2f}"
        if confidence.reason:
            detail += f", mostly {confidence.reason.replace('_', ' ')}"
        return AfterRetrieval(After.HAND_OFF, detail)
    return AfterRetrieval(After.SEND)


def use_cache(ttl_seconds: int) -> bool:
    """Whether the response cache is read and written for a coach (a TTL of 0 turns it off)."""
    return ttl_seconds > 0


def model_order(serving: str, base: str) -> list[str]:
    """Which models to try, in order: the serving model (a fine-tuned version, an experiment's model), then
    the coach's base model if that is a different one."""
    return [serving] if serving == base else [serving, base]


class OnError(StrEnum):
    """What a provider failure during generation leads to."""

    FALLBACK = "fallback"
    """Try the next model (nothing was streamed yet, and one is left)."""
    APOLOGY = "apology"
    """Give up: the client gets :data:`app.chat.turn.generate.APOLOGY`."""


def on_provider_error(*, streamed: bool, attempt: int, attempts: int) -> OnError:
    """After model ``attempt`` (0-based) of ``attempts`` failed: fall back only when no delta was produced
    yet (a reply must not mix two models) and another model is left."""
    return OnError.FALLBACK if not streamed and attempt < attempts - 1 else OnError.APOLOGY


def cache_after(
    *, cache: str | None, failed: bool, replaced: bool = False, fallback: bool = False, sent: bool = True
) -> bool:
    """Whether a generated reply is put in the response cache: only a model's reply after a miss (never an
    apology, a reply ``replaced`` by :func:`honest_reply`, a hit, a turn with the cache off, ``cache``
    ``None``, or a reply of the ``fallback`` model: its key names the model that failed, a production version or
    an experiment arm's, whose later hits would serve the fallback's text under that model's name), and only
    one ``sent`` to the client as the AI's answer with no handoff opened by it: not a draft the coach has yet to
    approve (a discarded one was served to the next client once the coach left draft mode), a reply kept out by
    a takeover, or one whose token probability asked the coach to look (a hit carries no token probability,
    so it went out with no handoff)."""
    return cache == "miss" and not failed and not replaced and not fallback and sent


def honest_reply(text: str, *, coach_name: str, language: str = "en") -> str | None:
    """The text that replaces a generated reply claiming to be human
    (:func:`app.handoff.signals.claims_human`: "I'm a real person", "I am not an AI", "as a human, I…", "soy una
    persona real"): :func:`app.chat.turn.honesty.correction` in the claim's language when it is not English
    (:func:`app.handoff.signals.human_claim_language`), else in ``language`` (the client's); ``None`` when the
    reply stands."""
    claimed = human_claim_language(text)
    if claimed is None:
        return None
    return correction(coach_name, language if claimed == "en" else claimed)


_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")


def _complete_sentences(text: str) -> str | None:
    """``text`` up to the end of its last complete sentence, ``None`` when it has none."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else None


def trim_to_sentence(text: str) -> str:
    """Cut a reply that hit the token limit back to its last complete sentence (unchanged if it has none)."""
    complete = _complete_sentences(text)
    return text if complete is None else complete


@dataclass(frozen=True)
class FinalReply:
    """The reply to store: ``text`` (``""``: the model produced nothing, which counts as a failure) and
    whether it was ``truncated`` at the token limit."""

    text: str
    truncated: bool


def cut_at_deadline(streamed: str) -> FinalReply | None:
    """The stored reply of a generation the turn's deadline stopped mid-stream: what streamed, cut back to its last
    complete sentence (``truncated``); ``None`` when no sentence was complete (the turn then apologises)."""
    complete = _complete_sentences(streamed.strip())
    return None if complete is None else FinalReply(complete, True)


def final_reply(
    streamed: str, *, completion_tokens: int | None, max_tokens: int, finish_reason: str = "stop"
) -> FinalReply:
    """The stored reply from the streamed text: stripped, and cut back to its last full sentence when the
    model stopped at ``max_tokens``: its ``finish_reason`` is ``length``, or it wrote ``max_tokens`` tokens
    (``completion_tokens`` ``None``: the provider reported no usage; a server may count tokens its own way)."""
    text = streamed.strip()
    if finish_reason == "length" or (completion_tokens is not None and completion_tokens >= max_tokens):
        return FinalReply(trim_to_sentence(text), True)
    return FinalReply(text, False)
