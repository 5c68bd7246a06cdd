"""Rate limits on authentication attempts (log-in, sign-up, password change), counted in Redis with the
``limits`` package's moving-window strategy, so every web process shares one count."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.errors import TooManyAttempts
from app.core.security import token_hash

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0
"""A Redis that does not answer within this long lets the attempt through (logged), like a cache miss."""


def limits_storage_uri(redis_url: str) -> str:
    """The ``limits`` asyncio storage URI of a ``redis://``, ``rediss://`` or ``unix://`` Redis URL."""
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class AuthThrottle:
    """Counts authentication attempts per client IP address and per account (e-mail address, lower-cased,
    keyed by its SHA-256) and refuses those over the limits (``AUTH_RATE_LIMIT_IP`` /
    ``AUTH_RATE_LIMIT_ACCOUNT``, e.g. ``"5/minute;30/hour"``: every item must hold).

    Every attempt counts, successful or not, so the answer's timing and the count say nothing about
    whether the account exists. Keys live in Redis under ``opencoach_auth``; a moving window keeps one
    timestamp per attempt (Redis list), so a burst at the end of one minute does not double up with the
    start of the next. If Redis is unreachable the attempt is allowed and a warning logged (the same
    stance as the response cache: an outage must not lock every coach out)."""

    def __init__(self, redis_url: str, per_ip: str, per_account: str) -> None:
        self._redis = Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
        storage = RedisStorage(
            limits_storage_uri(redis_url),
            implementation="redispy",
            key_prefix="opencoach_auth",
            connection_pool=self._redis.connection_pool,
        )
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_ip = parse_many(per_ip)
        self._per_account = parse_many(per_account)

    async def hit(self, *, ip: str, account: str | None) -> None:
        """Count one attempt from ``ip`` on ``account`` (``None``: no account named, e.g. a malformed form).

        Raises ``TooManyAttempts`` (429) with the whole seconds until the window that refused lets an
        attempt through again; a refused attempt is not counted."""
        checks: list[tuple[RateLimitItem, tuple[str, str]]] = [(item, ("ip", ip)) for item in self._per_ip]
        if account:
            key = ("account", token_hash(account.strip().lower()))  # no e-mail addresses in Redis key names
            checks += [(item, key) for item in self._per_account]
        try:
            for item, identifiers in checks:
                if not await self._limiter.hit(item, *identifiers):
                    stats = await self._limiter.get_window_stats(item, *identifiers)
                    raise TooManyAttempts(max(1, math.ceil(stats.reset_time - time.time())))
        except (RedisError, OSError) as exc:
            log.warning("auth rate limit not checked (Redis unavailable): %s", exc)

    async def close(self) -> None:
        """Close the Redis connections."""
        await self._redis.aclose()
