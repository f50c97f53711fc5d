"""The curve registry: one record per model, used by thresholds and backtests; curves bounded by the metric."""

from __future__ import annotations

import numpy as np
import pytest

from losslens.analyze import curves
from losslens.analyze.prediction import fit_curve
from losslens.analyze.curves import CURVES, SMOOTH, CurveModel, fit_models
from losslens.analyze.threshold import find_threshold
from losslens.metrics import FRACTION, NON_POSITIVE
from scipy.special import expit

CHANCE = 0.25


def arc_like(rng, lo=3.35, n=60, noise=0.01):
    """Accuracy rising from chance towards 1 along a sigmoid in loss; the points reach only loss ``lo``
    (about 40 %), as a ladder's best model does on a hard task. Truth at loss 3.0: 0.625."""
    x = rng.uniform(lo, 4.5, n)
    return x, CHANCE + 0.75 * expit((3.0 - x) / 0.25) + rng.normal(0, noise, n)


def test_every_registered_model_is_fitted_with_its_declared_parameters():
    x = np.linspace(2.0, 4.5, 40)
    fits = fit_models(x, CHANCE + 0.3 * np.maximum(0, 3.0 - x), CHANCE)
    assert list(fits) == list(CURVES)
    for name, f in fits.items():
        assert tuple(f.params) == CURVES[name].params
        assert f.predict(x).shape == x.shape and np.isfinite(f.bic)
    # a lower-is-better metric: the same fits, every level negated, shape parameters unchanged
    flipped = fit_models(x, -(CHANCE + 0.3 * np.maximum(0, 3.0 - x)), -CHANCE, higher_is_better=False)
    for name, f in fits.items():
        for p, v in f.params.items():
            want = -v if p in CURVES[name].levels else v
            assert flipped[name].params[p] == pytest.approx(want, abs=1e-6)


def test_adding_a_curve_model_is_one_register_call(monkeypatch):
    # A quadratic in loss, declared once: thresholds and backtests fit it without another change.
    def fit(d):
        c2, c1, c0 = np.polyfit(d.x, d.y, 2)
        return {"c0": c0, "c1": c1, "c2": c2}, 3, ""

    quad = CurveModel("quadratic", ("c0", "c1", "c2"), ("c0", "c1", "c2"), fit,
                      lambda p, x: p["c0"] + p["c1"] * x + p["c2"] * x ** 2, lambda p, x, n: SMOOTH)
    monkeypatch.setattr(curves, "CURVES", {**CURVES})
    monkeypatch.setattr("losslens.analyze.threshold.CURVES", curves.CURVES)
    curves.register(quad)
    with pytest.raises(ValueError, match="already registered"):
        curves.register(quad)
    rng = np.random.default_rng(0)
    x = rng.uniform(2.0, 4.5, 60)
    y = 0.9 - 0.12 * (x - 2.0) ** 2 + rng.normal(0, 0.005, 60)  # curved, and steadily improving
    th = find_threshold(x, y, None, n_bootstrap=0)
    assert "quadratic" in th.fits and th.preferred == "quadratic" and th.verdict == SMOOTH
    curve = fit_curve(x, y, None, True, FRACTION, 5, rng)
    assert curve.model == "quadratic" and len(curve.replicates) == 5
    assert curve.predict(2.0) == pytest.approx(0.9, abs=0.01)


def test_sigmoid_rises_to_the_metrics_bound_unless_the_data_saturate():
    rng = np.random.default_rng(3)
    x, y = arc_like(rng)
    assert y.max() < 0.45
    bound = fit_models(x, y, CHANCE, ceiling=1.0)["sigmoid"]
    free = fit_models(x, y, CHANCE)["sigmoid"]
    assert "ceiling at the metric's bound 1" in bound.note
    assert bound.params["floor"] + bound.params["height"] == pytest.approx(1.0)
    assert abs(bound.predict([3.0])[0] - 0.625) < 0.05  # the extrapolation reaches the truth...
    assert abs(free.predict([3.0])[0] - 0.625) > abs(bound.predict([3.0])[0] - 0.625)  # ...better than a free top
    # saturating data: the plateau at 0.6 is measured, and kept
    xs = rng.uniform(2.0, 4.5, 80)
    ys = CHANCE + 0.35 * expit((3.5 - xs) / 0.1) + rng.normal(0, 0.01, 80)
    sat = fit_models(xs, ys, CHANCE, ceiling=1.0)["sigmoid"]
    assert "saturation" in sat.note
    assert sat.params["floor"] + sat.params["height"] == pytest.approx(0.6, abs=0.02)


def test_lower_is_better_ceiling_is_the_lower_bound():
    rng = np.random.default_rng(4)
    x, y = arc_like(rng)
    brier = 1.0 - y  # lower is better, best value 0
    fit = fit_models(x, brier, 1 - CHANCE, higher_is_better=False, ceiling=0.0)["sigmoid"]
    assert fit.params["floor"] + fit.params["height"] == pytest.approx(0.0, abs=1e-9)
    assert abs(fit.predict([3.0])[0] - (1 - 0.625)) < 0.05


