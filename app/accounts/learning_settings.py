"""A coach's learning settings: fine-tune readiness, the fine-tune base model, the promotion gate's judge and
the response cache's lifetime.

Validated here and applied to the ``Coach`` row in the same transaction as the other settings of
``PATCH /api/v1/settings`` (so a bad field changes nothing).
"""

from __future__ import annotations

from typing import Any

from app.accounts.models import Coach
from app.core.errors import InvalidInput
from app.core.validation import in_range

FINE_TUNE_MIN_EXAMPLES_RANGE = (1, 100_000)
FINE_TUNE_MIN_DAYS_RANGE = (0, 365)
RESPONSE_CACHE_TTL_RANGE = (0, 30 * 86400)
"""Response cache lifetime in seconds: 0 (off) to 30 days."""
MAX_MODEL_NAME_CHARS = 200

LEARNING_FIELDS = (
    "fine_tune_enabled",
    "fine_tune_min_examples",
    "fine_tune_min_days",
    "fine_tune_base_model",
    "judge_model",
    "response_cache_ttl_seconds",
)
"""The settings this module owns, as named in the API."""
LOCAL_CANNOT_FINE_TUNE = (
    "fine_tune_enabled needs an OpenAI-compatible model endpoint (llm_provider 'openai' with a model and your own "
    "key): the built-in offline model (llm_provider 'local') cannot be fine-tuned"
)
"""Why fine-tunes cannot be turned on for a coach on the local model."""
FINE_TUNES_TURNED_OFF = "Fine-tuning is now off: the built-in offline model cannot be fine-tuned."
"""What the dashboard says when a switch to the local model turned fine-tunes off."""


def _model_name(name: str, value: Any, *, optional: bool) -> str | None:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a model name")
    cleaned = value.strip()
    if not cleaned and not optional:
        raise InvalidInput(f"{name} must not be empty")
    if len(cleaned) > MAX_MODEL_NAME_CHARS or any(c.isspace() for c in cleaned):
        raise InvalidInput(f"{name} must be a model name of at most {MAX_MODEL_NAME_CHARS} characters, no spaces")
    return cleaned or None


def apply_learning_settings(coach: Coach, **changes: Any) -> None:
    """Validate and set the given fields (``None`` leaves one as is; ``judge_model=""`` turns the judge off).
    ``fine_tune_enabled`` is a boolean, ``fine_tune_min_examples`` 1–100,000, ``fine_tune_min_days`` 0–365,
    ``response_cache_ttl_seconds`` 0–2,592,000 (0: no cache). Raises ``InvalidInput`` naming the first bad
    field (and for unknown fields), and :data:`LOCAL_CANNOT_FINE_TUNE` for ``fine_tune_enabled=True`` while the
    coach's ``llm_provider`` (as just changed, when the same request changes it) is ``local``."""
    unknown = set(changes) - set(LEARNING_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown settings: {', '.join(sorted(unknown))}")
    enabled = changes.get("fine_tune_enabled")
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise InvalidInput("fine_tune_enabled must be true or false")
        if enabled and coach.llm_provider == "local":
            raise InvalidInput(LOCAL_CANNOT_FINE_TUNE)
        coach.fine_tune_enabled = enabled
    if changes.get("fine_tune_min_examples") is not None:
        coach.fine_tune_min_examples = in_range(
            "fine_tune_min_examples", changes["fine_tune_min_examples"], FINE_TUNE_MIN_EXAMPLES_RANGE
        )
    if changes.get("fine_tune_min_days") is not None:
        coach.fine_tune_min_days = in_range(
            "fine_tune_min_days", changes["fine_tune_min_days"], FINE_TUNE_MIN_DAYS_RANGE
        )
    if changes.get("fine_tune_base_model") is not None:
        base = _model_name("fine_tune_base_model", changes["fine_tune_base_model"], optional=False)
        assert base is not None
        coach.fine_tune_base_model = base
    if changes.get("judge_model") is not None:
        coach.judge_model = _model_name("judge_model", changes["judge_model"], optional=True)
    if changes.get("response_cache_ttl_seconds") is not None:
        coach.response_cache_ttl_seconds = in_range(
            "response_cache_ttl_seconds", changes["response_cache_ttl_seconds"], RESPONSE_CACHE_TTL_RANGE
        )
