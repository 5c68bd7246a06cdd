"""``ALLOWED_HOSTS`` and the hosts the app answers (:mod:`app.core.hosts`): ``PUBLIC_URL``'s host and the loopback
names by default, entries in Litestar's syntax, a bad entry refused when the settings load, naming it; a WebSocket
handshake to a foreign host refused as a handshake (Litestar sent it an HTTP response: a 500 and a traceback)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from litestar.config.allowed_hosts import AllowedHostsConfig
from litestar.types import Message, Receive, Scope, Send
from pydantic import ValidationError

from app.cli import main
from app.core.config import Settings
from app.core.hosts import LOOPBACK_HOSTS, AllowedHosts, served_hosts
from tests.unit.test_settings_bounds import fresh_settings

__all__ = ["fresh_settings"]  # a fixture used by name below


def hosts(settings: Settings) -> list[str]:
    return served_hosts(settings.public_url, settings.allowed_hosts)


def test_by_default_public_urls_host_and_the_loopback_names(tmp_path: Path) -> None:
    """What ``opencoach serve`` answers for a new user: its own address (PUBLIC_URL), localhost, 127.0.0.1, [::1]."""
    assert hosts(Settings(data_dir=tmp_path)) == ["127.0.0.1", "localhost", "[::1]"]
    behind_a_proxy = Settings(data_dir=tmp_path, public_url="https://Coach.Example.test/app/")
    assert hosts(behind_a_proxy) == ["coach.example.test", *LOOPBACK_HOSTS]
    assert hosts(Settings(data_dir=tmp_path, public_url="http://[::1]:8000")) == ["[::1]", "localhost", "127.0.0.1"]


def test_entries_are_host_names_wildcards_or_addresses_in_litestars_syntax(tmp_path: Path) -> None:
    given = Settings(data_dir=tmp_path, allowed_hosts=" API.example.test ,*.coach-alias.test,0:0:0:0:0:0:0:1,, *")
    assert hosts(given) == ["127.0.0.1", "localhost", "[::1]", "api.example.test", "*.coach-alias.test", "*"]
    assert hosts(Settings(data_dir=tmp_path, public_url="http://[0:0::1]:8000", allowed_hosts="::1")) == [
        "[::1]",
        "localhost",
        "127.0.0.1",
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("coach.example.test:8443", "has a port; list the host alone"),
        ("[::1]:8000", "has a port"),
        ("https://coach.example.test", "is a URL or a path"),
        ("coach.example.test/app", "is a URL or a path"),
        ("coach example", "is neither a host name"),
        ("api.*.example.test", "is neither a host name"),
        ("*example.test", "is neither a host name"),
        ("::1%lo", "is neither a host name"),
        ("-bad-.test", "is neither a host name"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(tmp_path: Path, value: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=f"ALLOWED_HOSTS: {re.escape(repr(value))} {reason}"):
        Settings(data_dir=tmp_path, allowed_hosts=f"localhost, {value}")


def test_a_public_url_without_a_usable_host_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="PUBLIC_URL: 'http://\\[' is not a URL"):
        Settings(data_dir=tmp_path, public_url="http://[")
    with pytest.raises(ValidationError, match="PUBLIC_URL: 'coach example' is neither a host name"):
        Settings(data_dir=tmp_path, public_url="https://coach example/")


@pytest.mark.parametrize(
    "value", ["localhost:18932", "javascript:alert(1)", "coach.example.test", "ftp://coach.example.test", "http://", ""]
)
def test_a_public_url_that_is_no_absolute_http_url_is_refused_naming_it(tmp_path: Path, value: str) -> None:
    """Accepted before, it made widget links such as ``localhost:18932/w/ocw_…``: no http(s) scheme, or no host."""
    with pytest.raises(ValidationError, match=f"PUBLIC_URL: {re.escape(repr(value))} must be an absolute http"):
        Settings(data_dir=tmp_path, public_url=value)


@pytest.mark.usefixtures("fresh_settings")
@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("ALLOWED_HOSTS", "https://coach.example.test", "ALLOWED_HOSTS: 'https://coach.example.test' is a URL"),
        # no scheme: accepted before, widget links read "localhost:18932/w/ocw_…"
        ("PUBLIC_URL", "localhost:18932", "PUBLIC_URL: 'localhost:18932' must be an absolute http(s) URL with a host"),
    ],
)
def test_the_cli_names_a_bad_entry_before_anything_starts(
    variable: str,
    value: str,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    assert main(["migrate"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert said in err and "Traceback" not in err, err
    assert not (tmp_path / "pgdata").exists(), "nothing started"


async def _handshake(host: bytes, extensions: dict[str, object]) -> list[Message]:
    """What :class:`AllowedHosts` (for ``localhost``) sends on a WebSocket handshake naming ``host``, on a server
    with ``extensions``; the app behind it would accept the socket."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws/chat", "headers": [(b"host", host)], "extensions": extensions}
    await AllowedHosts(app, AllowedHostsConfig(["localhost"]))(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_a_websocket_handshake_to_a_foreign_host_is_denied_as_a_handshake() -> None:
    """With the ASGI WebSocket Denial Response extension (uvicorn) the same 400 as for HTTP; without it, a close
    before accepting (the server answers 403). An allowed host reaches the app."""
    [start, body] = await _handshake(b"evil.invalid:8000", {"websocket.http.response": {}})
    assert start["type"] == "websocket.http.response.start" and start["status"] == 400
    assert body["type"] == "websocket.http.response.body" and body["body"] == b'{"message":"invalid host header"}'
    assert await _handshake(b"evil.invalid", {}) == [{"type": "websocket.close", "code": 1008, "reason": ""}]
    assert [m["type"] for m in await _handshake(b"localhost:8000", {})] == ["websocket.accept"]
