"""Live events for the coach's dashboard and the client's widget, over Redis pub/sub.

Events are published with the Redis backend of Litestar channels, so any process (web app or worker)
publishes and every web process's :class:`litestar.channels.ChannelsPlugin` delivers them to its
subscribers (the dashboard's SSE stream, the widget's WebSocket). Channels:

- ``coach:<coach_id>``: ``{"type": "handoff", "handoff": {...}}`` (opened, claimed, closed),
  ``{"type": "alert", ...}`` (each crisis message: :func:`app.handoff.service.alert_event`),
  ``{"type": "message", "conversation_id", "message": {...}}`` (every message of the coach's conversations),
  ``{"type": "draft", "draft": {...}}``;
- ``client:<client_id>``: ``{"type": "message", ...}`` (the coach's messages, approved drafts, holding messages,
  and the client's own messages and the AI's replies, which the client's other widget tabs show too),
  ``{"type": "coach_joined"|"coach_left"|"coach_dismissed", "conversation_id", "coach_name"}`` (dismissed: the coach
  gave back a handoff they never took),
  ``{"type": "draft_discarded", "conversation_id", "coach_name"}``, and ``{"type": "link_revoked"}`` (the client's
  widget token was rotated or revoked, or the client deleted: every widget socket of the client closes, not passed on).

Pub/sub keeps no history: a page that (re)connects loads the current state over HTTP first.

Redis outages: publishing drops the event (logged) and never fails the caller; the web processes subscribe
through :class:`ReconnectingPubSubBackend`, which keeps accepting subscriptions while Redis is down and
resubscribes once it is back (Litestar's own backend ends its listener at the first connection error, so
no live event reached any page until the process restarted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncGenerator, Iterable
from contextlib import suppress
from datetime import datetime
from typing import Any

from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from app.conversations.metadata import client_citations
from app.conversations.models import Message
from app.db.outbox import UNAVAILABLE

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0
"""Seconds a publish may take before the live update is dropped (Redis hung or unreachable): the Redis socket
timeout's default. At 1 s, ``bench/load.py`` (1,000 widget sockets opening at once) dropped 655 of about 2,600
message events; at 5 s, 210, all in its first ten seconds, while Redis itself answered within 10 ms (one run each)."""
LINK_REVOKED = "link_revoked"
"""The client event that ends the client's open widget sockets (:meth:`LiveEvents.end_widget_sockets`)."""
RECONNECT_S = 1.0
"""Pause between a subscriber's attempts to reach Redis again."""


def coach_channel(coach_id: uuid.UUID) -> str:
    """The channel of a coach's dashboard."""
    return f"coach:{coach_id}"


def client_channel(client_id: uuid.UUID) -> str:
    """The channel of a client's widget."""
    return f"client:{client_id}"


def message_event(message: Message, *, client_view: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``message`` event; ``client_view`` replaces the metadata for the client's channel. A client message
    carries the widget's own ``client_message_id`` (the tab that sent it knows its bubble by it)."""
    return {
        "type": "message",
        "conversation_id": str(message.conversation_id),
        "message": {
            "id": str(message.id),
            "sender_type": message.sender_type,
            "text": message.text,
            "created_at": message.created_at.isoformat(),
            "client_message_id": message.client_message_id,
            "citations": message.citations if client_view is None else client_citations(message.citations),
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

    async def end_widget_sockets(self, client_id: uuid.UUID) -> None:
        """Close the client's open widget sockets, in every web process (:data:`LINK_REVOKED`): their token
        stopped working. Best-effort like every event; a socket also checks its token before each message it
        stores."""
        await self.publish({"type": LINK_REVOKED}, client_id=client_id)


class ReconnectingPubSubBackend(RedisChannelsPubSubBackend):
    """Litestar's Redis pub/sub channels backend (for :class:`litestar.channels.ChannelsPlugin`) that rides
    out a Redis outage: the channels wanted are remembered, a subscribe or unsubscribe while Redis is down
    succeeds (the widget's socket still opens and chats, without live events), and the listener, instead of
    ending at the first connection error, reconnects every :data:`RECONNECT_S` and subscribes to every
    wanted channel on a fresh connection. Events published during the outage are lost (pub/sub keeps no
    history; pages reload the state over HTTP)."""

    def __init__(self, *, redis: Redis, stream_sleep_no_subscriptions: int = 1) -> None:
        super().__init__(redis=redis, stream_sleep_no_subscriptions=stream_sleep_no_subscriptions)
        self._current: PubSub | None = None
        self._wanted: set[str] = set()
        self._broken = False

    @property
    def _pub_sub(self) -> PubSub:
        if self._current is None:
            self._current = self._redis.pubsub()
        return self._current

    def _lost(self, exc: BaseException) -> None:
        if not self._broken:
            log.warning("live events: Redis unavailable, resubscribing when it is back: %r", exc)
        self._broken = True

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe to ``channels`` (remembered; while Redis is down, subscribed once it is back)."""
        channels = list(channels)
        self._wanted.update(channels)
        if not self._broken:
            try:
                await super().subscribe(channels)
                return
            except UNAVAILABLE as exc:
                self._lost(exc)
        self._has_subscribed.set()  # the listener restores the subscriptions

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        """Stop listening on ``channels`` (never raises for Redis: the next connection leaves them out)."""
        channels = list(channels)
        self._wanted.difference_update(channels)
        if not self._broken:
            try:
                await super().unsubscribe(channels)
                return
            except UNAVAILABLE as exc:
                self._lost(exc)
        if not self._wanted:
            self._has_subscribed.clear()

    async def _restore(self) -> bool:
        """A fresh pub/sub connection subscribed to every wanted channel; ``False`` while Redis is down."""
        old, self._current = self._current, None
        if old is not None:
            with suppress(Exception):
                await old.aclose()  # type: ignore[no-untyped-call]
        try:
            if self._wanted:
                await self._pub_sub.subscribe(*self._wanted)
        except UNAVAILABLE:
            return False
        self._broken = False
        log.warning("live events: Redis is back, %d channels resubscribed", len(self._wanted))
        return True

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        """Events of the subscribed channels as ``(channel, data)``, for as long as the app runs (Redis
        errors are waited out, see the class)."""
        while True:
            await self._has_subscribed.wait()
            if self._broken and not await self._restore():
                await asyncio.sleep(RECONNECT_S)
                continue
            pubsub = self._pub_sub
            try:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self._stream_sleep_no_subscriptions
                )
            except UNAVAILABLE as exc:
                self._lost(exc)
                await asyncio.sleep(RECONNECT_S)
                continue
            if message is None:
                continue
            channel: str = message["channel"].decode()
            # as Litestar's backend: a message can arrive for a channel being unsubscribed
            if channel.encode() in pubsub.channels.keys() - pubsub.pending_unsubscribe_channels:
                yield channel, message["data"]
