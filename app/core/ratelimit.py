"""Rate limits on authentication attempts (log-in, sign-up, password change), each client's chat messages,
each coach's Telegram enrolments and the alert e-mail confirmations sent by each coach and to each address,
counted in Redis with the ``limits`` package's moving-window strategy, so every process shares one count."""

from __future__ import annotations

import logging
import math
import time
import uuid

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


class Throttle:
    """Rate limits counted in Redis with the ``limits`` package's moving-window strategy (one timestamp per
    counted hit in a Redis list, so a burst at the end of one minute does not double up with the start of
    the next), under ``key_prefix``, so every process shares one count. If Redis is unreachable or does not
    answer within :data:`REDIS_TIMEOUT_S`, the hit is allowed and a warning logged (the same stance as the
    response cache: an outage must not lock everyone out)."""

    def __init__(self, redis_url: str, key_prefix: str) -> None:
        self._redis = Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
        storage = RedisStorage(
            limits_storage_uri(redis_url),
            implementation="redispy",
            key_prefix=key_prefix,
            connection_pool=self._redis.connection_pool,
        )
        self._limiter = MovingWindowRateLimiter(storage)

    async def _hit(self, checks: list[tuple[RateLimitItem, tuple[str, str]]], what: str) -> None:
        """Count one hit against every ``(limit, identifiers)`` of ``checks``, in order. Raises
        ``TooManyAttempts`` (429, "too many ``what``") with the whole seconds until the window that refused lets
        a hit through again; the limits after the one that refused are not counted."""
        try:
            for item, identifiers in checks:
                if not await self._limiter.hit(item, *identifiers):
                    stats = await self._limiter.get_window_stats(item, *identifiers)
                    raise TooManyAttempts(max(1, math.ceil(stats.reset_time - time.time())), what=what)
        except (RedisError, OSError) as exc:
            log.warning("rate limit on %s not checked (Redis unavailable): %s", what, exc)

    async def close(self) -> None:
        """Close the Redis connections."""
        await self._redis.aclose()


class AuthThrottle(Throttle):
    """Counts authentication attempts per client IP address and per account (e-mail address, lower-cased,
    keyed by its SHA-256) and refuses those over the limits (``AUTH_RATE_LIMIT_IP`` /
    ``AUTH_RATE_LIMIT_ACCOUNT``, e.g. ``"5/minute;30/hour"``: every item must hold), under ``opencoach_auth``
    in Redis. Every attempt counts, successful or not, so the answer's timing and the count say nothing about
    whether the account exists."""

    def __init__(self, redis_url: str, per_ip: str, per_account: str) -> None:
        super().__init__(redis_url, "opencoach_auth")
        self._per_ip = parse_many(per_ip)
        self._per_account = parse_many(per_account)

    async def hit(self, *, ip: str, account: str | None) -> None:
        """Count one attempt from ``ip`` on ``account`` (``None``: no account named, e.g. a malformed form).
        Raises ``TooManyAttempts`` (429, "too many attempts: try again in N s"); a refused attempt is not
        counted."""
        checks: list[tuple[RateLimitItem, tuple[str, str]]] = [(item, ("ip", ip)) for item in self._per_ip]
        if account:
            key = ("account", token_hash(account.strip().lower()))  # no e-mail addresses in Redis key names
            checks += [(item, key) for item in self._per_account]
        await self._hit(checks, "attempts")


class IdThrottle(Throttle):
    """Counts the hits of each id under ``key_prefix`` in Redis and refuses those over ``limits`` (e.g.
    ``"30/minute;300/hour"``: every item must hold), naming ``what`` is counted in its refusal. The container
    keeps two: each client's chat messages on every channel (``CHAT_RATE_LIMIT``: one client, or whoever holds
    a client's widget token or Telegram chat, cannot flood the coach's model, the database and the process's
    turn slots, which every tenant shares) and each coach's Telegram strangers who become clients
    (``TELEGRAM_ENROLLMENT_LIMIT``: open enrolment cannot be used to make clients without end)."""

    def __init__(self, redis_url: str, key_prefix: str, limits: str, what: str) -> None:
        super().__init__(redis_url, key_prefix)
        self._limits = parse_many(limits)
        self._what = what

    async def hit(self, key: uuid.UUID) -> None:
        """Count one hit of ``key``. Raises ``TooManyAttempts`` (429, "too many <what>: try again in N s"); a
        refused hit is not counted."""
        await self._hit([(item, ("id", str(key))) for item in self._limits], self._what)


def mailbox_key(email: str) -> str:
    """The key that counts ``email``'s mailbox: the address lower-cased, without an RFC 5233 sub-address
    (``+tag`` in the local part: ``me+1@example.com`` and ``Me+2@Example.com`` reach the same mailbox as
    ``me@example.com``), as its SHA-256 (no e-mail addresses in Redis key names). Providers' other aliases (Gmail's
    dots) count apart."""
    local, at, domain = email.strip().lower().rpartition("@")
    return token_hash(f"{local.split('+', 1)[0]}{at}{domain}")


class ConfirmationThrottle(Throttle):
    """Counts the alert e-mail confirmations sent (the worker e-mails a link to a coach's new alert address) per
    coach (``ALERT_EMAIL_CONFIRM_LIMIT``: one account cannot mail address after address) and per address, from
    every coach together (``ALERT_EMAIL_ADDRESS_LIMIT``: many accounts cannot mail-bomb one address; an address is
    its :func:`mailbox_key`), under ``opencoach_confirm`` in Redis. Each limit is in the ``limits`` notation, e.g.
    ``"5/hour;20/day"`` (every item must hold)."""

    def __init__(self, redis_url: str, per_coach: str, per_address: str) -> None:
        super().__init__(redis_url, "opencoach_confirm")
        self._per_coach = parse_many(per_coach)
        self._per_address = parse_many(per_address)

    async def hit(self, coach_id: uuid.UUID, email: str) -> None:
        """Count one confirmation e-mail from ``coach_id`` to ``email``: against the coach's limits first (a coach
        over them is refused without counting against the address), then the address's. Raises
        ``TooManyAttempts`` (429, "too many confirmation e-mails: try again in N s", or "… e-mails to this
        address …")."""
        await self._hit([(item, ("id", str(coach_id))) for item in self._per_coach], "confirmation e-mails")
        address = ("address", mailbox_key(email))
        await self._hit([(item, address) for item in self._per_address], "confirmation e-mails to this address")
