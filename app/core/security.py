"""Credentials and secrets: argon2id password hashes, random bearer tokens, Fernet encryption at rest."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.core.config import Settings

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory defaults


def hash_password(password: str) -> str:
    """Hash a password with argon2id (RFC 9106); returns a PHC string."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if ``password`` matches ``password_hash``; never raises on a wrong password or a bad hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


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

    def encrypt(self, plaintext: str) -> bytes:
        """Encrypt ``plaintext`` to a Fernet token under the primary key."""
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
