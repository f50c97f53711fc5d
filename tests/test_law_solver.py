"""The batched Newton solver of the scaling law's Huber objective, with scipy's L-BFGS-B as the reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize
from scipy.special import logsumexp

from losslens.analyze import law_solver
from losslens.analyze.scaling import _BOUNDS, HUBER_DELTA

SIZES = np.array([2e7, 6e7, 1.5e8, 4e8, 1e9])
TOKENS = np.array([1e9, 4e9, 2e10])


def points(E, A, alpha, B, beta, noise, seed):
    """ln N, ln D, ln L on a 5 x 3 grid of sizes and token counts, with log-normal noise."""
    N, D = (v.ravel() for v in np.meshgrid(SIZES, TOKENS))
    L = E + A / N ** alpha + B / D ** beta
    L = L * np.exp(np.random.default_rng(seed).normal(0, noise, len(L)))
    return np.log(N), np.log(D), np.log(L)


def objective(theta, lnN, lnD, lnL, counts=None):
    a, b, e, alpha, beta = theta
    r = logsumexp([a - alpha * lnN, b - beta * lnD, np.full_like(lnN, e)], axis=0) - lnL
    h = np.where(np.abs(r) <= HUBER_DELTA, 0.5 * r ** 2, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA))
    return float((h if counts is None else counts * h).sum())


def lbfgsb(start, lnN, lnD, lnL, bounds=_BOUNDS):
    res = optimize.minimize(lambda t: objective(t, lnN, lnD, lnL) / HUBER_DELTA, start, method="L-BFGS-B",
                            bounds=bounds, options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-10})
    return res.fun * HUBER_DELTA


def solve(starts, lnN, lnD, lnL, counts=None, bounds=_BOUNDS):
    starts = np.atleast_2d(np.asarray(starts, float))
    counts = np.ones((len(starts), len(lnL))) if counts is None else counts
    return law_solver.minimize(starts, lnN, lnD, lnL, counts, HUBER_DELTA, bounds)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)  # as tests/test_fuzz.py
@given(E=st.floats(0.5, 2.5), A=st.floats(50, 2000), alpha=st.floats(0.1, 0.6), B=st.floats(50, 2000),
       beta=st.floats(0.1, 0.6), noise=st.sampled_from([0.0, 0.003, 0.02]), seed=st.integers(0, 2 ** 16))
def test_ends_at_a_minimum_that_lbfgsb_cannot_lower(E, A, alpha, B, beta, noise, seed):
    # The objective has several local minima (a term can switch off at a bound), so the check is local:
    # L-BFGS-B started where the solver stopped finds nothing lower by more than 1e-6 of it. (The solver
    # stops after three steps that each gain under 1e-12; on a flat valley floor L-BFGS-B then finds at
    # most ~1e-7 more: 200 random laws, 2026-12-04.)
    lnN, lnD, lnL = points(E, A, alpha, B, beta, noise, seed)
    start = np.array([5.0, 5.0, 0.5, 0.3, 0.3])
    theta, value = solve(start, lnN, lnD, lnL)
    assert np.isclose(value[0], objective(theta[0], lnN, lnD, lnL), rtol=1e-9, atol=1e-20)
    assert value[0] <= objective(start, lnN, lnD, lnL)  # every kept step lowers the objective
    assert value[0] <= lbfgsb(theta[0], lnN, lnD, lnL) * (1 + 1e-6) + 1e-15


def test_recovers_the_law_from_exact_points():
    truth = np.array([np.log(400.0), np.log(900.0), np.log(1.7), 0.34, 0.28])  # a, b, e, alpha, beta
    lnN, lnD, lnL = points(1.7, 400.0, 0.34, 900.0, 0.28, 0.0, 0)
    theta, value = solve([5.0, 5.0, 0.0, 0.5, 0.5], lnN, lnD, lnL)
    assert value[0] < 1e-14
    np.testing.assert_allclose(theta[0], truth, rtol=1e-4, atol=1e-4)


def test_counts_weigh_points_as_repeats_would():
    lnN, lnD, lnL = points(1.7, 400.0, 0.34, 900.0, 0.28, 0.01, 3)
    pick = np.random.default_rng(1).integers(0, len(lnL), len(lnL))
    start = [3.0, 3.0, 0.3, 0.3, 0.3]
    counts = np.bincount(pick, minlength=len(lnL))[None].astype(float)
    weighted = solve(start, lnN, lnD, lnL, counts)
    repeated = solve(start, lnN[pick], lnD[pick], lnL[pick])
    np.testing.assert_allclose(weighted[1], repeated[1], rtol=1e-9)
    np.testing.assert_allclose(weighted[0], repeated[0], rtol=1e-5, atol=1e-6)


def test_a_batch_gives_what_each_problem_gives_alone():
    lnN, lnD, lnL = points(1.7, 400.0, 0.34, 900.0, 0.28, 0.01, 5)
    rng = np.random.default_rng(0)
    counts = np.array([np.bincount(rng.integers(0, 15, 15), minlength=15) for _ in range(6)], float)
    starts = np.tile([4.0, 6.0, 0.5, 0.4, 0.4], (6, 1))
    together = solve(starts, lnN, lnD, lnL, counts)
    alone = [solve(s, lnN, lnD, lnL, c[None]) for s, c in zip(starts, counts)]
    np.testing.assert_allclose(together[1], [v[0] for _, v in alone], rtol=1e-12)
    np.testing.assert_allclose(together[0], [t[0] for t, _ in alone], rtol=1e-9, atol=1e-12)


def test_bounds_hold_and_equal_ends_fix_a_parameter_per_problem():
    lnN, lnD, lnL = points(1.7, 400.0, 0.34, 900.0, 0.28, 0.01, 7)
    bounds = np.repeat(np.asarray(_BOUNDS, float)[None], 2, axis=0)
    bounds[0, 3] = (0.5, 0.5)  # problem 0: alpha fixed away from its optimum
    bounds[1, 2] = (-10.0, -2.0)  # problem 1: E held below its true 1.7
    theta, value = solve(np.tile([5.0, 5.0, -3.0, 0.5, 0.5], (2, 1)), lnN, lnD, lnL, bounds=bounds)
    assert theta[0, 3] == 0.5
    assert -10.0 <= theta[1, 2] <= -2.0
    free = solve([5.0, 5.0, 0.5, 0.3, 0.3], lnN, lnD, lnL)[1][0]
    assert (value > free).all()  # each constraint binds: its optimum is worse than the free one
    assert value[0] <= lbfgsb(np.array([5.0, 5.0, -3.0, 0.5, 0.5]), lnN, lnD, lnL, bounds[0]) * (1 + 1e-9)
