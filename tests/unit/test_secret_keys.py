"""SECRET_KEY rotation (MultiFernet) and the generated key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from app.core.config import Settings
from app.core.security import SecretBox


def test_old_keys_decrypt_and_the_primary_key_encrypts() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed_before = SecretBox(old).encrypt("sk-live-abc123")
    box = SecretBox(new, [old])
    assert box.decrypt(sealed_before) == "sk-live-abc123"
    sealed_now = box.encrypt("whsec-1")
    assert Fernet(new).decrypt(sealed_now) == b"whsec-1"  # the first key encrypts
    rotated = box.rotate(sealed_before)
    assert SecretBox(new).decrypt(rotated) == "sk-live-abc123"  # readable without the old key
    with pytest.raises(ValueError, match="SECRET_KEY_OLD"):
        SecretBox(Fernet.generate_key()).rotate(sealed_before)


def test_settings_read_old_keys_from_a_comma_list(tmp_path: Path) -> None:
    old1, old2, new = (Fernet.generate_key().decode() for _ in range(3))
    settings = Settings(data_dir=tmp_path, secret_key=new, secret_key_old=f" {old1}, {old2} ,")
    assert settings.old_secret_keys() == [old1, old2]
    sealed = SecretBox(old2).encrypt("token")
    assert SecretBox.from_settings(settings).decrypt(sealed) == "token"


@pytest.mark.parametrize("field", ["secret_key", "secret_key_old"])
def test_a_value_that_is_not_a_fernet_key_is_refused_naming_the_setting(tmp_path: Path, field: str) -> None:
    with pytest.raises(ValidationError, match=field.upper()):
        Settings(data_dir=tmp_path, **{field: "not-a-key"})


def test_secret_key_file_is_created_with_mode_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)  # a plain write_bytes would create the file 0666 for a moment
    try:
        box = SecretBox.from_settings(Settings(data_dir=tmp_path / "data", secret_key=None))
    finally:
        os.umask(previous)
    path = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary file left behind
    key = path.read_bytes()
    assert SecretBox(key).decrypt(box.encrypt("x")) == "x"
    assert SecretBox.from_settings(Settings(data_dir=tmp_path / "data")).decrypt(box.encrypt("y")) == "y"
    assert path.read_bytes() == key  # read, not regenerated


def test_secret_key_file_is_never_world_readable_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[int] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        modes.append(mode)
        assert flags & os.O_CREAT and flags & os.O_EXCL
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    SecretBox.from_settings(Settings(data_dir=tmp_path, secret_key=None))
    assert modes == [0o600]
