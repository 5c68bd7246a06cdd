"""Live events for the coach's dashboard and the client's widget, over Redis pub/sub.

Events are published with the Redis backend of Litestar channels, so any process (web app or worker)
publishes and every web process's :class:`litestar.channels.ChannelsPlugin` delivers them to its
subscribers (the dashboard's SSE stream, the widget's WebSocket). Channels:

- ``coach:<coach_id>``: ``{"type": "handoff", "handoff": {...}}`` (opened, claimed, closed),
  ``{"type": "alert", ...}`` (crisis), ``{"type": "message", "conversation_id", "message": {...}}``
  (every message of the coach's conversations), ``{"type": "draft", "draft": {...}}``;
- ``client:<client_id>``: ``{"type": "message", ...}`` (the coach's messages, approved drafts, holding
  messages), ``{"type": "coach_joined"|"coach_left", "conversation_id", "coach_name"}``.

Pub/sub keeps no history: a page that (re)connects loads the current state over HTTP first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime
from typing import Any

from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.conversations.models import Message

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 1.0
"""Seconds a publish may take before the live update is dropped (Redis hung or unreachable)."""


def coach_channel(coach_id: uuid.UUID) -> str:
    """The channel of a coach's dashboard."""
    return f"coach:{coach_id}"


def client_channel(client_id: uuid.UUID) -> str:
    """The channel of a client's widget."""
    return f"client:{client_id}"


def message_event(message: Message, *, client_view: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``message`` event; ``client_view`` replaces the metadata for the client's channel."""
    return {
        "type": "message",
        "conversation_id": str(message.conversation_id),
        "message": {
            "id": str(message.id),
            "sender_type": message.sender_type,
            "text": message.text,
            "created_at": message.created_at.isoformat(),
            "citations": message.citations,
            "metadata": message.meta if client_view is None else client_view,
        },
    }


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class LiveEvents:
    """Publishes JSON events to coach and client channels. Publishing never raises for Redis: a live update
    that cannot be delivered within :data:`PUBLISH_TIMEOUT_S` (Redis down or hung) is logged and dropped, and
    the page catches up from the database on reload."""

    def __init__(self, redis: Redis) -> None:
        self._backend = RedisChannelsPubSubBackend(redis=redis)

    async def publish(
        self, event: dict[str, Any], *, coach_id: uuid.UUID | None = None, client_id: uuid.UUID | None = None
    ) -> None:
        """Send ``event`` to the coach's and/or the client's channel."""
        channels = [coach_channel(coach_id)] if coach_id else []
        if client_id:
            channels.append(client_channel(client_id))
        if not channels:
            return
        try:
            data = json.dumps(event, default=_default).encode()
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._backend.publish(data, channels)
        except (RedisError, OSError, TimeoutError) as exc:  # best-effort: the state is in the database
            log.warning("live %s event not published, Redis unavailable: %r", event.get("type"), exc)
        except Exception:  # a bug in the event: still never fails the caller's committed change
            log.exception("could not publish a live %s event", event.get("type"))
