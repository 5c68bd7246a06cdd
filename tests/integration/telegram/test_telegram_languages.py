"""The bot's own lines in the client's language: Telegram sends the sender's ``language_code`` with every update;
the lines answering it (a refused stranger, a photo, the "Talk to a human" button under a reply and its press,
the thanks for a 👍) follow it, and the language of the message's text when the code is missing or one the
catalogue lacks. The real app, PostgreSQL and Redis, the fake Bot API server (tests/telegram_fake.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.channels.telegram import render
from app.chat.turn.intake import MAX_MESSAGE_CHARS
from app.core.config import Settings
from app.core.runtime import Services
from app.handoff.catalogue import greeting
from app.handoff.catalogue import say as catalogue_text
from app.llm.registry import ProviderRegistry
from tests.integration.telegram.conftest import Bot, served
from tests.integration.telegram.test_telegram import bound_chat, drain, post_update
from tests.telegram_fake import FakeBotApi, recorded

pytestmark = pytest.mark.usefixtures("llm")
MakeBot = Callable[..., Awaitable[Bot]]
_ids = iter(range(11_000_000, 12_000_000))


def written(name: str, chat_id: int, language_code: str | None, **changes: Any) -> dict[str, Any]:
    """A recorded update of ``chat_id`` whose sender's app speaks ``language_code`` (``None``: Telegram sent
    none)."""
    update = recorded(name, update_id=next(_ids), chat_id=chat_id, **changes)
    sender = (update.get("message") or update.get("callback_query"))["from"]
    sender.pop("language_code")
    if language_code is not None:
        sender["language_code"] = language_code
    return update


async def test_a_refused_stranger_reads_their_language_from_the_code_or_the_text(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """ "Hello! To talk with your coach here, please ask them for an invite link." went to every stranger."""
    bot = await make_bot()
    response = await tg.put(
        "/api/v1/channels/telegram", headers=bot.coach.headers, json={"bot_token": bot.token, "open_enrollment": False}
    )
    assert response.status_code == 200, response.text
    bot.secret = fake.of("setWebhook", bot.token)[-1].params["secret_token"]
    cases = [
        ("pt-br", "Hi", "pt"),  # the app's language wins over a short English text
        (None, "Hallo, ich möchte mit meinem Coach sprechen, aber ich habe keinen Link", "de"),  # no code: the text
        ("it", "Ciao", "en"),  # a language the catalogue lacks, a text too short to tell: English
    ]
    for code, text, language in cases:
        stranger = next(_ids)
        await post_update(tg, bot, written("text_message", stranger, code, text=text))
        await drain(tg)
        assert fake.sent_to(stranger)[-1].params["text"] == catalogue_text("tg_ask_for_invite", language), code


async def test_a_spanish_client_gets_the_bots_lines_and_buttons_in_spanish(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    bot = await make_bot(material=True, jobs=tg_jobs, confidence_threshold=0.0)
    chat_id, _client_id = await bound_chat(tg, bot, fake)

    await post_update(tg, bot, written("photo_message", chat_id, "es"))
    await drain(tg)
    assert fake.sent_to(chat_id)[-1].params["text"] == catalogue_text("tg_non_text", "es")

    await post_update(tg, bot, written("text_message", chat_id, "es", text="What is the two-minute reset?"))
    await drain(tg)
    keyboard = fake.sent_to(chat_id)[-1].params["reply_markup"]["inline_keyboard"]
    assert keyboard[1] == [{"text": "Hablar con una persona", "callback_data": "h"}]

    await post_update(tg, bot, written("callback_query", chat_id, "es", data=keyboard[0][0]["callback_data"]))
    await drain(tg)
    assert fake.of("answerCallbackQuery")[-1].params["text"] == "¡Gracias por tu opinión!"
    await post_update(tg, bot, written("callback_query", chat_id, "es", data="h"))
    await drain(tg)
    assert fake.of("answerCallbackQuery")[-1].params["text"] == catalogue_text("tg_asking_coach", "es")


async def test_forget_and_reviewing_speak_the_senders_language(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """``/forget`` and the draft-mode "Tele Coach is reviewing the reply…" were English."""
    bot = await make_bot(handoff_mode="draft")
    chat_id, _client_id = await bound_chat(tg, bot, fake)
    await post_update(tg, bot, written("text_message", chat_id, "de", text="/forget"))
    await drain(tg)
    assert fake.sent_to(chat_id)[-1].params["text"] == catalogue_text("tg_nothing_remembered", "de")
    await post_update(tg, bot, written("text_message", chat_id, "fr", text="Comment mieux dormir ?"))
    await drain(tg)
    reviewing = catalogue_text("tg_reviewing", "fr", coach="Tele Coach")
    assert fake.sent_to(chat_id)[-1].params["text"] == render.escape(reviewing), reviewing


async def test_the_coachs_lines_delivered_later_speak_the_handoffs_language(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """ "Tele Coach joined the conversation." and the "Talk to a human" button under the coach's message come
    through the worker, with no update to read a language from: they follow the handoff's notice (Portuguese)."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, _client_id = await bound_chat(tg, bot, fake)
    await post_update(tg, bot, written("text_message", chat_id, None, text="Quero falar com uma pessoa"))
    await drain(tg)
    conversation_id = (await tg.get("/api/v1/conversations", headers=bot.coach.headers)).json()[0]["id"]
    h = bot.coach.headers
    assert (await tg.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=h)).status_code == 200
    sent = await tg.post(f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "Oi!"})
    assert sent.status_code == 201, sent.text
    await tg_jobs()
    texts = [c.params["text"] for c in fake.sent_to(chat_id)]
    assert "Tele Coach entrou na conversa." in texts, texts
    [coach_message] = [c for c in fake.sent_to(chat_id) if c.params["text"] == "Oi!"]
    assert coach_message.params["reply_markup"]["inline_keyboard"][1][0]["text"] == "Falar com uma pessoa"


