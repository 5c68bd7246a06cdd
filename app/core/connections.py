"""uvicorn's HTTP protocol as ``opencoach serve`` runs it: a deadline for a request's headers, a minimum rate for
its body, and ``MAX_CONNECTIONS`` (uvicorn's ``limit_concurrency``) applied to WebSocket handshakes as to HTTP
requests.

Threat: connection exhaustion. ``MAX_CONNECTIONS`` caps the connections one process holds, so whoever holds
connections cheaply takes them all from everybody else (slowloris: open connections and send nothing, or a
request's headers a byte at a time; slow POST, "R-U-Dead-Yet": complete headers, then the body a byte every few
seconds). uvicorn (read in its source, ``uvicorn/protocols/http/httptools_impl.py`` of 0.55) has no option for
any of these holes:

- no timeout for a request's headers. ``timeout_keep_alive`` is armed only once a response has been sent
  (``on_response_complete``), never on a new connection, and every byte received disarms it
  (``data_received``): a connection that sends nothing after it opened, or a byte of its headers every few
  seconds, is held until the client closes it (nginx's ``client_header_timeout``, Apache's
  ``mod_reqtimeout`` and Go's ``ReadHeaderTimeout`` close such connections);
- no timeout for a request's body: once the headers are complete the app's ``receive()`` waits for the next
  bytes as long as they take, and the body limits (``app.auth``) bound its size, not its pace (Apache's
  ``mod_reqtimeout`` ``body=`` and nginx's ``client_body_timeout`` answer a slow body 408);
- ``limit_concurrency`` is checked in ``on_headers_complete`` for HTTP requests only: a WebSocket handshake
  returns before that check and is handed to the WebSocket protocol (``handle_websocket_upgrade``), so past the
  limit widget sockets went on being accepted.

:class:`GuardedHttpToolsProtocol` subclasses uvicorn's httptools protocol (the one its ``http="auto"`` picks
when httptools is installed, as ``litestar[standard]`` installs it), passed as uvicorn's ``http`` option
(:func:`guarded_http_protocol`). It overrides uvicorn internals of 0.55 (the methods named above,
``on_body``, ``on_message_complete``, ``timeout_keep_alive_task``, ``pipeline``, the ``RequestResponseCycle``'s
``response_started``, ``waiting_for_100_continue``, ``disconnected`` and ``message_event``, and its
``FlowControl``); ``tests/integration/platform/test_slow_clients.py`` and
``test_connection_limit.py`` run it on a real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

REFUSED_HANDSHAKE = b"Service Unavailable"
"""The body of the 503 that refuses a WebSocket handshake past the limit (uvicorn's, for an HTTP request)."""
BODY_TIMED_OUT = b"Request Timeout"
"""The body of the 408 that answers a request whose body came too slowly."""


class BodyClock:
    """The deadline of one request's body, as Apache's ``mod_reqtimeout`` sets it with ``body=T,MinRate=R``
    (https://httpd.apache.org/docs/2.4/mod/mod_reqtimeout.html): the body has ``allowance`` seconds (T), and one
    second more for every ``min_rate`` bytes (R) received, so a client that keeps sending at least ``min_rate`` bytes
    a second is never cut, whatever the body's size, and one that sends less is, at most ``allowance`` seconds
    after its rate fell below it. nginx's ``client_body_timeout`` (60 s between two successive reads) would not
    do: a byte every 59 s passes it, and so would a slow POST.

    Unlike ``mod_reqtimeout``'s, the clock counts only while it runs (:meth:`run`): its owner stops it
    (:meth:`stop`) while the server does not read the body (the client could not send meanwhile), and the seconds
    left carry over. ``expired`` is called once when the deadline passes while it runs.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, allowance: float, min_rate: float, expired: Callable[[], None]
    ) -> None:
        self.loop = loop
        self.allowance = allowance
        """Seconds left when the clock runs next (while it runs: at :meth:`run`)."""
        self.min_rate = min_rate
        self.expired = expired
        self.deadline: float | None = None
        """The loop time (``loop.time()``) the body is late at while the clock runs; ``None`` while stopped."""
        self.timer: asyncio.TimerHandle | None = None

    def received(self, size: int) -> None:
        """``size`` bytes of the body arrived: ``size / min_rate`` seconds more."""
        credit = size / self.min_rate
        if self.deadline is None:
            self.allowance += credit
        else:
            self.deadline += credit  # the timer set for the old deadline looks again then (_check)

    def run(self) -> None:
        """Count the seconds from now (nothing if it runs)."""
        if self.deadline is None:
            self.deadline = self.loop.time() + self.allowance
            self.timer = self.loop.call_at(self.deadline, self._check)

    def stop(self) -> None:
        """Stop counting; the seconds left wait for the next :meth:`run` (nothing if it is stopped)."""
        if self.deadline is not None:
            self.allowance = self.deadline - self.loop.time()
            self.deadline = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        """The timer: call ``expired`` if the deadline passed, else wait for the deadline that bytes pushed back
        (one timer a request rather than one for each piece of the body)."""
        if self.deadline is not None and self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._check)
            return
        self.timer = self.deadline = None
        self.allowance = 0.0
        self.expired()


class ReadingFlowControl(FlowControl):
    """uvicorn's flow control (which pauses reading the connection while the app has not taken 64 KiB of a
    request's body, or while a pipelined request waits for the response to the one before), calling ``changed``
    whenever reading pauses or may resume: uvicorn's ``RequestResponseCycle.receive`` calls ``resume_reading`` each
    time the app asks for the body, after it sent a ``100 Continue`` the client waited for."""

    def __init__(self, transport: asyncio.Transport, changed: Callable[[], None]) -> None:
        super().__init__(transport)
        self.changed = changed

    def pause_reading(self) -> None:
        """uvicorn's, then ``changed``."""
        super().pause_reading()
        self.changed()

    def resume_reading(self) -> None:
        """uvicorn's (nothing if reading was not paused), then ``changed``."""
        super().resume_reading()
        self.changed()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with three guards against connection exhaustion (the module's docstring says
    why):

    - a connection has :attr:`header_timeout` seconds to send a request's headers, counted from when it opened
      or from the end of its previous response (when uvicorn arms ``timeout_keep_alive``, which still closes an
      idle keep-alive connection sooner), and is closed without an answer when they are not complete by then
      (bytes arriving meanwhile do not extend it). A request whose headers arrived is never timed out by it: a
      response in progress (a dashboard event stream) and an upgraded WebSocket (the widget's) last as long as
      they last.
    - a request's body has :attr:`body_timeout` seconds and one more for every :attr:`body_min_rate` bytes
      received (Apache ``mod_reqtimeout``'s ``body=20,MinRate=500``, its default; :class:`BodyClock`), counted
      from the end of its headers while the server reads it: not while uvicorn's flow control pauses reading
      (the app has not taken 64 KiB of it yet, a pipelined request waits for the response before it) nor while
      a client that sent ``Expect: 100-continue`` waits for the app to ask for the body. A body that is late
      gets ``408 Request Timeout`` and the connection is closed; the app's ``receive()`` returns
      ``http.disconnect`` (its ``send()`` nothing). A request without a body, a WebSocket handshake, and a
      request whose response has started (the app answered without waiting for the body; a stream) are not
      timed out by it (the rest of a body unread when the response ends is under the next request's header
      deadline).
    - a WebSocket handshake when the process holds ``limit_concurrency`` connections or requests (counted as
      uvicorn counts them for an HTTP request: the asking connection too) gets the same ``503 Service
      Unavailable`` as an HTTP request, and the connection is closed; before, it was accepted.
    """

    header_timeout: float = 10.0
    """Seconds a connection has for a request's headers (``HEADER_TIMEOUT_SECONDS``; see
    :func:`guarded_http_protocol`)."""
    body_timeout: float = 20.0
    """Seconds a request's body has besides those its bytes earn (``BODY_TIMEOUT_SECONDS``)."""
    body_min_rate: int = 500
    """Bytes a second a request's body must come at after :attr:`body_timeout` (``BODY_MIN_BYTES_PER_SECOND``)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout_task: asyncio.TimerHandle | None = None
        self.body_clock: BodyClock | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """uvicorn's, with flow control that drives the body's clock, and the headers' deadline starts."""
        super().connection_made(transport)
        self.flow = ReadingFlowControl(transport, self._time_body)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's; the deadlines are dropped."""
        self._cancel_header_timeout()
        self._drop_body_clock()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        """The headers arrived in time: the deadline is dropped, then uvicorn runs the request (or lets the
        WebSocket upgrade go on), and the body's clock starts for a request it runs."""
        self._cancel_header_timeout()
        asked = self.cycle
        super().on_headers_complete()
        if self.cycle is not asked:  # a request (a WebSocket upgrade makes none)
            self.body_clock = BodyClock(self.loop, self.body_timeout, self.body_min_rate, self._body_timeout_handler)
            self._time_body()

    def on_body(self, body: bytes) -> None:
        """uvicorn's; the bytes earn the body more time."""
        if self.body_clock is not None:
            self.body_clock.received(len(body))
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The body is complete (or there was none): its clock is dropped, then uvicorn's."""
        self._drop_body_clock()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn's; when it waits for the connection's next request (it armed ``timeout_keep_alive``), that
        request's headers get a new deadline. A pipelined request uvicorn starts now gets its body's clock."""
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:
            self._await_headers()
        self._time_body()

    def handle_websocket_upgrade(self) -> None:
        """uvicorn's upgrade, or, past ``limit_concurrency``, a 503 and the connection closed."""
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit: WebSocket handshake refused.")
            self._answer_and_close(503, REFUSED_HANDSHAKE)
            return
        super().handle_websocket_upgrade()

    def _answer_and_close(self, status: int, text: bytes) -> None:
        """Write a response of ``status`` with the plain text ``text`` (and uvicorn's default headers), then
        close the connection."""
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(text)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            text,
        ]
        self.transport.write(b"".join(content))
        self.transport.close()

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

    def _time_body(self) -> None:
        """Run the body's clock while the server reads the body of a request it runs and has not answered, stop it
        while not (see the class's docstring); drop it once the response started."""
        clock, cycle = self.body_clock, self.cycle
        if clock is None:
            return
        if cycle.response_started:
            self._drop_body_clock()
        elif self.flow.read_paused or cycle.waiting_for_100_continue or self.pipeline:
            clock.stop()
        else:
            clock.run()

    def _drop_body_clock(self) -> None:
        if self.body_clock is not None:
            self.body_clock.stop()
            self.body_clock = None

    def _body_timeout_handler(self) -> None:
        """The body is late: answer 408 and close the connection, unless a response started meanwhile (it goes
        on). The request's app sees the client gone: ``receive()`` returns ``http.disconnect``, ``send()`` writes
        nothing more (as uvicorn's ``connection_lost`` does it, which follows)."""
        self.body_clock = None
        cycle = self.cycle
        if cycle.response_started or self.transport.is_closing():
            return
        self.logger.warning("Request body not received in time: 408 sent, connection closed.")
        cycle.disconnected = True
        cycle.message_event.set()
        self._answer_and_close(408, BODY_TIMED_OUT)


def guarded_http_protocol(
    header_timeout: float, body_timeout: float, body_min_rate: int
) -> type[GuardedHttpToolsProtocol]:
    """:class:`GuardedHttpToolsProtocol` with ``header_timeout`` and ``body_timeout`` (seconds, > 0) and
    ``body_min_rate`` (bytes a second, > 0), as uvicorn's ``http`` option (uvicorn makes a protocol per connection
    from the class and its ``Config``, which has no field for them)."""
    guards = {"header_timeout": header_timeout, "body_timeout": body_timeout, "body_min_rate": body_min_rate}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), guards)
