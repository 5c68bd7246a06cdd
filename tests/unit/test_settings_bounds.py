"""Number settings out of range are refused when the settings load, naming the variable: ``MAX_UPLOAD_MB=inf`` let
``opencoach serve`` start PostgreSQL and then fail with an ``OverflowError`` traceback while building the app."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import MAX_UPLOAD_MB, MAX_WAIT_SECONDS, Settings

FLOAT_SETTINGS = [name for name, field in Settings.model_fields.items() if field.annotation is float]


def test_every_float_setting_is_checked() -> None:
    assert "max_upload_mb" in FLOAT_SETTINGS and "llm_deadline_seconds" in FLOAT_SETTINGS


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e308"])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_an_endless_or_huge_number_is_refused_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name.upper(), value)
    with pytest.raises(ValidationError, match=name):
        Settings(data_dir=tmp_path)


def test_the_largest_values_are_a_day_and_a_gigabyte(tmp_path: Path) -> None:
    Settings(data_dir=tmp_path, max_upload_mb=MAX_UPLOAD_MB, llm_deadline_seconds=MAX_WAIT_SECONDS)
    with pytest.raises(ValidationError, match="max_upload_mb"):
        Settings(data_dir=tmp_path, max_upload_mb=MAX_UPLOAD_MB + 1)
