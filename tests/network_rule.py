"""The test suite's network rule: in-process code connects only to 127.0.0.0/8 and ::1.

:func:`install` wraps ``socket.socket.connect`` and ``connect_ex``. On the standard asyncio event loop every
TCP connection goes through them: ``loop.sock_connect`` and ``loop.create_connection`` (and so
``anyio.connect_tcp``, httpcore, asyncpg, redis, websockets) call ``sock.connect`` on a ``socket.socket``.
uvloop connects in C and would bypass the wrapper, so ``tests/conftest.py`` refuses to run under it.

A connection to any other address (private, link-local, metadata, public) is never attempted: the wrapper
raises :class:`NetworkRuleViolation` (an ``OSError``, so the code under test fails as it would on a refused
connection) and records it; ``tests/conftest.py`` then fails the running test, even when the code under test
swallowed the error. Unix sockets and other families pass through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
LOOPBACK_V6 = ipaddress.ip_address("::1")


class NetworkRuleViolation(ConnectionRefusedError):
    """A connection to an address outside 127.0.0.0/8 and ::1 was asked for (and not attempted)."""


def is_loopback_target(host: object) -> bool:
    """Whether ``host`` (the first item of an ``AF_INET``/``AF_INET6`` socket address) is 127.0.0.0/8 or ::1
    (also as IPv4-mapped ``::ffff:127.x.y.z``), or the name ``localhost``. Any other name is refused: it would
    be resolved by the C library, beyond the test's control."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped in LOOPBACK_V4
        return address == LOOPBACK_V6
    return address in LOOPBACK_V4


@dataclass
class NetworkRule:
    """Every TCP/UDP connect asked for in this process (``attempts``), and those refused (``violations``)."""

    attempts: list[tuple[str, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def check(self, family: int, address: Any) -> None:
        """Record a connect to ``address``; raise :class:`NetworkRuleViolation` unless it is loopback."""
        if family not in (socket.AF_INET, socket.AF_INET6):
            return
        host, port = (address[0], address[1]) if isinstance(address, tuple) and len(address) >= 2 else (address, 0)
        self.attempts.append((str(host), int(port) if isinstance(port, int) else 0))
        if not is_loopback_target(host):
            message = f"network rule: connection to {host}:{port} refused (tests reach only 127.0.0.0/8 and ::1)"
            self.violations.append(message)
            raise NetworkRuleViolation(message)

    def non_loopback_attempts(self) -> list[tuple[str, int]]:
        """The recorded attempts to anything but loopback (each one was refused, not made)."""
        return [(host, port) for host, port in self.attempts if not is_loopback_target(host)]


def wrap_connect(rule: NetworkRule, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (``socket.socket.connect`` or ``connect_ex``) behind ``rule.check``."""

    def connect(sock: socket.socket, address: Any) -> Any:
        rule.check(sock.family, address)
        return original(sock, address)

    connect.__wrapped__ = original  # type: ignore[attr-defined]
    return connect


def install(rule: NetworkRule) -> Callable[[], None]:
    """Patch ``socket.socket.connect``/``connect_ex`` for the whole process; returns the undo function."""
    originals = {name: getattr(socket.socket, name) for name in ("connect", "connect_ex")}
    for name, original in originals.items():
        setattr(socket.socket, name, wrap_connect(rule, original))

    def uninstall() -> None:
        for name, original in originals.items():
            setattr(socket.socket, name, original)

    return uninstall
