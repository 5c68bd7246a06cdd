"""Fixtures of the platform tests: a loopback webhook receiver for the coach's handoff alerts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.stub_dns import LOOPBACK_HOOKS


@dataclass
class Receiver:
    """A webhook receiver on a loopback port recording every POST."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            state.bodies.append(json.loads(self.rfile.read(int(self.headers.get("content-length", "0")))))
            state.arrived.set()
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # the name the test settings allowlist (OUTBOUND_ALLOW) for receivers on 127.0.0.1 (tests/stub_dns.py)
    state.url = f"http://{LOOPBACK_HOOKS}:{server.server_address[1]}/hooks/opencoach"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
