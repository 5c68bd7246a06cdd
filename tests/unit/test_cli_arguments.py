"""The command line refuses out-of-range numbers and output files it could not write with argparse's usage error
(exit 2, one line naming the argument) before it starts any server or reads any file: no traceback, nothing
started."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import uvicorn

from app import cli
from app.cli import _serve, _served_at, main
from app.core.config import Settings
from app.core.runtime import Services


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "99999"], "argument --port: must be from 1 to 65535, got 99999"),
        (["demo", "--port", "0"], "argument --port: must be from 1 to 65535, got 0"),
        (["serve", "--port", "eighty"], "argument --port: invalid whole number: 'eighty'"),
        (["eval", "memory", "--locomo", "x.json", "--conversations", "-1"], "--conversations: must be 1 or more"),
        (["eval", "memory", "--locomo", "x.json", "--sessions", "0"], "--sessions: must be 1 or more, got 0"),
        (["eval", "injection", "--bipia", "x", "--limit", "0"], "--limit: must be 1 or more, got 0"),
        (["eval", "injection", "--bipia", "x", "--max-tokens", "-4"], "--max-tokens: must be 1 or more, got -4"),
        (["learning", "train-strategy", "--esconv", "x", "--out", "y", "--c", "-1"], "--c: must be a number above 0"),
        (["learning", "train-strategy", "--esconv", "x", "--out", "y", "--c", "nan"], "--c: must be a number above 0"),
        (["learning", "train-strategy", "--esconv", "x", "--out", "y", "--c", "big"], "--c: invalid number: 'big'"),
        (["eval", "crisis", "--cssrs", "x", "--folds", "5", "--seed", "-1"], "--seed: must be from 0 to 4294967295"),
        (["handoff", "train-crisis", "--cssrs", "x.csv", "--seed", "4294967296"], "--seed: must be from 0 to"),
        (["documents", "reprocess", "--before", "2026-13-01"], "--before: not an ISO 8601 date or time: '2026-13-01'"),
        (
            ["documents", "reprocess", "--before", "0001-01-01T00:00:00+14:00"],
            "--before: out of range: '0001-01-01T00:00:00+14:00' is outside the years 1 to 9999 in UTC",
        ),
        (
            ["documents", "reprocess", "--before", "9999-12-31T23:59:59-23:59"],
            "--before: out of range: '9999-12-31T23:59:59-23:59' is outside the years 1 to 9999 in UTC",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_an_out_of_range_number_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["learning", "train-strategy", "--esconv", "x", "--out", "no-such-folder/m.npz"], "--out: no folder"),
        (["handoff", "train-crisis", "--cssrs", "x.csv", "--out", "."], "--out: '.' is a folder, not a file"),
        (
            ["eval", "crisis", "--cssrs", "x.csv", "--folds", "2", "--embedding-cache", "/nonexistent/dir/c.npz"],
            "--embedding-cache: no folder '/nonexistent/dir' to write 'c.npz' in",
        ),
        (
            ["handoff", "train-crisis", "--cssrs", "x.csv", "--embedding-cache", "/nonexistent/dir/c.npz"],
            "--embedding-cache: no folder '/nonexistent/dir' to write 'c.npz' in",
        ),
    ],
    ids=["missing-folder", "a-folder", "eval-cache-missing-folder", "train-cache-missing-folder"],
)
def test_an_out_file_that_cannot_be_written_is_a_usage_error_before_training(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The weights were written at the end, after minutes of embedding and fitting: a missing folder failed then."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [["migrate"], ["rotate-secret"], ["serve"], ["telegram", "poll"], ["eval", "injection", "--bipia", "x.json"]],
    ids=" ".join,
)
def test_a_data_dir_that_is_no_directory_is_a_usage_error_before_anything_starts(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file as ``--data-dir`` (or above it) failed after start-up with ``[Errno 17] File exists`` or "cannot use
    the database as the schema owner (MIGRATION_DATABASE_URL): [Errno 20] Not a directory"; an empty one silently
    meant ./.opencoach."""

    def started(*args: object) -> None:
        raise AssertionError("a server was started")

    monkeypatch.setattr(cli, "embedded_services", started)
    monkeypatch.delenv("MIGRATION_DATABASE_URL", raising=False)
    afile = tmp_path / "afile"
    afile.write_text("kept")
    for given, message in (
        (str(afile), f"{str(afile)!r} is not a directory"),
        (str(afile / "x"), f"{str(afile / 'x')!r}: {str(afile)!r} is not a directory"),
        ("", "must not be empty"),
    ):
        with pytest.raises(SystemExit) as exited:
            main([*command, "--data-dir", given])
        assert exited.value.code == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"argument --data-dir: {message}" in err and "Traceback" not in err, err
    assert afile.read_text() == "kept"


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 9000, "http://127.0.0.1:9000"),
        ("0.0.0.0", 8080, "http://127.0.0.1:8080"),
        ("::1", 8000, "http://[::1]:8000"),
        ("localhost", 8001, "http://localhost:8001"),
    ],
)
def test_serve_and_demo_link_to_their_own_address_unless_public_url_is_set(
    host: str, port: int, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PUBLIC_URL, the widget links and the embed snippet name the address the server runs on (``serve
    --port 9000`` linked to :8000, a dead server); a PUBLIC_URL set on purpose (a tunnel, a proxy) wins (``demo``
    replaced it with its own address)."""
    monkeypatch.delenv("PUBLIC_URL", raising=False)
    assert _served_at(Settings(), host, port).public_url == expected
    monkeypatch.setenv("PUBLIC_URL", "https://coach.example.test")
    assert _served_at(Settings(), host, port).public_url == "https://coach.example.test"


def test_serve_on_an_address_in_use_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    """A second ``serve`` on the same port started its servers, migrated and spawned a worker, and only then
    failed in uvicorn; it is refused at once now."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 1
    assert f"cannot serve on 127.0.0.1:{port}: the address is in use" in capsys.readouterr().err


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What ``opencoach <argv> --help`` prints (it exits 0)."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_a_one_line_description_in_its_parents_list_and_its_own_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``opencoach serve --help`` (and worker, migrate, demo, rotate-secret…) showed only its options: each
    command, subcommands included, says what it does in the list of its parent's ``--help`` and at the top of its
    own, in the same words."""
    monkeypatch.setenv("COLUMNS", "250")  # no wrapped lines
    seen: list[str] = []
    pending: list[list[str]] = [[]]
    while pending:
        argv = pending.pop()
        text = help_text(argv, capsys)
        listed = re.search(r"^positional arguments:\n  \{([^}]+)\}\n((?:    .*\n)+)", text, re.MULTILINE)
        if not listed:
            continue
        for name in listed.group(1).split(","):
            entry = re.search(rf"^    {re.escape(name)} +(\S.*)$", listed.group(2), re.MULTILINE)
            assert entry, f"opencoach {' '.join([*argv, name])} has no description in the list of commands"
            own = help_text([*argv, name], capsys).split("\n\n")
            assert own[1] == entry.group(1), f"opencoach {' '.join([*argv, name])} --help starts with no description"
            seen.append(" ".join([*argv, name]))
            pending.append([*argv, name])
    assert {"serve", "worker", "migrate", "demo", "rotate-secret", "eval memory", "telegram poll"} <= set(seen)


@pytest.mark.parametrize(
    ("host", "allowed", "said"),
    [
        ("0.0.0.0", "", "answers requests to coach.example.test, localhost, 127.0.0.1, [::1] (any port); to reach"),
        ("::", "lan-box.test", "answers requests to coach.example.test, localhost, 127.0.0.1, [::1], lan-box.test"),
        ("127.0.0.1", "", None),
        ("0.0.0.0", "*", None),
    ],
)
def test_serve_beyond_this_machine_names_the_hosts_it_answers(
    host: str, allowed: str, said: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reached by a name or address it does not answer (a LAN address), the app gives a 400: ``serve --host
    0.0.0.0`` says which Host names it answers and how to add one; on a loopback address it says nothing."""
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    settings = Settings(public_url="https://coach.example.test", allowed_hosts=allowed)
    nowhere = Services("postgresql+asyncpg://opencoach@127.0.0.1/none", "", "redis://127.0.0.1:1/0")
    _serve(settings, nowhere, host, 8000, worker=False)  # nothing connects: the app is never started
    err = " ".join(capsys.readouterr().err.split())
    if said is None:
        assert "answers requests" not in err, err
    else:
        assert said in err and "add it to ALLOWED_HOSTS" in err, err
