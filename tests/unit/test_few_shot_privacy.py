"""What a few-shot example keeps of the coach's reply and how it describes the situation (pure functions)."""

from __future__ import annotations

from app.learning.interventions import EXAMPLE_CHARS, describe_situation, private_coach_text
from app.learning.pii import ECHO_PLACEHOLDER, NAME_PLACEHOLDER, redact_echoes, scrub_names, scrub_proper_nouns


def test_a_run_of_four_client_words_repeated_by_the_coach_is_redacted() -> None:
    client = ["Honestly, I am the purple walrus of Tuesday!"]
    assert redact_echoes("You said: I am the purple walrus of Tuesday. Breathe.", client) == (
        f"You said: {ECHO_PLACEHOLDER}. Breathe."
    )
    # three shared words are not an echo; case and punctuation do not hide one
    assert redact_echoes("The purple walrus waits.", client) == "The purple walrus waits."
    assert redact_echoes("AM THE PURPLE, walrus", client) == ECHO_PLACEHOLDER
    assert redact_echoes("Nothing shared here at all.", []) == "Nothing shared here at all."


def test_the_clients_name_is_replaced_as_whole_words_only() -> None:
    assert scrub_names("Anna, I hear you. Annabel is someone else.", ["Anna Smith"]) == (
        f"{NAME_PLACEHOLDER}, I hear you. Annabel is someone else."
    )
    assert scrub_names("Thank you, SMITH.", ["Anna Smith"]) == f"Thank you, {NAME_PLACEHOLDER}."
    assert scrub_names("No name here.", [""]) == "No name here."


def test_private_coach_text_scrubs_echoes_names_and_contacts_and_cuts() -> None:
    text = "Robin, you wrote my dog ran off into the woods. Call +44 20 7946 0958 or robin@example.org."
    out = private_coach_text(text, ["Last night my dog ran off into the woods"], "Robin Vale")
    assert out == f"{NAME_PLACEHOLDER}, you wrote {ECHO_PLACEHOLDER}. Call [PHONE] or [EMAIL]."
    assert len(private_coach_text("word " * 200, [], "X")) == EXAMPLE_CHARS


def test_names_places_and_acronyms_the_coach_wrote_are_scrubbed() -> None:
    """A security review's case: the coach's takeover reply to one client named a diagnosis, a relative and a
    city, and another client's prompt showed them word for word (only the client's own name was scrubbed)."""
    text = (
        "Given your HIV diagnosis and the custody fight with your ex-husband Robert Delacroix in Lyon, I'm glad "
        "you reached out. Let's slow down. What would help tonight?"
    )
    out = private_coach_text(text, [], "Ada Moreau")
    assert out == (
        f"Given your {ECHO_PLACEHOLDER} diagnosis and the custody fight with your ex-husband {ECHO_PLACEHOLDER} "
        f"in {ECHO_PLACEHOLDER}, I'm glad you reached out. Let's slow down. What would help tonight?"
    )
    assert scrub_proper_nouns("I think Monday works. Anna said: Call Acme’s desk at 9 about Q7-12.") == (
        f"I think {ECHO_PLACEHOLDER} works. Anna said: Call {ECHO_PLACEHOLDER} desk at 9 about Q7-12."
    )


def test_the_situation_is_described_in_the_platforms_words() -> None:
    assert describe_situation("negative") == "the client's message read negative"
    assert describe_situation(None, ["money", "job"], "Client asked for a human") == (
        "the client's message read neutral; it touched on: money, job; Client asked for a human"
    )
