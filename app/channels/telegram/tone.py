"""The Telegram ``/tone`` command: the client's tone (:mod:`app.accounts.tone`) shown in the chat with inline
buttons, and what a button press does. The rules (range, modes, consent, its log) are
:class:`app.accounts.tone.ToneService`'s, called exactly as the widget's tone API calls them; this module only
renders and routes.

- ``/tone`` shows the intensity in use (the client's choice, or the coach's default), the style in force (with
  when the client agreed and until when) and buttons: each intensity of the coach's range, each of the coach's
  styles but the current one, and "Back to the default style" while a style is on.
- A style's button shows its consent text (versioned) with "I agree"; the most intense style asks twice
  (the second button "Yes, I'm sure: confirm again"); agreeing logs the consent in ``tone_consents`` and
  switches to the style.
- A press the service refuses (an intensity outside a range the coach narrowed since, a style the coach removed,
  a consent text the coach reworded, a second confirmation too late) changes nothing: the answer says why and
  the message shows the current state again.

Callback data (at most 53 bytes of Telegram's 64): ``t:i:<1-6>`` (intensity), ``t:m:<mode key>`` (show a style's
consent), ``t:c:<mode key>:<version>:<1|2>`` (agree, confirmation 1 or 2), ``t:w`` (withdraw), ``t:s`` (show).

The bot's own words (titles, buttons, notes, intensity names) are catalogue entries (``tg_tone_*``,
``tone_intensity_*``: :mod:`app.handoff.catalogue`) in the language of the update's sender
(:func:`app.channels.telegram.render.update_language`), as is a refusal of the tone service (its code's catalogue
text, :func:`app.handoff.catalogue.refusal`); a style's label and consent text are the coach's words, as written.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.tone import DEFAULT_MODE, MODE_KEY, ModeConsent, ToneChoice, ToneService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.channels.telegram.render import escape, shorten
from app.core.errors import DomainError
from app.handoff.catalogue import refusal, say

TONE_COMMAND = "/tone"
MAX_NOTE_CHARS = 200
"""Telegram's limit on an ``answerCallbackQuery`` text."""
_VERSION = re.compile(r"[0-9a-f]{16}")
_INTENSITY = re.compile(r"[1-6]")


@dataclass(frozen=True)
class TonePress:
    """A ``/tone`` button: ``action`` ``intensity`` | ``mode`` | ``consent`` | ``withdraw`` | ``show``, with the
    ``intensity`` (1–6), the ``mode`` key, the consent text's ``version`` and the ``confirmation`` (1 or 2) where
    the action has them."""

    action: str
    intensity: int | None = None
    mode: str | None = None
    version: str | None = None
    confirmation: int = 1


def parse_tone(data: str) -> TonePress | None:
    """The :class:`TonePress` of a ``/tone`` button's callback data (see the module), ``None`` for anything else
    (other buttons, malformed data)."""
    match data.split(":"):
        case ["t", "i", n] if _INTENSITY.fullmatch(n):
            return TonePress("intensity", intensity=int(n))
        case ["t", "m", key] if MODE_KEY.fullmatch(key):
            return TonePress("mode", mode=key)
        case ["t", "c", key, version, ("1" | "2") as step] if MODE_KEY.fullmatch(key) and _VERSION.fullmatch(version):
            return TonePress("consent", mode=key, version=version, confirmation=int(step))
        case ["t", "w"]:
            return TonePress("withdraw")
        case ["t", "s"]:
            return TonePress("show")
    return None


def _day(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d}"


def _html(name: str, language: str, **fields: object) -> str:
    """Catalogue entry ``name`` in ``language`` as Telegram HTML: its own text escaped, the ``fields`` (HTML
    already) put in as they are."""
    marks = {key: f"\x00{key}\x00" for key in fields}
    text = escape(say(name, language, **marks))
    for key, value in fields.items():
        text = text.replace(marks[key], str(value))
    return text


def intensity_name(intensity: int, language: str = "en") -> str:
    """The name of tone ``intensity`` (1–6) in ``language`` (``tone_intensity_<n>``: "balanced", "equilibrado")."""
    return say(f"tone_intensity_{intensity}", language)


