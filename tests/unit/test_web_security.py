"""Pure parts of the web security work: origin checks, the security headers hook, access-log redaction, and
templates without inline script (the Content-Security-Policy allows none)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.asgi import create_app
from app.auth import client_ip
from app.channels.web.chat import WIDGET_API_PREFIXES
from app.core.access_log import RedactSecrets, redact_url
from app.core.config import Settings
from app.core.errors import InvalidInput
from app.core.headers import (
    CORS_ALLOW_METHODS,
    CORS_ORIGIN_STATE,
    SecurityHeaders,
    content_security_policy,
    is_own_origin,
)
from app.core.validation import MAX_ALLOWED_ORIGINS, web_origin, web_origins
from app.learning.charts import bars, chart_stylesheet, line

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://www.example.com", "https://www.example.com"),
        ("  HTTPS://WWW.Example.com/ ", "https://www.example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://example.com:8080", "http://example.com:8080"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
    ],
)
def test_origins_are_normalised(value: str, expected: str) -> None:
    assert web_origin("widget_allowed_origins", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "example.com",
        "ftp://example.com",
        "javascript:alert(1)",
        "https://",
        "https://example.com/path",
        "https://example.com/?q=1",
        "https://example.com#top",
        "https://user:pw@example.com",
        "https://*.example.com",
        "https://example.com:99999",
        "https://exa mple.com",
        "*",
        "'none'",
    ],
)
def test_bad_origins_are_refused_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidInput, match="widget_allowed_origins"):
        web_origin("widget_allowed_origins", value)


def test_origin_lists_drop_blanks_and_duplicates_and_are_bounded() -> None:
    assert web_origins("f", ["https://a.example", " ", "https://A.example/", "http://b.example"]) == [
        "https://a.example",
        "http://b.example",
    ]
    with pytest.raises(InvalidInput, match="at most"):
        web_origins("f", [f"https://s{n}.example" for n in range(MAX_ALLOWED_ORIGINS + 1)])
    with pytest.raises(InvalidInput, match="list of origins"):
        web_origins("f", [42])  # type: ignore[list-item]


def test_own_origin_is_public_url_or_the_host_asked() -> None:
    assert is_own_origin("https://coach.example", "", "https://coach.example/")
    assert is_own_origin("http://127.0.0.1:8000", "127.0.0.1:8000", "https://coach.example")
    assert not is_own_origin("https://evil.example", "coach.example", "https://coach.example")
    assert not is_own_origin("http://[", "coach.example", "https://coach.example"), "no URL: a foreign origin"


def test_csp_allows_no_inline_script_and_frames_only_the_listed_origins() -> None:
    default = content_security_policy()
    assert "script-src 'self';" in default and "unsafe" not in default
    assert default.endswith("frame-ancestors 'none'")
    assert content_security_policy(["https://a.example", "https://b.example"]).endswith(
        "frame-ancestors https://a.example https://b.example"
    )


async def _listed(origin: str) -> bool:
    """The allowed origins of the coaches in these tests: only ``https://a.example``."""
    return origin == "https://a.example"


