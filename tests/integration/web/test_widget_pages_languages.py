"""The widget's tone and memory pages, and the refusals its scripts show, in the client's language: the pages
were English for every client, and a refused message (an error event of ``/ws/chat``) or a refused tone choice
(the widget tone API's ``detail``) read as the server's English. The pages now speak the chat page's language
(:func:`app.channels.web.widget.client_language`, the chat page's links pass its ``?lang=`` on) and give their
scripts their texts (``data-texts``) with every refusal's text (``refused_<code>``); a socket's error event and an
API error carry the refusal's ``code`` and ``fields`` beside the English. The real app, PostgreSQL and Redis; no
browser (the pages as served)."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import respx
import websockets

from app.container import Container
from app.db.engine import tenant_session
from app.handoff.catalogue import say
from app.llm.base import EMBEDDING_DIMENSIONS
from app.memory.models import Insight, InsightKind
from tests.integration.chat.test_no_lost_message import next_of
from tests.integration.handoff.test_handoff_flow import Setup, chat, llm_api, new_setup

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below
NewSetup = Callable[..., Awaitable[Setup]]
TEXTS = re.compile(r"data-texts='([^']*)'")


def served_texts(page: httpx.Response) -> dict[str, str]:
    """The texts the page gives its script (its data-texts)."""
    assert page.status_code == 200, page.text
    found = TEXTS.search(page.text)
    assert found is not None, "no data-texts"
    return dict(json.loads(html.unescape(found.group(1))))


async def test_the_tone_and_memory_pages_speak_the_chat_pages_language(base_url: str, new_setup: NewSetup) -> None:
    setup = await new_setup("Ana")
    async with httpx.AsyncClient(base_url=base_url, headers={"Accept-Language": "es-ES,es;q=0.9"}) as browser:
        chat_page = await browser.get((await browser.get(f"/w/{setup.widget_token}")).headers["location"])
        assert 'href="/w/tone?lang=es"' in chat_page.text and 'href="/w/memory?lang=es"' in chat_page.text
        tone, memory = await browser.get("/w/tone?lang=es"), await browser.get("/w/memory?lang=es")
        # without ?lang= (a bookmark), the browser's language as on the chat page
        bare = await browser.get("/w/tone")

    for page in (tone, bare):
        texts, shown = served_texts(page), html.unescape(page.text)
        assert '<html lang="es">' in shown and "<title>Cómo te habla el asistente de Ana</title>" in shown
        assert f"<h1>{say('tg_tone_title', 'es')}</h1>" in shown and say("tg_tone_gentle", "es") in shown
        assert "<legend>Intensidad (tu coach permite de 1 a 4)</legend>" in shown
        assert "3 — equilibrado" in shown and ">Guardar intensidad</button>" in shown
        assert "Tu coach no ha configurado otros estilos." in shown and "Default" not in shown
        assert texts["agree_again"] == say("tg_tone_agree_again", "es")
        assert texts["saving"] == "Guardando…" and texts["intensity_6"] == "sin rodeos"

    texts, shown = served_texts(memory), html.unescape(memory.text)
    assert '<html lang="es">' in shown and "<title>Lo que recuerda el asistente de Ana</title>" in shown
    assert "<h1>Lo que recuerda el asistente de mi coach</h1>" in shown and ">Descargar mis datos</a>" in shown
    assert '<li class="muted">Nada todavía.</li>' in shown and "Todavía no hay resúmenes de sesiones." in shown
    assert ">← Volver al chat</a>" in shown and 'href="/w/chat?lang=es"' in shown
    assert texts["confirm"] == "¿Borrar esto? El asistente no volverá a recordarlo." and texts["deleted"] == "Borrado."


async def test_the_memory_pages_badges_name_the_kind_and_status_in_the_page_language(
    base_url: str, new_setup: NewSetup, container: Container
) -> None:
    """An insight's kind ("goal"…) and a status other than active ("achieved") were English on a Spanish page."""
    setup = await new_setup("Ana")
    coach_id, client_id, now = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id), datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        for kind, status in [("goal", "active"), ("blocker", "active"), ("milestone", "achieved")]:
            session.add(
                Insight(
                    coach_id=coach_id,
                    client_id=client_id,
                    kind=kind,
                    status=status,
                    text=f"about my {kind}",
                    importance=5,
                    first_seen_at=now,
                    last_seen_at=now,
                    embedding=[0.01] * EMBEDDING_DIMENSIONS,
                    embedding_model="test",
                )
            )
    badges = re.compile(r'<span class="badge">([^<]*)</span>')
    async with httpx.AsyncClient(base_url=base_url, headers={"Accept-Language": "es"}) as browser:
        await browser.get(f"/w/{setup.widget_token}")
        spanish = html.unescape((await browser.get("/w/memory")).text)
        english = html.unescape((await browser.get("/w/memory?lang=en")).text)
    assert sorted(badges.findall(spanish)) == ["hito", "logrado", "objetivo", "obstáculo"]
    assert sorted(badges.findall(english)) == ["achieved", "blocker", "goal", "milestone"]
    for kind in InsightKind.ALL:  # every kind has its badge in every language
        assert all(say(f"memory_page_kind_{kind}", lang) for lang in ("en", "es", "fr", "de", "pt"))


