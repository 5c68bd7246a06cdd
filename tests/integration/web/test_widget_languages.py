"""The widget's own texts in the client's language: its chat page (title, header links, disclosure, placeholder,
send button, session bar), the texts ``static/chat.js`` shows (connection states, feedback, errors) and those it
passes on to the launcher (``static/widget.js``) were English for every client. The page now speaks the
embedding page's language (``?lang=``, which the launcher passes on) or the browser's (``Accept-Language``)
before the conversation says one, then the conversation's (its handoff notice's, else the client's messages'),
English for any other. The real app, PostgreSQL and Redis; no browser (the page as served)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable

import httpx
import respx

from app.handoff.catalogue import greeting, presence_lines, say, widget_texts
from tests.integration.handoff.test_handoff_flow import Setup, chat, llm_api, new_setup

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below
NewSetup = Callable[..., Awaitable[Setup]]
TEXTS = re.compile(r"data-texts='([^']*)'")


async def open_chat(
    base_url: str, token: str, accept_language: str | None = None, query: str = ""
) -> tuple[httpx.Response, httpx.Response]:
    """Open the chat link ``/w/<token><query>`` as a new browser speaking ``accept_language``: ``(the token
    link's redirect, the chat page)``."""
    headers = {"Accept-Language": accept_language} if accept_language else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as browser:
        redirect = await browser.get(f"/w/{token}{query}")
        assert redirect.status_code == 303, redirect.text
        return redirect, await browser.get(redirect.headers["location"])


def page_texts(page: httpx.Response) -> dict[str, str]:
    """The texts the page gives static/chat.js (#log's data-texts)."""
    found = TEXTS.search(page.text)
    assert found is not None, "no data-texts"
    return dict(json.loads(html.unescape(found.group(1))))


def assert_speaks(page: httpx.Response, language: str, coach: str = "Ana") -> None:
    """The page's own texts, as served and as given to static/chat.js, are ``language``'s."""
    assert page.status_code == 200, page.text
    texts, shown = widget_texts(language), html.unescape(page.text)
    assert f'<html lang="{language}">' in shown
    assert page_texts(page) == texts
    assert f'placeholder="{texts["placeholder"]}"' in shown and f">{texts['send']}</button>" in shown
    assert f">{texts['end_session']}</button>" in shown and f">{texts['memory']}</a>" in shown
    assert say("widget_disclosure", language, coach=coach) in shown
    assert f"<title>{texts['title'].replace('{coach}', coach)}</title>" in shown


async def test_before_any_message_the_widget_speaks_the_pages_or_the_browsers_language(
    base_url: str, new_setup: NewSetup
) -> None:
    setup = await new_setup("Ana")
    _, page = await open_chat(base_url, setup.widget_token, "es-ES,es;q=0.9,en;q=0.8")
    assert_speaks(page, "es")
    texts = page_texts(page)
    shown = (texts["reconnecting"], texts["helpful"], texts["launcher"])
    assert shown == ("Reconectando…", "Útil", "Habla con tu coach")
    assert 'placeholder="Escribe tu mensaje…"' in page.text and ">Enviar</button>" in page.text
    assert greeting(None, "Ana", "es") in html.unescape(page.text)  # the default greeting too

    # the launcher passes on the embedding page's language: it wins over the browser's, through the redirect
    redirect, page = await open_chat(base_url, setup.widget_token, "es", "?lang=de-CH")
    assert redirect.headers["location"] == "/w/chat?lang=de"
    assert_speaks(page, "de")

    # a language the catalogue lacks, or none at all: English, and no ?lang= carried on
    redirect, page = await open_chat(base_url, setup.widget_token, "it", "?lang=it%22%3E")
    assert redirect.headers["location"] == "/w/chat"
    assert_speaks(page, "en")
    _, page = await open_chat(base_url, setup.widget_token)
    assert_speaks(page, "en")
    assert page_texts(page)["send"] == "Send" and "You&#39;re chatting with Ana&#39;s AI assistant." in page.text


async def test_the_conversations_language_wins_over_the_browsers_once_it_tells_one(
    base_url: str, http: httpx.AsyncClient, new_setup: NewSetup, llm_api: respx.MockRouter
) -> None:
    """A Portuguese client with a Spanish browser reads the widget in Portuguese once they have written, and an
    English one with a French browser in English (it was French); a conversation too short to tell a language
    ("hola") leaves the page's language."""
    setup = await new_setup("Ana", handoff_sla_minutes=5)
    assert (await chat(http, setup, "Quero falar com uma pessoa, por favor"))["handoff"]["status"] == "open"
    _, page = await open_chat(base_url, setup.widget_token, "es")
    assert_speaks(page, "pt")
    assert presence_lines("pt", 5)["waiting"].replace("{coach}", "Ana") in html.unescape(page.text)

    english = await new_setup("Ana", handoff_sla_minutes=5)
    assert (await chat(http, english, widget_texts("en")["human_request"]))["handoff"]["status"] == "open"
    _, page = await open_chat(base_url, english.widget_token, "fr")
    assert_speaks(page, "en")
    assert llm_api["completions"].call_count == 0

    short = await new_setup("Ana")
    await chat(http, short, "hola")
    _, page = await open_chat(base_url, short.widget_token, "fr")
    assert_speaks(page, "fr")
