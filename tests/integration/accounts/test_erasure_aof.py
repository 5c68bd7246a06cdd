"""An erasure's deleted Redis keys leave no copy in Redis's files on disk: the purge job asks Redis to rewrite its
append-only file (``BGREWRITEAOF``) and to take a new snapshot (``BGSAVE SCHEDULE``), against the real embedded
Redis (``appendonly yes`` and ``save 60 1``, as ``app.core.runtime`` starts it; ``deploy/compose.yaml`` keeps Redis's
default ``save`` rules); a Redis that refuses a command, or keeps no such file, does not fail the erasure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from app.core.runtime import Services
from app.learning.cache import rewrite_append_only_file, save_snapshot_again
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


async def snapshot_bytes(redis: Redis) -> bytes:
    """The server's RDB snapshot (``dbfilename`` in ``dir``), empty when there is none."""
    config = await redis.config_get("*")
    path = Path(config["dir"]) / config["dbfilename"]
    return path.read_bytes() if path.is_file() else b""


async def test_after_an_erasure_the_snapshot_no_longer_holds_the_clients_words(
    http: httpx.AsyncClient,
    services: Services,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """With snapshots on (``deploy/compose.yaml``'s Redis keeps the default ``save`` rules), ``dump.rdb`` kept a
    deleted failure pattern until the next rule-driven snapshot, up to an hour on a quiet Redis; the purge now asks
    for one at once."""
    coach = await make_coach("Snapshot Coach")
    client = await make_client(http, coach, "Erased")
    canary = f"canary{uuid.uuid4().hex[:12]}".encode()  # 18 bytes: below RDB's LZF threshold, stored as is
    key = f"{FAILURE_PATTERNS_PREFIX}:{coach.coach_id}:rdb-test"
    redis = Redis.from_url(services.redis_url)
    rules = (await redis.config_get("save"))["save"]
    try:
        await redis.config_set("save", "3600 1")  # Redis's first default rule: no snapshot within this test
        await redis.set(key, canary)
        await until_no_snapshot_running(redis)  # SAVE refuses while a background save runs
        await redis.save()
        assert canary in await snapshot_bytes(redis), "the snapshot holds the value"

        deleted = await http.delete(f"/api/v1/clients/{client['id']}", headers=coach.headers)
        assert deleted.status_code == 204, deleted.text
        await run_jobs()  # the purge job: the key, the rewrite, the snapshot

        assert not await redis.exists(key)
        await until_no_snapshot_running(redis)
        assert canary not in await snapshot_bytes(redis), "a new snapshot dropped the deleted value"
    finally:
        await redis.config_set("save", rules)
        await redis.aclose()


async def until_no_snapshot_running(redis: Redis, seconds: float = 30) -> None:
    """Wait until Redis runs no background save, nor has one scheduled after an append-only rewrite."""
    for _ in range(int(seconds / 0.2)):
        persistence = await redis.info("persistence")
        if not persistence["rdb_bgsave_in_progress"] and not persistence["aof_rewrite_in_progress"]:
            await asyncio.sleep(0.2)  # a save scheduled behind the rewrite starts at the next cron tick
            if not (await redis.info("persistence"))["rdb_bgsave_in_progress"]:
                return
        await asyncio.sleep(0.2)
    raise AssertionError("Redis was still saving")


@pytest.mark.parametrize("save", [["60", "1"], [""]])
async def test_a_redis_that_refuses_the_snapshot_or_takes_none_never_fails_the_erasure(
    tmp_path: Path, save: list[str]
) -> None:
    server = RedisProcess(tmp_path / "redis", "--save", *save, "--rename-command", "BGSAVE", "")
    server.start()
    redis = Redis.from_url(server.url)
    try:
        outcome = await save_snapshot_again(redis)
        await asyncio.sleep(0.3)
        written = (tmp_path / "redis" / "dump.rdb").exists()  # before the shutdown, which saves with a rule
    finally:
        await redis.aclose()
        server.stop()
    if save != [""]:  # a managed Redis that disallows the command: logged, not raised
        assert outcome.startswith("not requested: ResponseError") and "bgsave" in outcome.lower()
    else:
        assert outcome == "snapshots off"
    assert not written


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
