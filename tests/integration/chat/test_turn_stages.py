"""The turn times its own stages (app.chat.turn.timing.Stages): the coach sees them in the stored reply's
metadata, ``bench/chat.py --instant`` reads them from the ``turn stages`` log line, the client never sees them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat.turn import gather
from app.core.config import Settings
from app.learning.interventions import InterventionService
from tests.integration.handoff.test_handoff_flow import Setup, chat, new_setup, transcript
from tests.openai_wire import mock_chat_endpoint

__all__ = ["new_setup"]

BEFORE_PERSIST = {
    "receive",
    "admission",
    "intake",
    "intake.embed",
    "intake.risk",
    "intake.episode",
    "gather",
    "gather.passages",
    "gather.memory",
    "gather.learning",
    "generate.prompt",
    "generate.cache",
    "generate.model",
}
"""Stages finished when the reply is stored (``generate`` itself ends with the output checks, after it)."""


@pytest.fixture
def model() -> Iterator[respx.MockRouter]:
    with mock_chat_endpoint(["Start with", " one task."], (60, 5)) as router:
        yield router


async def test_the_coach_sees_the_stages_and_the_log_has_all_of_them(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = await new_setup("Stages Coach")
    with caplog.at_level(logging.INFO, logger="app.chat.turn.pipeline"):
        body = await chat(http, setup, "How do I start my mornings with more focus?")

    assert body["reply"] == "Start with one task." and "stages" not in body["metadata"]
    [ai] = [m for m in await transcript(http, setup, body["conversation_id"]) if m["id"] == body["message_id"]]
    stored = ai["metadata"]["stages"]
    assert set(stored) >= BEFORE_PERSIST and all(ms >= 0 for ms in stored.values())
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("turn stages ")]
    logged = json.loads(line.removeprefix("turn stages "))
    assert logged["message_id"] != body["message_id"]  # the client's message the turn answered
    assert BEFORE_PERSIST | {"generate", "persist", "after_commit"} <= set(logged["stages"])


async def test_passages_memory_and_few_shots_are_read_concurrently(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each of the three lookups waits until the other two have started: read one after another (on main, in
    one transaction) the first would wait alone until the barrier's time-out, and the turn would apologise."""
    barrier = asyncio.Barrier(3)
    sessions: list[AsyncSession] = []

    def meeting(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            sessions.append(next(a for a in args if isinstance(a, AsyncSession)))
            async with asyncio.timeout(10):
                await barrier.wait()
            return await original(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(gather, "retrieve", meeting(gather.retrieve))
    monkeypatch.setattr(gather, "context_for", meeting(gather.context_for))
    monkeypatch.setattr(InterventionService, "similar", meeting(InterventionService.similar))
    setup = await new_setup("Concurrent Coach")
    body = await chat(http, setup, "How do I start my mornings with more focus?")

    assert body["reply"] == "Start with one task."
    assert len(sessions) == 3 and len({id(s) for s in sessions}) == 3  # one session (connection) each


async def test_turns_past_the_concurrency_limit_wait_for_a_slot_and_are_all_answered(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:
    """Admission control: two more turns than ``TURN_CONCURRENCY`` at once, each of another coach (one coach's
    turns stop at ``TURN_CONCURRENCY_PER_COACH``: test_turn_admission.py). Each turn's passage lookup waits (up
    to 2 s) for a turn beyond the limit to join it: without the slots all of them would be inside at once; with
    them the last two wait for a slot, and every turn is still answered."""
    limit = settings.turn_concurrency
    inside, most = 0, 0
    over_limit = asyncio.Event()

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        if inside > limit:
            over_limit.set()
        try:
            async with asyncio.timeout(2):
                await over_limit.wait()
        except TimeoutError:
            pass
        finally:
            inside -= 1
        return await original(*args, **kwargs)

    original = gather.retrieve
    monkeypatch.setattr(gather, "retrieve", counted)
    setups = [await new_setup(f"Busy Coach {n}") for n in range(limit + 2)]
    bodies = await asyncio.gather(
        *(chat(http, setup, f"How do I keep going, day {n}?") for n, setup in enumerate(setups))
    )

    assert most == limit and not over_limit.is_set()
    assert [b["reply"] for b in bodies] == ["Start with one task."] * (limit + 2)


async def test_a_turn_handed_to_the_coach_after_retrieval_logs_its_persist_stage(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A turn whose confidence is under the coach's threshold (a high-stakes topic) opens a handoff instead of
    calling the model: the time it takes to store it (the handoff, its brief, the notice) is the ``persist``
    stage, so the turn's logged stages still add up to the turn (``bench/chat.py`` sums them)."""
    setup = await new_setup(
        "Unsure Coach", handoff_mode="auto", confidence_threshold=0.9, high_stakes_topics=["mornings"]
    )
    with caplog.at_level(logging.INFO, logger="app.chat.turn.pipeline"):
        body = await chat(http, setup, "How do I start my mornings with more focus?")

    assert body["handoff"]["reason"] == "low_confidence"
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("turn stages ")]
    stages = json.loads(line.removeprefix("turn stages "))["stages"]
    assert {"gather", "persist", "after_commit"} <= set(stages) and "generate" not in stages
    assert stages["persist"] > 0
