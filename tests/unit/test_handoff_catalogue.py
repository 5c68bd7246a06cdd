"""The catalogue of what the client reads from the product (:mod:`app.handoff.catalogue`): every message in every
language, with the same fields, and English for a language it lacks; the widget's texts and the language they are
chosen in."""

from __future__ import annotations

import string

import pytest

from app.accounts.disclosure import AI_DISCLOSURE_TEXT
from app.core.errors import InvalidInput, TooManyAttempts
from app.handoff.catalogue import (
    CATALOGUE,
    handoff_notice,
    holding_message,
    presence_lines,
    refusal,
    say,
    widget_texts,
)
from app.handoff.languages import LANGUAGES, preferred_language
from app.handoff.signals import human_request_language


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_message_has_every_language_with_the_same_fields(name: str) -> None:
    entry = CATALOGUE[name]
    assert sorted(entry) == sorted(LANGUAGES)
    fields = {lang: {f for _, f, _, _ in string.Formatter().parse(text) if f} for lang, text in entry.items()}
    # English may say "they" where another language names the coach
    assert all(fields[lang] - {"coach"} == fields["en"] - {"coach"} for lang in LANGUAGES), fields


def test_a_language_the_catalogue_lacks_reads_english() -> None:
    assert say("holding_soon", "it") == say("holding_soon", "en") == "as soon as they can"
    assert handoff_notice("Ana", "xx", requested=True, sla_minutes=5, back=None) == (
        "Of course — I've asked Ana to join this conversation. They usually reply here within 5 minutes. "
        "Your message is saved, and anything you add here goes straight to them."
    )
    assert holding_message("Ana", "", joined=False, back="Monday, 9:00 AM (UTC)") == (
        "Thank you for waiting — Ana hasn't been able to join yet and will reply here when they're back, "
        "Monday, 9:00 AM (UTC). If things feel urgent or unsafe, please contact your local emergency number or a "
        "crisis line."
    )


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("joined", [False, True])
def test_a_crisis_holding_message_lists_the_crisis_lines_it_points_to(language: str, joined: bool) -> None:
    """The holding message of a crisis handoff told the client to "contact your local emergency number or a crisis
    line", naming none, while the crisis reply had listed the coach's. Given the crisis lines it lists them, one
    per line, and names no number it does not give; without them (any other handoff) it reads as before."""
    lines = ("Call Lifeline Aotearoa on 0800 543 354.", "TelefonSeelsorge: 0800 111 0 111.")
    crisis = holding_message("Ana", language, joined=joined, back=None, resources=lines)
    plain = holding_message("Ana", language, joined=joined, back=None)
    waiting = say(
        "holding_joined" if joined else "holding_open", language, coach="Ana", when=say("holding_soon", language)
    )
    assert crisis.startswith(waiting) and plain.startswith(waiting)
    assert crisis.endswith("\n- Call Lifeline Aotearoa on 0800 543 354.\n- TelefonSeelsorge: 0800 111 0 111.")
    assert say("holding_urgent", language) not in crisis and plain.endswith(say("holding_urgent", language))
    assert "local emergency number" not in crisis and "emergencias local" not in crisis


@pytest.mark.parametrize(
    ("language", "one", "fifteen"),
    [
        ("en", "1 minute", "15 minutes"),
        ("es", "1 minuto", "15 minutos"),
        ("fr", "1 minute", "15 minutes"),
        ("de", "1 Minute", "15 Minuten"),
        ("pt", "1 minuto", "15 minutos"),
    ],
)
def test_a_coachs_sla_of_one_minute_reads_in_the_singular(language: str, one: str, fifteen: str) -> None:
    """A coach who replies within a minute was shown as "typically replies within 1 minutes" (the widget's waiting
    line) and "within 1 minutes" (the handoff notice), in every language."""
    assert presence_lines(language, 1)["waiting"].endswith(f" {one})…")
    assert presence_lines(language, 15)["waiting"].endswith(f" {fifteen})…")
    assert f" {one}. " in handoff_notice("Ana", language, requested=True, sla_minutes=1, back=None)
    assert f" {fifteen}. " in handoff_notice("Ana", language, requested=True, sla_minutes=15, back=None)


def test_the_widgets_texts_are_its_catalogue_entries_in_the_language_english_for_another() -> None:
    french, english = widget_texts("fr"), widget_texts("en")
    own = [name.removeprefix("widget_") for name in CATALOGUE if name.startswith("widget_")]
    assert sorted(french) == sorted(own + [name for name in CATALOGUE if name.startswith("refused_")])
    shown = (french["send"], french["placeholder"], french["reconnecting"])
    assert shown == ("Envoyer", "Écris ton message…", "Reconnexion…")
    assert french["joined"] == "{coach} a rejoint la conversation"  # fields left for the page to fill
    assert widget_texts("it") == widget_texts("") == english and english["send"] == "Send"
    assert english["disclosure"] == AI_DISCLOSURE_TEXT  # the text of the version the client accepts


def test_a_refusal_is_its_codes_text_in_the_language_else_its_english_message() -> None:
    assert refusal(TooManyAttempts(7, what="messages"), "de") == "Zu viele Anfragen: Versuch es in 7 s noch einmal."
    assert refusal(TooManyAttempts(7, what="messages"), "it") == "Too many requests: try again in 7 s."
    assert refusal(InvalidInput("title must not be empty"), "es") == "title must not be empty"  # no code
    assert refusal(InvalidInput("odd", code="no_such_code"), "es") == "odd"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_widgets_ask_for_the_coach_is_read_as_one_in_its_language(language: str) -> None:
    """The "Talk to a human" button sends widget_human_request: the turn must take it for an ask for a person, and
    the handoff notice must answer in the button's language."""
    assert human_request_language(widget_texts(language)["human_request"]) == language


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("es-ES,es;q=0.9,en;q=0.8", "es"),
        ("pt-BR", "pt"),
        ("it, de;q=0.5, fr;q=0.8", "fr"),  # Italian is not offered: the next by quality
        ("de;q=0.5, fr;q=0.5", "de"),  # equal quality: the order given
        ("en;q=0, es;q=x", None),  # refused, unreadable
        ("it, *", None),
        ("", None),
        (None, None),
    ],
)
def test_the_browsers_preferred_language_is_read_from_accept_language(header: str | None, language: str | None) -> None:
    assert preferred_language(header) == language
