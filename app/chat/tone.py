"""The tone of a turn's reply and its system-prompt instruction (the settings and consent are
:mod:`app.accounts.tone`).

Precedence, first that applies:

1. **Gentle**: a client at risk (the conversation's risk level from :mod:`app.handoff.risk` is ``concern`` or
   ``crisis``) or in a low mood (this message's VADER compound ≤ :data:`LOW_MOOD_SENTIMENT`, or negative and
   worsening by at least :data:`LOW_MOOD_TREND` per message: :class:`app.handoff.signals.TurnSignals`) is
   answered at intensity 1 with no mode, whatever the settings.
2. **The client's own intensity** (clamped to the coach's range), with the mode they consented to.
3. **An experiment arm's intensity** (:class:`app.learning.experiments.Assignment`), clamped to the range:
   it varies the default, never a client's explicit choice.
4. **The coach's default intensity**.

The instruction is coach/system text (never client data), appended to the persona at the top of the system
message (:func:`with_tone`), so it sits before the spotlighting hierarchy and counts as protected text for
the output check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.accounts.tone import INTENSITY_NAMES, ToneChoice, ToneMode
from app.handoff.risk import RiskAssessment
from app.handoff.signals import TurnSignals

LOW_MOOD_SENTIMENT = -0.5
"""VADER compound at or below which a message reads as a low mood (VADER's own cut for "negative" is -0.05,
which a client merely describing a problem crosses; -0.5 is clearly distressed language)."""
LOW_MOOD_TREND = -0.2
"""Slope of the compound per message (:func:`app.handoff.signals.sentiment_trend`) that, with a negative
message, reads as a worsening mood (the same slope :mod:`app.handoff.confidence` treats as worsening)."""
GENTLE = 1

INSTRUCTIONS = {
    1: "Be ultra gentle: warm, validating and unhurried. Offer ideas softly as options, never push, and check "
    "how the client feels.",
    2: "Be gentle: warm and encouraging; suggest rather than challenge.",
    3: "Be balanced: warm but honest; name a problem plainly when it matters.",
    4: "Be direct: say clearly what you see, including what the client may not want to hear, with care.",
    5: "Be very direct: challenge excuses and contradictions plainly and briefly, without cushioning.",
    6: "Be blunt: no cushioning, short sentences, hold the client to what they said. Never insult, mock or "
    "demean the client.",
}
"""The instruction for each intensity (1 ultra gentle … 6 blunt)."""


@dataclass(frozen=True)
class TurnTone:
    """The tone a reply is written in: ``intensity`` 1–6, the ``mode`` in force (``None``: default) and why it
    was forced gentle (``gentle``: ``"risk"`` | ``"low_mood"`` | ``None``)."""

    intensity: int
    mode: ToneMode | None
    gentle: str | None = None

    def instruction(self) -> str:
        """The system-prompt text: ``Tone (<name>, <n>/6): <instruction>``, then the mode's instruction."""
        text = f"Tone ({INTENSITY_NAMES[self.intensity]}, {self.intensity}/6): {INSTRUCTIONS[self.intensity]}"
        if self.mode is not None:
            text += f"\nStyle the client chose ({self.mode.label}): {self.mode.instruction}"
        return text

    def as_meta(self) -> dict[str, Any]:
        """What the AI reply's metadata records: ``{"intensity", "mode", "gentle"}`` (coach-only)."""
        return {"intensity": self.intensity, "mode": self.mode.key if self.mode else None, "gentle": self.gentle}


def gentle_reason(risk: RiskAssessment, signals: TurnSignals) -> str | None:
    """``"risk"`` (risk level ``concern``/``crisis``), ``"low_mood"`` (see :data:`LOW_MOOD_SENTIMENT`,
    :data:`LOW_MOOD_TREND`) or ``None``."""
    if risk.level != "none" or signals.risk_level != "none":
        return "risk"
    if signals.sentiment <= LOW_MOOD_SENTIMENT or (signals.sentiment < 0 and signals.sentiment_trend <= LOW_MOOD_TREND):
        return "low_mood"
    return None


def turn_tone(choice: ToneChoice, risk: RiskAssessment, signals: TurnSignals, arm_intensity: int | None) -> TurnTone:
    """The reply's tone by the precedence in the module docstring; no errors."""
    reason = gentle_reason(risk, signals)
    if reason is not None:
        return TurnTone(GENTLE, None, reason)
    settings = choice.settings
    if choice.intensity is not None:
        return TurnTone(choice.intensity, choice.mode)
    if arm_intensity is not None:
        return TurnTone(settings.clamp(arm_intensity), choice.mode)
    return TurnTone(settings.default, choice.mode)


def with_tone(persona: str, tone: TurnTone | None) -> str:
    """``persona`` followed by the tone's instruction (a blank line between), or ``persona`` when ``tone`` is
    ``None``."""
    if tone is None:
        return persona
    return f"{persona}\n\n{tone.instruction()}" if persona else tone.instruction()
