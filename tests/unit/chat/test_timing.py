"""Stages: a stage's wall clock, added up when timed twice, counted when its block raises."""

from __future__ import annotations

import time

import pytest

from app.chat.turn.timing import Stages


def test_a_stage_timed_twice_adds_up_and_a_raising_block_counts() -> None:
    stages = Stages()
    with stages.time("gather"):
        time.sleep(0.01)
    with pytest.raises(RuntimeError), stages.time("gather"):
        time.sleep(0.01)
        raise RuntimeError("boom")
    with stages.time("persist"):
        pass

    assert list(stages.ms) == ["gather", "persist"]
    assert stages.ms["gather"] >= 20 and stages.ms["persist"] < 10
