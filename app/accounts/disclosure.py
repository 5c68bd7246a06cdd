"""The widget's AI disclosure and the client's acceptance of it (the consent a client export lists).

The widget's chat page tells the client, above the conversation, that they are talking to the coach's AI
assistant (:data:`AI_DISCLOSURE_TEXT`, identified by :data:`AI_DISCLOSURE_VERSION`). When the client sends their
first message from that page, the widget records that it accepted this version
(``POST /api/v1/widget/disclosure``): the version and the time are stored on the client row
(``clients.ai_disclosure_version``, ``clients.ai_disclosure_accepted_at``). Change the version whenever the
text changes; the next message from the page records the new acceptance.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Client
from app.core.errors import InvalidInput, NotFound

AI_DISCLOSURE_VERSION = "2026-12-01"
"""Version (the date it was written) of :data:`AI_DISCLOSURE_TEXT`."""
AI_DISCLOSURE_TEXT = "You're chatting with {coach}'s AI assistant. {coach} can join the conversation."
"""The disclosure shown on the widget's chat page, in English; ``{coach}`` is the coach's name. The page shows it in
the client's language (``widget_disclosure`` of :mod:`app.handoff.catalogue`, whose English is this text): one
version for all of them."""


def disclosure_text(coach_name: str) -> str:
    """:data:`AI_DISCLOSURE_TEXT` for this coach."""
    return AI_DISCLOSURE_TEXT.format(coach=coach_name)


async def accept_disclosure(
    session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, version: str
) -> tuple[str, datetime]:
    """Record that the client accepted disclosure ``version``; returns ``(version, accepted_at)``. Accepting the
    version already recorded keeps its first time (the widget may send it again). Raises ``InvalidInput`` for
    any version but :data:`AI_DISCLOSURE_VERSION` (nothing stored), ``NotFound`` for an unknown client."""
    if version != AI_DISCLOSURE_VERSION:
        raise InvalidInput(f"unknown disclosure version: the current one is {AI_DISCLOSURE_VERSION}")
    client = await session.scalar(select(Client).where(Client.id == client_id, Client.coach_id == coach_id))
    if client is None:
        raise NotFound("client not found")
    if client.ai_disclosure_version != version or client.ai_disclosure_accepted_at is None:
        client.ai_disclosure_version = version
        client.ai_disclosure_accepted_at = datetime.now(UTC)
    return version, client.ai_disclosure_accepted_at


def consent_out(client: Client, coach_name: str) -> dict[str, Any]:
    """The client's recorded consent, as exported: ``{"ai_disclosure": null | {"version", "text",
    "accepted_at"}}`` (``text`` is the disclosure of that version when it is the current one, else ``null``)."""
    accepted = client.ai_disclosure_accepted_at
    if client.ai_disclosure_version is None or accepted is None:
        return {"ai_disclosure": None}
    current = client.ai_disclosure_version == AI_DISCLOSURE_VERSION
    return {
        "ai_disclosure": {
            "version": client.ai_disclosure_version,
            "text": disclosure_text(coach_name) if current else None,
            "accepted_at": accepted.isoformat(),
        }
    }
