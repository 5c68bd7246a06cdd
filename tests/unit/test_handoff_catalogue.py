"""The catalogue of what the client reads around a handoff (:mod:`app.handoff.catalogue`): every message in every
language, with the same fields, and English for a language it lacks."""

from __future__ import annotations

import string

import pytest

from app.handoff.catalogue import CATALOGUE, handoff_notice, holding_message, say
from app.handoff.languages import LANGUAGES


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
