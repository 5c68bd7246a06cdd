"""The widget's "away until …" line stays right while its page is open: the page and ``GET /api/v1/widget/presence``
say whether the coach is outside their hours and in how many seconds that changes (``static/chat.js`` asks again
then; the browser side is in :mod:`tests.browser.test_widget_ux_browser`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from app.accounts.availability import describe_return, next_available
from tests.conftest import Coach, make_client, widget_page

MakeCoach = Callable[..., Awaitable[Coach]]


def noon_zone() -> str:
    """An IANA zone where it is now 12:xx (``Etc/GMT-3`` is UTC+3), so hours around "now" stay within one day."""
    offset = 12 - datetime.now(UTC).hour
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"


async def presence(http: httpx.AsyncClient, token: str, changes_at: datetime | None = None) -> dict:
    """The presence endpoint's answer; with ``changes_at``, checks that ``changes_in`` counts the seconds to it
    from when the server answered (between the request and the response)."""
    before = datetime.now(UTC)
    response = await http.get("/api/v1/widget/presence", headers={"Authorization": f"Bearer {token}"})
    after = datetime.now(UTC)
    assert response.status_code == 200, response.text
    found = response.json()
    if changes_at is not None:
        earliest, latest = (changes_at - after).total_seconds(), (changes_at - before).total_seconds()
        assert earliest - 1 <= found["changes_in"] <= latest + 1, (found, earliest, latest)
    return found


async def test_the_widget_learns_whether_the_coach_is_away_and_when_that_changes(
    http: httpx.AsyncClient, base_url: str, make_coach: MakeCoach
) -> None:
    """The page said "away until …" as of when it loaded, and nothing told it later: it kept saying so after the
    coach was back, or never said so once the coach's hours ended. The page and the presence endpoint now also
    say in how many seconds that changes."""
    coach = await make_coach("Coach Hours")
    token = (await make_client(http, coach, "Ari"))["widget_token"]
    assert await presence(http, token) == {"away_until": None, "changes_in": None}, "no hours: always in"

    zone = noon_zone()
    end = datetime.now(ZoneInfo(zone)).replace(second=0, microsecond=0) + timedelta(minutes=30)
    within = {"timezone": zone, "days": list(range(7)), "start": "00:00", "end": end.strftime("%H:%M")}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json={"availability": within})).is_success
    assert (await presence(http, token, changes_at=end))["away_until"] is None

    day = (datetime.now(ZoneInfo(zone)) + timedelta(days=3)).weekday()
    away = {"timezone": zone, "days": [day], "start": "09:00", "end": "17:00"}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json={"availability": away})).is_success
    now = await presence(http, token, changes_at=next_available(away, datetime.now(UTC)))
    assert now["away_until"] == describe_return(away, datetime.now(UTC))
    page = (await widget_page(base_url, token)).text
    assert f'data-away="{now["away_until"]}"' in page and 'data-away-changes-in="' in page

    refused = await http.get("/api/v1/widget/presence")
    assert refused.status_code == 401, refused.text
