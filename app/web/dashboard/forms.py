"""Reading the dashboard's HTML forms: typed fields (absent vs. empty), and the settings form's escalation
and learning sections as keyword arguments of the settings services."""

from __future__ import annotations

from typing import Any

from litestar import Request

from app.accounts.handoff_settings import CRISIS_LANGUAGES, SLA_MINUTES_RANGE
from app.accounts.learning_settings import (
    FINE_TUNE_MIN_DAYS_RANGE,
    FINE_TUNE_MIN_EXAMPLES_RANGE,
    RESPONSE_CACHE_TTL_RANGE,
)
from app.accounts.tone import INTENSITY_MAX, INTENSITY_MIN, MAX_MODES
from app.core.errors import InvalidInput


def form_str(form: Any, name: str) -> str:
    """A text field as typed, or ``""`` when absent (or a file). A browser sends a textarea's line breaks as
    CRLF (HTML Living Standard, "constructing the entry list" normalises them so); they are read back as LF,
    the line break the same text has when sent by JavaScript or the API (a draft approved unchanged from the
    form is then not an edit)."""
    value = form.get(name)
    return value.replace("\r\n", "\n").replace("\r", "\n") if isinstance(value, str) else ""


def form_int(form: Any, name: str, low: int, high: int) -> int | None:
    """An integer form field; ``None`` when absent or empty. Raises ``InvalidInput`` when not a number (the
    range itself is the service's to check; ``low``/``high`` only word the message)."""
    value = form_str(form, name).strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}") from None


def form_lines(form: Any, name: str) -> list[str]:
    """A textarea as a list of its non-empty lines."""
    return [line.strip() for line in form_str(form, name).splitlines() if line.strip()]


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    """Whether htmx sent the request (it then gets a fragment instead of a redirect)."""
    return request.headers.get("hx-request") == "true"


def form_opt_lines(form: Any, name: str) -> list[str] | None:
    """A textarea as its non-empty lines, or ``None`` when the form does not have the field (left as is)."""
    return form_lines(form, name) if name in form else None


def form_opt_str(form: Any, name: str) -> str | None:
    """A text field, or ``None`` when the form does not have it (left as is)."""
    return form_str(form, name) if name in form else None


def _resources_by_language(form: Any) -> dict[str, list[str]] | None:
    """The ``crisis_resources_<language>`` textareas as ``{language: lines}`` (an emptied one drops that
    language), or ``None`` when the form has none of them (left as is)."""
    present = [lang for lang in CRISIS_LANGUAGES if f"crisis_resources_{lang}" in form]
    return {lang: form_lines(form, f"crisis_resources_{lang}") for lang in present} if present else None


def handoff_form_settings(form: Any) -> dict[str, Any]:
    """The escalation settings of the settings form, as keyword arguments of
    :meth:`app.accounts.service.AccountService.update_settings`
    (see :data:`app.accounts.handoff_settings.HANDOFF_FIELDS`).

    Fields missing from the form are ``None`` (left as is). Topics and crisis resources are one entry per
    line (per language: the ``crisis_resources_<language>`` textareas); availability is ``{}`` (always
    available) when ``always_available`` is ticked, else ``{"timezone", "days": [0–6 from the ticked
    avail_days], "start", "end"}``. Raises ``InvalidInput`` for a
    threshold or SLA that is not a number (ranges are the service's to check)."""
    threshold_raw = form_str(form, "confidence_threshold").strip()
    threshold: float | None = None
    if threshold_raw:
        try:
            threshold = float(threshold_raw)
        except ValueError:
            raise InvalidInput("confidence_threshold must be a number from 0 to 1") from None
    availability: dict[str, Any] | None = None
    if "availability_form" in form:
        if form.get("always_available"):
            availability = {}
        else:
            try:
                days = sorted({int(d) for d in form.getall("avail_days", [])})
            except ValueError:
                raise InvalidInput("availability.days must be weekdays 0–6 (Monday = 0)") from None
            availability = {
                "timezone": form_str(form, "avail_timezone").strip() or "UTC",
                "days": days,
                "start": form_str(form, "avail_start").strip(),
                "end": form_str(form, "avail_end").strip(),
            }
    return {
        "handoff_mode": form_str(form, "handoff_mode") or None,
        "confidence_threshold": threshold,
        "high_stakes_topics": form_opt_lines(form, "high_stakes_topics"),
        "always_escalate_topics": form_opt_lines(form, "always_escalate_topics"),
        "handoff_sla_minutes": form_int(form, "handoff_sla_minutes", *SLA_MINUTES_RANGE),
        "availability": availability,
        "crisis_resources": form_opt_lines(form, "crisis_resources"),
        "crisis_resources_by_language": _resources_by_language(form),
        "alert_webhook_url": form_opt_str(form, "alert_webhook_url"),
        "alert_email": form_opt_str(form, "alert_email"),
    }


