"""Tone: how bluntly the coach's AI speaks to a client, within what the coach allows, with consent.

- **Intensity** 1 (ultra gentle) … 6 (blunt) (:data:`INTENSITY_NAMES`). The coach allows a range
  (``tone_settings.min``–``max``, default 1–4) and sets the ``default`` intensity. A client choosing an
  intensity outside the range gets a 400 naming the range (nothing stored: a silent clamp would show the
  client a setting that is not the one used); a stored choice that a later, narrower range excludes is
  clamped to the range when it is used (:meth:`ToneSettings.clamp`).
- **Modes**: the coach's named styles (e.g. tough-love "roast"), each with the ``description`` the client
  reads and the ``instruction`` the model gets. ``default`` (no extra instruction) needs nothing; any other
  mode needs the client's explicit consent to the consent text (:func:`consent_text`, versioned by
  :func:`text_version`: a change of the coach's wording asks again). Consent lasts :data:`CONSENT_DAYS`
  days, then the client is back on ``default`` until they consent again. The coach's ``most_intense`` mode
  needs two confirmations, the second within :data:`SECOND_CONFIRMATION_MINUTES` minutes of the first.
- **Log**: every confirmation, consent and withdrawal is a row of ``tone_consents`` (who, when, which mode,
  the text and its version, the expiry), never updated.

Times are passed as ``now`` (aware UTC datetimes) so expiry can be tested with a frozen clock. What the
turn does with the choice (gentle when the client is at risk or in a low mood, experiment arms) is
:mod:`app.chat.tone`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Client, ClientTone, Coach, ToneConsent
from app.accounts.unit_of_work import UnitOfWork
from app.core.errors import InvalidInput, NotFound

INTENSITY_MIN, INTENSITY_MAX = 1, 6
INTENSITY_NAMES = {1: "ultra gentle", 2: "gentle", 3: "balanced", 4: "direct", 5: "very direct", 6: "blunt"}
"""The client-facing name of each intensity."""
DEFAULT_MODE = "default"
"""The mode every client has without consent (no instruction beyond the intensity)."""
CONSENT_DAYS = 30
SECOND_CONFIRMATION_MINUTES = 10
MAX_MODES = 5
MAX_LABEL_CHARS, MAX_DESCRIPTION_CHARS, MAX_INSTRUCTION_CHARS = 60, 500, 1000
MODE_KEY = re.compile(r"[a-z][a-z0-9_-]{0,29}")
"""A tone mode key (slug, 1 to 30 characters); check it with ``fullmatch``, which lets no trailing newline through."""
SETTINGS_FIELDS = frozenset({"min", "max", "default", "modes"})
MODE_FIELDS = frozenset({"key", "label", "description", "instruction", "most_intense"})
CONFIRM_1, GIVEN, WITHDRAWN = "confirm_1", "given", "withdrawn"
"""The events of the consent log."""


@dataclass(frozen=True)
class ToneMode:
    """A coach-defined mode: ``key`` (slug), ``label`` and ``description`` (shown to the client),
    ``instruction`` (system text for the model) and whether it is the ``most_intense`` (two confirmations)."""

    key: str
    label: str
    description: str
    instruction: str
    most_intense: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON form, as stored and as the coach API shows it."""
        return {
            "key": self.key,
            "label": self.label,
            "description": self.description,
            "instruction": self.instruction,
            "most_intense": self.most_intense,
        }


def consent_text(mode: ToneMode) -> str:
    """The consent prompt the client answers for ``mode``."""
    return (
        f'Switch to "{mode.label}": {mode.description} Replies may feel harsh. You can switch back at any time; '
        f"this lasts {CONSENT_DAYS} days, then we ask again."
    )


