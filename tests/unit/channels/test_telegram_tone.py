"""The ``/tone`` buttons' callback data and messages (pure): round trips, Telegram's 64-byte limit, escaping, the
sender's language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.accounts.tone import INTENSITY_NAMES, ModeConsent, ToneChoice, consent_text, parse_settings, text_version
from app.channels.telegram.tone import TonePress, consent_message, intensity_name, parse_tone, tone_message
from app.handoff.catalogue import say

LONGEST_KEY = "k" + "x" * 29
SETTINGS = parse_settings(
    {
        "min": 2,
        "max": 5,
        "default": 3,
        "modes": [
            {
                "key": LONGEST_KEY,
                "label": "Roast <b>",
                "description": "Hard & fast.",
                "instruction": "Roast.",
                "most_intense": True,
            },
            {"key": "pep", "label": "Cheer", "description": "Cheers.", "instruction": "Cheer."},
        ],
    }
)
ROAST, PEP = SETTINGS.modes
NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)


def consents(given: dict[str, datetime] | None = None, awaiting: str | None = None) -> list[ModeConsent]:
    given = given or {}
    return [
        ModeConsent(
            m,
            consent_text(m),
            text_version(m),
            given[m.key] + timedelta(days=30) if m.key in given else None,
            m.key == awaiting,
            given.get(m.key),
        )
        for m in SETTINGS.modes
    ]


def test_callback_data_round_trips_and_fits_64_bytes() -> None:
    version = text_version(ROAST)
    longest = f"t:c:{LONGEST_KEY}:{version}:2"
    assert len(longest.encode()) <= 64
    assert parse_tone(longest) == TonePress("consent", mode=LONGEST_KEY, version=version, confirmation=2)
    assert parse_tone("t:i:4") == TonePress("intensity", intensity=4)
    assert parse_tone("t:m:pep") == TonePress("mode", mode="pep")
    assert parse_tone("t:w") == TonePress("withdraw") and parse_tone("t:s") == TonePress("show")


@pytest.mark.parametrize(
    "data",
    [
        "t:i:7",
        "t:i:0",
        "t:i:²",
        "t:i:",
        "t:m:Bad",
        "t:m:",
        "t:c:pep:short:1",
        "t:c:pep:0123456789abcdef:3",
        "t:c:pep:0123456789abcdef:12",
        "t:w:x",
        "t",
        "h",
        "m:i:00",
        "",
    ],
)
def test_malformed_callback_data_is_not_a_tone_press(data: str) -> None:
    assert parse_tone(data) is None


def test_tone_message_marks_the_intensity_in_use_and_offers_the_styles_not_in_force() -> None:
    text, keyboard = tone_message(ToneChoice(SETTINGS, None, None, "default", consents()))
    assert "Intensity: <b>3 — balanced</b> (your coach's default; your coach allows 2 to 5)" in text
    rows = keyboard["inline_keyboard"]
    assert [[b["text"] for b in row] for row in rows[:2]] == [
        ["2 gentle", "✓ 3 balanced"],
        ["4 direct", "5 very direct"],
    ]
    assert [row[0]["callback_data"] for row in rows[2:]] == [f"t:m:{LONGEST_KEY}", "t:m:pep"]
    assert rows[2][0]["text"] == "Roast <b>"  # button texts are plain text, not HTML

    on = consents({LONGEST_KEY: NOW})
    text, keyboard = tone_message(ToneChoice(SETTINGS, 5, ROAST, LONGEST_KEY, on))
    assert "Intensity: <b>5 — very direct</b> (your choice;" in text
    assert "Style: <b>Roast &lt;b&gt;</b> (agreed on 2026-12-01, until 2026-12-31)" in text
    assert [row[0]["callback_data"] for row in keyboard["inline_keyboard"][2:]] == ["t:m:pep", "t:w"]

    lapsed_text, _ = tone_message(ToneChoice(SETTINGS, None, None, LONGEST_KEY, consents()))
    assert "Style: <b>Default</b>" in lapsed_text and "lapsed" in lapsed_text


def test_consent_message_escapes_the_text_and_asks_the_most_intense_style_twice() -> None:
    [roast, pep] = consents(awaiting=None)
    text, keyboard = consent_message(roast)
    assert "Hard &amp; fast." in text and "confirm twice" in text
    assert keyboard["inline_keyboard"][0][0]["callback_data"] == f"t:c:{LONGEST_KEY}:{text_version(ROAST)}:1"
    [roast] = [c for c in consents(awaiting=LONGEST_KEY) if c.mode is ROAST]
    text, keyboard = consent_message(roast)
    assert "confirm a second time" in text and keyboard["inline_keyboard"][0][0]["callback_data"].endswith(":2")
    text, _ = consent_message(pep)
    assert "twice" not in text and "second" not in text


def test_intensity_names_are_the_tone_services_in_english() -> None:
    assert {n: intensity_name(n) for n in INTENSITY_NAMES} == INTENSITY_NAMES
    assert [intensity_name(n, "de") for n in (1, 6)] == ["ultrasanft", "unverblümt"]


@pytest.mark.parametrize(
    ("language", "title", "intensity"),
    [
        ("es", "Cómo te habla el asistente", "Intensidad: <b>5 — muy directo</b> (tu elección;"),
        ("fr", "Comment l'assistant te parle", "Intensité : <b>5 — très direct</b> (ton choix ;"),
        ("de", "Wie der Assistent mit dir spricht", "Intensität: <b>5 — sehr direkt</b> (deine Wahl;"),
        ("pt", "Como o assistente fala com você", "Intensidade: <b>5 — muito direto</b> (sua escolha;"),
        ("it", "How the assistant talks to you", "Intensity: <b>5 — very direct</b> (your choice;"),  # English
    ],
)
def test_tone_message_speaks_the_language_and_keeps_the_coachs_words(language: str, title: str, intensity: str) -> None:
    on = consents({LONGEST_KEY: NOW})
    text, keyboard = tone_message(ToneChoice(SETTINGS, 5, ROAST, LONGEST_KEY, on), language)
    assert text.startswith(f"<b>{title}</b>\n{intensity}"), text
    assert "<b>Roast &lt;b&gt;</b>" in text and "2026-12-31" in text  # the coach's label, escaped
    assert keyboard["inline_keyboard"][-1][0]["text"] == say("tg_tone_withdraw", language)
    screen, buttons = consent_message(on[1], language)
    assert "Cheers." in screen and buttons["inline_keyboard"][1][0]["text"] == say("tg_tone_cancel", language)
