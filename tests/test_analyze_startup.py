"""An η among the runs' first checkpoints is not an emergence (losslens.analyze.startup)."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from losslens.analyze.startup import STARTUP_CHECKPOINTS, checkpoint_rank, startup_eta
from losslens.analyze.threshold import EMERGENT, INSUFFICIENT, find_threshold


def sweep(eta: float, seed: int = 0):
    """4 runs x 30 checkpoints whose loss falls from ~6 to ~3 nats, each run starting lower than the last
    (as longer runs' first checkpoints do); a metric rising as a steep sigmoid below ``eta``."""
    rng = np.random.default_rng(seed)
    run, tokens, loss = [], [], []
    for i, start in enumerate((6.0, 5.8, 5.0, 4.6)):
        t = np.geomspace(1e8, 1e10, 30) * (i + 1)
        run += [f"r{i}"] * 30
        tokens += list(t)
        loss += list(3.0 + (start - 3.0) * (t[0] / t) ** 0.35)
    loss = np.array(loss)
    value = 0.25 + 0.5 * expit((eta - loss) / 0.05) + 0.005 * rng.normal(size=len(loss))
    return np.array(run), np.array(tokens), loss, value


def verdict(eta: float):
    run, tokens, loss, value = sweep(eta)
    th = find_threshold(loss, value, 0.25, n_bootstrap=50, seed=0)
    return th, startup_eta(th, run, tokens, loss, value)


def test_checkpoint_rank_counts_each_run_from_its_first_trained_checkpoint():
    run = np.array(["a", "a", "a", "b", "b", "a"])
    tokens = np.array([0, 10, 20, 5, 15, 30])
    assert checkpoint_rank(run, tokens).tolist() == [-1, 0, 1, 0, 1, 2]


def test_an_eta_above_all_but_the_first_checkpoints_is_not_an_emergence():
    raw, th = verdict(eta=5.6)  # eta 5.75: above it only the first checkpoints of the two runs starting highest
    assert raw.verdict == EMERGENT  # the curve models alone call it emergent
    assert th.verdict == INSUFFICIENT and th.eta == raw.eta
    assert "first checkpoints" in th.reason and "not an emergence" in th.reason
    assert str(STARTUP_CHECKPOINTS) in th.reason


def test_an_eta_inside_the_runs_keeps_its_emergent_verdict():
    raw, th = verdict(eta=3.8)
    assert raw.verdict == th.verdict == EMERGENT and th is raw
