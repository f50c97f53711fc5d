"""The scaling-law fit recovers known exponents; forecasts invert it."""

from __future__ import annotations

import numpy as np
import pytest

from losslens.analyze import fit_scaling_law
from losslens.analyze.scaling import forecast

TRUE = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)  # Hoffmann et al. (2022)


def law(N, D):
    return TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_alpha_and_beta_within_10_percent(seed):
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 7), np.geomspace(1e8, 1e11, 9)))
    rng = np.random.default_rng(seed)
    L = law(N, D) * (1 + 0.01 * rng.normal(size=N.size))  # 1% noise
    fit = fit_scaling_law(N, D, L)
    assert abs(fit.alpha / TRUE["alpha"] - 1) < 0.10, fit
    assert abs(fit.beta / TRUE["beta"] - 1) < 0.10, fit
    assert np.abs(fit.predict(N, D) / law(N, D) - 1).max() < 0.03


def test_bootstrap_intervals_and_forecast_invert_the_law():
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e11, 6)))
    L = law(N, D) * (1 + 0.005 * np.random.default_rng(0).normal(size=N.size))
    fit = fit_scaling_law(N, D, L, n_bootstrap=40, seed=0)
    lo, hi = fit.intervals["beta"]
    assert lo <= fit.beta <= hi and hi - lo < 0.1
    eta = 2.6
    rows = forecast(fit, eta, np.array([2.55, 2.6, 2.65]), [1e8, 1e12, 1e3], flops_per_param_token=6.0)
    big = rows[0]
    assert big["reachable"] and fit.predict(1e8, big["tokens"]) == pytest.approx(eta, rel=1e-6)
    assert big["tokens_ci"][0] <= big["tokens"] <= big["tokens_ci"][1]
    assert big["flops"] == pytest.approx(6.0 * 1e8 * big["tokens"])
    assert rows[1]["tokens"] < big["tokens"]  # a bigger model needs fewer tokens
    assert not rows[2]["reachable"] and rows[2]["tokens"] == np.inf  # 1000 parameters never get there


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="needs >= 5 points"):
        fit_scaling_law([1e6, 1e7], [1e8, 1e9], [3.0, 2.5])
