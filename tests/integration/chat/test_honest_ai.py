"""Honest AI end to end (app.chat.turn.honesty): the client who asks "am I talking to a real person?" is told
it is the coach's AI assistant without the model being asked, and a model that claims to be human is
overruled — over REST, on the WebSocket and in the stored transcript. The widget says who is answering.

The app, PostgreSQL, Redis and the local embedder are real; only the coach's OpenAI-compatible endpoint is
mocked with respx (OpenAI wire format), as a model that claims to be human.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest
import respx

from app.chat.turn.honesty import correction, disclosure
from tests.conftest import widget_page
from tests.integration.handoff.test_handoff_flow import Setup, chat, new_setup, next_event, transcript, widget_socket
from tests.openai_wire import mock_chat_endpoint

__all__ = ["new_setup"]  # fixture used by name below

CLAIM = "Yes, I'm a real person, not a bot."
COACH = "Honest Coach"


@pytest.fixture
def lying_model() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, answering every prompt with a claim to be human."""
    with mock_chat_endpoint(["Yes,", " I'm a real person,", " not a bot."], (90, 9)) as router:
        yield router


async def test_asked_if_human_the_client_hears_it_is_the_ai_without_the_model(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], lying_model: respx.MockRouter
) -> None:
    setup = await new_setup(COACH)
    body = await chat(http, setup, "Am I talking to a real person?")

    assert body["reply"] == disclosure(COACH) and "AI assistant" in body["reply"], body
    assert CLAIM not in body["reply"] and body["handoff"] is None
    assert body["metadata"] == {}  # the honesty key is coach-only
    assert lying_model["completions"].call_count == 0  # a rule, not the model
    [_, ai] = await transcript(http, setup, body["conversation_id"])
    assert ai["sender_type"] == "ai" and ai["text"] == disclosure(COACH)
    assert ai["metadata"]["honesty"] == "asked"


async def test_a_model_claiming_to_be_human_is_replaced(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], lying_model: respx.MockRouter
) -> None:
    setup = await new_setup(COACH)
    body = await chat(http, setup, "How can I plan my week better?")

    assert lying_model["completions"].call_count == 1
    assert body["reply"] == correction(COACH), body
    assert "real person" not in body["reply"] and "AI assistant" in body["reply"]
    assert body["metadata"] == {} and body["citations"] == []
    [_, ai] = await transcript(http, setup, body["conversation_id"])
    assert ai["text"] == correction(COACH)
    assert ai["metadata"]["honesty"] == "replaced" and ai["metadata"]["honesty_model_reply"] == CLAIM


async def test_on_the_socket_the_correction_follows_the_streamed_claim(
    base_url: str, http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], lying_model: respx.MockRouter
) -> None:
    """What was streamed cannot be unsent: the correction is streamed after it, and ``done`` carries the stored
    reply (the widget swaps the bubble's text for it)."""
    setup = await new_setup(COACH)
    async with widget_socket(base_url, setup) as ws:
        await ws.send('{"text": "How can I plan my week better?", "client_message_id": "m-1"}')
        done = await next_event(ws, "done", wait=60)
    assert done["reply"] == correction(COACH) and done["metadata"] == {}


async def test_asking_for_a_person_still_hands_off(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], lying_model: respx.MockRouter
) -> None:
    """A request for a person beats the question: the coach is asked to join."""
    setup = await new_setup(COACH)
    body = await chat(http, setup, "Are you a bot? I want to talk to a real person.")
    assert body["handoff"]["reason"] == "human_request" and "join" in body["reply"]
    assert lying_model["completions"].call_count == 0


async def test_the_widget_says_who_is_answering(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], lying_model: respx.MockRouter
) -> None:
    setup = await new_setup(COACH)
    page = await widget_page(http.base_url, setup.widget_token)
    assert page.status_code == 200
    shown = html.unescape(page.text)
    assert f"You're chatting with {COACH}'s AI assistant. {COACH} can join the conversation." in shown


async def test_asked_in_spanish_the_client_hears_it_is_the_ai_without_the_model(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], lying_model: respx.MockRouter
) -> None:
    """ "¿eres un bot?" is the same question as "are you a bot?" (app.handoff.honesty_rules): the product
    answers it, the model (which would claim to be human) is not asked."""
    setup = await new_setup(COACH)
    body = await chat(http, setup, "¿eres un bot?")

    assert body["reply"] == disclosure(COACH, "es") and body["handoff"] is None, body
    # in the client's language, opening with what it is, not "No": "¿eres un bot?" asks the other way round
    assert body["reply"].startswith(f"Soy el asistente de IA de {COACH},")
    assert lying_model["completions"].call_count == 0
    [_, ai] = await transcript(http, setup, body["conversation_id"])
    assert ai["metadata"]["honesty"] == "asked" and ai["text"] == disclosure(COACH, "es")


async def test_a_model_claiming_in_portuguese_to_be_human_is_corrected_in_portuguese(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]]
) -> None:
    setup = await new_setup(COACH)
    with mock_chat_endpoint(["Sim,", " sou uma pessoa real,", " não um robô."], (90, 9)) as router:
        body = await chat(http, setup, "Como posso planejar melhor a minha semana?")
        assert router["completions"].call_count == 1
    assert body["reply"] == correction(COACH, "pt") and "não uma pessoa" in body["reply"], body
    [_, ai] = await transcript(http, setup, body["conversation_id"])
    assert ai["metadata"]["honesty"] == "replaced"
