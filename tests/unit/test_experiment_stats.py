"""Experiment statistics and assignment: Fisher / chi-square p-values against textbook cases, Wilson
intervals, when a winner is declared, deterministic balanced assignment, and variant validation."""

from __future__ import annotations

import uuid

import pytest

from app.core.errors import InvalidInput
from app.learning.experiments import (
    HANDOFF_RATE,
    THUMBS_UP_RATE,
    VariantResult,
    assign_variant,
    holm_rejects_all,
    pick_winner,
    significance,
    wilson_interval,
)
from app.learning.experiments import _clean_variants as clean_variants


def test_fisher_exact_matches_the_lady_tasting_tea() -> None:
    """Fisher (1935): 3 of 4 cups right in each group, two-sided p = 34/70 ≈ 0.486."""
    test, p = significance([VariantResult("a", 4, 3), VariantResult("b", 4, 1)])
    assert test == "fisher_exact" and p == pytest.approx(34 / 70, abs=1e-3)


def test_chi_square_for_three_arms_and_undefined_cases() -> None:
    test, p = significance([VariantResult("a", 100, 80), VariantResult("b", 100, 50), VariantResult("c", 100, 65)])
    assert test == "chi_square" and p is not None and p < 1e-4
    assert significance([VariantResult("a", 10, 5), VariantResult("b", 0, 0)])[1] is None
    assert significance([VariantResult("a", 10, 10), VariantResult("b", 5, 5), VariantResult("c", 4, 4)])[1] is None


def test_wilson_interval() -> None:
    """Wilson (1927) score interval: 5 of 10 → [0.237, 0.763]; 0 of 10 starts at 0; none without trials."""
    low, high = wilson_interval(5, 10) or (0.0, 0.0)
    assert (round(low, 3), round(high, 3)) == (0.237, 0.763)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-3))
    assert wilson_interval(0, 0) is None
    assert VariantResult("a", 10, 5).as_dict()["ci_low"] == pytest.approx(0.2366, abs=1e-3)


def test_a_winner_needs_enough_samples_significance_and_the_metric_direction() -> None:
    strong = [VariantResult("control", 60, 30), VariantResult("warm", 60, 52)]
    assert pick_winner(strong, metric=THUMBS_UP_RATE, alpha=0.05, min_samples=30) == "warm"
    assert pick_winner(strong, metric=THUMBS_UP_RATE, alpha=0.05, min_samples=61) is None
    # lower is better for handoffs: the variant that hands off less wins
    assert pick_winner(strong, metric=HANDOFF_RATE, alpha=0.05, min_samples=30) == "control"
    close = [VariantResult("control", 60, 30), VariantResult("warm", 60, 33)]
    assert pick_winner(close, metric=THUMBS_UP_RATE, alpha=0.05, min_samples=30) is None


def test_of_three_arms_the_best_wins_only_when_it_beats_each_other_one() -> None:
    """The chi-square test says some arm differs; Holm-corrected pairwise tests say whether the best is it."""
    tied = [VariantResult("a", 100, 50), VariantResult("b", 100, 50), VariantResult("c", 100, 10)]
    assert significance(tied)[1] < 1e-8  # type: ignore[operator]
    assert pick_winner(tied, metric=THUMBS_UP_RATE, alpha=0.05, min_samples=30) is None
    ahead = [VariantResult("a", 100, 60), VariantResult("b", 100, 30), VariantResult("c", 100, 10)]
    assert pick_winner(ahead, metric=THUMBS_UP_RATE, alpha=0.05, min_samples=30) == "a"
    # lower is better for handoffs: c hands off least and beats both
    assert pick_winner(ahead, metric=HANDOFF_RATE, alpha=0.05, min_samples=30) == "c"


def test_holm_rejects_every_hypothesis_only_step_by_step() -> None:
    """Holm (1979): m = 2, alpha = 0.05: the smaller p below 0.025, the larger below 0.05."""
    assert holm_rejects_all([0.01, 0.04], 0.05)
    assert not holm_rejects_all([0.03, 0.04], 0.05)  # 0.03 ≥ 0.05 / 2
    assert not holm_rejects_all([0.001, 0.05], 0.05)
    assert holm_rejects_all([], 0.05)


def test_assignment_is_deterministic_and_roughly_balanced() -> None:
    experiment = uuid.UUID("6f1c2b7e-4d0a-4b7e-9a55-0c9d3f6e2a11")
    clients = [uuid.UUID(int=i * 7919 + 13) for i in range(200)]
    first = [assign_variant(experiment, c, 2) for c in clients]
    assert first == [assign_variant(experiment, c, 2) for c in clients]
    assert 80 <= sum(first) <= 120
    other = [assign_variant(uuid.uuid4(), c, 2) for c in clients]
    assert other != first  # a new experiment reshuffles the clients
    assert set(assign_variant(experiment, c, 3) for c in clients) == {0, 1, 2}


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([{"name": "only"}], "2 to 4 variants"),
        ([{"name": "a"}, {"name": "a"}], "unique"),
        ([{"name": "a"}, {"name": "b", "temperature": 3}], "temperature"),
        ([{"name": "a"}, {"name": "b", "colour": "red"}], "unknown variant field"),
        ([{"name": "a"}, {"name": " "}], "needs a name"),
        ([{"name": "a"}, {"name": "b", "persona": ""}], "persona must be text of 1 to"),
        ([{"name": "a"}, {"name": "b", "temperature": True}], "temperature"),
    ],
)
def test_bad_variants_are_refused(variants: list[dict[str, object]], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        clean_variants(variants)
