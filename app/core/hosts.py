"""The ``Host`` header allowlist: a request that names a host this deployment does not serve gets a 400.

Threats: DNS rebinding (a page on ``evil.invalid`` whose name is made to resolve to 127.0.0.1 or a private address
talks to an OpenCoach on the visitor's machine or network as a same-origin page: its requests carry
``Host: evil.invalid``) and Host-header poisoning (any URL built from the request's ``Host``; the app builds its
absolute URLs from ``PUBLIC_URL`` only). The hosts allowed are ``PUBLIC_URL``'s, the loopback names
(:data:`LOOPBACK_HOSTS`: ``opencoach serve`` opened as ``http://localhost:8000``, a proxy or a probe on the same
machine) and the operator's ``ALLOWED_HOSTS``, in Litestar's syntax (``*.example.com`` for every subdomain, ``*``
for any host), each on any port.

Litestar's :class:`~litestar.middleware.allowed_hosts.AllowedHostsMiddleware` does the check. Since Litestar
2.22 it compares the whole header, port included, so ``Host: localhost:8000`` did not match ``localhost``
(https://github.com/litestar-org/litestar/issues/4869; the fix proposed there, ``split(":")[0]``, would refuse
every IPv6 address such as ``[::1]:8000``): :class:`AllowedHosts` lets its pattern take an optional port. And
it answers a WebSocket handshake with an HTTP response, which an ASGI server refuses on a WebSocket connection
(uvicorn: a 500 and a traceback in the log; Starlette's TrustedHostMiddleware had the same bug,
https://github.com/Kludex/starlette/issues/2420): :class:`AllowedHosts` sends that response as the ASGI WebSocket
Denial Response (https://asgi.readthedocs.io/en/latest/extensions.html#websocket-denial-response), the same 400,
or, on a server without that extension, closes the handshake (a 403).
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address
from typing import cast
from urllib.parse import urlsplit

from litestar.config.allowed_hosts import AllowedHostsConfig
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.middleware.allowed_hosts import AllowedHostsMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.core.egress import is_host_name, parse_ip

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""The names of this machine a browser sends in ``Host``; always allowed (rebinding needs a name of its own)."""
ANY_HOST = "*"


def host_entry(text: str, setting: str = "ALLOWED_HOSTS") -> str:
    """One ``ALLOWED_HOSTS`` entry as Litestar matches it: lower case, an IPv6 address in brackets
    (``"::1"`` → ``"[::1]"``), ``*.`` before a name for its subdomains, ``*`` alone for any host. Raises
    ``ValueError`` naming ``setting`` and the entry for a URL, a port (every port of a host is allowed), or anything
    that is neither a host name nor an IP address."""
    text = text.strip()
    entry = text.lower()
    address = parse_ip(entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry)
    if address is not None and "%" not in entry:
        return f"[{address.compressed}]" if isinstance(address, IPv6Address) else address.compressed
    if entry == ANY_HOST:
        return entry
    if "/" in entry:
        raise ValueError(f"{setting}: {text!r} is a URL or a path; list the host name alone, e.g. example.com")
    if ":" in entry and address is None:
        raise ValueError(f"{setting}: {text!r} has a port; list the host alone (every port of it is allowed)")
    if not is_host_name(entry.removeprefix("*.")):
        raise ValueError(
            f"{setting}: {text!r} is neither a host name (or *.name for its subdomains) nor an IP address "
            "(without an IPv6 zone)"
        )
    return entry


def parse_allowed_hosts(text: str) -> list[str]:
    """The comma-separated entries of ``ALLOWED_HOSTS`` through :func:`host_entry` (empty: none)."""
    return [host_entry(item) for item in text.split(",") if item.strip()]


def served_hosts(public_url: str, extra: str) -> list[str]:
    """Every host a request may name: ``PUBLIC_URL``'s, the loopback names and ``extra`` (``ALLOWED_HOSTS``), each
    once, in that order. Raises ``ValueError`` naming the setting whose host is no host, or ``PUBLIC_URL`` when it
    is no absolute http(s) URL (``localhost:8000`` or ``javascript:…`` made widget links of no use)."""
    try:
        parts = urlsplit(public_url)
        public = parts.hostname
    except ValueError:
        raise ValueError(f"PUBLIC_URL: {public_url!r} is not a URL (e.g. https://coach.example.com)") from None
    if parts.scheme not in ("http", "https") or not public:
        raise ValueError(
            f"PUBLIC_URL: {public_url!r} must be an absolute http(s) URL with a host (e.g. https://coach.example.com)"
        )
    hosts = [host_entry(public, "PUBLIC_URL")]
    return list(dict.fromkeys([*hosts, *LOOPBACK_HOSTS, *parse_allowed_hosts(extra)]))


class AllowedHosts(AllowedHostsMiddleware):
    """Litestar's allowed-hosts check with a port allowed after each host (the module's docstring says why), case
    insensitive (RFC 9110 section 4.2.3: the host is). A request naming another host, or none, gets Litestar's
    400 ``{"message": "invalid host header"}``; the app behind it is not called."""

    def __init__(self, app: ASGIApp, config: AllowedHostsConfig) -> None:
        super().__init__(app, config)
        if self.allowed_hosts_regex is not None:
            # Litestar ends each ``*.`` pattern with ``$``: dropped, so that a port may follow (names hold no ``$``)
            hosts = self.allowed_hosts_regex.pattern.replace("$", "")
            self.allowed_hosts_regex = re.compile(rf"(?:{hosts})(?::[0-9]{{1,5}})?", re.IGNORECASE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Litestar's check, a refused WebSocket handshake answered as the module's docstring says."""
        if scope["type"] == ScopeType.WEBSOCKET:
            send = _denying_handshakes(scope, send)
        await super().__call__(scope, receive, send)


def _denying_handshakes(scope: Scope, send: Send) -> Send:
    """``send`` of a WebSocket connection that passes on an HTTP response (only Litestar's refusal sends one) as a
    WebSocket Denial Response, or as a close of the handshake when the server has no such extension."""
    denial = "websocket.http.response" in (scope.get("extensions") or {})

    async def passed_on(message: Message) -> None:
        kind = message["type"]
        if kind.startswith("http.response."):
            if not denial:
                if kind == "http.response.start":
                    await send({"type": "websocket.close", "code": 1008, "reason": ""})
                return
            message = cast("Message", {**message, "type": f"websocket.{kind}"})
        await send(message)

    return passed_on


def host_allowlist(public_url: str, extra: str) -> DefineMiddleware:
    """The app's :class:`AllowedHosts` middleware for :func:`served_hosts` (``www_redirect`` off: a host is
    answered or refused, never sent elsewhere)."""
    config = AllowedHostsConfig(allowed_hosts=served_hosts(public_url, extra), www_redirect=False)
    return DefineMiddleware(AllowedHosts, config=config)
