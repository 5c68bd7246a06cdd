"""Settings a new coach can get wrong, through the API and the dashboard's form: an empty persona, fine-tunes on
the local model. A refused change is a 400 that says why and stores nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from tests.conftest import Coach
from tests.integration.web.test_dashboard import browser, csrf, log_in

__all__ = ["browser"]  # fixture used by name below

BLANK_PERSONAS = ("", "   ", "\n\t \r\n")


async def settings(http: httpx.AsyncClient, coach: Coach) -> dict:
    """The coach's settings as the API shows them."""
    response = await http.get("/api/v1/settings", headers=coach.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_an_empty_persona_is_refused_by_the_api_and_nothing_is_stored(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Persona Coach")
    before = await settings(http, coach)
    for blank in BLANK_PERSONAS:
        refused = await http.patch(
            "/api/v1/settings", headers=coach.headers, json={"persona": blank, "name": "Renamed"}
        )
        assert refused.status_code == 400 and refused.json()["detail"] == "persona must not be empty", blank
        assert await settings(http, coach) == before, "nothing changed"
    saved = await http.patch("/api/v1/settings", headers=coach.headers, json={"persona": "  Warm and brief.  "})
    assert saved.status_code == 200 and saved.json()["persona"] == "Warm and brief."


async def test_an_empty_persona_is_a_form_error_on_the_settings_page(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Persona Form Coach")
    await log_in(browser, coach)
    before = await settings(http, coach)
    token = await csrf(browser, "/dashboard/settings")
    for blank in BLANK_PERSONAS:
        data = {"section": "profile", "name": "Renamed", "persona": blank, "_csrf_token": token}
        refused = await browser.post("/dashboard/settings", data=data)
        assert refused.status_code == 400 and "persona must not be empty" in refused.text, blank
        assert await settings(http, coach) == before, "nothing changed"
    page = (await browser.get("/dashboard/settings")).text
    assert '<textarea name="persona" rows="6" required>' in page, "the browser asks for it too"
