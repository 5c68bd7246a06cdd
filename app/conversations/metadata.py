"""Reply metadata: one typed structure for what a message's ``metadata`` column holds, and the allowlist of
what of it a client may see.

Every key any writer puts on ``Message.meta`` / ``Draft.meta`` (column ``metadata``, JSONB) is a field of
:class:`ReplyMeta`; every reader goes through :meth:`ReplyMeta.from_json` (or the small helpers below, or the
SQL paths of :mod:`app.conversations.metadata_sql` for queries that aggregate in PostgreSQL) instead of
reading string keys. Writers build a :class:`ReplyMeta` and store :meth:`ReplyMeta.to_json`.

What a client receives — the REST turn, the WebSocket ``done`` event, live ``message`` events on the client's
channel, the widget page — is :func:`client_view`: an **allowlist** (:class:`ClientMeta`), so a key added to
:class:`ReplyMeta` stays with the coach until someone decides the client needs it. Confidence, thresholds,
signals, risk, errors, partial replies, model and provider, prompt / memory / few-shot ids, experiments and
timings never reach the client: a client who saw ``confidence.factors`` or ``signals.risk_score`` could
probe the crisis detector until a message slips under it.

Units: ``*_ms`` fields are milliseconds (wall clock, rounded to 0.1 ms); ``*_tokens`` are the provider's
token counts; confidences, thresholds and scores are in ``[0, 1]``; ids are UUID strings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- nested parts


class ConfidenceMeta(msgspec.Struct, kw_only=True):
    """``metadata.confidence``: the turn's confidence (:class:`app.handoff.confidence.Confidence`)."""

    value: float
    """``[0, 1]``: the product of ``factors``."""
    reason: str | None = None
    """Name of the factor that lowered it most; ``None`` when none is below 1."""
    factors: dict[str, float] = {}
    """Every factor in ``[0, 1]`` by name (``risk``, ``sentiment``, ``support``, ``topic``, …)."""


class SignalsMeta(msgspec.Struct, kw_only=True):
    """``metadata.signals``: the client turn's signal values (:class:`app.handoff.signals.TurnSignals`).
    Defaults let rows written before a signal existed load."""

    risk_score: float = 0.0
    """Crisis-risk detector score, ``[0, 1]``."""
    risk_level: str = "none"
    """``none`` | ``concern`` | ``crisis``."""
    sentiment: float = 0.0
    """VADER compound of the client's message, ``[-1, 1]``."""
    sentiment_trend: float = 0.0
    """Slope of the compound over the client's last ≤ 6 messages, per message."""
    human_request: bool = False
    """The client asked for a human."""
    retrieval_support: float | None = None
    """``[0, 1]`` coverage of the question by the coach's material; ``None`` when not measured."""
    high_stakes_topics: list[str] = []
    """The coach's high-stakes topics the message touches."""
    escalate_topics: list[str] = []
    """The coach's always-escalate topics the message touches."""
    repeated_question: float = 0.0
    """``[0, 1]`` similarity to the client's earlier messages."""
    thumbs_down_streak: int = 0
    """Consecutive thumbs-down on the latest AI replies."""
    venting: int = 0
    """The client's last three messages that vent at the AI (0 when this one does not)."""
    token_confidence: float | None = None
    """``exp(mean token logprob)`` of the reply when the provider returned logprobs, ``[0, 1]``."""


class RiskMeta(msgspec.Struct, kw_only=True):
    """``metadata.risk`` (crisis replies): the detector's assessment (:class:`app.handoff.risk.RiskAssessment`)."""

    level: str
    """``none`` | ``concern`` | ``crisis``."""
    score: float
    """``[0, 1]``."""
    cues: list[str] = []
    """Names of the cues that fired, strongest first."""
    explicit: bool = False
    """An explicit cue fired at full weight."""
    language: str = "en"
    """The language the client wrote in (``en es fr de pt``); the crisis reply uses it."""
    learned: float | None = None
    """The learned component's probability for the message (``[0, 1]``), ``None`` when it did not run."""


class MemoryMeta(msgspec.Struct, kw_only=True):
    """``metadata.memory``: the client memory the prompt used (:meth:`app.chat.prompt.Prompt.memory_used`)."""

    insight_ids: list[str] = []
    """L3 insights in the prompt."""
    summary_ids: list[str] = []
    """L2 session summaries in the prompt."""
    message_ids: list[str] = []
    """Earlier messages recalled on their own (the episodic layer, :mod:`app.memory.episodes`)."""
    profile: bool = False
    """Whether L4 profile lines were in the prompt."""


