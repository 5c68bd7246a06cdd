"""Live updates: every logged-in page loads ``static/dashboard.js``, which listens to ``GET /dashboard/events``
(Server-Sent Events relaying the coach's channel of :mod:`app.handoff.live`) and refreshes the queue, the
nav badge, the open conversation and the crisis banner. Pub/sub keeps no history, so each page renders the
current state from the database first and the stream only carries what changes afterwards."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator

from litestar import get
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from app.deps import CoachId
from app.handoff.live import coach_channel
from app.web.dashboard.auth import CoachPage

KEEPALIVE_SECONDS = 15.0
"""How often the event stream sends a comment when nothing happens (keeps proxies from closing it)."""
SSE_RETRY_MS = 3000
"""How long a browser waits before reconnecting a dropped event stream."""


async def coach_event_stream(
    channels: ChannelsPlugin, coach_id: uuid.UUID, keepalive: float = KEEPALIVE_SECONDS
) -> AsyncGenerator[ServerSentEventMessage, None]:
    """The coach's live events as Server-Sent Events: first ``event: ready`` (sent once the subscription to
    ``coach:<coach_id>`` is active, with ``retry``), then each event of the channel as ``event: <type>`` and
    ``data: <the event's JSON>``, and a ``: keep-alive`` comment after ``keepalive`` seconds of silence.
    Runs until the client disconnects (Litestar then cancels the stream and the subscription ends)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    async with (
        channels.start_subscription([coach_channel(coach_id)]) as subscriber,
        subscriber.run_in_background(queue.put, join=False),
    ):
        yield ServerSentEventMessage(event="ready", data="{}", retry=SSE_RETRY_MS)
        while True:
            try:
                raw = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                yield ServerSentEventMessage(comment="keep-alive", data=None)
                continue
            try:
                kind = str(json.loads(raw).get("type") or "message")
            except (ValueError, AttributeError):
                continue
            yield ServerSentEventMessage(event=kind, data=raw.decode())


class EventPages(CoachPage):
    """The coach's live event stream."""

    @get("/events", media_type="text/event-stream")
    async def events(self, coach_id: CoachId, channels: NamedDependency[ChannelsPlugin]) -> ServerSentEvent:
        """Server-Sent Events of the coach's live channel (see :func:`coach_event_stream`): ``handoff``,
        ``alert``, ``message``, ``draft``; log-in required (a redirect to ``/login`` otherwise)."""
        return ServerSentEvent(coach_event_stream(channels, coach_id), headers={"Cache-Control": "no-cache"})
