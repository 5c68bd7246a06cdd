"""Wall-clock timings of a turn's stages: the turn's own instrumentation (``bench/chat.py --instant`` reads it
from the ``turn stages`` log line; the coach sees it as the reply's ``stages`` metadata)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def ms_since(t0: float) -> float:
    """Milliseconds since ``time.perf_counter()`` returned ``t0``, to 0.1 ms."""
    return round((time.perf_counter() - t0) * 1000, 1)


class Stages:
    """Milliseconds (wall clock, 0.1 ms) spent in each named stage of one turn, in the order the stages ran.

    ``ms`` maps a stage name to its time; a stage timed twice adds up. Top-level names (``receive``,
    ``admission`` (the wait for a turn slot), ``intake``, ``gather``, ``generate``, ``persist``,
    ``after_commit``) do not overlap: they add up to the turn's wall clock but for the gaps between them. A
    dotted name is a part of the stage before the dot (``gather.passages`` is inside ``gather``); parts run
    concurrently each count their own wall clock, so they may add up to more than their stage."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as stage ``name`` (counted even when the block raises)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = round(self.ms.get(name, 0.0) + ms_since(t0), 1)


class Deadline:
    """A turn's deadline for its own work (retrieval and generation: ``LLM_TIMEOUT_SECONDS``), in event-loop time.

    :meth:`within` bounds a block; :meth:`stream` hands on a generator's items, each fetched within the
    deadline, and moves the deadline on by the time its consumer keeps each item (a socket send, a Telegram
    edit): that time is not the turn's. A timeout around a ``yield`` would instead cancel whatever the
    consumer awaits when it fires, outside the timeout's block, so no ``TimeoutError`` (and no apology) follows:
    the turn's task is cancelled. Raises ``TimeoutError`` from the block or the fetch that passes it."""

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.at = self._loop.time() + seconds

    def within(self) -> asyncio.Timeout:
        """An ``async with`` block that must end by the deadline."""
        return asyncio.timeout_at(self.at)

    async def stream(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items``, each fetched within the deadline; the consumer's time between them is added to it."""
        while True:
            async with self.within():
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    return
            handed = self._loop.time()
            yield item
            self.at += self._loop.time() - handed
