"""The resolver the egress guard uses in tests (``app.core.egress.set_resolver``): no test sends a DNS query.

Names the suite uses for mocked endpoints answer :data:`PUBLIC`, an address that passes the guard's check.
Nothing ever connects to it: respx answers those requests inside httpcore's pool, and the network rule
(``tests/network_rule.py``) refuses and reports any connection outside loopback. A test hands out other
answers with :meth:`StubResolver.answer` (reset after each test); an unknown name does not resolve.
"""

from __future__ import annotations

import socket

PUBLIC = "93.184.216.34"
"""A public address the stub answers for the check only (a connection to it breaks the network rule)."""

LOOPBACK_HOOKS = "hooks.loopback.test"
"""A name for webhook receivers on 127.0.0.1, allowlisted by the test settings' ``OUTBOUND_ALLOW``."""

TEST_OUTBOUND_ALLOW = LOOPBACK_HOOKS
"""``OUTBOUND_ALLOW`` of the session's test settings: only the receiver name, so loopback URLs (literal
``127.0.0.1``) stay refused, as they are on an install with the default empty allowlist."""

DEFAULT_ANSWERS: dict[str, list[str]] = {
    "llm.example.test": [PUBLIC],  # tests/openai_wire.py MOCK_BASE_URL
    "api.openai.test": [PUBLIC],  # unit tests of the OpenAI-compatible provider
    "api.openai.com": [PUBLIC],  # the memory evaluation's default endpoint, mocked with respx
    "hooks.example.com": [PUBLIC],  # a webhook URL saved (never called) by the dashboard settings test
    LOOPBACK_HOOKS: ["127.0.0.1"],
}


class StubResolver:
    """``await stub(host, port)`` → addresses. :meth:`answer` queues answers for a name: each call takes the
    next one and the last one repeats (``answer(host, [PUBLIC], ["10.0.0.7"])``: public first, private next)."""

    def __init__(self) -> None:
        self._answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def answer(self, host: str, *answers: list[str]) -> None:
        """Answer ``host`` with ``answers`` in turn (the last one from then on), until :meth:`reset`."""
        self._answers[host.lower()] = [list(a) for a in answers]

    def reset(self) -> None:
        """Forget the answers given with :meth:`answer` and the recorded calls."""
        self._answers.clear()
        self.calls.clear()

    async def __call__(self, host: str, port: int) -> list[str]:
        name = host.lower().rstrip(".")
        self.calls.append(name)
        queued = self._answers.get(name)
        if queued:
            return queued.pop(0) if len(queued) > 1 else queued[0]
        if name in DEFAULT_ANSWERS:
            return list(DEFAULT_ANSWERS[name])
        raise socket.gaierror(socket.EAI_NONAME, f"stub resolver: {host} is not a known test name")
