"""The crisis protocol's first step: a safe, caring reply with crisis resources, sent without the model.

The coach's alerting (dashboard, webhook, e-mail), per-coach resources and the handoff queue come with the
rest of the handoff work; this module decides when the protocol applies and what the client reads.
"""

from __future__ import annotations

from typing import Any

from app.handoff.risk import RiskAssessment

PROTOCOL_SCORE = 0.5
"""A message scoring this much, or rated ``crisis``, triggers the protocol. Lower than the detector's
``CRISIS_THRESHOLD``: in a live chat an unneeded crisis reply costs far less than a missed one ("I have
pills saved up and I am going to take them all" scores 0.78, below ``crisis``)."""

DEFAULT_CRISIS_RESOURCES = (
    "If you are in immediate danger, call your local emergency number (112 in the EU, 911 in the US and "
    "Canada, 999 in the UK).",
    "US: call or text 988 (Suicide & Crisis Lifeline).",
    "UK and Ireland: call Samaritans on 116 123, free, day or night.",
    "Elsewhere: find a free, confidential helpline at https://findahelpline.com.",
)


def needs_crisis_protocol(risk: RiskAssessment) -> bool:
    """Whether a client message's risk calls for the crisis protocol (see :data:`PROTOCOL_SCORE`)."""
    return risk.level == "crisis" or risk.score >= PROTOCOL_SCORE


def crisis_reply(coach_name: str, resources: tuple[str, ...] = DEFAULT_CRISIS_RESOURCES) -> str:
    """The message the client gets at once: acknowledges them, says a person is told, lists resources."""
    lines = "\n".join(f"- {line}" for line in resources)
    return (
        "I'm really glad you told me, and I'm sorry you're going through this. You deserve support from a "
        f"person right now: I've flagged our conversation for {coach_name} as urgent. Please reach out to "
        f"someone who can help straight away:\n{lines}\nYou don't have to go through this alone."
    )


def risk_metadata(risk: RiskAssessment) -> dict[str, Any]:
    """The risk assessment as stored on the reply's metadata (coach-only)."""
    return {
        "level": risk.level,
        "score": round(risk.score, 3),
        "cues": risk.matched,
        "explicit": risk.explicit,
        "language": risk.language,
        "learned": risk.learned,
    }


def risk_from_metadata(meta: dict[str, Any]) -> RiskAssessment:
    """The assessment stored by :func:`risk_metadata` (missing keys → level ``none``, score 0, ``en``), so the
    turn can rebuild the client's earlier message assessments for
    :func:`app.handoff.detector.conversation_risk` without scoring them again."""
    level = meta.get("level")
    language = meta.get("language")
    learned = meta.get("learned")
    return RiskAssessment(
        level if level in ("none", "concern", "crisis") else "none",
        float(meta.get("score") or 0.0),
        [str(name) for name in meta.get("cues") or []],
        bool(meta.get("explicit")),
        language if language in ("en", "es", "fr", "de", "pt") else "en",
        float(learned) if isinstance(learned, (int, float)) else None,
    )
