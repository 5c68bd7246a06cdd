"""Pure rendering for Telegram: escaping, footnotes, splitting at 4,096 characters, callback data."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime

import pytest

from app.channels.telegram import render
from app.channels.telegram.bot import RedactBotTokens
from app.handoff.catalogue import say
from app.memory.client_view import RememberedInsight, RememberedOut, RememberedSession


def test_split_keeps_parts_under_the_limit_and_cuts_at_sentence_ends() -> None:
    sentence = "This is one calm sentence about the morning. "
    text = sentence * 200  # about 9,000 characters
    parts = render.split_text(text)
    assert len(parts) == 3 and all(len(p) <= render.MAX_MESSAGE_CHARS for p in parts)
    assert all(p.endswith(".") for p in parts)
    assert " ".join(parts) == text.strip()


def test_split_counts_as_telegram_does_an_emoji_as_two() -> None:
    """Telegram's 4,096 is in UTF-16 code units: a part of 4,000 characters with 800 emoji is 4,800 long."""
    text = "Breathe in 😊😊😊, out 🌿. " * 600
    parts = render.split_html(text, [{"title": "Calm 🌿 book", "page": 1}])
    shown = [html.unescape(re.sub(r"</?i>", "", p)) for p in parts]
    assert len(parts) > 1 and all(render.utf16_len(p) <= render.MAX_MESSAGE_CHARS for p in shown)
    assert " ".join(shown).startswith(text.strip()) and all(p.endswith(".") for p in shown[:-1])
    assert render.utf16_len("a😊") == 3 and render.split_text("😊😊😊", 3) == ["😊", "😊", "😊"]


def test_split_without_sentence_ends_cuts_at_spaces_then_hard() -> None:
    assert all(len(p) <= 10 for p in render.split_text("aaaa bbbb cccc dddd", 10))
    assert render.split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert render.split_text("") == [""]


@pytest.mark.parametrize("sentence", ["Use <b> & keep going. ", "Q&A: step 1 -> step 2 & 3 <now>. "])
def test_split_html_escapes_each_part_loses_nothing_and_puts_footnotes_last(sentence: str) -> None:
    """Escaping grows the HTML (``&amp;``), not the length Telegram counts (after entity parsing): every part
    fits, and the parts hold the whole text (they used to be cut at 4,096 HTML characters, dropping the rest)."""
    text = (sentence * 400).strip()
    parts = render.split_html(text, [{"title": "Book <1>", "page": 3}, {"title": "Book <1>", "page": 3}])
    shown = [html.unescape(re.sub(r"</?i>", "", p)) for p in parts]  # what the client reads, as Telegram counts
    assert len(parts) > 1 and all(len(p) <= render.MAX_MESSAGE_CHARS for p in shown)
    assert " ".join(shown).startswith(text)
    assert "<b>" not in "".join(parts) and "&lt;" in parts[0] and "&amp;" in parts[0]
    assert parts[-1].endswith("<i>[1, 2] Book &lt;1&gt;, p. 3</i>")  # one footnote for the reply's [1] and [2]
    assert "".join(parts).count("Book &lt;1&gt;, p. 3") == 1


def test_feedback_callback_data_round_trips_and_fits_telegrams_64_bytes() -> None:
    message_id = uuid.uuid4()
    keyboard = render.feedback_keyboard(message_id)
    up, down = keyboard["inline_keyboard"][0]
    assert all(len(b["callback_data"].encode()) <= 64 for b in (up, down))
    assert render.parse_feedback(up["callback_data"]) == (message_id, True)
    assert render.parse_feedback(down["callback_data"]) == (message_id, False)
    assert render.parse_feedback("f:nothex:1") is None and render.parse_feedback("h") is None


@pytest.mark.parametrize(
    ("event", "line"),
    [
        ({"type": "coach_joined", "coach_name": "Ann"}, "Ann joined the conversation."),
        ({"type": "coach_left", "coach_name": "Ann"}, "Ann left the conversation; the AI assistant answers again."),
        # a handoff the coach gave back without taking it: they never joined, so they cannot have left
        ({"type": "coach_dismissed", "coach_name": "Ann"}, "Ann asked the AI assistant to carry on; it answers again."),
        ({"type": "message"}, None),
    ],
)
def test_notices(event: dict[str, str], line: str | None) -> None:
    assert render.notice_text(event) == line


