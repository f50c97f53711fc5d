"""The order in which a sweep visits checkpoints.

``tokens`` (the default) goes run by run, each run's checkpoints by token count. ``coarse-to-fine``
visits them so that any prefix of the sweep is spread evenly over tokens: in every run the first and
last checkpoints, then the middle one, then the quarters, the eighths, ... (bisection, breadth
first), with the runs taken in turn at each step. A sweep interrupted part-way has then seen every
run from end to end at a coarser spacing, which is what ``losslens analyze`` needs to place a
threshold, rather than the first runs in full and the last ones not at all.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path


def bisection_order(n: int) -> list[int]:
    """0..n-1 as first, last, middle, quarters, eighths, ...: ``bisection_order(9) == [0, 8, 4, 2, 6, 1, 3, 5, 7]``."""
    order = [0, n - 1][: min(n, 2)]
    intervals = deque([(0, n - 1)])
    while intervals:
        lo, hi = intervals.popleft()
        if hi - lo >= 2:  # an index lies strictly between the two ends
            mid = (lo + hi) // 2
            order.append(mid)
            intervals += [(lo, mid), (mid, hi)]
    return order


def coarse_to_fine(runs: list[list[Path]]) -> list[Path]:
    """Every run's checkpoints (each list by token count) in bisection order, the runs interleaved step by step."""
    ranked = [(step, r, ckpts[i]) for r, ckpts in enumerate(runs) for step, i in enumerate(bisection_order(len(ckpts)))]
    return [ckpt for _, _, ckpt in sorted(ranked, key=lambda x: x[:2])]


def visiting_order(runs: list[list[Path]], order: str) -> list[Path]:
    """The sweep's checkpoints in ``order`` (one of :data:`losslens.evaluate.config.ORDERS`)."""
    if order == "coarse-to-fine":
        return coarse_to_fine(runs)
    return [c for ckpts in runs for c in ckpts]
