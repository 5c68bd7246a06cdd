"""Number settings out of range are refused when the settings load, naming the variable: ``MAX_UPLOAD_MB=inf`` let
``opencoach serve`` start PostgreSQL and then fail with an ``OverflowError`` traceback while building the app, and
integer settings had no upper bound at all (``EXTRACT_MAX_PAGES=10000000000`` was taken as it came)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import annotated_types
import pytest
from pydantic import ValidationError

from app.cli import main
from app.core.config import MAX_UPLOAD_MB, MAX_WAIT_SECONDS, Settings, get_settings

FLOAT_SETTINGS = [name for name, field in Settings.model_fields.items() if field.annotation is float]
INT_SETTINGS = [name for name, field in Settings.model_fields.items() if field.annotation in (int, int | None)]


def test_every_float_setting_is_checked() -> None:
    assert "max_upload_mb" in FLOAT_SETTINGS and "llm_deadline_seconds" in FLOAT_SETTINGS
    assert "extract_max_pages" in INT_SETTINGS and "llm_threads" in INT_SETTINGS


@pytest.mark.parametrize("name", FLOAT_SETTINGS + INT_SETTINGS)
def test_every_number_setting_has_a_range(name: str) -> None:
    bounds = Settings.model_fields[name].metadata
    assert any(isinstance(b, annotated_types.Le | annotated_types.Lt) for b in bounds), f"{name}: no upper bound"
    assert any(isinstance(b, annotated_types.Ge | annotated_types.Gt) for b in bounds), f"{name}: no lower bound"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e308"])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_an_endless_or_huge_number_is_refused_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name.upper(), value)
    with pytest.raises(ValidationError, match=name):
        Settings(data_dir=tmp_path)


@pytest.mark.parametrize("name", INT_SETTINGS)
def test_a_huge_whole_number_is_refused_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name.upper(), "10000000000")
    with pytest.raises(ValidationError, match=f"{name}\n  Input should be less than or equal to"):
        Settings(data_dir=tmp_path)


def test_the_largest_values_are_a_day_and_a_gigabyte(tmp_path: Path) -> None:
    Settings(data_dir=tmp_path, max_upload_mb=MAX_UPLOAD_MB, llm_deadline_seconds=MAX_WAIT_SECONDS)
    with pytest.raises(ValidationError, match="max_upload_mb"):
        Settings(data_dir=tmp_path, max_upload_mb=MAX_UPLOAD_MB + 1)


def test_the_reply_limit_leaves_the_prompt_half_of_each_context_window(tmp_path: Path) -> None:
    """``LLM_MAX_TOKENS`` at or over a context window left the prompt a budget of nothing or less."""
    Settings(data_dir=tmp_path, llm_max_tokens=1024, llm_context_tokens=2048)
    for window in ({"llm_context_tokens": 2048}, {"llm_context_tokens": 8192, "llm_remote_context_tokens": 2048}):
        with pytest.raises(ValidationError, match=r"LLM_MAX_TOKENS \(1025\) must be at most half"):
            Settings(data_dir=tmp_path, llm_max_tokens=1025, **window)


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("fresh_settings")
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EXTRACT_MAX_PAGES": "10000000000"}, "EXTRACT_MAX_PAGES: Input should be less than or equal to 100000"),
        ({"LLM_MAX_TOKENS": "4096"}, "LLM_MAX_TOKENS (4096) must be at most half of LLM_CONTEXT_TOKENS"),
    ],
)
def test_the_cli_names_a_setting_out_of_range_before_anything_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err and not err.lstrip().startswith(":")
