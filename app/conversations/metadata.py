"""Reply metadata: what of it the client may see, and the client's feedback stored on a reply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COACH_ONLY_METADATA = ("error", "partial_reply", "risk")
"""Attribution the coach sees in transcripts but the client is not shown (provider errors can name the
coach's configuration or a masked key)."""


def client_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a reply as shown to the client: coach-only keys dropped, ``failed`` set on errors."""
    shown = {k: v for k, v in metadata.items() if k not in COACH_ONLY_METADATA}
    if "error" in metadata:
        shown["failed"] = True
    return shown


def feedback_of(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The client's feedback stored on a reply (``metadata.feedback``: ``{"helpful", "rating", "text",
    "at"}``, see :meth:`app.chat.service.ChatService.record_feedback`), ``None`` when not rated."""
    feedback = (meta or {}).get("feedback")
    return feedback if isinstance(feedback, dict) else None


def helpful(meta: Mapping[str, Any] | None) -> bool | None:
    """The client's thumbs up (``True``) / down (``False``) on a reply, ``None`` when not rated."""
    value = (feedback_of(meta) or {}).get("helpful")
    return value if isinstance(value, bool) else None