async def _send(hook: SecurityHeaders, scope: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    message: Any = {"type": "http.response.start", "status": 200, "headers": list(headers)}
    await hook(message, scope)  # type: ignore[arg-type]
    return {k.decode().lower(): v.decode() for k, v in message["headers"]}


def _scope(method: str = "GET", path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": headers or [], "state": {}}


async def test_headers_hook_adds_security_headers_and_hsts_only_on_https() -> None:
    plain = await _send(SecurityHeaders("http://127.0.0.1:8000", (), _listed), _scope(), [])
    assert plain["x-content-type-options"] == "nosniff" and plain["referrer-policy"] == "no-referrer"
    assert plain["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in plain["content-security-policy"]
    assert "strict-transport-security" not in plain
    secure = await _send(SecurityHeaders("https://coach.example", (), _listed), _scope(), [])
    assert secure["strict-transport-security"].startswith("max-age=")


async def test_a_handlers_own_policy_is_kept_without_x_frame_options() -> None:
    own = content_security_policy(["https://a.example"])
    headers = await _send(
        SecurityHeaders("http://x", (), _listed), _scope(), [(b"content-security-policy", own.encode())]
    )
    assert headers["content-security-policy"] == own and "x-frame-options" not in headers


async def test_cors_headers_for_allowed_calls_and_widget_preflights_only() -> None:
    hook = SecurityHeaders("http://x", ("/api/v1/widget/",), _listed)
    allowed = _scope(path="/api/v1/widget/memory")
    allowed["state"][CORS_ORIGIN_STATE] = "https://a.example"
    headers = await _send(hook, allowed, [])
    assert headers["access-control-allow-origin"] == "https://a.example" and headers["vary"] == "Origin"
    preflight = [(b"origin", b"https://a.example"), (b"access-control-request-method", b"DELETE")]
    answered = await _send(hook, _scope("OPTIONS", "/api/v1/widget/memory", preflight), [])
    assert answered["access-control-allow-origin"] == "https://a.example"
    assert "authorization" in answered["access-control-allow-headers"]
    coach_api = await _send(hook, _scope("OPTIONS", "/api/v1/documents", preflight), [])
    assert "access-control-allow-origin" not in coach_api
    plain = await _send(hook, _scope(path="/api/v1/widget/memory", headers=[(b"origin", b"https://a.example")]), [])
    assert "access-control-allow-origin" not in plain


def test_a_widget_preflight_allows_every_method_of_the_widget_api(tmp_path: Path) -> None:
    """A page on a listed origin can call each widget route: ``PUT /api/v1/widget/tone`` (a client setting their
    tone) was missing from the preflight's methods, so a browser refused it."""
    app = create_app(
        Settings(data_dir=tmp_path), "postgresql+asyncpg://opencoach@127.0.0.1/none", "redis://127.0.0.1:1/0"
    )
    methods = {
        method
        for route in app.routes
        if route.path.startswith(WIDGET_API_PREFIXES)
        for handler in getattr(route, "route_handlers", [])
        for method in handler.http_methods
    }
    assert "PUT" in methods
    assert methods <= set(CORS_ALLOW_METHODS.split(", "))


async def test_a_widget_preflight_from_an_origin_no_coach_lists_gets_no_allow_headers() -> None:
    """A preflight names no coach (it carries no token): it was answered for any origin, although the request
    itself is refused for an origin its coach did not list. Now only an origin some coach lists is answered;
    a failed look-up (the database is out of reach) refuses too, and the response still goes out."""
    preflight = [(b"origin", b"https://evil.example"), (b"access-control-request-method", b"POST")]
    hook = SecurityHeaders("http://x", ("/api/v1/widget/",), _listed)
    refused = await _send(hook, _scope("OPTIONS", "/api/v1/widget/memory", preflight), [])
    assert not any(name.startswith("access-control-") for name in refused) and refused["vary"] == "Origin"

    async def unreachable(origin: str) -> bool:
        raise ConnectionRefusedError(111, "Connect call failed")

    listed = [(b"origin", b"https://a.example"), (b"access-control-request-method", b"POST")]
    down = await _send(
        SecurityHeaders("http://x", ("/api/v1/widget/",), unreachable),
        _scope("OPTIONS", "/api/v1/widget/memory", listed),
        [],
    )
    assert "access-control-allow-origin" not in down and down["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ws/chat?token=s3cr3t", "/ws/chat?token=[redacted]"),
        ("/api/v1/documents?token=oc_abc&days=7", "/api/v1/documents?token=[redacted]&days=7"),
        ("/x?api_key=k1&access_token=k2", "/x?api_key=[redacted]&access_token=[redacted]"),
        ("/w/wt_secret", "/w/[redacted]"),
        ("/w/wt_secret/memory", "/w/[redacted]/memory"),
        ("/dashboard/learning?days=30", "/dashboard/learning?days=30"),
    ],
)
def test_urls_are_redacted(target: str, expected: str) -> None:
    assert redact_url(target) == expected


def test_access_records_lose_their_secrets() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/ws/chat?token=s3cr3t", "1.1", 200), None,
    )  # fmt: skip
    assert RedactSecrets().filter(record)
    assert "s3cr3t" not in record.getMessage() and "/ws/chat?token=[redacted]" in record.getMessage()


def test_templates_have_no_inline_script_handlers_or_styles() -> None:
    """``script-src 'self'`` blocks inline ``<script>`` and ``on…=`` handlers; ``style-src 'self'`` blocks
    ``style`` attributes and ``<style>`` elements."""
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template
        assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", text), template
        assert not re.search(r"<style|<[a-z][^>]*\sstyle\s*=", text), template


def test_charts_carry_no_script_or_inline_style() -> None:
    svg = str(line("Approval", ["11-01", "11-02"], [0.5, 0.75])) + str(
        bars("Reasons", [("crisis", 2.0)], percent=False)
    )
    assert svg.count("<svg") == 2
    assert not re.search(r"<script|<style|\sstyle=|kozea\.github\.io|https?://(?!www\.w3\.org)", svg), svg
    css = chart_stylesheet()
    assert ".pygal-chart .title" in css and "#chart-" not in css and "#2f6f4f" in css.lower()


def test_a_chart_of_counts_has_whole_numbers_on_its_axis() -> None:
    """One handoff of one reason drew an axis 0, 0.1, 0.2 … 1 (the learning dashboard's "Handoffs per reason")."""
    for counts, ticks in (([1.0], ["0", "1"]), ([3.0, 12.0], ["0", "3", "6", "9", "12"])):
        svg = str(bars("Handoffs per reason", [(f"reason {n}", c) for n, c in enumerate(counts)], percent=False))
        assert sorted(set(re.findall(r">(\d+(?:\.\d+)?)</text>", svg)), key=float) == ticks, svg


def test_rate_limits_count_an_ipv6_host_by_its_64_network() -> None:
    """One IPv6 host holds a whole /64: counted by address, it took a fresh one for each log-in attempt."""

    def peer(host: str) -> Any:
        return SimpleNamespace(client=SimpleNamespace(host=host))

    assert client_ip(peer("::1")) == client_ip(peer("::1:0:0:1")) == "::/64"
    assert client_ip(peer("::ffff:127.0.0.1")) == client_ip(peer("127.0.0.1")) == "127.0.0.1"
    assert client_ip(peer("testclient")) == "testclient"
    assert client_ip(SimpleNamespace(client=None)) == "unknown"
