"""A coach's welcome for new clients: the greeting, the suggested first questions and the avatar that the chat
widget shows (and the Telegram bot's ``/start`` message), with their checks and defaults.

Validated here and applied to the ``Coach`` row in the same transaction as the other settings of
``PATCH /api/v1/settings`` (a bad field changes nothing). The avatar is uploaded on its own
(``PUT /api/v1/settings/widget-avatar``, the dashboard's settings page): its type is read from the image data
itself by Pillow (never from the file name or the declared content type), only PNG, JPEG, WebP and GIF are
accepted (so never SVG, which can carry script), and the image is decoded and re-encoded as a PNG of at most
:data:`AVATAR_SIDE_PX` pixels a side, which drops anything hidden in the upload (metadata, trailing data,
polyglots). It is served as ``image/png`` from this origin, so the pages' ``img-src 'self'`` policy holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError
from sqlalchemy import select

from app.accounts.models import Coach
from app.accounts.unit_of_work import UnitOfWork
from app.core.errors import InvalidInput, NotFound
from app.core.validation import bounded_text

GREETING_MAX_CHARS = 500
MAX_SUGGESTIONS = 5
SUGGESTION_MAX_CHARS = 120
AVATAR_MAX_BYTES = 2 * 1024 * 1024
"""Largest avatar upload accepted (bytes)."""
AVATAR_MAX_PIXELS = 4096 * 4096
"""Largest uploaded image (width × height) that is decoded at all (a decompression bomb is refused unread)."""
AVATAR_SIDE_PX = 256
"""The stored avatar fits in a square of this many pixels (aspect ratio kept)."""
AVATAR_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
"""Image formats accepted for the avatar, as Pillow names what it finds in the data."""
DEFAULT_SUGGESTIONS = (
    "What can you help me with?",
    "I'd like to work on a habit",
    "I feel stuck: where do I start?",
)
"""Suggested first questions of a new conversation when the coach has set none."""
WIDGET_FIELDS = ("widget_greeting", "widget_suggestions")
"""The settings this module owns, as named in the API (the avatar has its own endpoint)."""


def suggestions(coach: Coach) -> list[str]:
    """The suggested first questions: the coach's (possibly none), else :data:`DEFAULT_SUGGESTIONS`."""
    return list(DEFAULT_SUGGESTIONS if coach.widget_suggestions is None else coach.widget_suggestions)


def apply_widget_settings(coach: Coach, **changes: Any) -> None:
    """Validate and set the given fields; ``None`` leaves one as is.

    ``widget_greeting``: text of at most :data:`GREETING_MAX_CHARS` characters (``""`` goes back to the
    default). ``widget_suggestions``: at most :data:`MAX_SUGGESTIONS` questions of 1–:data:`SUGGESTION_MAX_CHARS`
    characters each, duplicates dropped (``[]``: none shown). Raises ``InvalidInput`` naming the field."""
    unknown = set(changes) - set(WIDGET_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown settings: {', '.join(sorted(unknown))}")
    text = changes.get("widget_greeting")
    if text is not None:
        coach.widget_greeting = bounded_text("widget_greeting", text, GREETING_MAX_CHARS) or None
    questions = changes.get("widget_suggestions")
    if questions is not None:
        cleaned = list(dict.fromkeys(q.strip() for q in questions))
        if len(cleaned) > MAX_SUGGESTIONS:
            raise InvalidInput(f"widget_suggestions: at most {MAX_SUGGESTIONS} questions")
        if any(not q or len(q) > SUGGESTION_MAX_CHARS for q in cleaned):
            raise InvalidInput(f"widget_suggestions: each question must be 1–{SUGGESTION_MAX_CHARS} characters")
        coach.widget_suggestions = cleaned


def avatar_png(data: bytes) -> bytes:
    """The uploaded image ``data`` as a PNG of at most :data:`AVATAR_SIDE_PX` px a side (CPU-bound: call it in a
    thread). The format is sniffed from the data. Raises ``InvalidInput`` for an empty or over-large upload,
    data that is not a PNG, JPEG, WebP or GIF image (SVG included), an image over :data:`AVATAR_MAX_PIXELS`
    or one that does not decode."""
    if not data:
        raise InvalidInput("avatar: the file is empty")
    if len(data) > AVATAR_MAX_BYTES:
        raise InvalidInput(f"avatar: the file is over {AVATAR_MAX_BYTES // (1024 * 1024)} MB")
    refused = InvalidInput("avatar must be a PNG, JPEG, WebP or GIF image")
    too_large = InvalidInput(f"avatar: the image is over {AVATAR_MAX_PIXELS:,} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=AVATAR_FORMATS) as image:
                if image.width * image.height > AVATAR_MAX_PIXELS:
                    raise too_large
                image.seek(0)  # an animated GIF or WebP: its first frame
                frame = image.convert("RGBA")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses an image this large while opening it, before the size check above can name the limit
        raise too_large from exc
    except (UnidentifiedImageError, OSError, ValueError, Warning) as exc:
        raise refused from exc
    frame.thumbnail((AVATAR_SIDE_PX, AVATAR_SIDE_PX))
    out = io.BytesIO()
    frame.save(out, format="PNG", optimize=True)
    return out.getvalue()


async def set_widget_avatar(uow: UnitOfWork, data: bytes) -> Coach:
    """Check and store ``data`` as the coach's avatar (:func:`avatar_png`, run in a thread). Raises
    ``InvalidInput`` (nothing stored then)."""
    png = await asyncio.to_thread(avatar_png, data)
    coach = await uow.coach()
    coach.widget_avatar = png
    coach.widget_avatar_sha = hashlib.sha256(png).hexdigest()[:16]
    await uow.session.flush()
    return coach


async def clear_widget_avatar(uow: UnitOfWork) -> Coach:
    """Remove the coach's avatar (the widget shows the coach's initials again)."""
    coach = await uow.coach()
    coach.widget_avatar = None
    coach.widget_avatar_sha = None
    await uow.session.flush()
    return coach


def avatar_url(coach: Coach) -> str | None:
    """Where the widget loads the coach's avatar (the version in the query makes a new one bypass caches);
    ``None`` without an avatar."""
    if coach.widget_avatar_sha is None:
        return None
    return f"/w/avatar/{coach.id}?v={coach.widget_avatar_sha}"


async def widget_avatar(uow: UnitOfWork) -> bytes:
    """The coach's avatar PNG (the deferred column, read alone). Raises ``NotFound`` when the coach has none."""
    png = await uow.session.scalar(select(Coach.widget_avatar).where(Coach.id == uow.coach_id))
    if png is None:
        raise NotFound("this coach has no avatar")
    return png
