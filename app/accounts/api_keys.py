"""A coach's REST API keys: issue (named), list, revoke. Only ``sha256(key)`` and its first characters are
stored; the key itself is shown once, when it is issued. A revoked key stops working on its next request:
``auth_api_key`` (SQL, migration 0009) looks every request up, nothing caches it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import ApiKey
from app.core.errors import InvalidInput, NotFound
from app.core.security import new_token, token_hash

API_KEY_TOKEN_PREFIX = "oc"
"""Every API key starts ``oc_`` (widget tokens ``ocw_``)."""
API_KEY_SHOWN_CHARS = 10
"""``ApiKey.prefix``: the key's first characters (``oc_`` and 7 random ones), enough to tell keys apart."""
API_KEY_NAME_MAX = 100


def api_key_name(name: str) -> str:
    """``name`` stripped. Raises ``InvalidInput`` when empty or over :data:`API_KEY_NAME_MAX` characters."""
    name = name.strip()
    if not name or len(name) > API_KEY_NAME_MAX:
        raise InvalidInput(f"name must be 1 to {API_KEY_NAME_MAX} characters")
    return name


async def issue_api_key(session: AsyncSession, coach_id: uuid.UUID, name: str = "default") -> tuple[ApiKey, str]:
    """Add a new API key named ``name`` for the coach; returns its row (flushed, ``created_at`` loaded) and the
    plaintext key (``oc_`` + 43 url-safe characters, 256 random bits), which is never stored.
    Raises ``InvalidInput`` for a bad name (:func:`api_key_name`)."""
    secret = new_token(API_KEY_TOKEN_PREFIX)
    key = ApiKey(
        coach_id=coach_id,
        name=api_key_name(name),
        prefix=secret[:API_KEY_SHOWN_CHARS],
        key_hash=token_hash(secret),
        created_at=datetime.now(UTC),
    )
    session.add(key)
    await session.flush()
    return key, secret


async def list_api_keys(session: AsyncSession, coach_id: uuid.UUID) -> list[ApiKey]:
    """The coach's API keys, revoked ones included (``revoked_at`` set), newest first."""
    stmt = select(ApiKey).where(ApiKey.coach_id == coach_id).order_by(ApiKey.created_at.desc(), ApiKey.id)
    return list((await session.scalars(stmt)).all())


async def revoke_api_key(session: AsyncSession, coach_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """Revoke one of the coach's keys (already revoked: left as it was). Raises ``NotFound`` for an unknown
    id or another coach's key."""
    key = await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.coach_id == coach_id))
    if key is None:
        raise NotFound("API key not found")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        await session.flush()
    return key
