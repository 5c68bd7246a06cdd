"""Settings a new coach can get wrong, through the API and the dashboard's form: an empty persona, fine-tunes on
the local (offline) model. A refused change is a 400 that says why and stores nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from app.accounts.learning_settings import FINE_TUNES_TURNED_OFF, LOCAL_CANNOT_FINE_TUNE
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


OPENAI = {"llm_provider": "openai", "llm_model": "gpt-4o-mini"}
"""An OpenAI endpoint (no base URL: OpenAI's own, nothing is sent in these tests)."""


async def test_fine_tunes_cannot_be_turned_on_for_the_local_model_and_a_switch_to_it_turns_them_off(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """The offline model cannot be fine-tuned: turning fine-tunes on while it serves (or in the change that
    selects it) is a 400 that says why and changes nothing; switching to it turns them off (the answer shows it)."""
    coach = await make_coach("Local Coach")
    before = await settings(http, coach)
    assert before["llm_provider"] == "local" and before["fine_tune_enabled"] is False
    for change in ({"fine_tune_enabled": True}, OPENAI | {"llm_provider": "local", "fine_tune_enabled": True}):
        refused = await http.patch("/api/v1/settings", headers=coach.headers, json=change | {"name": "Renamed"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["detail"] == LOCAL_CANNOT_FINE_TUNE
        assert await settings(http, coach) == before, "nothing changed"

    on = await http.patch("/api/v1/settings", headers=coach.headers, json=OPENAI | {"fine_tune_enabled": True})
    assert on.status_code == 200 and on.json()["fine_tune_enabled"] is True
    both = {"llm_provider": "local", "fine_tune_enabled": True}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=both)).status_code == 400
    assert (await settings(http, coach))["fine_tune_enabled"] is True, "the refused switch changed nothing"
    local = await http.patch("/api/v1/settings", headers=coach.headers, json={"llm_provider": "local"})
    assert local.status_code == 200, local.text
    assert (local.json()["llm_provider"], local.json()["fine_tune_enabled"]) == ("local", False)


async def test_the_settings_page_refuses_fine_tunes_on_the_local_model_and_says_when_a_switch_turned_them_off(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Local Form Coach")
    await log_in(browser, coach)
    page = await browser.get("/dashboard/settings")
    assert "The built-in offline model cannot be fine-tuned" in page.text, "the learning section says so"
    token = await csrf(browser, "/dashboard/settings")
    learning = {"section": "learning", "learning_form": "1", "fine_tune_enabled": "1", "_csrf_token": token}
    refused = await browser.post("/dashboard/settings", data=learning)
    assert refused.status_code == 400 and "the built-in offline model (llm_provider &#39;local&#39;)" in refused.text
    assert (await settings(http, coach))["fine_tune_enabled"] is False

    on = await http.patch("/api/v1/settings", headers=coach.headers, json=OPENAI | {"fine_tune_enabled": True})
    assert on.status_code == 200, on.text
    advanced = {"section": "advanced", "llm_provider": "local", "llm_model": "gpt-4o-mini", "_csrf_token": token}
    switched = await browser.post("/dashboard/settings", data=advanced)
    assert switched.status_code == 200 and f"Saved. {FINE_TUNES_TURNED_OFF}" in switched.text
    after = await settings(http, coach)
    assert (after["llm_provider"], after["fine_tune_enabled"]) == ("local", False)
    again = await browser.post("/dashboard/settings", data=advanced)
    assert again.status_code == 200 and FINE_TUNES_TURNED_OFF not in again.text, "said only when it happened"


async def test_a_null_setting_is_refused_naming_the_field_and_an_empty_string_clears_it(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """``null`` read as "not sent": ``{"alert_webhook_url": null}`` answered 200 and left the URL set."""
    coach = await make_coach("Null Coach")
    set_judge = await http.patch("/api/v1/settings", headers=coach.headers, json={"judge_model": "gpt-4o"})
    assert set_judge.status_code == 200, set_judge.text
    before = await settings(http, coach)
    for field in ("judge_model", "alert_webhook_url", "recent_messages", "name"):
        refused = await http.patch("/api/v1/settings", headers=coach.headers, json={field: None, "persona": "Brief."})
        assert refused.status_code == 400, refused.text
        assert [e["key"] for e in refused.json()["extra"]] == [field] and "null" in refused.text, refused.text
        assert await settings(http, coach) == before, "nothing changed"
    cleared = await http.patch("/api/v1/settings", headers=coach.headers, json={"judge_model": ""})
    assert cleared.status_code == 200 and cleared.json()["judge_model"] is None
