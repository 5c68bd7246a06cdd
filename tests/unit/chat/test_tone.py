"""Tone of a turn (app.chat.tone) and the coach's tone settings (app.accounts.tone): pure, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from app.accounts.tone import ToneChoice, ToneMode, ToneSettings, parse_settings, text_version
from app.chat.tone import INSTRUCTIONS, TurnTone, gentle_reason, turn_tone, with_tone
from app.core.errors import InvalidInput
from app.handoff.risk import RiskAssessment
from app.handoff.signals import TurnSignals

ROAST = ToneMode("roast", "Tough love", "No sugar-coating.", "Roast the client's excuses, kindly.", True)
SETTINGS = ToneSettings(1, 4, 3, (ROAST,))
CALM = RiskAssessment("none", 0.0)


def signals(risk: str = "none", sentiment: float = 0.2, trend: float = 0.0) -> TurnSignals:
    return TurnSignals(0.0, risk, sentiment, trend, False, None)


@pytest.mark.parametrize(
    ("risk", "sig", "expected"),
    [
        (CALM, signals(), None),
        (RiskAssessment("concern", 0.3), signals(), "risk"),
        (RiskAssessment("crisis", 0.9), signals(), "risk"),
        (CALM, signals(risk="concern"), "risk"),
        (CALM, signals(sentiment=-0.6), "low_mood"),
        (CALM, signals(sentiment=-0.1, trend=-0.3), "low_mood"),
        (CALM, signals(sentiment=-0.3, trend=-0.1), None),  # describing a problem is not a low mood
        (CALM, signals(sentiment=0.3, trend=-0.4), None),
    ],
)
def test_gentle_reason(risk: RiskAssessment, sig: TurnSignals, expected: str | None) -> None:
    assert gentle_reason(risk, sig) == expected


@pytest.mark.parametrize(
    ("intensity", "mode", "arm", "risk", "sig", "expected"),
    [
        (4, ROAST, None, CALM, signals(), TurnTone(4, ROAST)),  # the client's choice
        (None, None, None, CALM, signals(), TurnTone(3, None)),  # the coach's default
        (None, None, 2, CALM, signals(), TurnTone(2, None)),  # the arm varies the default
        (None, None, 6, CALM, signals(), TurnTone(4, None)),  # clamped to the coach's range
        (4, None, 1, CALM, signals(), TurnTone(4, None)),  # never the client's explicit choice
        (4, ROAST, 2, RiskAssessment("concern", 0.3), signals(), TurnTone(1, None, "risk")),
        (4, ROAST, None, CALM, signals(sentiment=-0.8), TurnTone(1, None, "low_mood")),
    ],
)
def test_turn_tone_precedence(
    intensity: int | None,
    mode: ToneMode | None,
    arm: int | None,
    risk: RiskAssessment,
    sig: TurnSignals,
    expected: TurnTone,
) -> None:
    choice = ToneChoice(SETTINGS, intensity, mode, mode.key if mode else "default")
    assert turn_tone(choice, risk, sig, arm) == expected


def test_the_instruction_joins_the_persona_after_it() -> None:
    text = with_tone("You are Kim's assistant.", TurnTone(6, ROAST))
    assert text.startswith("You are Kim's assistant.\n\nTone (blunt, 6/6): " + INSTRUCTIONS[6])
    assert text.endswith("Style the client chose (Tough love): Roast the client's excuses, kindly.")
    assert with_tone("P", None) == "P"
    assert TurnTone(1, None, "risk").as_meta() == {"intensity": 1, "mode": None, "gentle": "risk"}


def test_settings_defaults_and_round_trip() -> None:
    assert parse_settings({}) == ToneSettings(1, 4, 3, ())
    assert parse_settings({"min": 5, "max": 6}).default == 5  # the default follows a range that excludes 3
    assert parse_settings(SETTINGS.as_dict()) == SETTINGS
    assert SETTINGS.clamp(6) == 4 and SETTINGS.clamp(0) == 1


def test_a_change_of_wording_changes_the_consent_version() -> None:
    reworded = ToneMode("roast", "Tough love", "No sugar-coating.", "Roast harder.", True)
    assert text_version(ROAST) != text_version(reworded) and len(text_version(ROAST)) == 16


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"min": 0}, "min must be"),
        ({"max": 7}, "max must be"),
        ({"max": True}, "max must be"),
        ({"min": 4, "max": 2}, "min must not be above max"),
        ({"min": 1, "max": 3, "default": 4}, "default must be within"),
        ({"colour": "red"}, "unknown tone setting"),
        ({"modes": "roast"}, "modes must be a list"),
        ({"modes": [ROAST.as_dict() | {"key": "default"}]}, "not 'default'"),
        ({"modes": [ROAST.as_dict() | {"key": "Bad Key"}]}, "key is 1 to 30"),
        ({"modes": [ROAST.as_dict() | {"key": "roast\n"}]}, "key is 1 to 30"),
        ({"modes": [ROAST.as_dict() | {"instruction": ""}]}, "instruction must be text"),
        ({"modes": [ROAST.as_dict() | {"extra": 1}]}, "unknown tone mode field"),
        ({"modes": [ROAST.as_dict(), ROAST.as_dict()]}, "unique"),
        ({"modes": [ROAST.as_dict(), ROAST.as_dict() | {"key": "roast2"}]}, "at most one tone mode"),
    ],
)
def test_bad_settings_are_refused(value: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_settings(value)
