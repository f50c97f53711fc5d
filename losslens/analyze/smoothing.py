"""Noise along a run: skip its earliest checkpoints, smooth the rest, and measure what is left.

The OLMo ladder (Bhagia et al. 2024) fits its accuracy curves after skipping each run's first
10 % of checkpoints and smoothing over 5; AI2's *Signal and Noise* (Heineman et al. 2025)
measures a benchmark's noise as the spread of a score over a run's last checkpoints and its
signal as the spread between models. The arrays here are one task x metric's points (a
:class:`~losslens.analyze.table.Series`' columns): every function works run by run.
"""

from __future__ import annotations

import math

import numpy as np


def _runs(run: np.ndarray, tokens: np.ndarray) -> list[np.ndarray]:
    """Each run's point indices, ordered by tokens."""
    order = np.lexsort((tokens, run))
    cuts = np.flatnonzero(run[order][1:] != run[order][:-1]) + 1
    return np.split(order, cuts) if len(order) else []


def skip_early(run: np.ndarray, tokens: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the points a fit keeps: those at or past ``fraction`` of their run's last token count.
    Step 0 and the first steps sit near random initialisation, far off any curve of later points."""
    keep = np.zeros(len(run), bool)
    for idx in _runs(run, tokens):
        keep[idx] = tokens[idx] >= fraction * tokens[idx].max()
    return keep


def moving_average(run: np.ndarray, tokens: np.ndarray, values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` checkpoints of each run. The window shrinks
    symmetrically at a run's ends (its last point stays as measured), so a trend is not bent:
    a one-sided window would pull the final value toward earlier, worse checkpoints."""
    out = np.asarray(values, float).copy()
    half = window // 2
    if half == 0:
        return out
    for idx in _runs(run, tokens):
        csum = np.r_[0.0, np.cumsum(out[idx])]
        i = np.arange(len(idx))
        h = np.minimum(half, np.minimum(i, len(idx) - 1 - i))
        out[idx] = (csum[i + h + 1] - csum[i - h]) / (2 * h + 1)
    return out


def noise_floor(run: np.ndarray, tokens: np.ndarray, values: np.ndarray, last: int) -> dict:
    """Checkpoint-to-checkpoint noise of a score, its signal across runs, and their ratio.

    ``sd``: the standard deviation of each run's last ``last`` checkpoints about a straight line
    through them (so a run still improving is not counted as noise), pooled over runs as the
    root of the mean variance. ``signal``: the range of the runs' final values. ``snr``:
    signal / sd (Heineman et al.'s relative dispersion over relative standard deviation, whose
    shared mean cancels). None where no run has ``last`` >= 3 checkpoints.
    """
    variances, finals = [], []
    for idx in _runs(run, tokens):
        finals.append(float(values[idx[-1]]))
        tail = idx[-last:]
        if len(tail) >= 3 and len(tail) == last:
            x = np.arange(len(tail), dtype=float)
            slope, intercept = np.polyfit(x, values[tail], 1)
            resid = values[tail] - (intercept + slope * x)
            variances.append(float((resid ** 2).sum() / (len(tail) - 2)))
    if not variances:
        return {"sd": None, "signal": None, "snr": None, "runs": 0, "last": last}
    sd = math.sqrt(float(np.mean(variances)))
    signal = float(np.ptp(finals))
    return {"sd": sd, "signal": signal, "snr": signal / sd if sd > 0 else math.inf, "runs": len(variances),
            "last": last}
