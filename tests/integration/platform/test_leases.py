"""Leases in Redis (:mod:`app.db.leases`): the ingestion slots' and the insight extraction's short locks, renewed
while their holder runs."""

from __future__ import annotations

import asyncio
import uuid

from app.container import Container
from app.db.leases import leased


async def test_a_lease_is_renewed_while_held_refused_to_a_second_holder_without_waiting_and_released(
    container: Container,
) -> None:
    """:func:`app.db.leases.leased`: held past its lifetime while its holder runs (renewed), not given to a
    second holder (who does not wait for it), gone once the holder is done."""
    key = f"test-lease:{uuid.uuid4()}"
    async with leased(container.redis.lock(key, timeout=0.6)) as held:
        assert held
        await asyncio.sleep(1.2)  # twice its lifetime
        assert await container.redis.pttl(key) > 0
        async with leased(container.redis.lock(key, timeout=0.6)) as second:
            assert not second
    assert not await container.redis.exists(key)
