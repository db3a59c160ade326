"""Uncertainty of Recall@N: percentile bootstrap over the queries.

Recall@N of an evaluation is the mean of one 0/1 outcome per query (did a true match appear in
the top N). Its 95 % interval is estimated by resampling the queries with replacement
(``n_boot`` resamples, seeded, so the same run gives the same interval) and taking the 2.5th and
97.5th percentiles of the resampled recalls. The resolution of R@N is ``100 / queries`` points.
Two designs whose intervals overlap are reported as not distinguishable on this benchmark.
"""

from __future__ import annotations

import numpy as np

from tatvpr_hw.errors import UserError


def bootstrap_ci(hits, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """``(low, high)`` percent: the percentile-bootstrap interval of ``100 * mean(hits)``."""
    h = np.asarray(hits, dtype=np.float64).ravel()
    if h.size == 0:
        raise UserError("bootstrap_ci: no queries")
    if not (0.0 < level < 1.0) or n_boot < 1:
        raise UserError(f"bootstrap_ci: level {level} must be in (0, 1) and n_boot {n_boot} >= 1")
    rng = np.random.default_rng(seed)
    # the recall of a resample only depends on how many times each query was drawn
    counts = rng.multinomial(h.size, np.full(h.size, 1.0 / h.size), size=n_boot)
    recalls = 100.0 * (counts @ h) / h.size
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(recalls, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when two intervals share a point: the two designs are not distinguishable."""
    return a[0] <= b[1] and b[0] <= a[1]


def resolution_points(queries: int) -> float:
    """Points of R@N one query is worth."""
    if queries < 1:
        raise UserError("resolution_points: no queries")
    return 100.0 / queries
