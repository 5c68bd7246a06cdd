"""One coach's slow model does not stall another coach's chat (``TURN_CONCURRENCY_PER_COACH``).

A turn holds its slot until the coach's model answers. Before the cap, six clients of a coach whose model took
90 s took all four of a process's turn slots, and another coach's reply waited 87.8 s instead of 0.17 s. Here
the slow coach's model answers only when the test lets it (:class:`HeldModel`): the other coach's turn must be
answered meanwhile, and the slow coach's turns over its cap wait (a crisis among them still answered at once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from app.core.config import Settings
from app.handoff.crisis import DEFAULT_CRISIS_RESOURCES, crisis_reply
from tests.conftest import make_client
from tests.integration.handoff.test_handoff_flow import DELTAS, REPLY, Setup, chat, new_setup
from tests.openai_wire import MOCK_BASE_URL, mock_openai, openai_sse, sse_response

__all__ = ["new_setup"]  # a fixture, used by name below

SLOW_MODEL = "slow-model"
"""The slow coach's model name: its completions wait for :attr:`HeldModel.release`."""
ANSWER_WAIT_S = 30
"""How long the test waits for a turn it expects now: a turn stuck behind the held ones never comes."""


@dataclass
class HeldModel:
    """The mocked OpenAI-compatible endpoint: :data:`SLOW_MODEL`'s completions wait for ``release``, every
    other model's answer at once. ``held``: completions waiting now; ``most``: the most at once."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    held: int = 0
    most: int = 0

    async def complete(self, request: httpx.Request) -> httpx.Response:
        """Answer one chat completion (streamed :data:`DELTAS`), after ``release`` for the slow model."""
        if json.loads(request.content)["model"] == SLOW_MODEL:
            async with self.changed:
                self.held += 1
                self.most = max(self.most, self.held)
                self.changed.notify_all()
            try:
                await self.release.wait()
            finally:
                self.held -= 1
        return sse_response(openai_sse(DELTAS, (120, 9)))

    async def holding(self, count: int) -> None:
        """Return once ``count`` slow completions wait."""
        async with asyncio.timeout(ANSWER_WAIT_S), self.changed:
            await self.changed.wait_for(lambda: self.held >= count)


@pytest.fixture
def model() -> Iterator[HeldModel]:
    with mock_openai() as router:
        held = HeldModel()
        router.route(host="127.0.0.1").pass_through()
        router.post(f"{MOCK_BASE_URL}/chat/completions", name="completions").mock(side_effect=held.complete)
        yield held
        held.release.set()


async def conversations(http: httpx.AsyncClient, setup: Setup) -> int:
    response = await http.get("/api/v1/conversations", headers=setup.coach.headers)
    assert response.status_code == 200, response.text
    return len(response.json())


async def test_a_coachs_slow_turns_do_not_delay_another_coachs_turn(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], model: HeldModel, settings: Settings
) -> None:
    cap = settings.turn_slots_per_coach()
    assert cap < settings.turn_concurrency
    slow = await new_setup("Slow Coach", llm_model=SLOW_MODEL, response_cache_ttl_seconds=0)
    quick = await new_setup("Quick Coach")
    tokens = [slow.widget_token] + [(await make_client(http, slow.coach))["widget_token"] for _ in range(5)]
    clients = [Setup(slow.coach, "", token) for token in tokens]
    waiting = [
        asyncio.create_task(chat(http, client, f"How do I keep going on day {n}?")) for n, client in enumerate(clients)
    ]
    await model.holding(cap)
    stored = 0
    async with asyncio.timeout(ANSWER_WAIT_S):  # every message of the slow coach stored, its turn admitted or queued
        while stored < len(clients):
            await asyncio.sleep(0.02)
            stored = await conversations(http, slow)

    body = await asyncio.wait_for(chat(http, quick, "How do I plan my week?"), ANSWER_WAIT_S)
    crisis = await asyncio.wait_for(chat(http, clients[0], "I want to end my life tonight"), ANSWER_WAIT_S)
    in_flight = model.held

    model.release.set()
    replies = await asyncio.wait_for(asyncio.gather(*waiting), ANSWER_WAIT_S)
    assert body["reply"] == REPLY, "the other coach's turn took a free slot while the slow coach's waited"
    assert in_flight == model.most == cap, "the slow coach held its cap, its other turns waited"
    assert crisis["reply"] == crisis_reply("Slow Coach", DEFAULT_CRISIS_RESOURCES), "screened while it waited"
    assert [reply["reply"] for reply in replies] == [REPLY] * len(clients), "every waiting turn answered after"