def learning_form_settings(form: Any) -> dict[str, Any]:
    """The learning settings of the settings form, as keyword arguments of
    :func:`app.accounts.learning_settings.apply_learning_settings`; a field the form does not send is ``None``
    (left as is); with ``learning_form`` sent, an unticked box turns fine-tuning off; an empty judge model
    clears it. Raises ``InvalidInput`` for a field
    that is not a whole number (ranges are the service's to check)."""
    judge = form_opt_str(form, "judge_model")
    return {
        "fine_tune_enabled": bool(form.get("fine_tune_enabled")) if "learning_form" in form else None,
        "fine_tune_min_examples": form_int(form, "fine_tune_min_examples", *FINE_TUNE_MIN_EXAMPLES_RANGE),
        "fine_tune_min_days": form_int(form, "fine_tune_min_days", *FINE_TUNE_MIN_DAYS_RANGE),
        "fine_tune_base_model": form_str(form, "fine_tune_base_model").strip() or None,
        "judge_model": judge.strip() if judge is not None else None,
        "response_cache_ttl_seconds": form_int(form, "response_cache_ttl_seconds", *RESPONSE_CACHE_TTL_RANGE),
    }


def widget_form_settings(form: Any) -> dict[str, Any]:
    """The welcome section of the settings form as keyword arguments of
    :func:`app.accounts.widget_settings.apply_widget_settings`: the greeting as typed, the suggestions one per
    non-empty line; ``None`` for a field the form does not send (left as is)."""
    return {
        "widget_greeting": form_opt_str(form, "widget_greeting"),
        "widget_suggestions": form_opt_lines(form, "widget_suggestions"),
    }


def tone_form_settings(form: Any) -> dict[str, Any]:
    """The tone section's fields as :func:`app.accounts.tone.parse_settings` takes them: ``tone_min``,
    ``tone_max``, ``tone_default`` and, per mode row ``i`` (0 … :data:`app.accounts.tone.MAX_MODES` − 1),
    ``mode_key_i``, ``mode_label_i``, ``mode_description_i``, ``mode_instruction_i``, ``mode_most_intense_i``
    (a row with an empty key is left out). Raises ``InvalidInput`` for a number that is not one."""
    value: dict[str, Any] = {}
    for field, name in (("min", "tone_min"), ("max", "tone_max"), ("default", "tone_default")):
        number = form_int(form, name, INTENSITY_MIN, INTENSITY_MAX)
        if number is not None:
            value[field] = number
    modes = []
    for i in range(MAX_MODES):
        key = form_str(form, f"mode_key_{i}").strip()
        if key:
            modes.append(
                {
                    "key": key,
                    "label": form_str(form, f"mode_label_{i}"),
                    "description": form_str(form, f"mode_description_{i}"),
                    "instruction": form_str(form, f"mode_instruction_{i}"),
                    "most_intense": bool(form.get(f"mode_most_intense_{i}")),
                }
            )
    value["modes"] = modes
    return value


def next_path(form: Any, default: str) -> str:
    """Where a form asks to go back to (``next``, a dashboard path only), else ``default``."""
    target = form_str(form, "next")
    return target if target.startswith("/dashboard/") and "//" not in target else default
