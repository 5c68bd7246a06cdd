"""Admission control of the chat turn: a process's turn slots, shared fairly between tenants."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, OrderedDict, deque


class FairSlots:
    """At most ``slots`` holders at once, and at most ``per_key`` of them for one key (``acquire`` /
    ``release``, like :class:`asyncio.Semaphore`). A turn holds its slot until the coach's model answers, up to
    ``LLM_TIMEOUT_SECONDS``: without ``per_key`` one coach's slow model, or many clients of one coach at once,
    took every slot while the others were free and every other coach's turns waited behind them. A key at its
    cap waits even when slots are free; any other key takes a free slot at once.

    The waiters are served round robin across keys (the coaches) and in arrival order within a key: Nagle's fair
    queuing of sources (RFC 970, "On packet switches with infinite storage", 1985), which with one unit of work
    per turn is also deficit round robin (Shreedhar & Varghese, SIGCOMM 1995). A freed slot goes to the first
    key in the round that is under its cap (a key at its cap keeps its place), so a coach whose many clients
    send at once waits behind its own turns, not in front of every other coach's: with ``k`` coaches waiting, a
    coach's next turn gets one of the next ``k`` free slots it may take.

    A freed slot passes straight to the next waiter (no newcomer can take it in between). A waiter cancelled
    while waiting leaves the queue; one cancelled after it was given a slot passes the slot on."""

    def __init__(self, slots: int, per_key: int | None = None) -> None:
        """``per_key``: the most slots one key holds at once (``None``: ``slots``)."""
        if slots < 1 or (per_key is not None and per_key < 1):
            raise ValueError("slots and per_key must be at least 1")
        self._free = slots
        self._per_key = min(slots, per_key or slots)
        self._held: Counter[uuid.UUID] = Counter()
        self._waiting: OrderedDict[uuid.UUID, deque[asyncio.Future[None]]] = OrderedDict()

    def locked(self, key: uuid.UUID) -> bool:
        """Whether an ``acquire`` of ``key`` now would wait: no slot is free, ``key`` holds its cap, or turns of
        ``key`` wait already (a new one queues behind them)."""
        return self._free == 0 or self._held[key] >= self._per_key or key in self._waiting

    async def acquire(self, key: uuid.UUID) -> None:
        """Take a slot for ``key``'s work, waiting for its turn when none is free or ``key`` holds its cap."""
        if not self.locked(key):
            self._free -= 1
            self._held[key] += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # the slot was given just before the cancellation
                self.release(key)
            else:
                self._forget(key, future)
            raise

    def release(self, key: uuid.UUID) -> None:
        """Give back a slot ``key`` held: to the first waiter of the next key in turn that is under its cap
        (that key then goes to the back of the round if it has more waiting), or to the free slots."""
        if self._held[key] > 1:
            self._held[key] -= 1
        else:
            self._held.pop(key, None)
        while (waiter := self._next_in_turn()) is not None:
            queue = self._waiting[waiter]
            future = queue.popleft()
            if queue:
                self._waiting.move_to_end(waiter)
            else:
                del self._waiting[waiter]
            if not future.done():
                future.set_result(None)
                self._held[waiter] += 1
                return
        self._free += 1

    def _next_in_turn(self) -> uuid.UUID | None:
        """The first waiting key of the round that holds fewer slots than its cap."""
        return next((key for key in self._waiting if self._held[key] < self._per_key), None)

    def _forget(self, key: uuid.UUID, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is None or future not in queue:  # (already passed over by a release)
            return
        queue.remove(future)
        if not queue:
            del self._waiting[key]