async def test_the_link_not_valid_page_speaks_the_browsers_or_the_links_language(base_url: str) -> None:
    """An unknown or revoked chat link (404) and a widget page without a session (401) were English for everyone:
    they speak the link's ``?lang=``, else the browser's language (the client is unknown)."""
    async with httpx.AsyncClient(base_url=base_url, headers={"Accept-Language": "de-DE,de;q=0.9"}) as browser:
        unknown = await browser.get(f"/w/{'x' * 40}")
        no_session = await browser.get("/w/chat")
        asked = await browser.get(f"/w/{'x' * 40}?lang=pt")
    async with httpx.AsyncClient(base_url=base_url) as browser:
        default = await browser.get("/w/memory")
    for page, status, language in [
        (unknown, 404, "de"),
        (no_session, 401, "de"),
        (asked, 404, "pt"),
        (default, 401, "en"),
    ]:
        shown = html.unescape(page.text)
        assert page.status_code == status and f'<html lang="{language}">' in shown
        assert f"<title>{say('invalid_page_title', language)}</title>" in shown
        assert say("invalid_page_text", language) in shown
    assert "Dieser Chat-Link ist ungültig" in html.unescape(unknown.text)


async def test_a_portuguese_conversation_gives_the_memory_page_in_portuguese(
    base_url: str, http: httpx.AsyncClient, new_setup: NewSetup, llm_api: respx.MockRouter
) -> None:
    """As the chat page: the conversation's language wins over the browser's (Spanish)."""
    setup = await new_setup("Ana", handoff_sla_minutes=5)
    assert (await chat(http, setup, "Quero falar com uma pessoa, por favor"))["handoff"]["status"] == "open"
    async with httpx.AsyncClient(base_url=base_url, headers={"Accept-Language": "es"}) as browser:
        await browser.get(f"/w/{setup.widget_token}")
        memory, tone = await browser.get("/w/memory"), await browser.get("/w/tone")
    assert '<html lang="pt">' in memory.text and served_texts(memory)["delete"] == "Apagar"
    assert '<html lang="pt">' in tone.text and served_texts(tone)["save"] == "Salvar intensidade"


async def test_refusals_carry_a_code_the_pages_texts_say_in_the_clients_language(
    base_url: str, http: httpx.AsyncClient, new_setup: NewSetup
) -> None:
    """A message over the limit on the socket, an intensity outside the coach's range on the tone API: the English
    stays for other clients, the code and its fields give the Spanish page its text."""
    setup = await new_setup("Ana")
    async with httpx.AsyncClient(base_url=base_url, headers={"Accept-Language": "es"}) as browser:
        chat_page = await browser.get((await browser.get(f"/w/{setup.widget_token}")).headers["location"])
        tone_page = await browser.get("/w/tone")
    chat_texts, tone_texts = served_texts(chat_page), served_texts(tone_page)

    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": "x" * 4001, "client_message_id": "w-1"}))
        error = await next_of(ws, "error")
    assert error["message"] == "text is longer than 4000 characters" and error["client_message_id"] == "w-1"
    assert (error["code"], error["fields"]) == ("too_long", {"max": 4000})
    shown = chat_texts[f"refused_{error['code']}"].format(**error["fields"])
    assert shown == "El mensaje tiene más de 4000 caracteres."

    await http.put("/api/v1/tone", headers=setup.coach.headers, json={"min": 2, "max": 4, "default": 3})
    refused = await http.put("/api/v1/widget/tone", headers=setup.client_auth, json={"intensity": 6})
    body = refused.json()
    assert refused.status_code == 400 and body["detail"] == "intensity must be from 2 to 4 (what your coach allows)"
    assert (body["code"], body["fields"]) == ("tone_intensity_range", {"low": 2, "high": 4})
    shown = tone_texts[f"refused_{body['code']}"].format(**body["fields"])
    assert shown == "La intensidad debe estar entre 2 y 4 (lo que permite tu coach)"


async def test_a_message_with_a_nul_character_is_refused_with_a_code_the_pages_texts_say(
    base_url: str, new_setup: NewSetup
) -> None:
    """A message holding a NUL character (pasted into the box): "text must not contain the NUL character (U+0000)"
    came with no code, so the Spanish page showed the English."""
    setup = await new_setup("Ana")
    async with httpx.AsyncClient(base_url=base_url, headers={"Accept-Language": "es"}) as browser:
        chat_page = await browser.get((await browser.get(f"/w/{setup.widget_token}")).headers["location"])
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={setup.widget_token}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": "hola\u0000", "client_message_id": "w-nul"}))
        refused = await next_of(ws, "error")
    assert refused["message"] == "text must not contain the NUL character (U+0000)"
    assert (refused["code"], refused["client_message_id"]) == ("nul", "w-nul")
    shown = served_texts(chat_page)[f"refused_{refused['code']}"]
    spanish = "El mensaje contiene un carácter NUL (U+0000), que no se puede enviar: quítalo e inténtalo de nuevo."
    assert shown == spanish
