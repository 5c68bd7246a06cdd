"""The exact-match response cache, in Redis.

A reply is reused only for exactly the same request: the key hashes the coach, the coach's cache epoch, the
model (and model version), the persona, the temperature and the whole normalised prompt. The prompt holds
the client's memory and conversation, so a cached reply never crosses into another client's context; two
requests share an entry only when everything the model would see is the same (typically a first question
with no history or memory). Invalidation:

- persona, model, model version or temperature change → a different key (the old entries expire);
- the coach's documents change → :attr:`app.db.models.Coach.cache_epoch` is bumped
  (:class:`app.rag.service.DocumentService`), so every older key is unreachable;
- :meth:`ResponseCache.invalidate` drops a coach's entries at once;
- a client's thumbs-down on a reply :meth:`ResponseCache.reject`-s its entry: the next client asking the same
  gets a new answer, and for the rest of the TTL no reply is cached under that key again (the same prompt
  tends to bring the same answer back);
- each entry lives ``Coach.response_cache_ttl_seconds`` (0 turns the cache off).

Hits and misses are counted per coach and UTC day (kept :data:`STATS_RETENTION_DAYS`) for the learning
dashboard's hit rate.

The cache is an optimisation the chat turn must not depend on: with Redis down (or slower than
:data:`OP_TIMEOUT_S`) a look-up is a miss and a failed store is logged, so the client still gets the model's
reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.db.outbox import UNAVAILABLE
from app.llm.base import ChatMessage

log = logging.getLogger(__name__)

PREFIX = "opencoach:response-cache"
OP_TIMEOUT_S = 1.0
"""Seconds a look-up or store may take before the cache is skipped (Redis hung or unreachable)."""
STATS_RETENTION_DAYS = 400
_REJECTED = "rejected"
"""The one key of a rejected entry's mark (:meth:`ResponseCache.reject`)."""
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Unicode NFKC, runs of whitespace collapsed to one space, ends stripped. Case is kept: it can change
    what a reply should say (names, emphasis)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


@dataclass(frozen=True)
class CachedReply:
    """A cached AI reply and the citations it was sent with."""

    reply: str
    citations: list[dict[str, Any]]


@dataclass(frozen=True)
class CacheStats:
    """Cache look-ups of one coach over ``days`` UTC days: totals and ``per_day`` ``(day, hits, misses)``."""

    hits: int
    misses: int
    per_day: list[tuple[date, int, int]]
    available: bool = True
    """``False``: Redis was out of reach, the figures are unknown (not zero)."""

    @property
    def hit_rate(self) -> float | None:
        """hits / look-ups, ``None`` when there was no look-up."""
        total = self.hits + self.misses
        return self.hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        """JSON form: ``{"hits","misses","hit_rate","per_day":[{"day","hits","misses"}],"available"}``."""
        return {
            "available": self.available,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hit_rate,
            "per_day": [{"day": day.isoformat(), "hits": h, "misses": n} for day, h, n in self.per_day],
        }


async def delete_matching(redis: Redis, pattern: str) -> int:
    """Delete every Redis key matching the glob ``pattern`` (SCAN, in batches of 500); returns how many."""
    deleted = 0
    batch: list[bytes | str] = []
    async for key in redis.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 500:
            deleted += await redis.delete(*batch)
            batch.clear()
    if batch:
        deleted += await redis.delete(*batch)
    return deleted


async def rewrite_append_only_file(redis: Redis) -> str:
    """Ask Redis to rewrite its append-only file (``BGREWRITEAOF``) after deleted keys held clients' words: with
    ``appendonly yes`` (the embedded server's and ``deploy/compose.yaml``'s setting) the file keeps every write it
    logged, the deleted values too, until it is rewritten from what the keys hold now.

    Returns ``"rewrite requested"`` (started, or scheduled after a snapshot in progress), ``"append-only file
    off"`` (nothing to rewrite), or ``"not requested: <error>"``: a rewrite already in progress (it started before
    the delete, so it keeps what was deleted until the next one), a managed Redis that disallows the command,
    Redis out of reach. Those are logged, never raised: the erasure itself is done."""
    try:
        persistence = await redis.info("persistence")
        if not persistence.get("aof_enabled"):
            return "append-only file off"
        await redis.bgrewriteaof()  # type: ignore[no-untyped-call]
    except (RedisError, OSError) as exc:
        log.warning("the Redis append-only file was not rewritten after an erasure: %s", _error(exc))
        return f"not requested: {_error(exc)}"
    return "rewrite requested"


async def save_snapshot_again(redis: Redis) -> str:
    """Ask Redis for a new RDB snapshot (``BGSAVE SCHEDULE``) after deleted keys held clients' words: with
    snapshots on (``save`` rules: Redis's default, which ``deploy/compose.yaml``'s server keeps; the embedded one
    takes none) ``dump.rdb`` keeps the deleted values until the next snapshot, which a quiet Redis may not take for
    an hour.
    ``SCHEDULE`` waits for an append-only rewrite in progress (:func:`rewrite_append_only_file`) instead of
    failing. A Redis with no ``save`` rule writes no snapshot, and none is asked for: it would put every key on
    disk.

    Returns ``"snapshot requested"``, ``"snapshots off"``, or ``"not requested: <error>"``: a snapshot already in
    progress (it started before the delete; the next rule-driven one drops them), a managed Redis that disallows
    ``CONFIG`` or ``BGSAVE``, Redis out of reach. Those are logged, never raised: the erasure itself is done."""
    try:
        if not (await redis.config_get("save")).get("save"):
            return "snapshots off"
        await redis.bgsave(schedule=True)
    except (RedisError, OSError) as exc:
        log.warning("no Redis snapshot was requested after an erasure: %s", _error(exc))
        return f"not requested: {_error(exc)}"
    return "snapshot requested"


