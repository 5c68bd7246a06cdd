"""The dashboard's server-side sessions (Litestar's session middleware, data in Redis).

- A log-in or sign-up starts a session under a fresh random id and deletes the one the browser sent, so an
  id planted before log-in is worth nothing after it (session fixation; OWASP Session Management Cheat
  Sheet, "Renew the Session ID After Any Privilege Level Change").
- The session and CSRF cookies are ``HttpOnly`` and ``SameSite=Lax``, and ``Secure`` when ``PUBLIC_URL`` is https.
- Each coach's session ids are kept in a Redis set, renewed with every use of a session, so a password change
  ends the coach's other sessions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from litestar import Request
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.stores.redis import RedisStore
from litestar.types import Empty, Message, ScopeSession
from redis.asyncio import Redis

from app.core.config import Settings
from app.core.security import SecretBox
from app.core.validation import is_https
from app.web.errors import CSRF_COOKIE

SESSION_MAX_AGE_S = 14 * 24 * 3600
SESSION_NAMESPACE = "opencoach_sessions"
_ROTATE = "opencoach.rotate_session"
"""``scope["state"]`` flag: give this response's session a new id (set by :func:`start_session`)."""
_NEW_ID = "opencoach.new_session_id"


def csrf_config(settings: Settings) -> CSRFConfig:
    """Litestar's CSRF protection for the dashboard's forms: token in the ``_csrf_token`` field or the
    ``x-csrftoken`` header (htmx), its cookie ``oc_csrf`` as HttpOnly, SameSite=Lax and, on https, Secure."""
    return CSRFConfig(
        secret=SecretBox.from_settings(settings).derive("csrf"),
        cookie_name=CSRF_COOKIE,
        header_name="x-csrftoken",
        cookie_secure=is_https(settings.public_url),
        cookie_httponly=True,
        cookie_samesite="lax",
        # regular expressions searched in the path: anchored, or "/dashboard/settings/api-keys" would match
        exclude=["^/api/", "^/ws/", "^/static/", "^/w/"],
    )


def start_session(request: Request[Any, Any, Any], data: dict[str, Any]) -> None:
    """Log the browser in: ``data`` becomes the session, stored under a new id when the response is sent
    (the id the browser sent, if any, is deleted from the store)."""
    request.set_session(data)
    request.scope["state"][_ROTATE] = True


class RotatingSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side backend, plus: a response flagged by :func:`start_session` gets a new session
    id, which is added to the coach's index (:class:`DashboardSessions`)."""

    config: RotatingSessionConfig

    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        """The session id of this connection: the rotated one once chosen, else Litestar's (cookie or new)."""
        new_id = connection.scope["state"].get(_NEW_ID)
        return new_id if isinstance(new_id, str) else super().get_session_id(connection)

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        """Store the session (and set its cookie); on a flagged response, first drop the old id and pick a new.
        A coach's session is (re)added to the coach's index each time it is stored: the store keeps a session
        for :data:`SESSION_MAX_AGE_S` from its last use, and so must the index, or a session in use for longer
        than that since its log-in outlived the index and a password change no longer ended it.

        Left alone (no store write, no cookie): an empty session under no stored id (an anonymous page view, or
        a cookie that names nothing: each made a key living 14 days), and a session ended while its request ran
        (a logout or password change elsewhere: written back, it came back to life; its cookie is left as it is,
        as the browser may hold a new session's by now)."""
        state = connection.scope["state"]
        rotated = bool(state.pop(_ROTATE, False)) and scope_session is not Empty
        sent_id = connection.cookies.get(self.config.key)
        data = scope_session if isinstance(scope_session, dict) else None
        store = self.config.get_store_from_app(connection.scope["app"])
        kept_id = data is not None and not rotated and self.get_session_id(connection) == sent_id
        if (kept_id or data == {}) and (not sent_id or not await store.exists(sent_id)):
            return  # (the id the browser sent, kept, or nothing to store) under no stored session
        if rotated:
            if sent_id:
                await self.delete(sent_id, store=store)
            state[_NEW_ID] = self.generate_session_id()
        await super().store_in_message(scope_session, message, connection)
        coach_id = scope_session.get("coach_id") if isinstance(scope_session, dict) else None
        if coach_id and self.config.sessions is not None:
            await self.config.sessions.remember(uuid.UUID(coach_id), self.get_session_id(connection))


@dataclass
class RotatingSessionConfig(ServerSideSessionConfig):
    """:class:`ServerSideSessionConfig` with :class:`RotatingSessionBackend` and the index it writes to."""

    _backend_class = RotatingSessionBackend
    sessions: DashboardSessions | None = field(default=None)


class DashboardSessions:
    """The dashboard's session store (Redis, keys ``opencoach_sessions:<id>``), its middleware config and the
    per-coach index (Redis sets ``opencoach_sessions_of:<coach_id>``, expiring with the sessions)."""

    def __init__(self, redis_url: str, settings: Settings) -> None:
        self._redis = Redis.from_url(redis_url)
        self.store = RedisStore(self._redis, namespace=SESSION_NAMESPACE)
        secure = is_https(settings.public_url)
        self.config = RotatingSessionConfig(
            max_age=SESSION_MAX_AGE_S,
            samesite="lax",
            httponly=True,
            secure=secure,
            exclude=["^/api/", "^/ws/", "^/static/"],  # regular expressions searched in the path: anchored
            sessions=self,
        )

    @staticmethod
    def _index_key(coach_id: uuid.UUID) -> str:
        return f"{SESSION_NAMESPACE}_of:{coach_id}"

    async def remember(self, coach_id: uuid.UUID, session_id: str) -> None:
        """Add a session id to the coach's index (kept as long as a session lives: from its last use)."""
        key = self._index_key(coach_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            await pipe.sadd(key, session_id).expire(key, SESSION_MAX_AGE_S).execute()

    async def alive(self, session_id: str | None) -> bool:
        """Whether the dashboard session ``session_id`` is still stored (not logged out, ended or expired)."""
        return session_id is not None and await self.store.exists(session_id)

    async def end_others(self, coach_id: uuid.UUID, keep: str | None = None) -> int:
        """End every dashboard session of the coach but ``keep`` (the caller's own, if any); returns how many
        were ended. A session ended here is gone from the store: its cookie logs nobody in."""
        key = self._index_key(coach_id)
        members: set[bytes] = await self._redis.smembers(key)
        ended = [m.decode() for m in members if m.decode() != keep]
        for session_id in ended:
            await self.store.delete(session_id)
        if ended:
            await self._redis.srem(key, *ended)
        return len(ended)

    async def close(self) -> None:
        """Close the Redis connections."""
        await self._redis.aclose()


def provide_dashboard_sessions(state: State) -> DashboardSessions:
    """The app's :class:`DashboardSessions` (``app.state.dashboard_sessions``, set by ``create_app``)."""
    sessions: Any = state.dashboard_sessions
    return sessions  # type: ignore[no-any-return]


DashboardSessionsDep: TypeAlias = NamedDependency[DashboardSessions]
