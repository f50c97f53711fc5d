"""Intervals that hold their own estimate, and the seed level's small-sample correction.

A percentile bootstrap interval can miss its point estimate: when the estimator is biased or
skewed over resamples (a hinge's kink near a cluster of points, a forecast through a nonlinear
law), the middle 95 % of the replicates can sit to one side of the full-data fit. The report never
shows a number outside its own interval: :func:`around` extends the interval to the estimate, and
the caller records that it did (``ci_widened``), so the reader knows the bootstrap was lopsided.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def percentile(samples, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite samples; NaNs when there are none."""
    s = np.asarray(samples, float)
    s = s[~np.isnan(s)]
    if not len(s):
        return math.nan, math.nan
    q = (1 - level) / 2
    lo, hi = np.quantile(s, [q, 1 - q])
    return float(lo), float(hi)


def around(point: float, lo: float, hi: float) -> tuple[float, float, bool]:
    """[lo, hi] extended to hold ``point``, and whether it had to be. An interval with a NaN end (no
    bootstrap) or a NaN point is returned as it is."""
    if any(map(math.isnan, (point, lo, hi))):
        return lo, hi, False
    return min(lo, point), max(hi, point), not lo <= point <= hi


def around_arrays(point: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`around` elementwise: (lo, hi, widened) arrays."""
    point, lo, hi = (np.asarray(v, float) for v in (point, lo, hi))
    ok = ~(np.isnan(point) | np.isnan(lo) | np.isnan(hi))
    widened = ok & ((point < lo) | (point > hi))
    return np.where(ok, np.minimum(lo, point), lo), np.where(ok, np.maximum(hi, point), hi), widened


def seed_inflation(seeds_per_size: list[int], level: float) -> float:
    """How much wider a bootstrap over k seeds per size must be to cover as a t interval would.

    Resampling k seeds with replacement spreads their mean by sqrt((k - 1) / k) of its standard
    error (the bootstrap's plug-in variance divides by k, not k - 1), and the normal quantile
    ignores that the seeds' variance is itself estimated from few of them. The factor undoes both:
    sqrt(k / (k - 1)) * t_{df}(q) / z(q), with k the mean seed count of the sizes that have several
    and df = sum(k_s - 1) the degrees of freedom of their pooled variance. 3 sizes x 3 seeds at
    95 %: 1.225 * 2.447 / 1.960 = 1.53. 1 when no size has several seeds.
    """
    ks = [k for k in seeds_per_size if k > 1]
    if not ks:
        return 1.0
    k, df = float(np.mean(ks)), sum(k - 1 for k in ks)
    q = 1 - (1 - level) / 2
    return math.sqrt(k / (k - 1)) * float(stats.t.ppf(q, df) / stats.norm.ppf(q))
