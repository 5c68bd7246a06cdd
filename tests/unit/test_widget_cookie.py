"""The widget session cookie's attributes follow ``PUBLIC_URL``: framed on a coach's https site it must be
``SameSite=None; Secure`` (a third-party context); over plain http browsers refuse that, so ``Lax``."""

from __future__ import annotations

from app.auth import WIDGET_COOKIE, WIDGET_SESSION_S, widget_cookie


def test_over_https_the_cookie_is_samesite_none_and_secure() -> None:
    header = widget_cookie("v", "https://coach.example.com").to_header(header="").lower()
    assert header.startswith(f"{WIDGET_COOKIE}=v;")
    assert "samesite=none" in header and "secure" in header and "httponly" in header
    assert f"max-age={WIDGET_SESSION_S}" in header and "path=/" in header


def test_over_plain_http_the_cookie_is_lax_and_not_secure() -> None:
    header = widget_cookie("v", "http://127.0.0.1:8000").to_header(header="").lower()
    assert "samesite=lax" in header and "secure" not in header and "httponly" in header
