"""Per-language crisis resources: the coach sets the crisis reply's lines per language the client writes in
(``crisis_resources_by_language``, API and dashboard); the crisis reply uses them for a client who wrote in
that language, otherwise the general lines followed by the built-in lines for that language (es/fr/de/pt), and a
crisis handoff's holding message lists the same lines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import respx

from app.container import Container
from app.core.runtime import Services
from app.handoff.catalogue import holding_message
from app.handoff.crisis import LANGUAGE_DEFAULT_RESOURCES, crisis_reply
from tests.conftest import Coach
from tests.integration.handoff.test_handoff_flow import Setup, backdate, chat, llm_api, new_setup, transcript
from tests.integration.web.test_dashboard import HANDOFF_FORM, browser, csrf, log_in

__all__ = ["browser", "llm_api", "new_setup"]

GENERAL = ["Call Lifeline Aotearoa on 0800 543 354."]
SPANISH = ["Llama al 024 (España), gratis y a cualquier hora.", "Escribe a tu coach: Ana está avisada."]
GERMAN = ["TelefonSeelsorge: 0800 111 0 111 (kostenlos, rund um die Uhr)."]


async def test_the_crisis_reply_uses_the_lines_for_the_clients_language(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    setup = await new_setup("Ana", crisis_resources=GENERAL, crisis_resources_by_language={"es": SPANISH, "de": GERMAN})
    spanish = await chat(http, setup, "Ya no puedo más, quiero matarme")
    assert spanish["reply"] == crisis_reply("Ana", tuple(SPANISH), "es"), spanish["reply"]  # on main: GENERAL
    german = await chat(
        http, await new_setup("Ana", crisis_resources_by_language={"de": GERMAN}), "ich will mich umbringen"
    )
    assert german["reply"] == crisis_reply("Ana", tuple(GERMAN), "de")
    english = await chat(http, setup, "I want to kill myself tonight")
    assert english["reply"] == crisis_reply("Ana", tuple(GENERAL), "en")
    french = await chat(http, setup, "je veux me suicider")  # no French lines: the general ones, then France's
    assert french["reply"] == crisis_reply("Ana", (*GENERAL, *LANGUAGE_DEFAULT_RESOURCES["fr"]), "fr")
    assert llm_api["completions"].call_count == 0


US_LINE = "US 988 Suicide & Crisis Lifeline"


async def test_a_german_client_of_a_coach_with_lines_naming_no_language_reads_the_german_lines_too(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    services: Services,
) -> None:
    """A coach listed "US 988 Suicide & Crisis Lifeline" as their crisis resource (no language): a German client in
    crisis read only that US number, in the crisis reply and in the holding message, which besides pointed to "den
    örtlichen Notruf" without naming it. The client now reads the coach's line and then the German ones (112,
    TelefonSeelsorge), in both; a coach who set German lines gives those alone."""
    setup = await new_setup("Ana", crisis_resources=[US_LINE], handoff_sla_minutes=5)
    crisis = await chat(http, setup, "ich will mich umbringen")
    assert crisis["handoff"] == {"status": "open", "reason": "crisis"}, crisis
    lines = (US_LINE, *LANGUAGE_DEFAULT_RESOURCES["de"])
    assert crisis["reply"] == crisis_reply("Ana", lines, "de"), crisis["reply"]  # on main: the US line alone
    assert "TelefonSeelsorge 0800 111 0 111" in crisis["reply"] and "Notruf 112" in crisis["reply"]

    own = await new_setup("Ana", crisis_resources=[US_LINE], crisis_resources_by_language={"de": GERMAN})
    overridden = await chat(http, own, "ich will nicht mehr leben")
    assert overridden["reply"] == crisis_reply("Ana", tuple(GERMAN), "de"), overridden["reply"]
    assert US_LINE not in overridden["reply"] and "Notruf 112" not in overridden["reply"]

    await backdate(services, [crisis["conversation_id"]], minutes=6, messages=True)
    assert await container.sla_notices.send_sla_notices() >= 1
    [holding] = [
        m["text"]
        for m in await transcript(http, setup, crisis["conversation_id"])
        if m["metadata"].get("notice") == "sla"
    ]
    assert holding == holding_message("Ana", "de", joined=False, back=None, resources=lines), holding
    assert holding.startswith("Danke fürs Warten – Ana") and all(f"\n- {line}" in holding for line in lines)
    assert "örtlichen Notruf" not in holding
    assert llm_api["completions"].call_count == 0


async def test_the_settings_api_checks_the_lines_per_language(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Ana")
    saved = await http.patch(
        "/api/v1/settings",
        headers=coach.headers,
        json={"crisis_resources_by_language": {"es": [" ", *SPANISH, SPANISH[0]], "pt": [" "], "de": GERMAN}},
    )
    assert saved.status_code == 200, saved.text
    expected = {"de": GERMAN, "es": SPANISH}  # trimmed, blank lines and repeats dropped, an empty language too
    assert saved.json()["crisis_resources_by_language"] == expected
    for patch, message in [
        ({"xx": ["a line"]}, "crisis_resources_by_language: unknown language xx"),
        ({"es": "Llama al 024"}, "Expected `array"),
        ({"es": [f"line {i}" for i in range(11)]}, "crisis_resources_by_language.es takes at most 10 entries"),
        ({"es": ["x" * 301]}, "each entry of crisis_resources_by_language.es must be at most 300 characters"),
        (["es"], "Expected `object"),
    ]:
        response = await http.patch(
            "/api/v1/settings", headers=coach.headers, json={"crisis_resources_by_language": patch, "persona": "new"}
        )
        assert response.status_code == 400, (patch, response.text)
        assert message in response.text, (patch, response.text)
    after = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert after["crisis_resources_by_language"] == expected and after["persona"] != "new"  # nothing changed
    cleared = await http.patch("/api/v1/settings", headers=coach.headers, json={"crisis_resources_by_language": {}})
    assert cleared.json()["crisis_resources_by_language"] == {}


async def test_the_dashboard_sets_the_lines_per_language(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Settings Coach")
    await log_in(browser, coach)
    page = await browser.get("/dashboard/settings")
    assert 'name="crisis_resources_es"' in page.text and "Crisis resources per language" in page.text
    form = HANDOFF_FORM | {
        "alert_email": "",  # no confirmation to the address the settings test counts (ALERT_EMAIL_ADDRESS_LIMIT)
        "crisis_resources_es": "\n".join(SPANISH),
        "crisis_resources_de": "",
        "crisis_resources_pt": "",
    }
    saved = await browser.post(
        "/dashboard/settings", data=form | {"_csrf_token": await csrf(browser, "/dashboard/settings")}
    )
    assert saved.status_code == 200 and "Saved." in saved.text, saved.text
    assert SPANISH[0] in saved.text  # shown again in its textarea
    api = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert api["crisis_resources_by_language"] == {"es": SPANISH}
