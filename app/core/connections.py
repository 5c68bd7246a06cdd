"""uvicorn's HTTP protocol as ``opencoach serve`` runs it: a deadline for a request's headers, and
``MAX_CONNECTIONS`` (uvicorn's ``limit_concurrency``) applied to WebSocket handshakes as to HTTP requests.

Threat: connection exhaustion. ``MAX_CONNECTIONS`` caps the connections one process holds, so whoever holds
connections cheaply takes them all from everybody else (slowloris: open connections and send nothing, or a
request's headers a byte at a time). uvicorn (read in its source, ``uvicorn/protocols/http/httptools_impl.py``
of 0.55) has no option for either hole:

- no timeout for a request's headers. ``timeout_keep_alive`` is armed only once a response has been sent
  (``on_response_complete``), never on a new connection, and every byte received disarms it
  (``data_received``): a connection that sends nothing after it opened, or a byte of its headers every few
  seconds, is held until the client closes it (nginx's ``client_header_timeout``, Apache's
  ``mod_reqtimeout`` and Go's ``ReadHeaderTimeout`` close such connections);
- ``limit_concurrency`` is checked in ``on_headers_complete`` for HTTP requests only: a WebSocket handshake
  returns before that check and is handed to the WebSocket protocol (``handle_websocket_upgrade``), so past the
  limit widget sockets went on being accepted.

:class:`GuardedHttpToolsProtocol` subclasses uvicorn's httptools protocol (the one its ``http="auto"`` picks
when httptools is installed, as ``litestar[standard]`` installs it), passed as uvicorn's ``http`` option
(:func:`guarded_http_protocol`). It overrides uvicorn internals of 0.55 (the methods named above and
``timeout_keep_alive_task``); ``tests/integration/platform/test_slow_clients.py`` and
``test_connection_limit.py`` run it on a real server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

REFUSED_HANDSHAKE = b"Service Unavailable"
"""The body of the 503 that refuses a WebSocket handshake past the limit (uvicorn's, for an HTTP request)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with two guards against connection exhaustion (the module's docstring says
    why):

    - a connection has :attr:`header_timeout` seconds to send a request's headers, counted from when it opened
      or from the end of its previous response (when uvicorn arms ``timeout_keep_alive``, which still closes an
      idle keep-alive connection sooner), and is closed without an answer when they are not complete by then
      (bytes arriving meanwhile do not extend it). A request whose headers arrived is never timed out by it: a
      response in progress (a dashboard event stream) and an upgraded WebSocket (the widget's) last as long as
      they last; a slow request body is not covered.
    - a WebSocket handshake when the process holds ``limit_concurrency`` connections or requests (counted as
      uvicorn counts them for an HTTP request: the asking connection too) gets the same ``503 Service
      Unavailable`` as an HTTP request, and the connection is closed; before, it was accepted.
    """

    header_timeout: float = 10.0
    """Seconds a connection has for a request's headers (``HEADER_TIMEOUT_SECONDS``; see
    :func:`guarded_http_protocol`)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout_task: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """uvicorn's, and the headers' deadline starts."""
        super().connection_made(transport)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's; the deadline is dropped."""
        self._cancel_header_timeout()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        """The headers arrived in time: the deadline is dropped, then uvicorn runs the request (or lets the
        WebSocket upgrade go on)."""
        self._cancel_header_timeout()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """uvicorn's; when it waits for the connection's next request (it armed ``timeout_keep_alive``), that
        request's headers get a new deadline."""
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:
            self._await_headers()

    def handle_websocket_upgrade(self) -> None:
        """uvicorn's upgrade, or, past ``limit_concurrency``, a 503 and the connection closed."""
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit: WebSocket handshake refused.")
            content = [STATUS_LINE[503]]
            for name, value in self.server_state.default_headers:
                content += [name, b": ", value, b"\r\n"]
            content += [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(REFUSED_HANDSHAKE)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                REFUSED_HANDSHAKE,
            ]
            self.transport.write(b"".join(content))
            self.transport.close()
            return
        super().handle_websocket_upgrade()

    def _await_headers(self) -> None:
        """Start the deadline for the next request's headers (a running one is replaced)."""
        self._cancel_header_timeout()
        self.header_timeout_task = self.loop.call_later(self.header_timeout, self._header_timeout_handler)

    def _cancel_header_timeout(self) -> None:
        if self.header_timeout_task is not None:
            self.header_timeout_task.cancel()
            self.header_timeout_task = None

    def _header_timeout_handler(self) -> None:
        """The headers did not arrive in time: close the connection (no response: a client that sent nothing
        asked nothing)."""
        self.header_timeout_task = None
        if not self.transport.is_closing():
            self.transport.close()


def guarded_http_protocol(header_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """:class:`GuardedHttpToolsProtocol` with ``header_timeout`` (seconds, > 0), as uvicorn's ``http`` option
    (uvicorn makes a protocol per connection from the class and its ``Config``, which has no field for it)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"header_timeout": header_timeout})