def text_version(mode: ToneMode) -> str:
    """The version of ``mode``'s consent: 16 hex digits of ``sha256`` over the consent text and the model's
    instruction (either changing makes earlier consents void)."""
    return hashlib.sha256(f"{consent_text(mode)}\n{mode.instruction}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ToneSettings:
    """The coach's tone settings: allowed intensities ``low``–``high``, the ``default`` and the ``modes``."""

    low: int = 1
    high: int = 4
    default: int = 3
    modes: tuple[ToneMode, ...] = ()

    def clamp(self, intensity: int) -> int:
        """``intensity`` moved into ``low``–``high``."""
        return min(self.high, max(self.low, intensity))

    def mode(self, key: str) -> ToneMode:
        """The mode named ``key``. Raises ``InvalidInput`` for a key that is not one of the coach's modes."""
        for mode in self.modes:
            if mode.key == key:
                return mode
        offered = ", ".join(f"{m.key} ({m.label})" for m in self.modes) or "none besides the default"
        labels = ", ".join(m.label for m in self.modes)
        raise InvalidInput(
            f"unknown tone mode {key!r}: your coach's styles now are {offered}",
            code="tone_mode_unknown" if labels else "tone_mode_none",
            fields={"offered": labels} if labels else {},
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON form: ``{"min", "max", "default", "modes": [...]}``."""
        return {"min": self.low, "max": self.high, "default": self.default, "modes": [m.as_dict() for m in self.modes]}


def _intensity(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not INTENSITY_MIN <= value <= INTENSITY_MAX:
        raise InvalidInput(f"{name} must be a whole number from {INTENSITY_MIN} to {INTENSITY_MAX}")
    return value


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"{name} must be text of 1 to {limit} characters")
    return value.strip()


def _mode(value: Any) -> ToneMode:
    if not isinstance(value, dict):
        raise InvalidInput("each tone mode must be an object")
    unknown = set(value) - MODE_FIELDS
    if unknown:
        raise InvalidInput(f"unknown tone mode field(s): {', '.join(sorted(unknown))}")
    key = value.get("key")
    if not isinstance(key, str) or not MODE_KEY.fullmatch(key) or key == DEFAULT_MODE:
        raise InvalidInput("a tone mode key is 1 to 30 lower-case letters, digits, - or _ (not 'default')")
    most_intense = value.get("most_intense", False)
    if not isinstance(most_intense, bool):
        raise InvalidInput("most_intense must be true or false")
    return ToneMode(
        key,
        _text("label", value.get("label"), MAX_LABEL_CHARS),
        _text("description", value.get("description"), MAX_DESCRIPTION_CHARS),
        _text("instruction", value.get("instruction"), MAX_INSTRUCTION_CHARS),
        most_intense,
    )


def parse_settings(value: Mapping[str, Any]) -> ToneSettings:
    """Checked :class:`ToneSettings` from their JSON form (missing keys: the defaults). Raises ``InvalidInput``
    naming the field: unknown fields, intensities outside 1–6, ``min`` > ``max``, a ``default`` outside
    ``min``–``max``, more than :data:`MAX_MODES` modes, duplicate keys, or more than one ``most_intense``."""
    if not isinstance(value, Mapping):
        raise InvalidInput("tone settings must be an object")
    unknown = set(value) - SETTINGS_FIELDS
    if unknown:
        raise InvalidInput(f"unknown tone setting(s): {', '.join(sorted(unknown))}")
    base = ToneSettings()
    low = _intensity("min", value.get("min", base.low))
    high = _intensity("max", value.get("max", base.high))
    if low > high:
        raise InvalidInput("min must not be above max")
    default = _intensity("default", value.get("default", min(high, max(low, base.default))))
    if not low <= default <= high:
        raise InvalidInput(f"default must be within min–max ({low}–{high})")
    raw_modes = value.get("modes", [])
    if not isinstance(raw_modes, list) or len(raw_modes) > MAX_MODES:
        raise InvalidInput(f"modes must be a list of at most {MAX_MODES} modes")
    modes = tuple(_mode(m) for m in raw_modes)
    if len({m.key for m in modes}) != len(modes):
        raise InvalidInput("tone mode keys must be unique")
    if sum(m.most_intense for m in modes) > 1:
        raise InvalidInput("at most one tone mode can be the most intense")
    return ToneSettings(low, high, default, modes)


def coach_tone(coach: Coach) -> ToneSettings:
    """The coach's stored tone settings (checked when stored, so this does not raise)."""
    return parse_settings(coach.tone_settings or {})


@dataclass(frozen=True)
class ModeConsent:
    """A mode as the client sees it: the mode, its consent ``text`` and ``version``, when the client's valid
    consent was ``given_at`` and ``expires_at`` (both ``None``: no valid consent), and whether a first
    confirmation awaits the second (``awaiting_second``, most intense mode only)."""

    mode: ToneMode
    text: str
    version: str
    expires_at: datetime | None
    awaiting_second: bool
    given_at: datetime | None = None


@dataclass(frozen=True)
class ToneChoice:
    """What a client's tone is at ``now``: the ``settings``, the ``intensity`` the client chose (clamped to the
    coach's range; ``None``: the coach's default), the ``mode`` in force (``None``: default, also when the
    chosen mode's consent expired or its text changed), the ``chosen_mode`` key and each mode's consent."""

    settings: ToneSettings
    intensity: int | None
    mode: ToneMode | None
    chosen_mode: str
    consents: list[ModeConsent] = field(default_factory=list)

    def in_force(self) -> ModeConsent | None:
        """The consent of the mode in force (when the client agreed, when it expires); ``None`` on the default
        or when ``consents`` were not read (:meth:`ToneService.client_state` reads them)."""
        key = self.mode.key if self.mode is not None else None
        return next((c for c in self.consents if c.mode.key == key), None)


async def _latest(session: AsyncSession, client_id: uuid.UUID, mode: str, events: Sequence[str]) -> ToneConsent | None:
    return await session.scalar(
        select(ToneConsent)
        .where(ToneConsent.client_id == client_id, ToneConsent.mode == mode, ToneConsent.event.in_(events))
        .order_by(ToneConsent.at.desc(), ToneConsent.created_at.desc())
        .limit(1)
    )


async def _consent(session: AsyncSession, client_id: uuid.UUID, mode: ToneMode, now: datetime) -> ModeConsent:
    version = text_version(mode)
    last = await _latest(session, client_id, mode.key, (CONFIRM_1, GIVEN, WITHDRAWN))
    valid = (
        last is not None
        and last.event == GIVEN
        and last.text_version == version
        and last.expires_at is not None
        and last.expires_at > now
    )
    awaiting = (
        last is not None
        and last.event == CONFIRM_1
        and last.text_version == version
        and now - last.at <= timedelta(minutes=SECOND_CONFIRMATION_MINUTES)
    )
    if not valid or last is None:
        return ModeConsent(mode, consent_text(mode), version, None, awaiting)
    return ModeConsent(mode, consent_text(mode), version, last.expires_at, awaiting, last.at)


_CLIENT_TONE = select(ClientTone).where(ClientTone.client_id == bindparam("client_id"))
"""Read on every chat turn: built once, run with a bound parameter (SQLAlchemy reuses its cache key)."""


async def tone_choice(session: AsyncSession, coach: Coach, client_id: uuid.UUID, now: datetime) -> ToneChoice:
    """The client's tone at ``now`` (:class:`ToneChoice`), read in the caller's tenant session; no errors.
    Reads the client's row and, when a mode other than ``default`` is chosen, its latest consent entry."""
    settings = coach_tone(coach)
    row = await session.scalar(_CLIENT_TONE, {"client_id": client_id})
    intensity = settings.clamp(row.intensity) if row is not None and row.intensity is not None else None
    chosen = row.mode if row is not None else DEFAULT_MODE
    mode = next((m for m in settings.modes if m.key == chosen), None)
    if mode is None:
        return ToneChoice(settings, intensity, None, DEFAULT_MODE)
    consent = await _consent(session, client_id, mode, now)
    return ToneChoice(settings, intensity, mode if consent.expires_at else None, chosen)


def client_view(choice: ToneChoice) -> dict[str, Any]:
    """The widget's view: ``{"min", "max", "default", "intensity", "intensity_names", "mode", "chosen_mode",
    "consent_days", "modes": [{"key", "label", "description", "most_intense", "consent_text", "version",
    "consented_until", "awaiting_second"}]}``; ``intensity`` is the one in use (the client's, else the
    default); ``mode`` the mode in force (``"default"`` when the chosen one's consent lapsed). The model's
    instructions are the coach's, not shown."""
    settings = choice.settings
    return {
        "min": settings.low,
        "max": settings.high,
        "default": settings.default,
        "intensity": choice.intensity if choice.intensity is not None else settings.default,
        "intensity_names": {str(k): v for k, v in INTENSITY_NAMES.items()},
        "mode": choice.mode.key if choice.mode is not None else "default",
        "chosen_mode": choice.chosen_mode,
        "consent_days": CONSENT_DAYS,
        "modes": [
            {
                "key": c.mode.key,
                "label": c.mode.label,
                "description": c.mode.description,
                "most_intense": c.mode.most_intense,
                "consent_text": c.text,
                "version": c.version,
                "consented_until": c.expires_at.isoformat() if c.expires_at else None,
                "awaiting_second": c.awaiting_second,
            }
            for c in choice.consents
        ],
    }


class ToneService:
    """The coach's tone settings and the client's choices and consents, in the caller's unit of work."""

    async def settings(self, uow: UnitOfWork) -> dict[str, Any]:
        """The coach's tone settings in JSON form (:meth:`ToneSettings.as_dict`)."""
        return coach_tone(await uow.coach()).as_dict()

    async def update_settings(self, uow: UnitOfWork, value: Mapping[str, Any]) -> ToneSettings:
        """Replace the coach's tone settings (shape: :func:`parse_settings`). Raises ``InvalidInput`` (nothing
        changed). Clients' stored choices are kept; out-of-range ones are clamped when used."""
        settings = parse_settings(value)
        coach = await uow.coach()
        coach.tone_settings = settings.as_dict()
        await uow.session.flush()
        return settings

    async def client_state(self, uow: UnitOfWork, client_id: uuid.UUID, now: datetime) -> ToneChoice:
        """The client's tone at ``now`` with every mode's consent (for the widget). Raises ``NotFound``."""
        session, coach = uow.session, await uow.coach()
        await self._client(session, uow.coach_id, client_id)
        choice = await tone_choice(session, coach, client_id, now)
        consents = [await _consent(session, client_id, mode, now) for mode in choice.settings.modes]
        return ToneChoice(choice.settings, choice.intensity, choice.mode, choice.chosen_mode, consents)

    async def _client(self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID) -> None:
        found = await session.scalar(select(Client.id).where(Client.id == client_id, Client.coach_id == coach_id))
        if found is None:
            raise NotFound("client not found")

    async def _row(self, uow: UnitOfWork, client_id: uuid.UUID, now: datetime) -> ClientTone:
        row = await uow.session.scalar(select(ClientTone).where(ClientTone.client_id == client_id))
        if row is None:
            row = ClientTone(coach_id=uow.coach_id, client_id=client_id, mode=DEFAULT_MODE, updated_at=now)
            uow.session.add(row)
        return row

    async def choose(
        self,
        uow: UnitOfWork,
        client_id: uuid.UUID,
        now: datetime,
        *,
        intensity: int | None = None,
        mode: str | None = None,
    ) -> ToneChoice:
        """Set the client's ``intensity`` and/or ``mode`` (``None`` keeps it). Raises ``InvalidInput`` (nothing
        stored) for an intensity outside the coach's range or an unknown mode, ``Conflict`` for a mode without
        the client's valid consent (:meth:`consent` first), ``NotFound`` for an unknown client."""
        coach = await uow.coach()
        settings = coach_tone(coach)
        await self._client(uow.session, uow.coach_id, client_id)
        if intensity is not None:
            _intensity("intensity", intensity)
            if not settings.low <= intensity <= settings.high:
                raise InvalidInput(
                    f"intensity must be from {settings.low} to {settings.high} (what your coach allows)",
                    code="tone_intensity_range",
                    fields={"low": settings.low, "high": settings.high},
                )
        if mode is not None and mode != DEFAULT_MODE:
            consent = await _consent(uow.session, client_id, settings.mode(mode), now)
            if consent.expires_at is None:
                raise InvalidInput(
                    f"tone mode {mode!r} needs your consent first (POST /api/v1/widget/tone/consent)",
                    code="tone_consent_needed",
                )
        row = await self._row(uow, client_id, now)
        if intensity is not None:
            row.intensity = intensity
        if mode is not None:
            row.mode = mode
        row.updated_at = now
        await uow.session.flush()
        return await self.client_state(uow, client_id, now)

    async def consent(
        self, uow: UnitOfWork, client_id: uuid.UUID, now: datetime, *, mode: str, version: str, confirmation: int
    ) -> ToneChoice:
        """Log the client's consent to ``mode`` (the consent text of ``version``) and switch to it. The most
        intense mode takes ``confirmation`` 1, then 2 within :data:`SECOND_CONFIRMATION_MINUTES` minutes (the
        first only logs ``confirm_1``); other modes take 1. Consent expires after :data:`CONSENT_DAYS` days.
        Raises ``InvalidInput`` (nothing logged) for an unknown mode, a ``version`` that is not the current
        text's, a second confirmation without a recent first, or a confirmation other than 1 or 2;
        ``NotFound`` for an unknown client."""
        settings = coach_tone(await uow.coach())
        await self._client(uow.session, uow.coach_id, client_id)
        chosen = settings.mode(mode)
        current = text_version(chosen)
        if version != current:
            raise InvalidInput(
                "the consent text of this style changed: read it again and agree to the new text",
                code="tone_consent_changed",
            )
        if confirmation not in (1, 2) or (confirmation == 2 and not chosen.most_intense):
            raise InvalidInput("confirmation must be 1 (and 2, for the most intense mode)", code="tone_confirmation")
        event = CONFIRM_1 if chosen.most_intense and confirmation == 1 else GIVEN
        if confirmation == 2 and not (await _consent(uow.session, client_id, chosen, now)).awaiting_second:
            raise InvalidInput(
                f"confirm once first: the second confirmation must follow within {SECOND_CONFIRMATION_MINUTES} minutes",
                code="tone_confirm_first",
                fields={"minutes": SECOND_CONFIRMATION_MINUTES},
            )
        expires = now + timedelta(days=CONSENT_DAYS) if event == GIVEN else None
        uow.session.add(
            ToneConsent(
                coach_id=uow.coach_id,
                client_id=client_id,
                mode=chosen.key,
                event=event,
                text_version=current,
                text=consent_text(chosen),
                at=now,
                expires_at=expires,
            )
        )
        if event == GIVEN:
            row = await self._row(uow, client_id, now)
            row.mode, row.updated_at = chosen.key, now
        await uow.session.flush()
        return await self.client_state(uow, client_id, now)

    async def withdraw(self, uow: UnitOfWork, client_id: uuid.UUID, now: datetime) -> ToneChoice:
        """Withdraw the consent to the client's current mode (logged as ``withdrawn``) and go back to
        ``default``; a client on ``default`` changes nothing. Raises ``NotFound`` for an unknown client."""
        settings = coach_tone(await uow.coach())
        await self._client(uow.session, uow.coach_id, client_id)
        row = await self._row(uow, client_id, now)
        mode = next((m for m in settings.modes if m.key == row.mode), None)
        if mode is not None:
            uow.session.add(
                ToneConsent(
                    coach_id=uow.coach_id,
                    client_id=client_id,
                    mode=mode.key,
                    event=WITHDRAWN,
                    text_version=text_version(mode),
                    text=consent_text(mode),
                    at=now,
                    expires_at=None,
                )
            )
        row.mode, row.updated_at = DEFAULT_MODE, now
        await uow.session.flush()
        return await self.client_state(uow, client_id, now)

    async def consent_log(self, uow: UnitOfWork, client_id: uuid.UUID) -> list[dict[str, Any]]:
        """The client's consent log for the coach (:func:`consent_entries`). Raises ``NotFound`` for an unknown
        client."""
        await self._client(uow.session, uow.coach_id, client_id)
        return await consent_entries(uow.session, client_id)


async def consent_entries(session: AsyncSession, client_id: uuid.UUID) -> list[dict[str, Any]]:
    """The client's tone consent log, oldest first, in the caller's tenant session (also in the client's data
    export): ``[{"mode", "event", "text_version", "text", "at", "expires_at"}]`` (ISO 8601 times)."""
    rows = await session.scalars(
        select(ToneConsent).where(ToneConsent.client_id == client_id).order_by(ToneConsent.at, ToneConsent.created_at)
    )
    return [
        {
            "mode": row.mode,
            "event": row.event,
            "text_version": row.text_version,
            "text": row.text,
            "at": row.at.isoformat(),
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        }
        for row in rows
    ]
