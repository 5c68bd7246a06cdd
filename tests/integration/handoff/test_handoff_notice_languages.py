"""The handoff notice and the SLA holding message in the client's language, as the crisis reply: a Spanish or a
German client read them in their language (the coach's return day too), a client in a language OpenCoach does not
know reads English.

Fixtures and helpers are those of :mod:`tests.integration.handoff.test_handoff_flow` (the app, PostgreSQL, Redis
and the local embedder are real; only the coach's OpenAI-compatible endpoint is mocked).
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import respx
import websockets

from app.accounts.availability import describe_return
from app.container import Container
from app.core.runtime import Services
from app.handoff.catalogue import handoff_notice, holding_message, presence_lines
from app.handoff.service import COACH_PRESENT_WINDOW
from tests.conftest import widget_page
from tests.integration.handoff.test_crisis_followup import GERMAN_DAYS, away_now
from tests.integration.handoff.test_handoff_flow import (
    Setup,
    backdate,
    chat,
    handoffs,
    llm_api,
    new_setup,
    next_event,
    transcript,
)

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

SPANISH = "Hola, quiero organizar mejor mi semana porque estoy muy cansada"
GERMAN = "Hallo, ich bin sehr müde und will meine Woche besser planen"
ITALIAN = "Ciao, vorrei organizzare meglio la settimana perché sono molto stanca"


async def holding(http: httpx.AsyncClient, setup: Setup, conversation_id: str) -> list[str]:
    """The texts of the conversation's SLA holding messages, oldest first."""
    messages = await transcript(http, setup, conversation_id)
    return [m["text"] for m in messages if m["metadata"].get("notice") == "sla"]


async def test_the_handoff_notice_and_the_holding_message_are_in_the_clients_language(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    services: Services,
) -> None:
    """A Spanish client read "This is one for Ana personally…" and, past the SLA, "Thank you for waiting…"; both
    are Spanish now. An Italian client (a language the catalogue lacks) reads them in English."""
    spanish = await new_setup("Ana", handoff_mode="human_only", handoff_sla_minutes=5)
    body = await chat(http, spanish, SPANISH)
    assert body["handoff"]["status"] == "open", body
    assert body["reply"] == handoff_notice("Ana", "es", requested=False, sla_minutes=5, back=None)
    assert body["reply"].startswith("Esto es algo para Ana en persona") and "5 minutos" in body["reply"]

    italian = await new_setup("Ana", handoff_mode="human_only", handoff_sla_minutes=5)
    other = await chat(http, italian, ITALIAN)
    assert other["reply"] == handoff_notice("Ana", "en", requested=False, sla_minutes=5, back=None)
    assert other["reply"].startswith("This is one for Ana personally")

    await backdate(services, [body["conversation_id"], other["conversation_id"]], minutes=6)
    assert await container.sla_notices.send_sla_notices() >= 2
    assert await holding(http, spanish, body["conversation_id"]) == [
        holding_message("Ana", "es", joined=False, back=None)
    ]
    assert (await holding(http, spanish, body["conversation_id"]))[0].startswith("Gracias por esperar: Ana")
    [english] = await holding(http, italian, other["conversation_id"])
    assert english.startswith("Thank you for waiting — Ana hasn't been able to join yet")
    assert llm_api["completions"].call_count == 0


