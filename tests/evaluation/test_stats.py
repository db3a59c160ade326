"""Bootstrap intervals of Recall@N against closed forms derived by hand."""

import math

import numpy as np
import pytest

from tatvpr_hw.errors import UserError
from tatvpr_hw.stats import bootstrap_ci, overlap, resolution_points


def test_all_or_nothing_has_no_spread():
    assert bootstrap_ci([1] * 50) == (100.0, 100.0)
    assert bootstrap_ci([0] * 50) == (0.0, 0.0)


def test_half_of_400_matches_the_normal_approximation():
    # p = 0.5, n = 400: standard error sqrt(p (1 - p) / n) = 0.025 -> 95 % half-width 1.96 * 2.5 = 4.9 points
    hits = np.array([1, 0] * 200)
    lo, hi = bootstrap_ci(hits, n_boot=4000, seed=1)
    assert (lo + hi) / 2 == pytest.approx(50.0, abs=0.5)
    assert (hi - lo) / 2 == pytest.approx(1.96 * 100 * math.sqrt(0.25 / 400), abs=0.6)


def test_interval_shrinks_with_more_queries_and_is_seeded():
    w40 = np.subtract(*bootstrap_ci([1, 0, 0, 0] * 10)[::-1])
    w400 = np.subtract(*bootstrap_ci([1, 0, 0, 0] * 100)[::-1])
    assert w400 < w40 / 2  # ~ 1 / sqrt(10) as wide
    assert bootstrap_ci([1, 0, 1] * 9, seed=3) == bootstrap_ci([1, 0, 1] * 9, seed=3)


def test_overlap_and_resolution():
    assert overlap((50.0, 60.0), (59.9, 70.0)) and not overlap((50.0, 60.0), (60.1, 70.0))
    assert resolution_points(400) == 0.25
    with pytest.raises(UserError):
        bootstrap_ci([])


def test_metrics_table_shows_intervals_and_says_when_designs_cannot_be_told_apart():
    from tatvpr_hw.evaluation import distinguishability_notes, metrics_table_markdown
    base = {"model": "student", "format": "ternary2", "gmacs": 1.0, "memory_mb": 1.0}
    recs = [
        {**base, "granularity": "token", "sparsity": 0.0, "recall@1": 50.0, "r1_ci95": [45.0, 55.0]},
        {**base, "granularity": "token", "sparsity": 0.4, "recall@1": 49.0, "r1_ci95": [44.0, 54.0]},
        {**base, "granularity": "bank", "sparsity": 0.4, "recall@1": 47.0, "r1_ci95": [42.0, 52.0]},
        {**base, "granularity": "tensor", "sparsity": 0.4, "recall@1": 30.0, "r1_ci95": [25.0, 35.0]},
    ]
    notes = distinguishability_notes(recs)
    assert len(notes) == 3  # three pairs at s = 0.4; s = 0 is one model
    tb, tt, bt = notes
    assert "`token`" in tb and "`bank`" in tb and "not distinguishable" in tb
    assert "`tensor`" in tt and "distinguishable (95 % intervals disjoint)" in tt
    assert "distinguishable (95 % intervals disjoint)" in bt  # [42, 52] vs [25, 35]
    md = metrics_table_markdown(recs)
    assert "R@1 95 % CI" in md and "[44.00, 54.00]" in md and "not distinguishable" in md
