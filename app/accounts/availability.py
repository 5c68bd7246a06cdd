"""A coach's availability hours: when the coach can be expected to answer a handoff.

The setting is ``{"timezone": "Europe/Berlin", "days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}``
(days are ISO weekdays minus one: Monday = 0; ``end`` after ``start``, same day). ``None`` means always.
Time zones are IANA names (``zoneinfo``, with the ``tzdata`` package where the system has none).
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, get_datetime_format, get_time_format

from app.core.errors import InvalidInput

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


_CLOCK = re.compile(r"\d{2}:\d{2}(?::00)?")
"""A local wall-clock time in whole minutes, ``HH:MM`` or ``HH:MM:00`` (as a browser's time input may send it): no
UTC offset (the zone is ``availability.timezone``); hours are stored as ``HH:MM``, so other seconds are refused."""


def _clock(value: Any, name: str) -> time:
    text = str(value)
    try:
        if not _CLOCK.fullmatch(text):
            raise ValueError(text)
        return time.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"availability.{name} must be a local time like 09:00, in whole minutes (the time zone is "
            "availability.timezone)"
        ) from None


def validate_availability(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Check and normalise the setting. Raises ``InvalidInput`` naming the bad field."""
    if value is None:
        return None
    unknown = set(value) - {"timezone", "days", "start", "end"}
    if unknown:
        raise InvalidInput(f"availability has unknown fields: {', '.join(sorted(unknown))}")
    zone = str(value.get("timezone") or "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a tz folder ("America") or an over-long name
        raise InvalidInput(f"availability.timezone {zone!r} is not an IANA time zone") from None
    days = value.get("days", [0, 1, 2, 3, 4])
    if not isinstance(days, list) or not days or not all(type(d) is int and 0 <= d <= 6 for d in days):
        raise InvalidInput("availability.days must be a non-empty list of weekdays 0–6 (Monday = 0)")
    start = _clock(value.get("start", "09:00"), "start")
    end = _clock(value.get("end", "17:00"), "end")
    if end <= start:
        raise InvalidInput("availability.end must be later than availability.start")
    return {"timezone": zone, "days": sorted(set(days)), "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


def coach_zone(availability: dict[str, Any] | None) -> ZoneInfo:
    """The coach's time zone (``availability.timezone``; UTC when the coach set no hours): the zone of the dates
    the clone sees in its memory of a client, and of its "today"."""
    return ZoneInfo(availability["timezone"] if availability else "UTC")


def is_available(availability: dict[str, Any] | None, at: datetime) -> bool:
    """Whether the coach is within their hours at the aware datetime ``at``."""
    if availability is None:
        return True
    local = at.astimezone(ZoneInfo(availability["timezone"]))
    start, end = time.fromisoformat(availability["start"]), time.fromisoformat(availability["end"])
    return local.weekday() in availability["days"] and start <= local.time() < end


def next_available(availability: dict[str, Any] | None, at: datetime) -> datetime:
    """The start of the coach's next working period at or after ``at`` (``at`` itself when available),
    in the coach's time zone."""
    if availability is None or is_available(availability, at):
        return at
    zone = ZoneInfo(availability["timezone"])
    local = at.astimezone(zone)
    start = time.fromisoformat(availability["start"])
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        candidate = datetime.combine(day, start, tzinfo=zone)
        if day.weekday() in availability["days"] and candidate > local:
            return candidate
    raise AssertionError("a validated availability has a working day every week")


def next_change(availability: dict[str, Any] | None, at: datetime) -> datetime | None:
    """When the coach next comes in or goes out after ``at``: the end of their working period when ``at`` is within
    it, else :func:`next_available`; ``None`` when they set no hours (always in). What a page left open re-checks
    :func:`away_until` by."""
    if availability is None:
        return None
    if not is_available(availability, at):
        return next_available(availability, at)
    zone = ZoneInfo(availability["timezone"])
    return datetime.combine(at.astimezone(zone).date(), time.fromisoformat(availability["end"]), tzinfo=zone)


def describe_return(availability: dict[str, Any] | None, at: datetime, language: str = "en") -> str:
    """When the coach is back, for messages to the client, written in ``language`` (an ISO 639-1 code; one Babel
    does not know → English) by the CLDR day name, short time and date-time joining pattern, followed by the
    coach's time zone: ``"Monday, 9:00 AM (Europe/Berlin)"``, ``"lunes, 9:00 (Europe/Berlin)"``."""
    back = next_available(availability, at)
    zone = availability["timezone"] if availability else "UTC"
    try:
        locale = Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        locale = Locale("en")
    clock = get_time_format("short", locale).pattern
    pattern = str(get_datetime_format("short", locale)).replace("{1}", "EEEE").replace("{0}", clock)
    return f"{format_datetime(back, pattern, tzinfo=back.tzinfo, locale=locale)} ({zone})"


def away_until(availability: dict[str, Any] | None, at: datetime, language: str = "en") -> str | None:
    """When the coach is back (:func:`describe_return`, in ``language``) if ``at`` is outside their hours, else
    ``None`` (the coach is within their hours, or set none): what a message to the client says instead of the reply
    time."""
    return None if is_available(availability, at) else describe_return(availability, at, language)