@pytest.mark.parametrize("bounds, y_of", [(FRACTION, lambda x: 1.6 - 0.3 * x), (NON_POSITIVE, lambda x: 0.6 - 0.3 * x)])
def test_curve_predictions_and_samples_stay_inside_the_metrics_bounds(bounds, y_of):
    # A steady line that crosses the bound just past the data (token_prob > 1, a log-likelihood > 0).
    rng = np.random.default_rng(5)
    x = rng.uniform(2.5, 4.5, 50)
    y = np.clip(y_of(x) + rng.normal(0, 0.01, 50), *bounds)
    curve = fit_curve(x, y, None, True, bounds, 30, rng)
    far = 1.0
    assert y_of(far) > bounds[1]
    assert curve.predict(far) <= bounds[1]
    samples = curve.samples(np.full(30, far), rng)
    assert len(samples) == 30 and samples.max() <= bounds[1]


def test_prediction_interval_widens_with_how_far_it_extrapolates():
    # Each replicate is the curve refitted on resampled points, evaluated at the extrapolated x: the
    # parameters' uncertainty is propagated there, so the interval grows with the distance.
    rng = np.random.default_rng(6)
    x = rng.uniform(3.0, 4.0, 40)
    y = 0.2 + 0.1 * (4.0 - x) + rng.normal(0, 0.01, 40)
    curve = fit_curve(x, y, None, True, (-np.inf, np.inf), 200, rng)
    assert curve.model == "linear"
    widths = []
    for at in (3.5, 2.5, 1.5):
        s = curve.samples(np.full(200, at), np.random.default_rng(0))
        lo, hi = np.quantile(s, [0.025, 0.975])
        assert lo <= curve.predict(at) <= hi
        widths.append(hi - lo)
    # residual scatter (sd 0.01) is the floor; the slope's uncertainty (sd ~0.006) adds ~0.011 at x = 1.5
    assert widths[0] < widths[1] < widths[2] and widths[2] > 1.25 * widths[0]


def test_a_sigmoid_with_no_finite_optimum_stops_at_its_declared_box():
    """A saturating exponential (bits per byte against compute) is a sigmoid's tail with no finite
    optimum: midpoint and height run off together. The fit ends on the box's edge, not where the
    optimiser's budget ran out."""
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-21.0, -19.0, 200))
    y = 0.7 + 0.5 * np.exp(x + 20.0) + rng.normal(0, 0.005, len(x))  # lower is better
    fit = fit_models(x, y, None, higher_is_better=False, ceiling=0.0)["sigmoid"]
    span, (lo, hi) = np.ptp(x), (x.min(), x.max())
    assert lo - curves.SIGMOID_REACH * span - 1e-9 <= fit.params["midpoint"] <= hi + curves.SIGMOID_REACH * span + 1e-9
    assert fit.params["width"] <= curves.SIGMOID_WIDTHS[1] * span * (1 + 1e-9)
    assert abs(fit.params["floor"]) < 20 * np.ptp(y)  # unboxed, it ran to 37 times the data's range here


def test_a_sigmoid_on_its_box_edge_is_smooth_not_emergent():
    """A log-likelihood that grows exponentially as loss falls (the demo's next-word log-likelihood): the
    sigmoid wants its midpoint far below the data and stops on the box's edge, where its "floor" (5 % of a
    height set by the box) takes in half the points. That floor is the box's, not the data's: smooth."""
    x = np.sort(np.random.default_rng(0).uniform(1.0, 3.8, 100))
    y = -5 + 0.5 * np.exp(-(x - 3.8) / 1.8) + np.random.default_rng(1).normal(0, 0.03, len(x))
    fit = fit_models(x, y, None)["sigmoid"]
    on_floor = int((expit((fit.params["midpoint"] - x) / fit.params["width"]) < curves.FLAT_FRACTION).sum())
    assert 3 <= on_floor <= len(x) - 3  # the old rule alone would call it emergent
    assert curves.at_box_edge(fit.params, x) and fit.verdict(x, 3) == SMOOTH
    assert find_threshold(x, y, None).verdict != "emergent"


@pytest.mark.parametrize("floor, ceiling", [(0.25, 1.0), (None, 1.0), (0.25, None), (None, None)])
def test_refits_of_many_resamples_at_once_equal_one_at_a_time(floor, ceiling):
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(1.5, 4.0, 300))
    y = 0.25 + 0.5 * expit((2.5 - x) / 0.2) + rng.normal(0, 0.03, len(x))
    data = curves.CurveData(x, y, floor, ceiling)
    picks = [rng.integers(0, len(x), len(x)) for _ in range(12)]
    together = curves.fit_resampled("sigmoid", data, picks)
    alone = [curves.fit_one("sigmoid", curves.CurveData(x[p], y[p], floor, ceiling)) for p in picks]
    for a, b in zip(alone, together):
        assert a.note == b.note
        assert a.params == pytest.approx(b.params, rel=1e-9, abs=1e-12)
