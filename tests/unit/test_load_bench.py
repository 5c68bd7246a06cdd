"""bench/load.py's counting: latency only for turns answered inside the timed window, acknowledgements and
replies by ``client_message_id``, errors end a turn, and live events counted for the watched conversations
only, one per message a turn stored; the table reports sent − stored as lost; a dropped socket is reopened and
its unacknowledged message sent again with the same id, as the widget does."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from websockets.asyncio.server import ServerConnection, serve

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def load() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the benchmarks import their helpers as top-level modules
    try:
        return importlib.import_module("load")
    finally:
        if str(BENCH) in sys.path:
            sys.path.remove(str(BENCH))


def test_a_turn_ends_at_its_done_or_error_and_only_timed_turns_give_a_latency(load: ModuleType) -> None:
    tally = load.Tally()
    now = time.monotonic()
    assert not tally.record({"type": "ack", "client_message_id": "a"}, "a", now - 0.1, now + 10)
    assert not tally.record({"type": "ack", "client_message_id": "other"}, "a", now - 0.1, now + 10)
    assert not tally.record({"type": "token", "text": "Hi"}, "a", now - 0.1, now + 10)
    assert tally.record({"type": "done", "message_id": "r1"}, "a", now - 0.1, now + 10)
    assert tally.acked == {"a"} and tally.replied == {"a"} and tally.reply_ids == ["r1"]
    assert len(tally.latencies_ms) == 1 and 100 <= tally.latencies_ms[0] < 5000
    # answered after the window closed: counted as replied, not as a timed turn
    assert tally.record({"type": "done", "message_id": "r2"}, "b", now - 1, now - 0.5)
    assert len(tally.latencies_ms) == 1 and tally.replied == {"a", "b"}
    assert tally.record({"type": "error", "message": "nope"}, "c", now, now + 10)
    assert tally.errors == {"error event: nope": 1} and "c" not in tally.replied
    # a message sent again after its socket dropped, already answered: acknowledged, no ``done`` to wait for
    assert tally.record({"type": "ack", "client_message_id": "d", "answering": False}, "d", now, now + 10)
    assert "d" in tally.acked and "d" not in tally.replied


def test_live_events_count_only_the_watched_conversations(load: ModuleType) -> None:
    tally = load.Tally(live=["c1", "c2", "c1", "c3"], watched={"c1", "c3"})
    assert tally.live_events() == 3


def test_the_table_reports_lost_messages_as_sent_minus_stored(load: ModuleType) -> None:
    from rich.console import Console

    tally = load.Tally(sent=["a", "b", "c"], acked={"a", "b", "c"}, replied={"a", "b"}, latencies_ms=[10.0, 30.0])
    tally.reply_ids = ["r1", "r1"]  # "b" ended without a reply; "a"'s reply came twice
    args = argparse.Namespace(sockets=3, seconds=2.0)
    console = Console(width=200, record=True)
    console.print(load.render(args, 2, 2, tally, 2.0, (2, 2)))
    text = console.export_text()
    assert "turns/s (answered in the window)" in text and " 1.0 " in text
    assert "3 / 3 / 2" in text
    lost = next(line for line in text.splitlines() if "lost" in line)
    assert lost.rstrip(" │").endswith("1")
    rows = _rows(text)
    assert rows["replies received / stored"] == "1 / 2"
    assert rows["reply ids received twice or more"] == "1"
    assert rows["turns ended without a reply (handed to the coach)"] == "1"


def test_stage_times_come_from_the_api_logs_without_each_processs_warm_up_turn(
    load: ModuleType, tmp_path: Path
) -> None:
    line = (
        'INFO app.chat.turn.pipeline: turn stages {{"message_id": "m", "stages": {{"intake": {0}, "generate": 2.0}}}}'
    )
    (tmp_path / "serve-0.log").write_text("\n".join(["INFO other", line.format(900.0), line.format(5.0)]))
    (tmp_path / "serve-1.log").write_text("\n".join([line.format(800.0), line.format(7.0), line.format(9.0)]))
    samples = load.stage_samples(sorted(tmp_path.glob("serve-*.log")))
    assert samples == {"intake": [5.0, 7.0, 9.0], "generate": [2.0, 2.0, 2.0]}


def test_unpublished_live_events_are_counted_from_the_api_logs_and_reported(load: ModuleType, tmp_path: Path) -> None:
    from rich.console import Console

    dropped = "WARNING app.handoff.live: live {} event not published, Redis unavailable: TimeoutError()"
    lines = [dropped.format("message"), "INFO other", dropped.format("typing")]
    (tmp_path / "serve-0.log").write_text("\n".join(lines))
    (tmp_path / "serve-1.log").write_text("\n".join(["INFO nothing dropped here", dropped.format("message")]))
    tally = load.Tally(unpublished=load.unpublished_events(sorted(tmp_path.glob("serve-*.log"))))
    assert tally.unpublished == 3
    console = Console(width=200, record=True)
    console.print(load.render(argparse.Namespace(sockets=1, seconds=1.0), 2, 2, tally, 1.0, (0, 0)))
    assert _rows(console.export_text())["live events not published (all coaches, API logs)"] == "3"


def _rows(text: str) -> dict[str, str]:
    """A rendered two-column table's rows: measure → value."""
    cells = [line.split("│") for line in text.splitlines() if "│" in line]
    return {row[1].strip(): row[2].strip() for row in cells}


