"""The Telegram ``/tone`` command end to end: the real app, PostgreSQL and Redis, the fake Bot API server on
loopback speaking the recorded wire format (tests/telegram_fake.py, tests/fixtures/telegram/), and the tone
rules of :class:`app.accounts.tone.ToneService` checked against what the widget's tone API and the coach's
consent log show."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from app.accounts.tone import consent_text, parse_settings, text_version
from app.channels.telegram.render import escape
from app.handoff.catalogue import say as catalogue_text
from tests.integration.chat import test_tone as chat_tone
from tests.integration.telegram.conftest import Bot
from tests.integration.telegram.test_telegram import WELCOME, drain, post_update
from tests.telegram_fake import Call, FakeBotApi, recorded

pytestmark = pytest.mark.usefixtures("llm")
MakeBot = Callable[..., Awaitable[Bot]]
_ids = iter(range(9_000_000, 10_000_000))
ROAST = chat_tone.ROAST | {"description": "Your excuses get called out <with a wink>."}  # (escaped in HTML)
PEP = chat_tone.PEP
SETTINGS = chat_tone.SETTINGS | {"modes": [ROAST, PEP]}
MESSAGE_ID = 4242
"""The message id of the ``/tone`` message the presses come from (edited in place)."""


class Chat:
    """A client of a bot's coach bound to a Telegram chat: ``chat_id``, the client's ``client`` JSON
    (``id``, ``widget_token``)."""

    def __init__(self, tg: httpx.AsyncClient, bot: Bot, fake: FakeBotApi, chat_id: int, client: dict[str, Any]):
        self.tg, self.bot, self.fake, self.chat_id, self.client = tg, bot, fake, chat_id, client

    async def say(self, text: str, language_code: str = "en") -> Call:
        update = recorded("text_message", update_id=next(_ids), chat_id=self.chat_id, text=text)
        update["message"]["from"]["language_code"] = language_code
        await post_update(self.tg, self.bot, update)
        await drain(self.tg)
        return self.fake.sent_to(self.chat_id)[-1]

    async def press(self, data: str, language_code: str = "en") -> tuple[Call, Call]:
        """Press the button of ``data`` under message :data:`MESSAGE_ID` in a Telegram app speaking
        ``language_code``: ``(answerCallbackQuery call, the message's edit)``."""
        update = recorded("callback_query", update_id=next(_ids), chat_id=self.chat_id, data=data)
        update["callback_query"]["from"]["language_code"] = language_code
        update["callback_query"]["id"] = f"cb{update['update_id']}"
        update["callback_query"]["message"]["message_id"] = MESSAGE_ID
        await post_update(self.tg, self.bot, update)
        await drain(self.tg)
        [answer] = [
            c
            for c in self.fake.of("answerCallbackQuery", self.bot.token)
            if c.params["callback_query_id"] == f"cb{update['update_id']}"
        ]
        edit = self.fake.sent_to(self.chat_id)[-1]
        assert edit.method == "editMessageText" and int(edit.params["message_id"]) == MESSAGE_ID
        assert edit.params["parse_mode"] == "HTML"
        return answer, edit

    async def widget_tone(self) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {self.client['widget_token']}"}
        response = await self.tg.get("/api/v1/widget/tone", headers=auth)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def consent_log(self) -> list[dict[str, Any]]:
        response = await self.tg.get(f"/api/v1/tone/consents/{self.client['id']}", headers=self.bot.coach.headers)
        assert response.status_code == 200, response.text
        return list(response.json())


async def set_tone(tg: httpx.AsyncClient, bot: Bot, settings: dict[str, Any]) -> None:
    response = await tg.put("/api/v1/tone", headers=bot.coach.headers, json=settings)
    assert response.status_code == 200, response.text


async def toned_chat(tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot) -> Chat:
    """A new bot whose coach has :data:`SETTINGS`, and a client bound to a new chat through an invite."""
    bot = await make_bot()
    await set_tone(tg, bot, SETTINGS)
    client = (await tg.post("/api/v1/clients", headers=bot.coach.headers, json={"name": "Robin"})).json()
    invite = (await tg.post(f"/api/v1/clients/{client['id']}/telegram-invite", headers=bot.coach.headers)).json()
    chat = Chat(tg, bot, fake, next(_ids), client)
    assert (await chat.say(f"/start {invite['code']}")).params["text"] == WELCOME
    return chat


def buttons(call: Call) -> list[dict[str, str]]:
    return [b for row in call.params["reply_markup"]["inline_keyboard"] for b in row]


def datas(call: Call) -> list[str]:
    return [b["callback_data"] for b in buttons(call)]


AGREE, AGREE_AGAIN, WITHDRAW = (catalogue_text(f"tg_tone_{key}", "en") for key in ("agree", "agree_again", "withdraw"))


async def test_tone_shows_the_tone_and_an_intensity_button_saves_it_within_the_coachs_range(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    chat = await toned_chat(tg, fake, make_bot)
    shown = await chat.say("/tone")
    assert shown.method == "sendMessage" and shown.params["parse_mode"] == "HTML"
    text = shown.params["text"]
    assert "Intensity: <b>3 — balanced</b> (your coach's default; your coach allows 1 to 4)" in text, text
    assert "Style: <b>Default</b>" in text and "always gentle" in text
    assert datas(shown) == ["t:i:1", "t:i:2", "t:i:3", "t:i:4", "t:m:roast", "t:m:pep"]
    assert [b["text"] for b in buttons(shown)][:4] == ["1 ultra gentle", "2 gentle", "✓ 3 balanced", "4 direct"]

    answer, edit = await chat.press("t:i:2")
    assert answer.params["text"] == "Intensity 2 — gentle." and answer.params.get("show_alert") in (
        None,
        False,
        "false",
    )
    assert "Intensity: <b>2 — gentle</b> (your choice;" in edit.params["text"]
    assert "✓ 2 gentle" in [b["text"] for b in buttons(edit)]
    assert (await chat.widget_tone())["intensity"] == 2  # the widget sees the same choice

    # the coach narrows the range: the old message's "1" is out of range now, refused, nothing stored
    await set_tone(tg, chat.bot, SETTINGS | {"min": 2, "max": 3, "default": 3})
    answer, edit = await chat.press("t:i:1")
    assert answer.params["text"] == "Intensity must be from 2 to 3 (what your coach allows)"
    assert str(answer.params["show_alert"]).lower() == "true"
    assert "your coach allows 2 to 3" in edit.params["text"] and datas(edit)[:2] == ["t:i:2", "t:i:3"]
    assert (await chat.widget_tone())["intensity"] == 2
    assert await chat.consent_log() == []


async def test_consenting_to_the_most_intense_mode_asks_twice_logs_it_as_the_widget_does_and_withdraws(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    chat = await toned_chat(tg, fake, make_bot)
    await chat.say("/tone")
    roast = parse_settings(SETTINGS).mode("roast")
    version = text_version(roast)
    assert [m["version"] for m in (await chat.widget_tone())["modes"] if m["key"] == "roast"] == [version]

    answer, edit = await chat.press("t:m:roast")
    assert "text" not in answer.params
    assert escape(consent_text(roast)) in edit.params["text"] and "&lt;with a wink&gt;" in edit.params["text"]
    assert "confirm twice" in edit.params["text"]
    assert [(b["text"], b["callback_data"]) for b in buttons(edit)] == [
        (AGREE, f"t:c:roast:{version}:1"),
        ("Cancel", "t:s"),
    ]
    assert await chat.consent_log() == []  # reading the text consents to nothing

    answer, edit = await chat.press(f"t:c:roast:{version}:1")
    assert answer.params["text"] == "Please confirm a second time."
    assert buttons(edit)[0] == {"text": AGREE_AGAIN, "callback_data": f"t:c:roast:{version}:2"}
    assert [e["event"] for e in await chat.consent_log()] == ["confirm_1"]
    assert (await chat.widget_tone())["mode"] == "default"  # not yet

    answer, edit = await chat.press(f"t:c:roast:{version}:2")
    log = await chat.consent_log()
    assert [e["event"] for e in log] == ["confirm_1", "given"]
    given = log[-1]
    assert (given["mode"], given["text_version"], given["text"]) == ("roast", version, consent_text(roast))
    at, expires = datetime.fromisoformat(given["at"]), datetime.fromisoformat(given["expires_at"])
    assert expires - at == timedelta(days=30)
    assert answer.params["text"] == f"Style: Tough love, until {expires:%Y-%m-%d}."
    assert f"Style: <b>Tough love</b> (agreed on {at:%Y-%m-%d}, until {expires:%Y-%m-%d})" in edit.params["text"]
    assert "t:m:roast" not in datas(edit) and datas(edit)[-2:] == ["t:m:pep", "t:w"]
    assert buttons(edit)[-1]["text"] == WITHDRAW
    widget = await chat.widget_tone()
    assert widget["mode"] == "roast" and widget["modes"][0]["consented_until"] == given["expires_at"]

    answer, edit = await chat.press("t:w")
    assert answer.params["text"] == "Back to the default style."
    assert "Style: <b>Default</b>" in edit.params["text"] and "t:w" not in datas(edit)
    assert [e["event"] for e in await chat.consent_log()] == ["confirm_1", "given", "withdrawn"]
    assert (await chat.widget_tone())["mode"] == "default"


async def test_stale_presses_say_why_and_change_nothing(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    chat = await toned_chat(tg, fake, make_bot)
    await chat.say("/tone")
    _, screen = await chat.press("t:m:pep")
    [agree] = [b["callback_data"] for b in buttons(screen) if b["text"] == AGREE]
    old_version = agree.split(":")[3]

    # the coach rewords the style while its consent text is on screen: the old agreement is refused
    reworded = PEP | {"description": "Loud encouragement, every day."}
    await set_tone(tg, chat.bot, SETTINGS | {"modes": [ROAST, reworded]})
    answer, edit = await chat.press(agree)
    assert str(answer.params["show_alert"]).lower() == "true"
    assert answer.params["text"].startswith("The consent text of this style changed"), answer.params["text"]
    assert "Style: <b>Default</b>" in edit.params["text"] and "t:m:pep" in datas(edit)
    _, screen = await chat.press("t:m:pep")
    assert "Loud encouragement" in screen.params["text"] and old_version not in datas(screen)[0]

    # a second confirmation without a first (an old message) is refused
    version = text_version(parse_settings(SETTINGS).mode("roast"))
    answer, _ = await chat.press(f"t:c:roast:{version}:2")
    assert answer.params["text"].startswith("Confirm once first"), answer.params["text"]

    # the coach removes the style: its old buttons are refused, naming what is offered now
    await set_tone(tg, chat.bot, SETTINGS | {"modes": [ROAST]})
    for data in ("t:m:pep", f"t:c:pep:{text_version(parse_settings(SETTINGS).mode('pep'))}:1"):
        answer, edit = await chat.press(data)
        assert re.match(
            r"Your coach no longer offers this style: your coach's styles now are Tough love", answer.params["text"]
        )
        assert datas(edit)[-1] == "t:m:roast"
    assert await chat.consent_log() == []
    assert (await chat.widget_tone())["mode"] == "default"


async def test_a_press_delivered_again_is_processed_once(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """The same ``/tone`` press repeated (Telegram re-sending its update, or its callback query in another update)
    logs the consent once and is answered once; the update processed again after its process died (its change
    made, recorded in ``sent``) only shows the tone."""
    chat = await toned_chat(tg, fake, make_bot)
    await chat.say("/tone")
    version = text_version(parse_settings(SETTINGS).mode("roast"))
    update = recorded("callback_query", update_id=next(_ids), chat_id=chat.chat_id, data=f"t:c:roast:{version}:1")
    update["callback_query"]["id"] = "cb-repeated"
    update["callback_query"]["message"]["message_id"] = MESSAGE_ID
    for copy in (update, update, update | {"update_id": next(_ids)}):
        await post_update(tg, chat.bot, copy)
        await drain(tg)
    assert [e["event"] for e in await chat.consent_log()] == ["confirm_1"]
    answers = fake.of("answerCallbackQuery", chat.bot.token)
    answers = [c for c in answers if c.params["callback_query_id"] == "cb-repeated"]
    assert len(answers) == 1 and answers[0].params["text"] == "Please confirm a second time."

    edits = len(fake.of("editMessageText", chat.bot.token))
    channel = tg.app.state.telegram  # type: ignore[attr-defined]
    await channel.process(uuid.UUID(chat.bot.coach.coach_id), update, {"tone": True})
    assert [e["event"] for e in await chat.consent_log()] == ["confirm_1"]
    [edit] = fake.of("editMessageText", chat.bot.token)[edits:]
    assert "Style: <b>Default</b>" in edit.params["text"]


async def test_a_double_tap_is_processed_once_and_both_taps_are_answered(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """A double tap on "I agree" sends two presses with two callback query ids: both were processed, the consent
    logged twice ("confirm_1" twice) and the message edited twice. The second tap now changes nothing and sends
    nothing, but is answered (Telegram shows a spinner on the button until then). Another button in between (2, 3,
    2) still counts each press, as does the next step of the consent."""
    chat = await toned_chat(tg, fake, make_bot)
    await chat.say("/tone")
    await chat.press("t:m:roast")
    version = text_version(parse_settings(SETTINGS).mode("roast"))
    edits = len(fake.of("editMessageText", chat.bot.token))
    taps = []
    for _ in range(2):  # both arrive before either is processed
        update = recorded("callback_query", update_id=next(_ids), chat_id=chat.chat_id, data=f"t:c:roast:{version}:1")
        update["callback_query"]["id"] = f"cb{update['update_id']}"
        update["callback_query"]["message"]["message_id"] = MESSAGE_ID
        taps.append(update["callback_query"]["id"])
        await post_update(tg, chat.bot, update)
    await drain(tg)
    assert [e["event"] for e in await chat.consent_log()] == ["confirm_1"]
    answers = [c for c in fake.of("answerCallbackQuery", chat.bot.token) if c.params["callback_query_id"] in taps]
    assert sorted(str(a.params.get("text")) for a in answers) == ["None", "Please confirm a second time."]
    assert len(fake.of("editMessageText", chat.bot.token)) == edits + 1

    await chat.press(f"t:c:roast:{version}:2")
    assert [e["event"] for e in await chat.consent_log()] == ["confirm_1", "given"]
    for intensity in ("t:i:2", "t:i:3", "t:i:2"):
        await chat.press(intensity)
    assert (await chat.widget_tone())["intensity"] == 2


async def test_tone_speaks_the_senders_language(tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot) -> None:
    """``/tone`` ("How the assistant talks to you", the intensity names, "Tap an intensity or a style.") and the
    answers to its buttons were English for every client; a Spanish Telegram app now reads them in Spanish. The
    coach's style labels and consent texts stay in the coach's words."""
    chat = await toned_chat(tg, fake, make_bot)
    text = (shown := await chat.say("/tone", "es")).params["text"]
    assert text.startswith("<b>Cómo te habla el asistente</b>"), text
    coachs = catalogue_text("tg_tone_coachs", "es")
    assert f"Intensidad: <b>3 — equilibrado</b> ({coachs}; tu coach permite de 1 a 4)" in text
    assert "Estilo: <b>Predeterminado</b>" in text and catalogue_text("tg_tone_tap", "es") in text
    assert [b["text"] for b in buttons(shown)][:4] == ["1 ultrasuave", "2 suave", "✓ 3 equilibrado", "4 directo"]
    assert [b["text"] for b in buttons(shown)][4:] == ["Tough love", "Cheerleader"]  # the coach's labels

    answer, edit = await chat.press("t:i:2", "es")
    assert answer.params["text"] == "Intensidad 2: suave."
    assert "Intensidad: <b>2 — suave</b> (tu elección;" in edit.params["text"]
    _, screen = await chat.press("t:m:roast", "es")
    assert [b["text"] for b in buttons(screen)] == ["Acepto: usar este estilo", "Cancelar"]
    assert catalogue_text("tg_tone_twice", "es") in screen.params["text"]


async def test_a_refused_press_says_why_in_the_senders_language(
    tg: httpx.AsyncClient, fake: FakeBotApi, make_bot: MakeBot
) -> None:
    """The tone service's refusals were its English messages for every client; a Spanish Telegram app now reads
    them in Spanish (the refusal's code: :func:`app.handoff.catalogue.refusal`), the coach's labels as written."""
    chat = await toned_chat(tg, fake, make_bot)
    await chat.say("/tone", "es")
    await set_tone(tg, chat.bot, SETTINGS | {"min": 2, "max": 3, "default": 3})
    answer, edit = await chat.press("t:i:1", "es")
    assert answer.params["text"] == "La intensidad debe estar entre 2 y 3 (lo que permite tu coach)"
    assert str(answer.params["show_alert"]).lower() == "true" and "tu coach permite de 2 a 3" in edit.params["text"]

    await set_tone(tg, chat.bot, SETTINGS | {"modes": [ROAST]})
    answer, _ = await chat.press("t:m:pep", "es")
    assert answer.params["text"] == "Tu coach ya no ofrece este estilo: sus estilos ahora son Tough love"
    version = text_version(parse_settings(SETTINGS).mode("roast"))
    answer, _ = await chat.press(f"t:c:roast:{version}:2", "es")
    assert answer.params["text"].startswith("Confirma una vez primero"), answer.params["text"]
    assert await chat.consent_log() == []
