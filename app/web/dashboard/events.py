"""Live updates: every logged-in page loads ``static/dashboard.js``, which listens to ``GET /dashboard/events``
(Server-Sent Events relaying the coach's channel of :mod:`app.handoff.live`) and refreshes the queue, the
nav badge, the open conversation and the crisis banner. Pub/sub keeps no history, so each page renders the
current state from the database first and the stream only carries what changes afterwards."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from litestar import Request, get
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from app.deps import CoachId
from app.handoff.live import coach_channel
from app.web.dashboard.auth import CoachPage
from app.web.sessions import DashboardSessionsDep

KEEPALIVE_SECONDS = 15.0
"""How often the event stream sends a comment when nothing happens (keeps proxies from closing it)."""
SSE_RETRY_MS = 3000
"""How long a browser waits before reconnecting a dropped event stream."""


async def coach_event_stream(
    channels: ChannelsPlugin,
    coach_id: uuid.UUID,
    session_alive: Callable[[], Awaitable[bool]],
    keepalive: float = KEEPALIVE_SECONDS,
) -> AsyncGenerator[ServerSentEventMessage, None]:
    """The coach's live events as Server-Sent Events: first ``event: ready`` (sent once the subscription to
    ``coach:<coach_id>`` is active, with ``retry``), then each event of the channel as ``event: <type>`` and
    ``data: <the event's JSON>``, and a ``: keep-alive`` comment after ``keepalive`` seconds of silence.
    Runs until the client disconnects (Litestar then cancels the stream and the subscription ends), or until
    ``session_alive`` says the dashboard session that opened it has ended (a log-out, a password change, the
    account deleted), checked before each event and keep-alive: the browser's reconnection then meets the
    log-in page."""
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
                if not await session_alive():
                    return
                yield ServerSentEventMessage(comment="keep-alive", data=None)
                continue
            if not await session_alive():
                return
            try:
                kind = str(json.loads(raw).get("type") or "message")
            except (ValueError, AttributeError):
                continue
            yield ServerSentEventMessage(event=kind, data=raw.decode())


class EventPages(CoachPage):
    """The coach's live event stream."""

    @get("/events", media_type="text/event-stream")
    async def events(
        self,
        request: Request[Any, Any, Any],
        coach_id: CoachId,
        channels: NamedDependency[ChannelsPlugin],
        dashboard_sessions: DashboardSessionsDep,
    ) -> ServerSentEvent:
        """Server-Sent Events of the coach's live channel (see :func:`coach_event_stream`): ``handoff``,
        ``alert``, ``message``, ``draft``; log-in required (a redirect to ``/login`` otherwise). The stream ends
        with the session that opened it."""
        alive = functools.partial(dashboard_sessions.alive, request.get_session_id())
        return ServerSentEvent(coach_event_stream(channels, coach_id, alive), headers={"Cache-Control": "no-cache"})
