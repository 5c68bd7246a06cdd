"""Credentials and secrets: argon2id password hashes, random bearer tokens, Fernet encryption at rest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cache
from pathlib import Path

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

from app.core.config import Settings

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory defaults
PASSWORD_HASH_THREADS = 2
"""At most this many argon2 hashes run at once per process (each takes ~50 ms of CPU and 64 MiB); more
log-ins wait their turn instead of starving the event loop or the machine."""
_hash_slots = anyio.CapacityLimiter(PASSWORD_HASH_THREADS)


def hash_password(password: str) -> str:
    """Hash a password with argon2id (RFC 9106); returns a PHC string."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if ``password`` matches ``password_hash``; never raises on a wrong password or a bad hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` in a worker thread, at most :data:`PASSWORD_HASH_THREADS` at a time."""
    return await anyio.to_thread.run_sync(hash_password, password, limiter=_hash_slots)


@cache
def _dummy_hash() -> str:
    """An argon2id hash of a random password, made once: what an unknown e-mail's password is checked against."""
    return hash_password(secrets.token_urlsafe(16))


def _verify_or_dummy(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        verify_password(_dummy_hash(), password)
        return False
    return verify_password(password_hash, password)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """:func:`verify_password` in a worker thread, at most :data:`PASSWORD_HASH_THREADS` at a time.

    ``password_hash=None`` (no such user) verifies against a dummy hash and returns ``False``, so an
    unknown e-mail costs the same time as a wrong password (no account enumeration by timing; OWASP
    Authentication Cheat Sheet, "Authentication Responses")."""
    return await anyio.to_thread.run_sync(_verify_or_dummy, password_hash, password, limiter=_hash_slots)


def new_token(prefix: str) -> str:
    """A bearer token ``<prefix>_<43 url-safe chars>`` (256 bits of entropy)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    """SHA-256 hex digest of a high-entropy token; what the database stores and looks up."""
    return hashlib.sha256(token.encode()).hexdigest()


def mask_secret(secret: str) -> str:
    """Show a secret as ``sk-…abcd`` (never more than its last four characters)."""
    return f"{secret[:3]}…{secret[-4:]}" if len(secret) > 8 else "…"


class SecretBox:
    """Fernet (AES-128-CBC + HMAC-SHA256, cryptography.io) encryption of provider keys and widget tokens."""

    def __init__(self, key: bytes | str) -> None:
        self._key = key.encode() if isinstance(key, str) else key
        self._fernet = Fernet(self._key)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """Key from ``SECRET_KEY``; else read, or create once, ``DATA_DIR/secret.key`` (mode 0600)."""
        if settings.secret_key:
            return cls(settings.secret_key)
        path = Path(settings.data_dir) / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(Fernet.generate_key())
            path.chmod(0o600)
        return cls(path.read_bytes().strip())

    def derive(self, purpose: str) -> str:
        """A 32-byte hex secret for ``purpose`` (e.g. CSRF tokens), HMAC-SHA256 of the purpose under the key."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).hexdigest()[:32]

    def encrypt(self, plaintext: str) -> bytes:
        """Encrypt ``plaintext`` to a Fernet token."""
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes, *, ttl_s: int | None = None) -> str:
        """Decrypt a Fernet token. Raises ``ValueError`` if it was made with another key, tampered with, or
        (with ``ttl_s``) encrypted more than ``ttl_s`` seconds ago (Fernet tokens carry their creation time)."""
        try:
            return self._fernet.decrypt(token, ttl=ttl_s).decode()
        except InvalidToken as exc:
            raise ValueError("stored secret cannot be decrypted with the configured SECRET_KEY") from exc
