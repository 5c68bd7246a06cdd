"""What the client is shown of their own memory (the widget's memory page and API)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from app.memory.controls import ClientMemory
from app.memory.models import SessionStatus


class RememberedInsight(msgspec.Struct):
    """An insight as the client sees it."""

    id: uuid.UUID
    kind: str
    text: str
    status: str


class RememberedSession(msgspec.Struct):
    """An ended session as the client sees it (``id`` is the session id): ``status`` ``summarized`` (with its
    summary), ``pending`` (the summary job has not run yet) or ``failed`` (no summary; the reason is shown to
    the coach only: it may name the coach's provider or key)."""

    id: uuid.UUID
    started_at: datetime
    summary: str
    topics: list[str]
    action_items: list[str]
    emotional_state: str
    status: str = "summarized"


CLIENT_SESSION_STATUS = {
    SessionStatus.ENDED: "pending",
    SessionStatus.SUMMARIZED: "summarized",
    SessionStatus.FAILED: "failed",
}
"""A listed session's status (:data:`SessionStatus.LISTED`) in the client's words."""


class RememberedOut(msgspec.Struct):
    """What the coach's assistant remembers about the client."""

    insights: list[RememberedInsight]
    summaries: list[RememberedSession]


def remembered_out(memory: ClientMemory) -> RememberedOut:
    """What the client is shown: visible insights and the ended sessions (summarised ones with their summary,
    pending and failed ones with their status only), without evidence ids, scores, errors or the coach's
    profile notes."""
    sessions = []
    for s in memory.summaries:
        status = CLIENT_SESSION_STATUS.get(s.status)
        if status is None:
            continue
        summary = s.summary or {} if status == "summarized" else {}
        sessions.append(
            RememberedSession(
                s.id,
                s.started_at,
                str(summary.get("summary", "")),
                [str(t) for t in summary.get("topics") or []],
                [str(a) for a in summary.get("action_items") or []],
                str(summary.get("emotional_state", "")),
                status,
            )
        )
    return RememberedOut([RememberedInsight(i.id, i.kind, i.text, i.status) for i in memory.insights], sessions)
