"""The coach's client page shows the client's tone: the intensity (the client's choice or the coach's default),
the style in force with when the client agreed and when that expires (30 days), and the consent log (who, when,
which style, what, the text version)."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.accounts.tone import parse_settings, text_version
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from tests.conftest import Coach, make_client
from tests.integration.chat.test_tone import SETTINGS
from tests.integration.web.test_dashboard import browser, log_in

__all__ = ["browser"]  # fixture used by name below


def tone_section(page: httpx.Response) -> str:
    """The text of the client page's Tone section, tags dropped and whitespace collapsed."""
    assert page.status_code == 200, page.text
    match = re.search(r'<section class="card" id="tone">(.*?)</section>', page.text, re.S)
    assert match, "the client page has a Tone section"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


async def widget(http: httpx.AsyncClient, client: dict[str, Any], method: str, path: str, **body: Any) -> Any:
    auth = {"Authorization": f"Bearer {client['widget_token']}"}
    response = await http.request(method, f"/api/v1/widget/tone{path}", headers=auth, json=body or None)
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_client_page_shows_the_tone_the_style_in_force_and_the_consent_log(
    browser: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
) -> None:
    coach = await make_coach("Tone Page Coach")
    assert (await http.put("/api/v1/tone", headers=coach.headers, json=SETTINGS)).status_code == 200
    robin = await make_client(http, coach, "Robin")
    sam = await make_client(http, coach, "Sam")
    await log_in(browser, coach)

    fresh = tone_section(await browser.get(f"/dashboard/clients/{robin['id']}"))
    assert "Intensity 3 — balanced (your default; you allow 1 to 4)" in fresh, fresh
    assert "Style Default" in fresh and "No consent given or withdrawn yet." in fresh

    await widget(http, robin, "PUT", "", intensity=4)
    version = text_version(parse_settings(SETTINGS).mode("roast"))
    await widget(http, robin, "POST", "/consent", mode="roast", version=version, confirmation=1)
    chosen = await widget(http, robin, "POST", "/consent", mode="roast", version=version, confirmation=2)
    assert chosen["mode"] == "roast"
    log = (await http.get(f"/api/v1/tone/consents/{robin['id']}", headers=coach.headers)).json()
    at = datetime.fromisoformat(log[-1]["at"])
    expires = datetime.fromisoformat(log[-1]["expires_at"])
    shown = tone_section(await browser.get(f"/dashboard/clients/{robin['id']}"))
    assert "Intensity 4 — direct (Robin's choice; you allow 1 to 4)" in shown, shown
    assert f"Style Tough love (agreed {at:%Y-%m-%d %H:%M} UTC, expires {expires:%Y-%m-%d %H:%M} UTC)" in shown, shown
    assert expires - at == timedelta(days=30)
    first = f"Robin {datetime.fromisoformat(log[0]['at']):%Y-%m-%d %H:%M} Tough love first of two confirmations"
    assert f"{first} {version} —" in shown, shown
    assert f"Robin {at:%Y-%m-%d %H:%M} Tough love agreed {version} {expires:%Y-%m-%d %H:%M}" in shown

    # Sam agreed to a style 31 days ago: the agreement has lapsed, so Sam is on the default style again
    past = datetime.now(UTC) - timedelta(days=31)
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        pep_version = text_version(parse_settings(SETTINGS).mode("pep"))
        await container.tone.consent(uow, uuid.UUID(sam["id"]), past, mode="pep", version=pep_version, confirmation=1)
    lapsed = tone_section(await browser.get(f"/dashboard/clients/{sam['id']}"))
    assert "Style Default (Sam chose Cheerleader, but the agreement lapsed or its wording changed)" in lapsed, lapsed
    assert f"Sam {past:%Y-%m-%d %H:%M} Cheerleader agreed {pep_version}" in lapsed
    assert "Robin" not in lapsed  # each client's own log