class ExperimentMeta(msgspec.Struct, kw_only=True):
    """``metadata.experiment``: the experiment and variant that served the reply."""

    id: str
    variant: str


class ToneMeta(msgspec.Struct, kw_only=True):
    """``metadata.tone``: the tone the reply was written in (:class:`app.chat.tone.TurnTone`; coach-only)."""

    intensity: int
    """1 (ultra gentle) … 6 (blunt)."""
    mode: str | None = None
    """The client's consented mode in force; ``None``: default."""
    gentle: str | None = None
    """Why the reply was forced gentle: ``risk`` | ``low_mood``; ``None``: it was not."""


class ModelFallbackMeta(msgspec.Struct, kw_only=True):
    """``metadata.model_fallback``: the serving model failed before sending anything; the base model answered."""

    from_: str = msgspec.field(name="from")
    """The model that failed."""
    error: str
    """Its error (coach-only)."""


LOW_RATING = 2
"""Stars up to which a rating overrides a thumbs up: a reply rated 👍 then 1–2 ★ counts as 👎 (the client's
considered rating after the quick click; :attr:`FeedbackMeta.approves`)."""


class FeedbackMeta(msgspec.Struct, kw_only=True):
    """``metadata.feedback``: the client's own rating of a reply (``POST /api/v1/messages/{id}/feedback``)."""

    helpful: bool | None = None
    """Thumbs up (``True``) / down (``False``)."""
    rating: int | None = None
    """1–5 stars, optional."""
    text: str | None = None
    """The client's comment, optional."""
    at: str | None = None
    """ISO 8601 time of the rating."""

    @property
    def approves(self) -> bool | None:
        """The client's verdict: the thumbs, except that a thumbs up rated :data:`LOW_RATING` stars or fewer is a
        thumbs down; ``None`` without thumbs. The learning dashboard's approval rate and failure patterns and the
        experiments count this (:func:`app.conversations.metadata_sql.approves`)."""
        if self.helpful is None:
            return None
        return self.helpful and not (self.rating is not None and self.rating <= LOW_RATING)


# --------------------------------------------------------------------------------------------- ReplyMeta


class ReplyMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Everything a message's ``metadata`` may hold, by who writes it. Every field is optional (a client
    message has none; a crisis reply a handful); unset fields are left out of :meth:`to_json`.

    Build it in the writer and store ``meta.to_json()``; read stored rows with :meth:`from_json`.
    """

    # --- attribution of an AI reply (the turn)
    provider: str | None = None
    """Chat provider that served the turn: ``local`` (llama.cpp) or ``openai`` (any compatible endpoint)."""
    model: str | None = None
    """Model name that produced the reply (after any fallback)."""
    mode: str | None = None
    """The coach's ``handoff_mode`` at the time: ``auto`` | ``draft`` | ``human_only``."""
    model_version_id: str | None = None
    """The production model version that served (fine-tuned model), if any."""
    model_fallback: ModelFallbackMeta | None = None
    """Set when the serving model failed and the base model answered."""
    experiment: ExperimentMeta | None = None
    """The experiment and variant the client is in."""
    tone: ToneMeta | None = None
    """The tone the reply was written in."""
    cache: str | None = None
    """Response cache: ``hit`` | ``miss``; unset when the coach's cache is off."""
    cache_key: str | None = None
    """With ``cache``: the response-cache key the reply was read from or stored under (coach-only), so a
    thumbs-down can take the reply out of the cache (:meth:`app.learning.cache.ResponseCache.reject`)."""
    history_messages: int | None = None
    """L1 messages of the conversation that fit in the prompt."""
    memory: MemoryMeta | None = None
    """Client memory used in the prompt."""
    few_shot: list[str] = []
    """Ids of the coach's interventions used as few-shot examples."""
    prompt_tokens: int | None = None
    """Prompt tokens the provider reported."""
    completion_tokens: int | None = None
    """Completion tokens the provider reported."""
    truncated: bool = False
    """The reply hit the token limit and was cut back to its last complete sentence."""
    deadline_cut: bool = False
    """The model was still writing when the turn's deadline (``LLM_TIMEOUT_SECONDS``) passed: the reply is what it
    wrote up to its last complete sentence (``truncated`` too), not the apology; never cached."""

    # --- timings (milliseconds)
    retrieval_ms: float | None = None
    """Query embedding, passage retrieval, memory recall and learning lookups."""
    prompt_ms: float | None = None
    """Prompt assembly."""
    first_token_ms: float | None = None
    """From the model request to its first delta."""
    generation_ms: float | None = None
    """From the model request to its last delta (or the cache read)."""
    persist_ms: float | None = None
    """Storing the reply (in the turn's result only; measured after the row is written)."""
    latency_ms: float | None = None
    """The whole turn, from the client's message to the result (in the turn's result only)."""
    stages: dict[str, float] = {}
    """Milliseconds per stage of the turn (:class:`app.chat.turn.timing.Stages`: ``receive``, ``intake``,
    ``gather``, ``generate``, ``persist``, ``after_commit`` and their dotted parts such as
    ``gather.passages``); the stored reply holds the stages before ``persist``, the turn's result all."""

    # --- confidence, signals, risk (coach-only)
    ai_confidence_before: float | None = None
    """``[0, 1]`` confidence before generation (after retrieval), or before the handoff; ``None`` for a
    coach's unprompted takeover."""
    confidence_threshold: float | None = None
    """``[0, 1]``: the coach's threshold at the time."""
    confidence: ConfidenceMeta | None = None
    """Confidence after generation, with its factors."""
    signals: SignalsMeta | None = None
    """The client turn's signal values."""
    risk: RiskMeta | None = None
    """Crisis replies: the detector's assessment."""

    # --- failure (coach-only: provider errors can name the coach's configuration)
    error: str | None = None
    """Why generation failed (provider error or timeout); the reply is then the apology."""
    partial_reply: str | None = None
    """What the model had streamed before it failed."""

    # --- honesty (app.chat.turn.honesty)
    honesty: str | None = None
    """The reply is the product's statement that the client talks to the coach's AI assistant, not the
    model's: ``asked`` (the client asked whether they talk to a person; answered without the model) |
    ``replaced`` (the model's reply claimed to be human and was replaced)."""
    honesty_model_reply: str | None = None
    """With ``honesty`` ``replaced``: the model's reply that claimed to be human (coach-only)."""

    # --- prompt injection (app.chat.turn.injection; coach-only)
    injection: str | None = None
    """The output check replaced the model's reply by the safe reply: ``leak`` (it repeated the system text or
    a few-shot example) | ``payload`` (it carried the payload of an instruction planted in what it read)."""
    injection_model_reply: str | None = None
    """With ``injection``: the model's replaced reply (coach-only)."""

    # --- kinds of message
    crisis: bool = False
    """The crisis protocol's reply (written without the model)."""
    notice: str | None = None
    """A system message, not the AI's content: ``handoff`` (the coach was asked to join) | ``sla`` (holding
    message past the coach's SLA) | ``crisis`` (a client's message during a crisis handoff still waiting for the
    coach was received; the crisis resources again)."""

    language: str | None = None
    """With ``notice`` ``handoff``: the language the notice speaks (``en es fr de pt``); the SLA holding message of
    its handoff speaks it too (coach-only)."""

    # --- handoff
    handoff_id: str | None = None
    """The handoff this message belongs to (crisis reply, notice, the coach's messages, SLA message)."""
    handoff_reason: str | None = None
    """Its reason (:class:`app.conversations.handoffs.HandoffReason`)."""
    is_handoff: bool = False
    """Written by the human coach during a takeover."""
    is_handback: bool = False
    """The first AI reply after the coach handed the conversation back."""
    human_duration_minutes: float | None = None
    """With ``is_handback``: minutes the coach held the conversation."""

    # --- drafts (draft mode)
    draft_id: str | None = None
    """The draft this message was sent from."""
    approved_by_coach: bool = False
    """The coach approved the draft before it was sent."""
    edited: bool = False
    """The coach edited the draft: the message is the coach's (``human_coach``)."""
    ai_draft: str | None = None
    """With ``edited``: the AI's draft the coach replaced (coach-only)."""

    # --- the client's feedback
    feedback: FeedbackMeta | None = None
    """The client's rating of this reply."""

    # --- offline evaluation
    locomo_dia_id: str | None = None
    """LoCoMo turn id of a message replayed by ``opencoach eval memory``."""

    # --- anything else
    extra: dict[str, Any] = {}
    """Keys this version does not know (rows written by a newer version) or values of the wrong type (kept as
    stored): carried through :meth:`to_json` unchanged, never shown to a client."""

    # ------------------------------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        """The JSON-able dict to store in the ``metadata`` column: set fields only, ``extra`` merged back."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        extra = out.pop("extra", None)
        if extra:
            out = extra | out
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> ReplyMeta:
        """Read a stored ``metadata`` dict (``None`` or empty: all defaults). Tolerant of old and future rows:
        a missing key takes its default; an unknown key, or a known one whose value has the wrong type, is
        kept in ``extra`` (logged at debug level) rather than failing the reader."""
        if not raw:
            return cls()
        known = {k: v for k, v in raw.items() if k in _FIELDS}
        unknown = {k: v for k, v in raw.items() if k not in _FIELDS}
        try:
            meta = msgspec.convert(known, cls)
        except msgspec.ValidationError:
            good: dict[str, Any] = {}
            for key, value in known.items():
                try:
                    msgspec.convert({key: value}, cls)
                except msgspec.ValidationError as exc:
                    log.debug("metadata key %r kept as stored: %s", key, exc)
                    unknown[key] = value
                else:
                    good[key] = value
            meta = msgspec.convert(good, cls)
        if unknown:
            meta.extra = unknown
        return meta

    # ------------------------------------------------------------------------------------------ readers

    @property
    def failed(self) -> bool:
        """Generation failed: the message is the apology."""
        return self.error is not None

    @property
    def helpful(self) -> bool | None:
        """The client's thumbs up / down, ``None`` when not rated."""
        return None if self.feedback is None else self.feedback.helpful

    @property
    def not_ai_content(self) -> bool:
        """The message is not the model's own answer: an apology after a failure (or a partial one), a notice,
        a crisis reply, the honesty text (``honesty``) or the safe reply of the injection check (``injection``).
        Such messages never become training data."""
        return bool(self.error or self.partial_reply or self.notice or self.crisis or self.honesty or self.injection)


