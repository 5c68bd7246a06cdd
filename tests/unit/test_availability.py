"""A coach's availability hours: validation, whether the coach is in, and when they are back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.accounts.availability import (
    away_until,
    describe_return,
    is_available,
    next_available,
    next_change,
    validate_availability,
)
from app.core.errors import InvalidInput

BERLIN_WEEKDAYS = {"timezone": "Europe/Berlin", "days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}


def test_none_means_always_available() -> None:
    at = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)  # a Sunday night
    assert validate_availability(None) is None
    assert is_available(None, at) and next_available(None, at) == at


def test_hours_are_read_in_the_coachs_time_zone() -> None:
    hours = validate_availability(BERLIN_WEEKDAYS)
    # Monday 23 Nov 2026: 08:30 UTC is 09:30 in Berlin (CET, UTC+1); 16:30 UTC is 17:30
    assert is_available(hours, datetime(2026, 11, 23, 8, 30, tzinfo=UTC))
    assert not is_available(hours, datetime(2026, 11, 23, 7, 30, tzinfo=UTC))
    assert not is_available(hours, datetime(2026, 11, 23, 16, 30, tzinfo=UTC))
    assert not is_available(hours, datetime(2026, 11, 22, 12, 0, tzinfo=UTC)), "Sunday is not a working day"


def test_next_available_skips_the_weekend() -> None:
    hours = validate_availability(BERLIN_WEEKDAYS)
    friday_evening = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    back = next_available(hours, friday_evening)
    assert (back.weekday(), back.hour, back.minute) == (0, 9, 0)
    assert back.astimezone(UTC) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert describe_return(hours, friday_evening) == "Monday, 9:00\u202fAM (Europe/Berlin)"
    early_tuesday = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    assert describe_return(hours, early_tuesday) == "Tuesday, 9:00\u202fAM (Europe/Berlin)"


@pytest.mark.parametrize(
    ("language", "back"),
    [
        ("es", "lunes, 9:00 (Europe/Berlin)"),
        ("fr", "lundi 09:00 (Europe/Berlin)"),
        ("de", "Montag, 09:00 (Europe/Berlin)"),
        ("pt", "segunda-feira 09:00 (Europe/Berlin)"),
        ("pt-BR", "segunda-feira 09:00 (Europe/Berlin)"),
        ("xx", "Monday, 9:00\u202fAM (Europe/Berlin)"),
        ("", "Monday, 9:00\u202fAM (Europe/Berlin)"),
    ],
)
def test_the_return_time_is_written_in_the_messages_language(language: str, back: str) -> None:
    """The crisis messages are translated; the day and time in them were English ("Monday at 09:00") in every
    language. They follow the language's CLDR names and formats now (Babel); a language Babel does not know gets
    English."""
    hours = validate_availability(BERLIN_WEEKDAYS)
    friday_evening = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    assert describe_return(hours, friday_evening, language) == back
    assert away_until(hours, friday_evening, language) == back


def test_defaults_fill_missing_fields() -> None:
    assert validate_availability({"timezone": "UTC"}) == {
        "timezone": "UTC",
        "days": [0, 1, 2, 3, 4],
        "start": "09:00",
        "end": "17:00",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"timezone": "America"}, "not an IANA time zone"),
        ({"timezone": "x" * 300}, "not an IANA time zone"),
        ({"days": []}, "non-empty list of weekdays"),
        ({"days": [7]}, "non-empty list of weekdays"),
        ({"days": [True, False]}, "non-empty list of weekdays"),
        ({"start": "9am"}, "availability.start must be a local time like 09:00"),
        ({"start": "09:00+02:00"}, "availability.start must be a local time like 09:00"),
        ({"end": "17:00Z"}, "availability.end must be a local time like 09:00"),
        ({"start": "18:00", "end": "09:00"}, "later than"),
        ({"start": "09:00:10", "end": "09:00:50"}, "local time like 09:00, in whole minutes"),
        ({"hours": "9-5"}, "unknown fields: hours"),
    ],
)
def test_bad_hours_are_rejected_with_the_field_named(value: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_availability(value)


def test_a_browsers_whole_minute_seconds_are_accepted() -> None:
    hours = validate_availability({"start": "09:00:00", "end": "17:30:00"})
    assert hours is not None and (hours["start"], hours["end"]) == ("09:00", "17:30")


def test_away_until_says_when_the_coach_is_back_only_outside_their_hours() -> None:
    hours = validate_availability(BERLIN_WEEKDAYS)
    sunday, monday = datetime(2026, 11, 22, 12, 0, tzinfo=UTC), datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert away_until(hours, sunday) == describe_return(hours, sunday) == "Monday, 9:00\u202fAM (Europe/Berlin)"
    assert away_until(hours, monday) is None and away_until(None, sunday) is None


def test_next_change_is_the_end_of_the_working_period_or_the_next_start() -> None:
    """What a widget left open re-checks the coach's presence by: within their hours, the end of that period;
    outside them, the next start; never without hours."""
    hours = validate_availability(BERLIN_WEEKDAYS)
    monday_morning = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)  # 09:30 in Berlin
    assert next_change(hours, monday_morning) == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    friday_evening = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    assert next_change(hours, friday_evening) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert next_change(None, friday_evening) is None