def tone_message(choice: ToneChoice, language: str = "en") -> tuple[str, dict[str, Any]]:
    """The ``/tone`` message in ``language`` (``en es fr de pt``): ``(HTML text, reply_markup)``; intensity buttons
    two a row (the one in use ticked), then one row per style that is not in force, then "Back to the default
    style" while a style is on."""
    settings = choice.settings
    intensity = choice.intensity if choice.intensity is not None else settings.default
    whose = say("tg_tone_yours" if choice.intensity is not None else "tg_tone_coachs", language)
    value = f"<b>{intensity} — {escape(intensity_name(intensity, language))}</b>"
    lines = [
        f"<b>{escape(say('tg_tone_title', language))}</b>",
        _html("tg_tone_intensity", language, value=value, whose=escape(whose), low=settings.low, high=settings.high),
    ]
    current = choice.in_force()
    if current is not None and current.given_at is not None and current.expires_at is not None:
        style, given, until = f"<b>{escape(current.mode.label)}</b>", _day(current.given_at), _day(current.expires_at)
        lines.append(_html("tg_tone_style", language, style=style, given=given, until=until))
    else:
        lines.append(_html("tg_tone_no_style", language, style=f"<b>{escape(say('tg_tone_default', language))}</b>"))
    if choice.chosen_mode != (choice.mode.key if choice.mode else DEFAULT_MODE):
        lines.append(escape(say("tg_tone_lapsed", language)))
    lines += ["", f"<i>{escape(say('tg_tone_gentle', language))}</i>", escape(say("tg_tone_tap", language))]
    buttons = [
        {"text": f"{'✓ ' if n == intensity else ''}{n} {intensity_name(n, language)}", "callback_data": f"t:i:{n}"}
        for n in range(settings.low, settings.high + 1)
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    others = [c.mode for c in choice.consents if c is not current]
    rows += [[{"text": mode.label, "callback_data": f"t:m:{mode.key}"}] for mode in others]
    if choice.mode is not None:
        rows.append([{"text": say("tg_tone_withdraw", language), "callback_data": "t:w"}])
    return "\n".join(lines), {"inline_keyboard": rows}


def consent_message(consent: ModeConsent, language: str = "en") -> tuple[str, dict[str, Any]]:
    """A style's consent screen in ``language``: ``(HTML text, reply_markup)`` with its consent text and "I agree"
    (confirmation 1) or, when a first confirmation of the most intense style awaits the second, "Yes, I'm sure:
    confirm again" (confirmation 2); and "Cancel" (back to ``/tone``)."""
    mode = consent.mode
    lines = [f"<b>{escape(mode.label)}</b>", escape(consent.text)]
    if consent.awaiting_second:
        lines.append(f"<i>{escape(say('tg_tone_second', language))}</i>")
    elif mode.most_intense:
        lines.append(f"<i>{escape(say('tg_tone_twice', language))}</i>")
    step = 2 if consent.awaiting_second else 1
    agree = {
        "text": say("tg_tone_agree_again" if step == 2 else "tg_tone_agree", language),
        "callback_data": f"t:c:{mode.key}:{consent.version}:{step}",
    }
    cancel = {"text": say("tg_tone_cancel", language), "callback_data": "t:s"}
    return "\n\n".join(lines), {"inline_keyboard": [[agree], [cancel]]}


def _consent_of(choice: ToneChoice, key: str) -> ModeConsent:
    return next(c for c in choice.consents if c.mode.key == key)


@dataclass(frozen=True)
class ToneAnswer:
    """What a press answers: the callback ``note`` (``None``: none), whether it is a refusal (``alert``: shown
    as a dialog), and the message's new ``text`` and ``keyboard``."""

    note: str | None
    alert: bool
    text: str
    keyboard: dict[str, Any]


class TelegramTone:
    """``/tone`` and its buttons for a bound chat's client, each in one unit of work of the coach (a refused
    press rolls back: nothing stored)."""

    def __init__(self, tone: ToneService, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._tone = tone
        self._sessionmaker = sessionmaker

    async def show(
        self, coach_id: uuid.UUID, client_id: uuid.UUID, now: datetime, language: str = "en"
    ) -> tuple[str, dict[str, Any]]:
        """The ``/tone`` message (:func:`tone_message`) of the client's tone at ``now``, in ``language`` (the
        sender's: :func:`app.channels.telegram.render.update_language`). Raises ``NotFound`` for a client that is
        gone."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            return tone_message(await self._tone.client_state(uow, client_id, now), language)

    async def press(
        self, coach_id: uuid.UUID, client_id: uuid.UUID, press: TonePress, now: datetime, language: str = "en"
    ) -> ToneAnswer:
        """Do what ``press`` asks through :class:`ToneService` (``choose``, ``consent``, ``withdraw``, or read the
        state) and say what to show, in ``language`` (as :meth:`show`). A refusal (the service's ``InvalidInput``
        and other domain errors) stores nothing and answers it as an alert (:func:`~app.handoff.catalogue.refusal`
        in ``language``: the service's English message for a refusal without a catalogue text) with the current
        ``/tone`` message."""
        try:
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                return await self._press(uow, client_id, press, now, language)
        except DomainError as exc:
            text, keyboard = await self.show(coach_id, client_id, now, language)
            said = refusal(exc, language)
            return ToneAnswer(shorten(said[:1].upper() + said[1:], MAX_NOTE_CHARS), True, text, keyboard)

    async def _press(
        self, uow: UnitOfWork, client_id: uuid.UUID, press: TonePress, now: datetime, language: str
    ) -> ToneAnswer:
        tone = self._tone
        note: str | None = None
        if press.action == "intensity" and press.intensity is not None:
            choice = await tone.choose(uow, client_id, now, intensity=press.intensity)
            label = intensity_name(press.intensity, language)
            note = say("tg_tone_chosen", language, intensity=press.intensity, label=label)
        elif press.action == "mode" and press.mode is not None:
            state = await tone.client_state(uow, client_id, now)
            key = state.settings.mode(press.mode).key  # a style the coach removed raises InvalidInput
            return ToneAnswer(None, False, *consent_message(_consent_of(state, key), language))
        elif press.action == "consent" and press.mode is not None and press.version is not None:
            choice = await tone.consent(
                uow, client_id, now, mode=press.mode, version=press.version, confirmation=press.confirmation
            )
            consent = _consent_of(choice, press.mode)
            if consent.expires_at is None:  # the first of the most intense style's two confirmations
                again = say("tg_tone_confirm_again", language)
                return ToneAnswer(again, False, *consent_message(consent, language))
            note = say("tg_tone_agreed", language, style=consent.mode.label, until=_day(consent.expires_at))
        elif press.action == "withdraw":
            choice = await tone.withdraw(uow, client_id, now)
            note = f"{say('tg_tone_withdraw', language)}."
        else:
            choice = await tone.client_state(uow, client_id, now)
        return ToneAnswer(note, False, *tone_message(choice, language))