_FIELDS: Final = frozenset(name for name in ReplyMeta.__struct_encode_fields__ if name != "extra")
"""The stored keys :class:`ReplyMeta` knows."""
PRODUCT_TEXT_KEYS: Final = ("notice", "crisis", "error", "partial_reply", "honesty", "injection")
"""The ``metadata`` keys of which any set marks the message as the product's canned text, not the model's answer
nor a person's words (:attr:`ReplyMeta.not_ai_content`): a notice (handoff, SLA holding message, crisis
acknowledgement), the crisis reply, the apology after a failure, the honesty statement, the injection check's safe
reply. Such text tells nothing about the client: it is never recalled as a memory (:mod:`app.memory.episodes`)."""


def feedback_of(meta: Mapping[str, Any] | None) -> FeedbackMeta | None:
    """The client's feedback stored on a reply (``metadata.feedback``), ``None`` when not rated (or not
    readable). Reads that key only, for hot paths over many messages."""
    raw = (meta or {}).get("feedback")
    if not isinstance(raw, Mapping):
        return None
    try:
        return msgspec.convert(raw, FeedbackMeta)
    except msgspec.ValidationError:
        return None


def helpful(meta: Mapping[str, Any] | None) -> bool | None:
    """The client's thumbs up (``True``) / down (``False``) on a reply, ``None`` when not rated."""
    feedback = feedback_of(meta)
    return None if feedback is None else feedback.helpful


HANDED_BACK = "handed_back"
"""``metadata`` key (``true``) of a client message a low-confidence handoff took from the AI and the coach handed
back unanswered (:meth:`app.handoff.actions.CoachActions.handback`): the AI answers it whatever its confidence (the
coach's decision), instead of handing it off again."""
CRISIS_NOTICE = "crisis"
"""``metadata.notice`` of the acknowledgement a client's message gets while their crisis handoff waits for the
coach (:meth:`app.handoff.service.HandoffService.crisis_acknowledgement_due`)."""


def is_notice(meta: Mapping[str, Any] | None) -> bool:
    """The message is a system notice or the crisis reply (``metadata.notice`` or ``metadata.crisis`` set): product
    text, which the widget and Telegram show without thumbs, not a reply the client could rate."""
    return bool((meta or {}).get("notice") or (meta or {}).get("crisis"))


# --------------------------------------------------------------------------------------------- client view


class ClientMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The allowlist: the only metadata a client ever receives (see :func:`client_view`). Each field is here
    because the widget (``static/chat.js``, ``templates/widget/chat.html``) or a client needs it."""

    crisis: bool = False
    """The crisis protocol's reply: the widget shows it as a notice (no thumbs). The client already reads
    the crisis resources in its text; the flag reveals nothing about how it was decided."""
    notice: str | None = None
    """``handoff`` | ``sla`` | ``crisis``: a system notice, shown as such (no thumbs); the text already says it."""
    failed: bool = False
    """The reply is the apology for a failed generation (the client may try again); never the error."""
    truncated: bool = False
    """The reply was cut at the length limit (the client may ask it to go on)."""
    is_handoff: bool = False
    """Written by the coach in person during a takeover (as ``sender_type`` already says)."""
    approved_by_coach: bool = False
    """A draft the coach reviewed before it was sent (the client was told the coach was reviewing it)."""
    feedback: FeedbackMeta | None = None
    """The client's own rating of the reply, so the widget shows their choice again."""


