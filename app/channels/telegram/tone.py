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
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.tone import DEFAULT_MODE, INTENSITY_NAMES, MODE_KEY, ModeConsent, ToneChoice, ToneService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.channels.telegram.render import escape, shorten
from app.core.errors import DomainError

TONE_COMMAND = "/tone"
GENTLE_NOTE = "When you seem to be having a hard time, the assistant is always gentle, whatever you choose here."
"""The same promise as the widget's tone page (:func:`app.chat.tone.gentle_reason`)."""
AGREE, AGREE_AGAIN, CANCEL, WITHDRAW = (
    "I agree: use this style",
    "Yes, I'm sure: confirm again",
    "Cancel",
    "Back to the default style",
)
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


def tone_message(choice: ToneChoice) -> tuple[str, dict[str, Any]]:
    """The ``/tone`` message: ``(HTML text, reply_markup)``; intensity buttons two a row (the one in use ticked),
    then one row per style that is not in force, then "Back to the default style" while a style is on."""
    settings = choice.settings
    intensity = choice.intensity if choice.intensity is not None else settings.default
    whose = "your choice" if choice.intensity is not None else "your coach's default"
    lines = [
        "<b>How the assistant talks to you</b>",
        f"Intensity: <b>{intensity} — {INTENSITY_NAMES[intensity]}</b> ({whose}; "
        f"your coach allows {settings.low} to {settings.high})",
    ]
    current = choice.in_force()
    if current is not None and current.given_at is not None and current.expires_at is not None:
        agreed = f"agreed on {_day(current.given_at)}, until {_day(current.expires_at)}"
        lines.append(f"Style: <b>{escape(current.mode.label)}</b> ({agreed})")
    else:
        lines.append("Style: <b>Default</b>")
    if choice.chosen_mode != (choice.mode.key if choice.mode else DEFAULT_MODE):
        lines.append("Your agreement to your chosen style has lapsed or its wording changed: agree again to use it.")
    lines += ["", f"<i>{escape(GENTLE_NOTE)}</i>", "Tap an intensity or a style."]
    buttons = [
        {"text": f"{'✓ ' if n == intensity else ''}{n} {INTENSITY_NAMES[n]}", "callback_data": f"t:i:{n}"}
        for n in range(settings.low, settings.high + 1)
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    others = [c.mode for c in choice.consents if c is not current]
    rows += [[{"text": mode.label, "callback_data": f"t:m:{mode.key}"}] for mode in others]
    if choice.mode is not None:
        rows.append([{"text": WITHDRAW, "callback_data": "t:w"}])
    return "\n".join(lines), {"inline_keyboard": rows}


def consent_message(consent: ModeConsent) -> tuple[str, dict[str, Any]]:
    """A style's consent screen: ``(HTML text, reply_markup)`` with its consent text and "I agree" (confirmation
    1) or, when a first confirmation of the most intense style awaits the second, "Yes, I'm sure: confirm again"
    (confirmation 2); and "Cancel" (back to ``/tone``)."""
    mode = consent.mode
    lines = [f"<b>{escape(mode.label)}</b>", escape(consent.text)]
    if consent.awaiting_second:
        lines.append("<i>This is the most intense style: please confirm a second time.</i>")
    elif mode.most_intense:
        lines.append("<i>This is the most intense style: you will be asked to confirm twice.</i>")
    step = 2 if consent.awaiting_second else 1
    agree = {"text": AGREE_AGAIN if step == 2 else AGREE, "callback_data": f"t:c:{mode.key}:{consent.version}:{step}"}
    return "\n\n".join(lines), {"inline_keyboard": [[agree], [{"text": CANCEL, "callback_data": "t:s"}]]}


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

    async def show(self, coach_id: uuid.UUID, client_id: uuid.UUID, now: datetime) -> tuple[str, dict[str, Any]]:
        """The ``/tone`` message (:func:`tone_message`) of the client's tone at ``now``. Raises ``NotFound``
        for a client that is gone."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            return tone_message(await self._tone.client_state(uow, client_id, now))

    async def press(self, coach_id: uuid.UUID, client_id: uuid.UUID, press: TonePress, now: datetime) -> ToneAnswer:
        """Do what ``press`` asks through :class:`ToneService` (``choose``, ``consent``, ``withdraw``, or read the
        state) and say what to show. A refusal (the service's ``InvalidInput`` and other domain errors) stores
        nothing and answers its message as an alert with the current ``/tone`` message."""
        try:
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                return await self._press(uow, client_id, press, now)
        except DomainError as exc:
            text, keyboard = await self.show(coach_id, client_id, now)
            return ToneAnswer(shorten(exc.message[:1].upper() + exc.message[1:], MAX_NOTE_CHARS), True, text, keyboard)

    async def _press(self, uow: UnitOfWork, client_id: uuid.UUID, press: TonePress, now: datetime) -> ToneAnswer:
        tone = self._tone
        note: str | None = None
        if press.action == "intensity" and press.intensity is not None:
            choice = await tone.choose(uow, client_id, now, intensity=press.intensity)
            note = f"Intensity {press.intensity} — {INTENSITY_NAMES[press.intensity]}."
        elif press.action == "mode" and press.mode is not None:
            state = await tone.client_state(uow, client_id, now)
            key = state.settings.mode(press.mode).key  # a style the coach removed raises InvalidInput
            return ToneAnswer(None, False, *consent_message(_consent_of(state, key)))
        elif press.action == "consent" and press.mode is not None and press.version is not None:
            choice = await tone.consent(
                uow, client_id, now, mode=press.mode, version=press.version, confirmation=press.confirmation
            )
            consent = _consent_of(choice, press.mode)
            if consent.expires_at is None:  # the first of the most intense style's two confirmations
                return ToneAnswer("Please confirm a second time.", False, *consent_message(consent))
            note = f"Style: {consent.mode.label}, until {_day(consent.expires_at)}."
        elif press.action == "withdraw":
            choice = await tone.withdraw(uow, client_id, now)
            note = "Back to the default style."
        else:
            choice = await tone.client_state(uow, client_id, now)
        return ToneAnswer(note, False, *tone_message(choice))
