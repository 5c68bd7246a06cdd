"""bench/load.py's counting: latency only for turns answered inside the timed window, acknowledgements and
replies by ``client_message_id``, errors end a turn, and live events counted for the watched conversations
only; the table reports sent − stored as lost."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

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
    assert tally.errors == 1 and "c" not in tally.replied


def test_live_events_count_only_the_watched_conversations(load: ModuleType) -> None:
    tally = load.Tally(live=["c1", "c2", "c1", "c3"], watched={"c1", "c3"})
    assert tally.live_events() == 3


def test_the_table_reports_lost_messages_as_sent_minus_stored(load: ModuleType) -> None:
    from rich.console import Console

    tally = load.Tally(sent=["a", "b", "c"], acked={"a", "b", "c"}, replied={"a", "b"}, latencies_ms=[10.0, 30.0])
    args = argparse.Namespace(sockets=3, seconds=2.0)
    console = Console(width=200, record=True)
    console.print(load.render(args, 2, 2, tally, 2.0, (2, 2)))
    text = console.export_text()
    assert "turns/s (answered in the window)" in text and " 1.0 " in text
    assert "3 / 3 / 2" in text
    lost = next(line for line in text.splitlines() if "lost" in line)
    assert lost.rstrip(" │").endswith("1")


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


async def test_a_pause_never_outlasts_the_timed_window(load: ModuleType) -> None:
    started = time.monotonic()
    await load.pause_until(60, started + 0.05)
    assert time.monotonic() - started < 5
