"""The crisis protocol's first step: a safe, caring reply with crisis resources, sent without the model.

The coach's alerting (dashboard, webhook, e-mail), per-coach resources and the handoff queue come with the
rest of the handoff work; this module decides when the protocol applies and what the client reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.handoff.catalogue import resource_lines, say
from app.handoff.languages import CUES as LANGUAGE_CUES
from app.handoff.risk import CUES, RiskAssessment

PROTOCOL_SCORE = 0.5
"""A message scoring this much, or rated ``crisis``, triggers the protocol. Lower than the detector's
``CRISIS_THRESHOLD``: in a live chat an unneeded crisis reply costs far less than a missed one ("I have
pills saved up and I am going to take them all" scores 0.78, below ``crisis``)."""

CRISIS_ACK_INTERVAL = timedelta(minutes=3)
"""While a crisis handoff waits for the coach's first reply, each client message gets the acknowledgement of
:func:`crisis_acknowledgement` (the AI is paused), but at most one per this interval: a burst of messages gets one,
the next message after the interval another."""

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


LANGUAGE_DEFAULT_RESOURCES: dict[str, tuple[str, ...]] = {
    "es": (
        "Si estás en peligro inmediato, llama al número de emergencias (112 en la UE, 911 en México y EE. UU.).",
        "España: llama al 024 (línea de atención a la conducta suicida), gratis, las 24 horas.",
        "En otros países: encuentra una línea de ayuda gratuita en https://findahelpline.com.",
    ),
    "fr": (
        "Si tu es en danger immédiat, appelle le numéro d'urgence (112 dans l'UE).",
        "France : appelle le 3114 (numéro national de prévention du suicide), gratuit, 24 h/24.",
        "Ailleurs : trouve une ligne d'écoute gratuite sur https://findahelpline.com.",
    ),
    "de": (
        "Wenn du in akuter Gefahr bist, ruf den Notruf 112 an.",
        "Deutschland: TelefonSeelsorge 0800 111 0 111 oder 0800 111 0 222, kostenlos, rund um die Uhr.",
        "Anderswo: eine kostenlose Hilfeleitung findest du auf https://findahelpline.com.",
    ),
    "pt": (
        "Se você estiver em perigo imediato, ligue para o número de emergência (112 na UE, 192 no Brasil).",
        "Brasil: ligue 188 (CVV, Centro de Valorização da Vida), gratuito, 24 horas.",
        "Em outros países: encontre uma linha de apoio gratuita em https://findahelpline.com.",
    ),
}
"""The product's own lines for a client who wrote in another language than English: that language's emergency number,
its national crisis line and findahelpline.com. Shown for that language unless the coach set lines for it
(:func:`resources_for`)."""


def resources_for(
    language: str,
    configured: Sequence[str] = (),
    by_language: Mapping[str, Sequence[str]] | None = None,
) -> tuple[str, ...]:
    """The resource lines for a crisis reply in ``language`` (``en es fr de pt``, :attr:`RiskAssessment.language`).

    - The coach set lines for ``language`` (``by_language``: ``Coach.crisis_resources_by_language``): those alone;
      the coach's override for that language.
    - Else the coach's general lines (``configured``: ``Coach.crisis_resources``, which name no language, e.g. "US
      988 Suicide & Crisis Lifeline"), followed by :data:`LANGUAGE_DEFAULT_RESOURCES` for ``language`` when the
      product knows lines for it (a German client also reads the German TelefonSeelsorge and 112, not only the
      coach's US line); a line already among the coach's is not repeated.
    - No lines of the coach: the built-in lines for ``language``, else :data:`DEFAULT_CRISIS_RESOURCES`.

    English has no built-in lines of its own to add (:data:`DEFAULT_CRISIS_RESOURCES` names several countries): an
    English client reads the coach's general lines alone when there are any."""
    if by_language and by_language.get(language):
        return tuple(by_language[language])
    built_in = LANGUAGE_DEFAULT_RESOURCES.get(language, ())
    if configured:
        return tuple(dict.fromkeys((*configured, *built_in)))
    return built_in or DEFAULT_CRISIS_RESOURCES


def crisis_reply(
    coach_name: str,
    resources: tuple[str, ...] = DEFAULT_CRISIS_RESOURCES,
    language: str = "en",
    back: str | None = None,
) -> str:
    """The message the client gets at once: acknowledges them, says a person is told, lists resources — in
    ``language`` (``en es fr de pt``, :attr:`RiskAssessment.language`; anything else → English). ``back``
    (:func:`app.accounts.availability.away_until`): the coach is outside their hours and back then, which the
    reply says, so the client does not wait for them."""
    away = "" if back is None else say("crisis_away", language, coach=coach_name, back=back)
    return say("crisis_reply", language, coach=coach_name, away=away, lines=resource_lines(resources))


def crisis_acknowledgement(
    coach_name: str, resources: tuple[str, ...], language: str = "en", back: str | None = None
) -> str:
    """The notice a client's message gets while their crisis handoff waits for the coach (the AI is paused): the
    message reached the coach, when they reply (``back``: away until then, as :func:`crisis_reply`; else as soon
    as they can) and the crisis resources again, in ``language`` (anything else → English)."""
    when = say("crisis_soon" if back is None else "crisis_away", language, coach=coach_name, back=back)
    return say("crisis_still_here", language, coach=coach_name, when=when, lines=resource_lines(resources))


DETAIL_PREFIX = "crisis: "
DETAIL_CUES = 3
"""A crisis handoff's ``detail`` (and the conversation's ``urgent_reason``) names at most this many cues."""
CUE_KIND_LABELS = {
    "explicit": "Suicidal intent or self-harm stated",
    "indirect": "Indirect sign of suicidal thinking",
    "means": "Mentions a means of harm",
    "distress": "Sign of distress",
}
"""What each kind of cue (:data:`app.handoff.risk.CueKind`) tells the coach, as the dashboard labels it."""
_CUE_LABELS = (
    {cue.name: CUE_KIND_LABELS[cue.kind] for cue in CUES}
    | {
        cue.name: f"Crisis statement in another language ({cue.language})"
        if cue.kind == "explicit"
        else f"{CUE_KIND_LABELS[cue.kind]} ({cue.language})"
        for cue in LANGUAGE_CUES
    }
    | {  # the detector's own (app.handoff.detector)
        "learned": "Flagged by the learned detector",
        "conversation": "Several concerning messages in a row",
        "unanswered": "An earlier message not answered yet",
    }
)


@dataclass(frozen=True)
class CrisisReason:
    """One reason the crisis protocol ran, as the dashboard shows it: what the ``cue`` tells (``label``) and the
    detector cue's name (:attr:`RiskAssessment.matched`: an identifier of the lexicon, not the client's words)."""

    label: str
    cue: str


def crisis_detail(matched: Sequence[str]) -> str:
    """The ``detail`` of a crisis handoff and the conversation's ``urgent_reason``: ``"crisis: <cue>, <cue>"``
    with the first :data:`DETAIL_CUES` of ``matched`` (strongest first); read back by :func:`crisis_reasons`."""
    return DETAIL_PREFIX + ", ".join(matched[:DETAIL_CUES])


def crisis_reasons(detail: str | None) -> list[CrisisReason] | None:
    """The reasons a :func:`crisis_detail` names, labelled by the kind of each cue (an unknown name: "Crisis cue");
    an empty list when it names no cue (the learned component alone flagged the message); ``None`` for any other
    ``detail`` (another handoff reason's)."""
    if detail is None or not detail.startswith(DETAIL_PREFIX):
        return None
    names = [name for name in detail.removeprefix(DETAIL_PREFIX).split(", ") if name]
    return [CrisisReason(_CUE_LABELS.get(name, "Crisis cue"), name) for name in names]


def crisis_reasons_text(detail: str | None) -> str | None:
    """The reasons a :func:`crisis_detail` names, in words for the coach's alerts outside the dashboard (webhook,
    e-mail): ``"Crisis signals: Mentions a means of harm (detector cue: plan_with_means); …"``, each labelled as
    :func:`crisis_reasons` labels it for the dashboard, or that the learned detector alone flagged the message;
    ``None`` for any other ``detail``."""
    reasons = crisis_reasons(detail)
    if reasons is None:
        return None
    if not reasons:
        return "Crisis signals: flagged by the learned detector (no lexicon cue)"
    return "Crisis signals: " + "; ".join(f"{r.label} (detector cue: {r.cue})" for r in reasons)


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
