"""An erasure's deleted Redis keys leave no copy in Redis's append-only file: the purge job asks Redis to rewrite
it (``BGREWRITEAOF``), against the real embedded Redis (``appendonly yes``, as ``app.core.runtime`` starts it and
``deploy/compose.yaml`` configures it); a Redis that refuses the command does not fail the erasure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from app.core.runtime import Services
from app.learning.cache import rewrite_append_only_file
from app.learning.dashboard import FAILURE_PATTERNS_PREFIX
from tests.conftest import Coach, make_client
from tests.redis_process import RedisProcess


async def append_only_bytes(redis: Redis) -> bytes:
    """Everything in the server's append-only file(s): ``appendfilename`` in ``dir`` (Redis 6), or every file of
    ``appenddirname`` (Redis 7's multi-part file)."""
    config = await redis.config_get("*")
    directory = Path(config["dir"])
    paths = [directory / config["appendfilename"]]
    if config.get("appenddirname"):
        paths += sorted((directory / config["appenddirname"]).glob("*"))
    return b"".join(path.read_bytes() for path in paths if path.is_file())


async def until_aof(redis: Redis, holds: Callable[[bytes], bool], seconds: float = 30) -> bool:
    """Whether the append-only file comes to satisfy ``holds`` within ``seconds`` (a rewrite runs in a child)."""
    for _ in range(int(seconds / 0.2)):
        if holds(await append_only_bytes(redis)):
            return True
        await asyncio.sleep(0.2)
    return False


async def test_after_an_erasure_the_append_only_file_no_longer_holds_the_clients_words(
    http: httpx.AsyncClient,
    services: Services,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    coach = await make_coach("AOF Coach")
    client = await make_client(http, coach, "Erased")
    canary = f"canary{uuid.uuid4().hex[:12]}".encode()
    redis = Redis.from_url(services.redis_url)
    try:
        assert (await redis.info("persistence"))["aof_enabled"], "the embedded Redis runs with appendonly yes"
        # a failure pattern quoting the client, as the learning dashboard stores them
        await redis.set(f"{FAILURE_PATTERNS_PREFIX}:{coach.coach_id}:aof-test", canary)
        assert await until_aof(redis, lambda aof: canary in aof), "the SET is logged in the append-only file"

        deleted = await http.delete(f"/api/v1/clients/{client['id']}", headers=coach.headers)
        assert deleted.status_code == 204, deleted.text
        await run_jobs()  # the purge job: the key, then the rewrite

        assert not await redis.exists(f"{FAILURE_PATTERNS_PREFIX}:{coach.coach_id}:aof-test")
        assert await until_aof(redis, lambda aof: canary not in aof), "the rewrite dropped the deleted value"
    finally:
        await redis.aclose()


@pytest.mark.parametrize("aof", ["yes", "no"])
async def test_a_redis_that_refuses_the_rewrite_or_keeps_no_file_never_fails_the_erasure(
    tmp_path: Path, aof: str
) -> None:
    server = RedisProcess(tmp_path / "redis", "--appendonly", aof, "--rename-command", "BGREWRITEAOF", "")
    server.start()
    redis = Redis.from_url(server.url)
    try:
        outcome = await rewrite_append_only_file(redis)
    finally:
        await redis.aclose()
        server.stop()
    if aof == "yes":  # a managed Redis that disallows the command: logged, not raised
        assert outcome.startswith("not requested: ResponseError") and "bgrewriteaof" in outcome.lower()
    else:
        assert outcome == "append-only file off"
