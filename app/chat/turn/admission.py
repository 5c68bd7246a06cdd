"""Admission control of the chat turn: a process's turn slots, shared fairly between tenants."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict, deque


class FairSlots:
    """At most ``slots`` holders at once (``acquire`` / ``release``, like :class:`asyncio.Semaphore`); when all
    are taken, the waiters are served round robin across keys (the coaches) and in arrival order within a key:
    Nagle's fair queuing of sources (RFC 970, "On packet switches with infinite storage", 1985), which with
    one unit of work per turn is also deficit round robin (Shreedhar & Varghese, SIGCOMM 1995). A coach whose
    many clients send at once thus waits behind its own turns, not in front of every other coach's: with ``k``
    coaches waiting, a coach's next turn gets one of the next ``k`` free slots.

    A freed slot passes straight to the next waiter (no newcomer can take it in between). A waiter cancelled
    while waiting leaves the queue; one cancelled after it was given a slot passes the slot on."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._free = slots
        self._waiting: OrderedDict[uuid.UUID, deque[asyncio.Future[None]]] = OrderedDict()

    def locked(self) -> bool:
        """Whether an ``acquire`` now would wait."""
        return self._free == 0

    async def acquire(self, key: uuid.UUID) -> None:
        """Take a slot for ``key``'s work, waiting for its turn when none is free."""
        if self._free > 0:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # the slot was given just before the cancellation
                self.release()
            else:
                self._forget(key, future)
            raise

    def release(self) -> None:
        """Give the slot back: to the first waiter of the next key in turn (that key then goes to the back of
        the round if it has more waiting), or to the free slots."""
        while self._waiting:
            key, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            if queue:
                self._waiting.move_to_end(key)
            else:
                del self._waiting[key]
            if not future.done():
                future.set_result(None)
                return
        self._free += 1

    def _forget(self, key: uuid.UUID, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is None or future not in queue:  # (already passed over by a release)
            return
        queue.remove(future)
        if not queue:
            del self._waiting[key]
