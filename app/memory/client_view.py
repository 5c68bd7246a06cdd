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
    """A session summary as the client sees it (``id`` is the session id)."""

    id: uuid.UUID
    started_at: datetime
    summary: str
    topics: list[str]
    action_items: list[str]
    emotional_state: str


class SessionState(msgspec.Struct):
    """Where an ended session's summary stands, as the client sees it: ``status`` ``pending`` (the summary job
    has not run yet), ``summarized`` (listed in :class:`RememberedOut`) or ``failed`` (the reason is shown to the
    coach only: it may name the coach's provider or key)."""

    id: uuid.UUID
    status: str


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
    """What the client is shown: visible insights and the summaries of summarised sessions, without
    evidence ids, scores, errors or the coach's profile notes."""
    sessions = []
    for s in memory.summaries:
        if s.status != SessionStatus.SUMMARIZED or not s.summary:
            continue
        sessions.append(
            RememberedSession(
                s.id,
                s.started_at,
                str(s.summary.get("summary", "")),
                [str(t) for t in s.summary.get("topics") or []],
                [str(a) for a in s.summary.get("action_items") or []],
                str(s.summary.get("emotional_state", "")),
            )
        )
    return RememberedOut([RememberedInsight(i.id, i.kind, i.text, i.status) for i in memory.insights], sessions)


def session_state(session_id: uuid.UUID, status: str | None) -> SessionState | None:
    """A client's ended session as the client sees it, from its stored ``status``
    (:meth:`app.memory.controls.MemoryControls.session_status`); ``None`` for ``None`` (not one of the client's
    ended sessions)."""
    if status not in CLIENT_SESSION_STATUS:
        return None
    return SessionState(session_id, CLIENT_SESSION_STATUS[status])