CLIENT_METADATA_KEYS: Final = frozenset(ClientMeta.__struct_encode_fields__)
"""Every top-level metadata key a client may receive."""
CLIENT_FEEDBACK_KEYS: Final = frozenset(FeedbackMeta.__struct_encode_fields__)
"""The keys of ``metadata.feedback`` a client may receive (all the client's own)."""


def client_meta(meta: Mapping[str, Any] | ReplyMeta | None) -> ClientMeta:
    """The allowlisted part of a reply's metadata as a :class:`ClientMeta` (for templates)."""
    reply = meta if isinstance(meta, ReplyMeta) else ReplyMeta.from_json(meta)
    return ClientMeta(
        crisis=reply.crisis,
        notice=reply.notice,
        failed=reply.failed,
        truncated=reply.truncated,
        is_handoff=reply.is_handoff,
        approved_by_coach=reply.approved_by_coach,
        feedback=reply.feedback,
    )


def client_view(meta: Mapping[str, Any] | ReplyMeta | None) -> dict[str, Any]:
    """What a client may see of a reply's metadata: the :class:`ClientMeta` allowlist as a JSON-able dict,
    unset fields left out (``{}`` for most replies). Works on a stored ``metadata`` dict or a
    :class:`ReplyMeta`; anything not on the allowlist — present or future — is dropped."""
    out: dict[str, Any] = msgspec.to_builtins(client_meta(meta))
    return out


CLIENT_CITATION_KEYS: Final = ("document_id", "title", "page", "locator", "chunk_id")
"""What a client may see of a citation: not its retrieval ``score``, the cosine behind the confidence factor
``low_retrieval_support``; ``locator`` (a transcript's ``"HH:MM:SS"``, a PDF page's label ``"p. xv"``, the pages a
passage spans across a page break ``"pp. 42–43"``) is where the source is, cited instead of ``page`` (its first
page). (The client's view adds ``markers`` and ``chunk_ids``: :func:`client_citations`.)"""


def client_citations(citations: Sequence[Any]) -> list[dict[str, Any]]:
    """A reply's citations as a client sees them: :data:`CLIENT_CITATION_KEYS` of each, in order, one per source
    (document, page and locator: passages cited from the same page of a document read as one label, not twice),
    each with ``markers``, the numbers the reply cites it by (``[n]``: the passages' 1-based order in the prompt,
    which is the stored citations' order), so a reply's ``[2]`` still finds its source when ``[1]`` and ``[2]``
    are the same page, and ``chunk_ids``, the passage each marker stands for (``None`` for one stored without a
    chunk id), which the widget opens together; ``chunk_id`` is the first passage's. Idempotent (a list already in
    the client's view keeps its ``markers`` and ``chunk_ids``); an entry that is not an object is left out but
    keeps its number."""
    shown: dict[tuple[Any, ...], dict[str, Any]] = {}
    for number, citation in enumerate(citations, start=1):
        if not isinstance(citation, Mapping):
            continue
        where = (citation.get("document_id") or citation.get("title"), citation.get("page"), citation.get("locator"))
        source = tuple(str(value) for value in where)  # (any JSON a stored citation holds)
        markers = list(citation.get("markers") or [number])
        passages = citation.get("chunk_ids") or [citation.get("chunk_id"), *[None] * (len(markers) - 1)]
        if source in shown:
            shown[source]["markers"].extend(markers)
            shown[source]["chunk_ids"].extend(passages)
        else:
            shown[source] = {key: citation[key] for key in CLIENT_CITATION_KEYS if key in citation}
            shown[source]["markers"] = markers
            shown[source]["chunk_ids"] = list(passages)
    return list(shown.values())


CLIENT_HANDOFF_KEYS: Final = ("status", "reason")
"""What a client may see of the turn's handoff status (``TurnResult.handoff``): not the AI's confidence."""


def client_handoff_view(handoff: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The turn's handoff status as a client sees it: ``{"status", "reason"}`` (``status`` ``open`` |
    ``claimed`` | ``draft_pending``), or ``None`` while the AI handles the conversation."""
    if handoff is None:
        return None
    return {key: handoff[key] for key in CLIENT_HANDOFF_KEYS if key in handoff}
