"""The :class:`~app.conversations.metadata.ReplyMeta` fields read inside PostgreSQL, for queries that filter or
aggregate over many messages (learning dashboard, experiments) without loading them.

Each function returns a SQL expression on ``messages.metadata`` (JSONB). The key names come from
:class:`ReplyMeta` (checked at import), so a renamed field breaks here rather than silently reading nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, case, false, null
from sqlalchemy.dialects.postgresql import array

from app.conversations.metadata import LOW_RATING, PRODUCT_TEXT_KEYS, ExperimentMeta, FeedbackMeta, ReplyMeta
from app.conversations.models import Message


def _key(struct: type[Any], name: str) -> str:
    if name not in struct.__struct_encode_fields__:
        raise AttributeError(f"{struct.__name__} has no field {name!r}")
    return name


_MODE = _key(ReplyMeta, "mode")
_APPROVED = _key(ReplyMeta, "approved_by_coach")
_FEEDBACK = _key(ReplyMeta, "feedback")
_HELPFUL = _key(FeedbackMeta, "helpful")
_RATING = _key(FeedbackMeta, "rating")
_TEXT = _key(FeedbackMeta, "text")
_EXPERIMENT = _key(ReplyMeta, "experiment")
_EXPERIMENT_ID = _key(ExperimentMeta, "id")
_VARIANT = _key(ExperimentMeta, "variant")
_NOTICES = (_key(ReplyMeta, "notice"), _key(ReplyMeta, "crisis"))
_PRODUCT_TEXT = tuple(_key(ReplyMeta, name) for name in PRODUCT_TEXT_KEYS)
_NOT_THE_MODELS = (*_PRODUCT_TEXT, _key(ReplyMeta, "model_fallback"))


def mode() -> ColumnElement[str]:
    """``metadata.mode`` as text (``NULL`` when unset)."""
    expr: ColumnElement[str] = Message.meta[_MODE].astext
    return expr


def approved_by_coach() -> ColumnElement[bool]:
    """``metadata.approved_by_coach`` as a boolean (``NULL`` when unset)."""
    expr: ColumnElement[bool] = Message.meta[_APPROVED].as_boolean()
    return expr


def rated() -> ColumnElement[bool]:
    """The message carries the client's feedback."""
    expr: ColumnElement[bool] = Message.meta.has_key(_FEEDBACK)
    return expr


def approves() -> ColumnElement[bool]:
    """The client's verdict on the reply, :attr:`FeedbackMeta.approves` in SQL: ``metadata.feedback.helpful``, but
    false for a rating of :data:`~app.conversations.metadata.LOW_RATING` stars or fewer (``NULL`` when not
    rated)."""
    feedback = Message.meta[_FEEDBACK]
    helpful = feedback[_HELPFUL].as_boolean()
    expr: ColumnElement[bool] = case(
        (helpful.is_(None), null()), (feedback[_RATING].as_integer() <= LOW_RATING, false()), else_=helpful
    )
    return expr


def feedback_text() -> ColumnElement[str]:
    """``metadata.feedback.text``: the client's comment (``NULL`` when none)."""
    expr: ColumnElement[str] = Message.meta[_FEEDBACK][_TEXT].astext
    return expr


def experiment_id() -> ColumnElement[str]:
    """``metadata.experiment.id`` as text (``NULL`` outside experiments)."""
    expr: ColumnElement[str] = Message.meta[_EXPERIMENT][_EXPERIMENT_ID].astext
    return expr


def experiment_variant() -> ColumnElement[str]:
    """``metadata.experiment.variant`` as text (``NULL`` outside experiments)."""
    expr: ColumnElement[str] = Message.meta[_EXPERIMENT][_VARIANT].astext
    return expr


def served_by_its_model() -> ColumnElement[bool]:
    """The AI reply is the answer of the model its turn asked: not an apology, a partial reply, a notice, a
    crisis reply or a replacement by the output checks (:attr:`ReplyMeta.not_ai_content`), nor the base model's
    answer after the turn's model failed (``model_fallback``)."""
    expr: ColumnElement[bool] = ~Message.meta.has_any(array(_NOT_THE_MODELS))
    return expr


def ai_content() -> ColumnElement[bool]:
    """The AI message is a model's own reply (the base model's after a fallback too), not the product's text: a
    notice, the crisis reply, the apology after a failure, a replacement by the output checks
    (:attr:`ReplyMeta.not_ai_content`). The learning dashboard judges the clone by these: a 👎 on the apology is
    the provider's failure, which the dashboard shows apart (``coaches.model_failures``)."""
    expr: ColumnElement[bool] = ~product_text()
    return expr


def product_text() -> ColumnElement[bool]:
    """The message is the product's canned text (:data:`~app.conversations.metadata.PRODUCT_TEXT_KEYS`): a notice, the
    crisis reply, the apology after a failure, a replacement by the output checks; the opposite of
    :func:`ai_content` for an AI message. Such text tells nothing about the client: it is no episode to recall
    (:mod:`app.memory.episodes`)."""
    expr: ColumnElement[bool] = Message.meta.has_any(array(_PRODUCT_TEXT))
    return expr


def rateable() -> ColumnElement[bool]:
    """The AI message is a reply a client can rate: not a notice nor the crisis reply
    (:func:`app.conversations.metadata.is_notice`)."""
    expr: ColumnElement[bool] = ~Message.meta.has_any(array(_NOTICES))
    return expr