def test_notices_in_the_clients_language() -> None:
    assert render.notice_text({"type": "coach_joined", "coach_name": "Ann"}, "es") == "Ann se unió a la conversación."
    assert render.notice_text({"type": "coach_left"}, "de") == (
        "Dein Coach hat das Gespräch verlassen; der KI-Assistent antwortet wieder."
    )
    assert render.notice_text({"type": "message"}, "fr") is None


def test_log_filter_redacts_bot_tokens() -> None:
    import logging

    record = logging.LogRecord(
        "httpx", 20, __file__, 1, "POST %s", ("https://x/bot123456789:AAHabcdefghijklmnopqrstuv/getMe",), None
    )
    RedactBotTokens().filter(record)
    assert record.getMessage() == "POST https://x/bot[bot-token]/getMe"


def test_the_forget_list_fits_one_message_with_a_button_per_item_and_round_trips_its_ids() -> None:
    now = datetime.now(UTC)
    insights = [RememberedInsight(uuid.uuid4(), "goal", "x" * 5000, "active") for _ in range(40)]
    session = RememberedSession(uuid.uuid4(), now, "A summary", [], [], "")
    text, keyboard = render.memory_message(RememberedOut(insights, [session]))
    assert keyboard is not None and len(text) <= render.MAX_MESSAGE_CHARS
    buttons = [b for row in keyboard["inline_keyboard"] for b in row]
    assert len(buttons) == render.FORGET_ITEMS and all(len(row) <= 5 for row in keyboard["inline_keyboard"])
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)
    assert render.parse_forget(buttons[0]["callback_data"]) == ("insight", insights[0].id)
    assert render.parse_forget(f"m:s:{session.id.hex}") == ("summary", session.id)
    assert render.parse_forget("m:x:00") is None and render.parse_forget("f:" + "0" * 32 + ":1") is None
    assert render.memory_message(RememberedOut([], [])) == (say("tg_nothing_remembered", "en"), None)
    escaped = [RememberedInsight(uuid.uuid4(), "goal", "<&>" * 2000, "active") for _ in range(40)]
    text, keyboard = render.memory_message(RememberedOut(escaped, []))  # escaping grows the text: fewer items fit
    assert keyboard is not None and len(text) <= render.MAX_MESSAGE_CHARS
    assert 1 < sum(len(row) for row in keyboard["inline_keyboard"]) < render.FORGET_ITEMS


@pytest.mark.parametrize(
    ("sender", "text", "language"),
    [
        ({"language_code": "es"}, "Hi", "es"),
        ({"language_code": "pt-BR"}, None, "pt"),
        ({"language_code": "de_AT"}, "ok", "de"),
        ({"language_code": "it"}, "Ciao", "en"),
        ({}, "Bonjour, je ne peux pas ouvrir le lien et je veux parler à mon coach", "fr"),
        (None, None, "en"),
    ],
)
def test_the_bots_lines_follow_the_senders_app_language_then_the_text(
    sender: dict | None, text: str | None, language: str
) -> None:
    assert render.update_language(sender, text) == language
    human = render.feedback_keyboard(uuid.uuid4(), language)["inline_keyboard"][1][0]
    assert human == {"text": say("tg_human_button", language), "callback_data": "h"}


@pytest.mark.parametrize(
    ("text", "addressed"),
    [
        ("/forget@Tess_Coach_Bot", ("/forget", "Tess_Coach_Bot")),
        ("/human@tess_coach_bot please, now", ("/human please, now", "tess_coach_bot")),
        ("/tone@tess_coach_bot\nand more", ("/tone\nand more", "tess_coach_bot")),
        ("/tone", None),
        ("/tone @tess_coach_bot", None),  # a command, then a mention
        ("/tone@tess_coach_bot.", None),  # no username ends with a dot
        ("write to me@tess_coach_bot", None),
        (None, None),
    ],
)
def test_a_command_addressed_to_a_bot_is_read_with_its_bots_username(
    text: str | None, addressed: tuple[str, str] | None
) -> None:
    assert render.addressed_command(text) == addressed
