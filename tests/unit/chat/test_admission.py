"""The turn slots (:class:`app.chat.turn.admission.FairSlots`): coaches are served in turn, each coach's turns in
the order they came, one coach holds at most its cap while another coach takes a free slot at once, a freed slot
goes straight to a waiter, and a cancelled waiter neither keeps nor loses a slot."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.chat.turn.admission import FairSlots
from app.core.config import Settings

BUSY, QUIET, THIRD = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


async def queue_up(slots: FairSlots, order: list[str], *waiters: tuple[uuid.UUID, str]) -> list[asyncio.Task[None]]:
    """Start a task per ``(coach, name)`` that takes a slot, records its name and keeps the slot until it is
    cancelled; returns once all of them are waiting (in the given order)."""

    async def hold(coach: uuid.UUID, name: str) -> None:
        await slots.acquire(coach)
        order.append(name)
        try:
            await asyncio.Event().wait()
        finally:
            slots.release(coach)

    tasks = []
    for coach, name in waiters:
        tasks.append(asyncio.create_task(hold(coach, name), name=name))
        await asyncio.sleep(0)
    return tasks


async def release_one(tasks: list[asyncio.Task[None]], holder: str) -> None:
    """End the task named ``holder`` (it holds the slot) and let the next waiter take it."""
    [task] = [t for t in tasks if not t.done() and t.get_name() == holder]
    task.cancel()
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_coachs_burst_waits_behind_its_own_turns_not_in_front_of_another_coachs() -> None:
    slots, order = FairSlots(1), []
    tasks = await queue_up(slots, order, *((BUSY, f"busy-{n}") for n in range(5)), (QUIET, "quiet-1"))
    assert order == ["busy-0"] and slots.locked(QUIET)
    for _ in range(5):
        await release_one(tasks, order[-1])
    # first come first served would have run quiet-1 last
    assert order == ["busy-0", "busy-1", "quiet-1", "busy-2", "busy-3", "busy-4"]


async def test_coaches_take_turns_and_each_coachs_turns_keep_their_order() -> None:
    slots, order = FairSlots(1), []
    waiters = [(THIRD, "t-0"), (BUSY, "b-1"), (BUSY, "b-2"), (QUIET, "q-1"), (BUSY, "b-3"), (QUIET, "q-2")]
    tasks = await queue_up(slots, order, *waiters)
    for _ in range(len(waiters) - 1):
        await release_one(tasks, order[-1])
    assert order == ["t-0", "b-1", "q-1", "b-2", "q-2", "b-3"]


async def test_free_slots_are_taken_at_once_and_come_back() -> None:
    slots = FairSlots(2)
    await slots.acquire(BUSY)
    assert not slots.locked(BUSY) and not slots.locked(QUIET)
    await slots.acquire(QUIET)
    assert slots.locked(BUSY) and slots.locked(THIRD)
    slots.release(BUSY)
    slots.release(QUIET)
    await asyncio.wait_for(slots.acquire(BUSY), 1)
    await asyncio.wait_for(slots.acquire(BUSY), 1)
    assert slots.locked(BUSY)


async def test_a_coach_at_its_cap_waits_while_another_coach_takes_a_free_slot_at_once() -> None:
    """The review's case: one coach's turns (a slow model) no longer take every slot. Its turns over the cap
    wait for one of its own to end, in the order they came; another coach's turn never waits for them."""
    slots, order = FairSlots(4, per_key=2), []
    tasks = await queue_up(slots, order, *((BUSY, f"busy-{n}") for n in range(6)))
    assert order == ["busy-0", "busy-1"]
    assert slots.locked(BUSY) and not slots.locked(QUIET)
    tasks += await queue_up(slots, order, (QUIET, "quiet-0"), (THIRD, "third-0"), (QUIET, "quiet-1"))
    assert order == ["busy-0", "busy-1", "quiet-0", "third-0"] and slots.locked(QUIET)
    await release_one(tasks, "quiet-0")  # the freed slot is QUIET's, not one of BUSY's over its cap
    assert order[-1] == "quiet-1"
    await release_one(tasks, "busy-0")
    await release_one(tasks, "busy-1")
    assert order[-2:] == ["busy-2", "busy-3"]
    await release_one(tasks, "third-0")  # BUSY is at its cap: the slot stays free for anybody else
    assert order[-1] == "busy-3" and not slots.locked(THIRD)
    await release_one(tasks, "busy-2")
    assert order[-1] == "busy-4"


async def test_with_a_cap_coaches_still_take_turns_and_keep_their_order() -> None:
    slots, order = FairSlots(2, per_key=1), []
    waiters = [(BUSY, "b-0"), (BUSY, "b-1"), (QUIET, "q-0"), (BUSY, "b-2"), (THIRD, "t-0"), (QUIET, "q-1")]
    tasks = await queue_up(slots, order, *waiters)
    assert order == ["b-0", "q-0"]
    for holder in ("b-0", "q-0", "b-1", "t-0"):
        await release_one(tasks, holder)
    assert order == ["b-0", "q-0", "b-1", "t-0", "q-1", "b-2"]


async def test_a_waiter_cancelled_while_waiting_leaves_the_queue_and_its_coach_keeps_its_place() -> None:
    slots, order = FairSlots(1), []
    tasks = await queue_up(slots, order, (THIRD, "t-0"), (QUIET, "q-1"), (BUSY, "b-1"), (QUIET, "q-2"))
    [gone] = [task for task in tasks if task.get_name() == "q-1"]
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await release_one(tasks, "t-0")
    await release_one(tasks, order[-1])
    assert order == ["t-0", "q-2", "b-1"]


async def test_a_waiter_cancelled_just_after_it_was_given_the_slot_passes_it_on() -> None:
    slots = FairSlots(1)
    await slots.acquire(BUSY)
    given = asyncio.create_task(slots.acquire(QUIET))
    after = asyncio.create_task(slots.acquire(THIRD))
    await asyncio.sleep(0)
    slots.release(BUSY)  # the slot goes to ``given``…
    given.cancel()  # …which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await given
    await asyncio.wait_for(after, 1)
    slots.release(THIRD)
    assert not slots.locked(QUIET)


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairSlots(0)
    with pytest.raises(ValueError, match="at least 1"):
        FairSlots(2, per_key=0)


def test_the_cap_defaults_to_half_the_slots_and_can_be_set() -> None:
    assert [Settings(turn_concurrency=n).turn_slots_per_coach() for n in (1, 2, 4, 5, 8)] == [1, 1, 2, 2, 4]
    assert Settings(turn_concurrency=4, turn_concurrency_per_coach=4).turn_slots_per_coach() == 4
