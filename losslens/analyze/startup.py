"""One verdict rule kept apart from the curve models: an η among the runs' first checkpoints is no emergence.

Early in training every metric moves fast while the loss falls from its initial value, so a sigmoid or
hinge fitted to a whole sweep can put its onset at the top edge of the loss range, where the only points
"before" it are each run's first checkpoint or two (the OLMo ladder's ARC-Easy bits per byte: η = 5.95
nats, above which lie only the 1-5xC runs' first checkpoints). That flat side is the start of training,
not a plateau the metric sat on: the claim is downgraded to ``insufficient-data``, η kept, and the reason
says so. (The OLMo ladder paper skips the first 10 % of each run's checkpoints for the same reason.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from losslens.analyze.threshold import EMERGENT, INSUFFICIENT, ThresholdResult

STARTUP_CHECKPOINTS = 2  # a run's first checkpoints (tokens > 0), where its loss is still falling from init


def checkpoint_rank(run: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Each point's position among its run's checkpoints with tokens > 0, by tokens (0: the first;
    -1: a point at tokens 0, the initialisation)."""
    rank = np.full(len(run), -1)
    for r in np.unique(run):
        idx = np.flatnonzero((run == r) & (tokens > 0))
        order = np.unique(tokens[idx], return_inverse=True)[1]  # seeds share a run's token counts
        rank[idx] = order
    return rank


def startup_eta(result: ThresholdResult, run: np.ndarray, tokens: np.ndarray, loss: np.ndarray,
                value: np.ndarray) -> ThresholdResult:
    """``result`` unchanged, unless it is emergent with every point at or above η (the flat side) among
    its run's first :data:`STARTUP_CHECKPOINTS` checkpoints: then ``insufficient-data``, saying why."""
    if result.verdict != EMERGENT:
        return result
    ok = np.isfinite(loss) & np.isfinite(value)
    rank = checkpoint_rank(np.asarray(run)[ok], np.asarray(tokens)[ok])
    flat_side = loss[ok] >= result.eta
    if not flat_side.any() or rank[flat_side].max() >= STARTUP_CHECKPOINTS:
        return result
    why = (f"eta = {result.eta:.3f} lies among the runs' first checkpoints: the {int(flat_side.sum())} points "
           f"above it are each within its run's first {STARTUP_CHECKPOINTS} (or at initialisation), the start "
           f"of training rather than a plateau, so this is not an emergence")
    return dataclasses.replace(result, verdict=INSUFFICIENT, reason=why)
