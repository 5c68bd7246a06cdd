"""Credentials and secrets: argon2id password hashes, random bearer tokens, Fernet encryption at rest."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

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
    """Fernet (AES-128-CBC + HMAC-SHA256, cryptography.io) encryption of provider keys, widget tokens and
    webhook secrets at rest, with key rotation through ``MultiFernet``: :meth:`encrypt` always uses the
    primary key, :meth:`decrypt` tries the primary key and then every old key, :meth:`rotate` re-encrypts a
    token under the primary key (``opencoach rotate-secret`` does that for every stored secret)."""

    def __init__(self, key: bytes | str, old_keys: Sequence[bytes | str] = ()) -> None:
        self._key = key.encode() if isinstance(key, str) else key
        self._fernet = MultiFernet([Fernet(k) for k in (self._key, *old_keys)])

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """Primary key from ``SECRET_KEY``, else from ``DATA_DIR/secret.key`` (created once, atomically, with
        mode 0600); old keys from ``SECRET_KEY_OLD`` (see :attr:`app.core.config.Settings.secret_key_old`)."""
        key = settings.secret_key or _key_file(Path(settings.data_dir) / "secret.key")
        return cls(key, settings.old_secret_keys())

    def derive(self, purpose: str) -> str:
        """A 32-byte hex secret for ``purpose`` (e.g. CSRF tokens), HMAC-SHA256 of the purpose under the
        primary key (so it changes when the key is rotated)."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).hexdigest()[:32]

    def encrypt(self, plaintext: str, *, at: int | None = None) -> bytes:
        """Encrypt ``plaintext`` to a Fernet token under the primary key, stamped with the time ``at`` (unix
        seconds; default now), which :meth:`decrypt`'s ``ttl_s`` is counted from."""
        if at is not None:
            return self._fernet.encrypt_at_time(plaintext.encode(), at)
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes, *, ttl_s: int | None = None) -> str:
        """Decrypt a Fernet token made with any configured key. Raises ``ValueError`` if none of the keys made
        it, it was tampered with, or (with ``ttl_s``) it was encrypted more than ``ttl_s`` seconds ago (Fernet
        tokens carry their creation time)."""
        try:
            return self._fernet.decrypt(token, ttl=ttl_s).decode()
        except InvalidToken as exc:
            raise ValueError(_UNDECRYPTABLE) from exc

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt a token made with any configured key under the primary key (``MultiFernet.rotate``; the
        token keeps its original timestamp). Raises ``ValueError`` like :meth:`decrypt`."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken as exc:
            raise ValueError(_UNDECRYPTABLE) from exc


_UNDECRYPTABLE = "stored secret cannot be decrypted with SECRET_KEY or any key in SECRET_KEY_OLD"


def _key_file(path: Path) -> bytes:
    """The key in ``path``, created first if missing: a new Fernet key written to a temporary file opened
    with mode 0600 (never readable by others, not even for a moment), then linked into place, which fails if
    another process created ``path`` meanwhile (then that process's key is used)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()
    return path.read_bytes().strip()