async def test_a_german_client_reads_when_the_away_coach_is_back_in_german(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    services: Services,
) -> None:
    """The coach is away until their next working day. A German client asking for a person read "They're away
    right now and back Monday, 9:00 AM…"; the coach took the conversation and left the client's next message
    waiting past the SLA, and the holding message said "pulled away for a moment" in English. Both are German
    now, with the day in German (the takeover is no longer recent: the coach is not in the conversation)."""
    availability = away_now()
    setup = await new_setup("Ana", availability=availability, handoff_sla_minutes=5)
    back = describe_return(availability, datetime.now(UTC), "de")
    assert GERMAN_DAYS[availability["days"][0]] in back  # type: ignore[index]
    body = await chat(http, setup, "/human " + GERMAN)
    assert body["handoff"] == {"status": "open", "reason": "human_request"}, body
    assert body["reply"] == handoff_notice("Ana", "de", requested=True, sla_minutes=5, back=back)
    assert f"Ana ist gerade nicht erreichbar; wieder da: {back}." in body["reply"]

    conversation_id = body["conversation_id"]
    taken = await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
    assert taken.status_code == 200, taken.text
    await chat(http, setup, "Hallo? Ist da noch jemand? Ich warte auf eine Antwort", conversation_id)
    await backdate(
        services, [conversation_id], minutes=int(COACH_PRESENT_WINDOW.total_seconds() // 60) + 5, messages=True
    )
    assert await container.sla_notices.send_sla_notices() >= 1
    [waiting] = await holding(http, setup, conversation_id)
    assert waiting == holding_message("Ana", "de", joined=True, back=back)
    assert waiting.startswith("Danke fürs Warten – Ana wurde kurz aufgehalten") and back in waiting
    assert llm_api["completions"].call_count == 0


async def test_a_spanish_clients_ask_for_a_person_opens_a_handoff_with_the_notice_in_spanish(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """ "Hola, quiero hablar con una persona, por favor" was not an ask for a human (English wording only): the AI
    answered. It now opens a human-request handoff, no model call, and the client reads the notice in Spanish."""
    setup = await new_setup("Ana", handoff_sla_minutes=5)
    body = await chat(http, setup, "Hola, quiero hablar con una persona, por favor")
    assert body["handoff"] == {"status": "open", "reason": "human_request"}, body
    assert body["reply"] == handoff_notice("Ana", "es", requested=True, sla_minutes=5, back=None)
    [opened] = await handoffs(http, setup.coach, "open")
    assert opened["conversation_id"] == body["conversation_id"] and opened["reason"] == "human_request"
    assert llm_api["completions"].call_count == 0


async def test_a_short_ask_for_a_person_gets_the_notice_in_the_language_of_the_ask(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """ "Ich möchte mit einem Menschen sprechen" and "¿Puedo hablar con mi coach?" are too short for the language
    detector (they read as English), so the notice came in English; it now follows the language of the ask."""
    for text, language in (("Ich möchte mit einem Menschen sprechen", "de"), ("¿Puedo hablar con mi coach?", "es")):
        setup = await new_setup("Ana", handoff_sla_minutes=5)
        body = await chat(http, setup, text)
        assert body["handoff"] == {"status": "open", "reason": "human_request"}, body
        assert body["reply"] == handoff_notice("Ana", language, requested=True, sla_minutes=5, back=None), text
    assert llm_api["completions"].call_count == 0


async def test_the_human_command_in_a_spanish_conversation_gets_the_notice_in_spanish(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """ "/human" is a command of no language: the notice answering it was English even in a conversation the
    client had held in Spanish. It now speaks the conversation's language; with nothing said before, English."""
    setup = await new_setup("Ana", handoff_sla_minutes=5, confidence_threshold=0.0)
    answered = await chat(http, setup, SPANISH)
    assert answered["handoff"] is None and llm_api["completions"].call_count == 1, answered
    body = await chat(http, setup, "/human", answered["conversation_id"])
    assert body["handoff"] == {"status": "open", "reason": "human_request"}, body
    assert body["reply"] == handoff_notice("Ana", "es", requested=True, sla_minutes=5, back=None)

    alone = await chat(http, await new_setup("Ana", handoff_sla_minutes=5), "/human")
    assert alone["reply"] == handoff_notice("Ana", "en", requested=True, sla_minutes=5, back=None)
    assert llm_api["completions"].call_count == 1


async def test_a_first_human_command_gets_the_notice_in_the_clients_apps_language(
    base_url: str, http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """A first message "/human" tells no language and nothing was said before: the notice was English for a
    client whose browser (``Accept-Language``) or embedding page (``?lang=``, which the widget passes on to its
    socket) is Spanish or German. The message now keeps that language (``metadata.app_language``, the coach's view
    only), and the notice speaks it; what the client writes still comes first."""
    setup = await new_setup("Ana", handoff_sla_minutes=5)
    headers = setup.client_auth | {"Accept-Language": "es-MX,es;q=0.9,en;q=0.8"}
    response = await http.post("/api/v1/chat", headers=headers, json={"text": "/human"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"] == handoff_notice("Ana", "es", requested=True, sla_minutes=5, back=None)
    assert "app_language" not in body["metadata"]
    [asked] = [m for m in await transcript(http, setup, body["conversation_id"]) if m["sender_type"] == "client"]
    assert asked["metadata"]["app_language"] == "es"

    setup = await new_setup("Ana", handoff_sla_minutes=5)
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}&lang=de-AT"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": "/human"}))
        done = await next_event(ws, "done")
    assert done["reply"] == handoff_notice("Ana", "de", requested=True, sla_minutes=5, back=None), done

    english = await new_setup("Ana", handoff_sla_minutes=5, confidence_threshold=0.0)
    headers = english.client_auth | {"Accept-Language": "es"}
    written = {"text": "Hello, I want to plan my week better because I am very tired"}
    answered = (await http.post("/api/v1/chat", headers=headers, json=written)).json()
    asked = {"text": "/human", "conversation_id": answered["conversation_id"]}
    response = await http.post("/api/v1/chat", headers=headers, json=asked)
    assert response.json()["reply"] == handoff_notice("Ana", "en", requested=True, sla_minutes=5, back=None)
    assert llm_api["completions"].call_count == 1


async def test_the_holding_message_after_a_lone_short_ask_speaks_the_notices_language(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    services: Services,
) -> None:
    """ "¿humano?" alone is a Spanish ask (the notice is Spanish) but reads as English to the language detector, so
    the holding message, which read the client's last messages again, came in English; it now speaks the language
    of the handoff's notice (stored in the notice's metadata)."""
    setup = await new_setup("Ana", handoff_sla_minutes=5)
    body = await chat(http, setup, "¿humano?")
    assert body["handoff"] == {"status": "open", "reason": "human_request"}, body
    assert body["reply"] == handoff_notice("Ana", "es", requested=True, sla_minutes=5, back=None)
    await backdate(services, [body["conversation_id"]], minutes=6)
    assert await container.sla_notices.send_sla_notices() >= 1
    assert await holding(http, setup, body["conversation_id"]) == [
        holding_message("Ana", "es", joined=False, back=None)
    ]
    messages = await transcript(http, setup, body["conversation_id"])
    [notice] = [m for m in messages if m["metadata"].get("notice") == "handoff"]
    assert notice["metadata"]["language"] == "es"
    assert "language" not in body["metadata"]  # coach-only
    assert llm_api["completions"].call_count == 0


async def test_the_widgets_presence_line_speaks_the_handoffs_language(
    base_url: str, http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], llm_api: respx.MockRouter
) -> None:
    """Under a Spanish notice the widget said "Waiting for Ana (typically replies within 5 minutes)…" or "…who is
    away until Monday, 9:00 AM…". The chat page now renders the line, and gives static/chat.js its lines, in the
    language of the handoff's notice (data-language), and the presence endpoint says the return time in it."""
    within = await new_setup("Ana", handoff_sla_minutes=5)
    assert (await chat(http, within, "¿humano?"))["handoff"]["status"] == "open"
    page = html.unescape((await widget_page(base_url, within.widget_token)).text)
    assert 'data-language="es"' in page and "Esperando a Ana (suele responder en 5 minutos)…</p>" in page
    assert f'data-presence-joined="{presence_lines("es", 5)["joined"]}"' in page  # "{coach} está en la conversación"

    availability = away_now()
    away = await new_setup("Ana", availability=availability, handoff_sla_minutes=5)
    assert (await chat(http, away, "Ich möchte mit einem Menschen sprechen"))["handoff"]["status"] == "open"
    back = describe_return(availability, datetime.now(UTC), "de")
    page = html.unescape((await widget_page(base_url, away.widget_token)).text)
    assert f"Warten auf Ana, wieder da: {back}…</p>" in page and f'data-away="{back}"' in page
    found = await http.get("/api/v1/widget/presence?language=de", headers=away.client_auth)
    assert found.status_code == 200 and found.json()["away_until"] == back, found.text
    refused = await http.get("/api/v1/widget/presence?language=it", headers=away.client_auth)
    assert refused.status_code == 400 and "en, es, fr, de, pt" in refused.json()["detail"], refused.text
    assert llm_api["completions"].call_count == 0
