"""bench/scale.py's split of the chunks across coaches: Zipf sizes whose biggest holds the asked share, and
the classes of tenants the table reports."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def scale() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the benchmarks import their harness as a top-level module
    try:
        return importlib.import_module("scale")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize(("total", "coaches"), [(1_000_000, 1000), (100_000, 1000), (2000, 50)])
def test_zipf_sizes_sum_to_the_total_and_the_biggest_holds_the_share(
    scale: ModuleType, total: int, coaches: int
) -> None:
    sizes = scale.zipf_sizes(total, coaches, 0.15)
    assert sizes.shape == (coaches,) and int(sizes.sum()) == total
    assert abs(sizes[0] / total - 0.15) < 0.02
    assert sizes.min() >= 1
    assert np.all(np.diff(sizes) <= 0), "biggest first"
    assert sizes[-1] < sizes[0] / 10, "a long tail of small coaches"


def test_zipf_sizes_refuse_fewer_chunks_than_coaches(scale: ModuleType) -> None:
    with pytest.raises(ValueError, match="at least one chunk per coach"):
        scale.zipf_sizes(10, 20, 0.15)


def test_tenant_classes_split_by_rank_and_find_the_largest_exact_coach(scale: ModuleType) -> None:
    sizes = scale.zipf_sizes(1_000_000, 1000, 0.15)
    classes = scale.tenant_classes(sizes, 2000)
    assert classes["biggest"] == [0]
    assert classes["big"] == list(range(1, 10))
    assert classes["mid"] == list(range(10, 100)) and classes["small"] == list(range(100, 1000))
    [largest_exact] = classes["largest exact"]
    assert sizes[largest_exact] < 2000 <= sizes[largest_exact - 1]
    assert scale.tenant_classes(sizes, 10**9)["largest exact"] == [0], "no index at all: the biggest is exact"
    assert "largest exact" not in scale.tenant_classes(sizes, 1), "every coach indexed"
    assert "small" not in scale.tenant_classes(scale.zipf_sizes(2000, 50, 0.15), 200)