async def test_the_default_greeting_speaks_the_senders_language_and_the_coachs_own_stays(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """A coach with no greeting of their own: /start said "Hi, I'm Tele Coach's AI assistant…" to everyone."""
    bot = await make_bot()
    stranger = next(_ids)
    await post_update(tg, bot, written("text_message", stranger, "fr", text="/start"))
    await drain(tg)
    assert fake.sent_to(stranger)[0].params["text"] == greeting(None, "Tele Coach", "fr")
    assert fake.sent_to(stranger)[0].params["text"].startswith("Salut, je suis l'assistant IA de Tele Coach")

    own = await make_bot(widget_greeting="Welcome! Ask me anything.")
    other = next(_ids)
    await post_update(tg, own, written("text_message", other, "fr", text="/start"))
    await drain(tg)
    assert fake.sent_to(other)[0].params["text"] == "Welcome! Ask me anything."  # the coach's words, as written


async def test_a_message_over_the_limit_is_refused_in_the_senders_language(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """A Telegram message holds up to 4,096 characters, the chat up to 4,000: "text is longer than 4000
    characters" was the refusal's English message, whatever the client's language."""
    bot = await make_bot()
    chat_id, _client_id = await bound_chat(tg, bot, fake)
    await post_update(tg, bot, written("text_message", chat_id, "de", text="x" * (MAX_MESSAGE_CHARS + 1)))
    await drain(tg)
    assert fake.sent_to(chat_id)[-1].params["text"] == "Die Nachricht ist länger als 4000 Zeichen."
    await post_update(tg, bot, written("text_message", chat_id, "en", text="x" * (MAX_MESSAGE_CHARS + 1)))
    await drain(tg)
    assert fake.sent_to(chat_id)[-1].params["text"] == "The message is longer than 4000 characters."


async def test_a_client_over_the_rate_limit_is_told_to_wait_in_their_language(
    tg_settings: Settings, services: Services, registry: ProviderRegistry, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """The chat's rate limit (``CHAT_RATE_LIMIT``): "too many messages: try again in 60 s", the refusal's English
    message, went to every client."""
    bot = await make_bot(confidence_threshold=0.0)
    limited = tg_settings.model_copy(update={"chat_rate_limit": "2/minute"})
    async with served(limited, services, registry) as client:
        chat_id, _client_id = await bound_chat(client, bot, fake)
        for text in ("¿Cómo empiezo el día?", "¿Y cómo lo termino?", "Una cosa más"):
            await post_update(client, bot, written("text_message", chat_id, "es", text=text))
            await drain(client)
    refused = fake.sent_to(chat_id)[-1].params["text"]
    assert re.fullmatch(r"Demasiadas solicitudes: inténtalo de nuevo en \d+ s\.", refused), refused


async def test_a_turn_that_fails_tells_the_client_in_their_language(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, answer_fails_once: list[tuple[Any, ...]]
) -> None:
    """The live answer fails and the worker is to answer: "Could not answer this message yet; it is saved and will
    be answered shortly." went to every client."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, _client_id = await bound_chat(tg, bot, fake)
    await post_update(tg, bot, written("text_message", chat_id, "fr", text="Bonjour"))
    await drain(tg)
    assert fake.sent_to(chat_id)[-1].params["text"] == catalogue_text("refused_answer_later", "fr")
    assert len(answer_fails_once) == 1


async def test_a_thumbs_up_on_a_reply_gone_is_refused_in_the_senders_language(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """A 👍 under a reply that is no longer the client's (the chat still shows it from before the client was erased
    and the chat enrolled again) answered "message not found"."""
    bot = await make_bot()
    chat_id, _client_id = await bound_chat(tg, bot, fake)
    gone = render.feedback_keyboard(uuid.uuid4(), "pt")["inline_keyboard"][0][0]["callback_data"]
    await post_update(tg, bot, written("callback_query", chat_id, "pt", data=gone))
    await drain(tg)
    assert fake.of("answerCallbackQuery")[-1].params["text"] == "Esta mensagem não existe mais."


async def test_the_talk_to_a_human_button_gets_the_handoff_notice_in_the_senders_language(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """The button (in Spanish) stored "/human", a command of no language: the notice answering it was English
    ("Of course — I've asked Tele Coach to join this conversation…"). It now sends what the widget's button sends,
    in the sender's language."""
    bot = await make_bot()
    chat_id, client_id = await bound_chat(tg, bot, fake)
    await post_update(tg, bot, written("callback_query", chat_id, "es", data="h"))
    await drain(tg)
    notice = fake.sent_to(chat_id)[-1].params["text"]
    assert notice.startswith("Claro: le he pedido a Tele Coach que se una a esta conversación."), notice
    [handoff] = (await tg.get("/api/v1/handoffs", headers=bot.coach.headers)).json()
    assert (handoff["reason"], handoff["client_id"]) == ("human_request", client_id)


async def test_a_typed_human_command_first_gets_the_notice_in_the_senders_apps_language(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """A typed ``/human`` as the chat's first message tells no language, and the conversation had said nothing:
    the notice was English for a client whose Telegram app is Spanish. The message now keeps the app's language
    (``metadata.app_language``), which the notice speaks."""
    bot = await make_bot()
    chat_id, _client_id = await bound_chat(tg, bot, fake)
    await post_update(tg, bot, written("text_message", chat_id, "es", text="/human"))
    await drain(tg)
    notice = fake.sent_to(chat_id)[-1].params["text"]
    assert notice.startswith("Claro: le he pedido a Tele Coach que se una a esta conversación."), notice
    h = bot.coach.headers
    conversation_id = (await tg.get("/api/v1/conversations", headers=h)).json()[0]["id"]
    messages = (await tg.get(f"/api/v1/conversations/{conversation_id}", headers=h)).json()["messages"]
    assert [m["metadata"].get("app_language") for m in messages if m["sender_type"] == "client"] == ["es"]


async def test_the_coach_joining_unasked_after_a_greeting_speaks_the_senders_apps_language(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot, tg_jobs: Callable[[], Awaitable[None]]
) -> None:
    """ "Olá" is too short for the language detector and no handoff notice was sent: the coach's joined line,
    delivered by the worker with no update to read a language from, was English for a client whose Telegram app
    is Portuguese. It now speaks the app's language the client's message kept."""
    bot = await make_bot(confidence_threshold=0.0)
    chat_id, _client_id = await bound_chat(tg, bot, fake)
    await post_update(tg, bot, written("text_message", chat_id, "pt-BR", text="Olá"))
    await drain(tg)
    h = bot.coach.headers
    conversation_id = (await tg.get("/api/v1/conversations", headers=h)).json()[0]["id"]
    assert (await tg.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=h)).status_code == 200
    await tg_jobs()
    texts = [c.params["text"] for c in fake.sent_to(chat_id)]
    assert "Tele Coach entrou na conversa." in texts, texts
