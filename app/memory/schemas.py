"""What the memory jobs ask the model for, as pydantic models (JSON Schema for constrained decoding, and the
validation of every answer before anything is stored)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints


def _clipped(limit: int) -> BeforeValidator:
    """Cut a string over ``limit`` characters back to its last whole word within it, rather than reject the
    whole answer: the schema sent to the model cannot carry string lengths (:data:`app.llm.schema.
    DROPPED_KEYWORDS`), so a model that follows it can still write a long topic."""

    def clip(value: Any) -> Any:
        if not isinstance(value, str) or len(value.strip()) <= limit:
            return value
        cut = value.strip()[: limit + 1]
        return cut[: cut.rfind(" ")].rstrip(" ,;:") if " " in cut else cut[:limit]

    return BeforeValidator(clip)


Statement = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=200), _clipped(200)]
"""One short statement (a topic, an action item, a profile entry)."""


def _drop_blank(value: Any) -> Any:
    """Blank list entries carry nothing; drop them rather than reject the whole answer (a grammar without
    string lengths lets small models write ``""``)."""
    if isinstance(value, list):
        return [v for v in value if not (isinstance(v, str) and not v.strip())]
    return value


StatementList = Annotated[list[Statement], BeforeValidator(_drop_blank)]
"""A list of statements with blank entries dropped."""

InsightKindName = Literal[
    "goal", "blocker", "breakthrough", "preference", "achievement", "pattern", "milestone", "commitment"
]


class SessionSummaryOutput(BaseModel):
    """The model's summary of one chat session."""

    summary: Annotated[str, StringConstraints(strip_whitespace=True, min_length=20, max_length=1500), _clipped(1500)]
    topics: StatementList = Field(max_length=6)
    insights: StatementList = Field(max_length=6)
    action_items: StatementList = Field(max_length=6)
    emotional_state: Statement


class SessionSummary(SessionSummaryOutput):
    """A stored L2 summary: the model's output plus the facts the code knows (``message_count``; times UTC)."""

    message_count: int
    started_at: datetime
    ended_at: datetime


class ExtractedInsight(BaseModel):
    """One insight the model read in the new messages. ``evidence`` holds the bracketed numbers of the
    messages it comes from; ``importance`` is 0 (trivia) to 10 (life-changing)."""

    kind: InsightKindName
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200), _clipped(200)]
    importance: int = Field(ge=0, le=10)
    status: Literal["active", "achieved", "dropped"]
    evidence: list[int] = Field(max_length=5)


class InsightExtraction(BaseModel):
    """All insights found in a window of messages (possibly none)."""

    insights: list[ExtractedInsight] = Field(max_length=6)


class MatchDecision(BaseModel):
    """How a newly extracted insight relates to a similar stored one."""

    decision: Literal["same", "update", "different"]


class ProfileOutput(BaseModel):
    """What a session adds to the L4 relationship profile."""

    communication_preferences: StatementList = Field(max_length=4)
    what_works: StatementList = Field(max_length=4)
    what_doesnt_work: StatementList = Field(max_length=4)
    tone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=120), _clipped(120)]
    sensitive_topics: StatementList = Field(max_length=4)