async def test_a_pause_never_outlasts_the_timed_window(load: ModuleType) -> None:
    started = time.monotonic()
    await load.pause_until(60, started + 0.05)
    assert time.monotonic() - started < 5


async def test_a_dropped_socket_is_reopened_and_its_unacknowledged_message_sent_again(
    load: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first socket closes as soon as the message arrives (never stored, never acknowledged); the client
    reopens it and sends the same ``client_message_id`` again, which the second socket answers."""
    monkeypatch.setattr(load, "RECONNECT_S", (0.01, 0.02))
    received: list[str] = []

    async def server(ws: ServerConnection) -> None:
        if received:  # the reopened socket answers every message
            async for raw in ws:
                cid = json.loads(raw)["client_message_id"]
                received.append(cid)
                await ws.send(json.dumps({"type": "ack", "client_message_id": cid, "answering": True}))
                await ws.send(json.dumps({"type": "done", "message_id": f"r-{cid}", "conversation_id": "c1"}))
            return
        received.append(json.loads(await ws.recv())["client_message_id"])
        await ws.close()  # dropped before the message was stored

    async with serve(server, "127.0.0.1", 0) as running:
        port = next(iter(running.sockets)).getsockname()[1]
        tally = load.Tally()
        stop_at = time.monotonic() + 0.2
        await asyncio.wait_for(load.socket_client(f"http://127.0.0.1:{port}", "t", tally, 0.001, stop_at, False), 10)

    assert len(received) >= 2 and received[0] == received[1]  # the same id again
    assert tally.sent == list(dict.fromkeys(received))  # each message counted as sent once
    assert tally.acked == tally.replied == set(tally.sent)
    assert sum(tally.errors.values()) == 1 and next(iter(tally.errors)).startswith("socket ended: ConnectionClosed")


class Enough(Exception):
    """Ends a fake socket's conversation after its scripted turns."""


class ScriptedSocket:
    """A widget socket that answers each message with an ``ack`` and a ``done`` whose ``message_id`` comes from
    ``replies`` (``None``: no reply was sent), then raises :class:`Enough` at the next message."""

    def __init__(self, replies: list[str | None]) -> None:
        self.replies = replies
        self.events: list[str] = []

    async def send(self, raw: str) -> None:
        if not self.replies:
            raise Enough
        cid = json.loads(raw)["client_message_id"]
        done = {"type": "done", "conversation_id": "c1", "message_id": self.replies.pop(0)}
        self.events += [json.dumps({"type": "ack", "client_message_id": cid, "answering": True}), json.dumps(done)]

    async def recv(self) -> str:
        return self.events.pop(0)


async def test_a_watched_turn_expects_a_live_event_per_message_it_stored(load: ModuleType) -> None:
    """A turn that sent a reply stored two messages (two live events for the coach); a turn whose reply the
    paused AI did not send stored one. Before, every turn expected two, and such turns showed as lost events."""
    tally = load.Tally()
    with pytest.raises(Enough):
        await load._chat(ScriptedSocket(["r1", None, "r3"]), tally, load.Widget(), 1e-6, time.monotonic() + 60, True)
    assert len(tally.sent) == 4  # three answered, the fourth refused by the script
    assert tally.watched == {"c1"} and tally.watched_messages == 2 + 1 + 2