def _check_owner(coach_id: uuid.UUID, key: str) -> None:
    """Raise ``ValueError`` unless ``key`` is one of ``coach_id``'s cache keys."""
    if not key.startswith(f"{PREFIX}:{coach_id}:"):
        raise ValueError("the cache key belongs to another coach")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class ResponseCache:
    """Cached AI replies keyed on coach, model version, persona and the normalised full prompt."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @staticmethod
    def key(
        *,
        coach_id: uuid.UUID,
        cache_epoch: int,
        model: str,
        model_version_id: str | None,
        persona: str,
        temperature: float,
        messages: Sequence[ChatMessage],
    ) -> str:
        """The entry's key: ``<prefix>:<coach id>:<sha256 hex>`` of the canonical JSON of every argument, the
        persona and message contents :func:`normalise`-d."""
        canonical = json.dumps(
            {
                "epoch": cache_epoch,
                "model": model,
                "model_version": model_version_id,
                "persona": normalise(persona),
                "temperature": round(temperature, 4),
                "messages": [[msg["role"], normalise(msg["content"])] for msg in messages],
            },
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        )
        return f"{PREFIX}:{coach_id}:{hashlib.sha256(canonical.encode()).hexdigest()}"

    @staticmethod
    def _stats_key(coach_id: uuid.UUID, day: date) -> str:
        return f"{PREFIX}-stats:{coach_id}:{day.isoformat()}"

    async def get(self, coach_id: uuid.UUID, key: str) -> CachedReply | None:
        """The cached reply for ``key`` (``None`` on a miss); counts the hit or miss for today (UTC). Redis
        unavailable is a miss (logged; not counted, there is nowhere to count it)."""
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                raw = await self._redis.get(key)
                stats = self._stats_key(coach_id, datetime.now(UTC).date())
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hincrby(stats, "hits" if raw is not None else "misses", 1)
                    pipe.expire(stats, STATS_RETENTION_DAYS * 86400)
                    await pipe.execute()
        except UNAVAILABLE as exc:
            log.warning("response cache look-up skipped (a miss), Redis unavailable: %s", _error(exc))
            return None
        if raw is None:
            return None
        entry = json.loads(raw)
        return None if entry.get(_REJECTED) else CachedReply(entry["reply"], entry["citations"])

    async def put(self, coach_id: uuid.UUID, key: str, reply: str, citations: list[dict[str, Any]], ttl_s: int) -> None:
        """Store ``reply`` under ``key`` for ``ttl_s`` seconds (``ttl_s`` ≤ 0: nothing is stored), unless the key
        holds an entry already: another turn's reply, or a :meth:`reject`-ed one's mark. ``coach_id`` must be the
        one ``key`` was made for (it is checked: ``ValueError``). Redis unavailable: nothing is stored and the
        failure is logged (the reply was already sent)."""
        if ttl_s <= 0:
            return
        _check_owner(coach_id, key)
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                await self._redis.set(key, json.dumps({"reply": reply, "citations": citations}), ex=ttl_s, nx=True)
        except UNAVAILABLE as exc:
            log.warning("response cache store skipped, Redis unavailable: %s", _error(exc))

    async def reject(self, coach_id: uuid.UUID, key: str, ttl_s: int) -> None:
        """A client's thumbs-down on the reply cached under ``key``: the entry is replaced by a mark that reads as
        a miss and that :meth:`put` does not overwrite, for ``ttl_s`` seconds (``ttl_s`` ≤ 0, the cache is off
        now: the entry is only deleted). ``ValueError`` when ``key`` is not ``coach_id``'s. Redis unavailable:
        logged, the entry stays until it expires."""
        _check_owner(coach_id, key)
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                if ttl_s > 0:
                    await self._redis.set(key, json.dumps({_REJECTED: True}), ex=ttl_s)
                else:
                    await self._redis.delete(key)
        except UNAVAILABLE as exc:
            log.warning("response cache entry not rejected, Redis unavailable: %s", _error(exc))

    async def invalidate(self, coach_id: uuid.UUID, *, with_stats: bool = False) -> int:
        """Delete every cached reply of the coach (SCAN over its key prefix), and its hit/miss counters too with
        ``with_stats`` (the coach's account is deleted); returns how many keys were deleted."""
        deleted = await delete_matching(self._redis, f"{PREFIX}:{coach_id}:*")
        if with_stats:
            deleted += await delete_matching(self._redis, f"{PREFIX}-stats:{coach_id}:*")
        return deleted

    async def stats(self, coach_id: uuid.UUID, *, days: int = 30) -> CacheStats:
        """Hits and misses over the last ``days`` UTC days (today included), oldest day first; with Redis out of
        reach, none and ``available`` false (logged)."""
        today = datetime.now(UTC).date()
        span = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
        try:
            async with asyncio.timeout(OP_TIMEOUT_S), self._redis.pipeline(transaction=False) as pipe:
                for day in span:
                    pipe.hmget(self._stats_key(coach_id, day), ["hits", "misses"])
                rows = await pipe.execute()
        except UNAVAILABLE as exc:
            log.warning("response cache figures not read, Redis unavailable: %s", _error(exc))
            return CacheStats(0, 0, [], available=False)
        per_day = [(day, int(h or 0), int(n or 0)) for day, (h, n) in zip(span, rows, strict=True)]
        return CacheStats(sum(h for _, h, _ in per_day), sum(n for _, _, n in per_day), per_day)
