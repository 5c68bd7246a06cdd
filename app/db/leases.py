"""Leases in Redis: a redis-py :class:`~redis.asyncio.lock.Lock` taken without waiting, with a short lifetime that
its holder renews while it runs, so the lock of a killed process comes free by itself soon after (never a worker
slot held waiting for it, never a lock held for long by a process that is gone)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio.lock import Lock
from redis.exceptions import LockError, LockNotOwnedError

from app.db.outbox import UNAVAILABLE

log = logging.getLogger(__name__)


async def _renew(lock: Lock, lease_s: float) -> None:
    """Extend ``lock`` to ``lease_s`` seconds every third of that, until cancelled."""
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            try:
                await lock.reacquire()
            except LockNotOwnedError:  # it lapsed (a stalled event loop): take it back if no one else did
                await lock.acquire(blocking=False, token=lock.local.token)
        except (LockError, *UNAVAILABLE) as exc:  # Redis away for a moment: the next renewal tries again
            log.warning("renewing the lease %s failed: %s", lock.name, exc)


@contextlib.asynccontextmanager
async def leased(lock: Lock) -> AsyncIterator[bool]:
    """Hold ``lock`` for the ``async with`` block if it is free: yields ``True`` while holding it, renewed to its
    ``timeout`` (the lease, seconds; required) every third of that, and releases it at the end; yields ``False``,
    holding nothing, when another holder has it (no wait). Raises ``ValueError`` for a lock without a timeout and
    Redis errors from the acquisition."""
    lease_s = lock.timeout
    if lease_s is None:
        raise ValueError("a lease needs a lock with a timeout")
    if not await lock.acquire(blocking=False):
        yield False
        return
    renewal = asyncio.create_task(_renew(lock, lease_s))
    try:
        yield True
    finally:
        renewal.cancel()
        with contextlib.suppress(LockError, *UNAVAILABLE):  # lapsed meanwhile, or Redis away: it expires
            await lock.release()
