"""Thresholds and verdicts on synthetic points with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from losslens.analyze import extrapolation_test, find_threshold
from losslens.analyze.threshold import EMERGENT, INSUFFICIENT, NOT_LEARNED, SMOOTH

ETA, CHANCE = 3.0, 0.25


def hinge_points(seed: int, n: int = 48, noise: float = 0.03, slope: float = 0.5):
    """Losses uniform on [2, 4.5]; chance above ETA, rising linearly below, Gaussian noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(2.0, 4.5, n)
    return x, CHANCE + slope * np.maximum(0.0, ETA - x) + rng.normal(0, noise, n)


def test_hinge_interval_covers_eta_in_90_percent_of_50_seeds():
    covered, verdicts = 0, set()
    for seed in range(50):
        x, y = hinge_points(seed)
        r = find_threshold(x, y, CHANCE, n_bootstrap=400, seed=seed)
        verdicts.add(r.verdict)
        covered += r.ci_low <= ETA <= r.ci_high
        assert r.ci_low < r.eta < r.ci_high
    assert verdicts == {EMERGENT}
    assert covered >= 45, f"interval covered eta in {covered}/50 seeds"


def test_hinge_with_free_plateau_and_lower_is_better_metric():
    # A distance-like metric: flat at an unknown level 0.9 above eta, falling (improving) below.
    rng = np.random.default_rng(1)
    x = rng.uniform(2.0, 4.5, 48)
    y = 0.9 - 0.4 * np.maximum(0.0, ETA - x) + rng.normal(0, 0.02, 48)
    r = find_threshold(x, y, None, higher_is_better=False, n_bootstrap=300)
    assert r.verdict == EMERGENT, r.reason
    assert r.plateau_fitted and r.plateau == pytest.approx(0.9, abs=0.03)
    assert r.ci_low <= ETA <= r.ci_high
    assert r.fits["hinge"].params["slope"] < 0  # reported in the metric's own direction
    # The same points flipped as if "higher is better" never rise: no emergence can be claimed.
    assert find_threshold(x, y, None, higher_is_better=True, n_bootstrap=0).verdict != EMERGENT


@pytest.mark.parametrize("seed", range(10))
def test_straight_line_is_smooth(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(2.0, 4.5, 48)
    y = CHANCE + 0.1 + 0.2 * (4.5 - x) + rng.normal(0, 0.03, 48)
    r = find_threshold(x, y, CHANCE, n_bootstrap=100, seed=seed)
    assert r.verdict == SMOOTH, r.reason
    assert np.isnan(r.eta)  # no threshold is reported for a smooth curve


def test_line_starting_at_chance_is_smooth_not_emergent():
    # A hinge with its kink at the highest loss is the same line: that is no evidence of emergence.
    rng = np.random.default_rng(0)
    x = rng.uniform(2.0, 4.5, 48)
    y = CHANCE + 0.2 * (4.5 - x) + rng.normal(0, 0.02, 48)
    assert find_threshold(x, y, CHANCE, n_bootstrap=100).verdict == SMOOTH


def test_pure_chance_is_not_learned():
    verdicts = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        x = rng.uniform(2.0, 4.5, 48)
        verdicts.append(find_threshold(x, CHANCE + rng.normal(0, 0.03, 48), CHANCE, n_bootstrap=100).verdict)
    assert verdicts.count(NOT_LEARNED) >= 28, verdicts
    assert EMERGENT not in verdicts


@pytest.mark.parametrize("offset", [-0.06, -0.03])
def test_noise_below_chance_is_not_learned(offset):
    # Multiple-choice accuracy often sits a little under 1/k (a biased model): a level of its own,
    # not a trend. Pinned at chance, the null fits so badly that any line beats it.
    verdicts = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = rng.uniform(2.0, 4.5, 48)
        verdicts.append(find_threshold(x, CHANCE + offset + rng.normal(0, 0.03, 48), CHANCE, n_bootstrap=50).verdict)
    assert verdicts.count(NOT_LEARNED) >= 18, verdicts
    assert not {SMOOTH, EMERGENT} & set(verdicts), verdicts


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_metric_that_gets_worse_is_never_smooth_or_emergent(higher_is_better):
    rng = np.random.default_rng(3)
    x = rng.uniform(2.0, 4.5, 48)
    sign = -1 if higher_is_better else 1  # the direction of "worse"
    for worse in (0.3 * (4.5 - x),  # a steady decline as the loss falls
                  0.4 * np.maximum(0.0, 3.5 - x)):  # flat, then a drop
        y = 0.6 + sign * worse + rng.normal(0, 0.02, 48)
        r = find_threshold(x, y, None, higher_is_better=higher_is_better, n_bootstrap=50)
        assert r.verdict == NOT_LEARNED, r.reason
        assert "declines" in r.reason


def test_flat_above_chance_is_insufficient_not_unlearned():
    # Already solved at the first checkpoint: the data cannot show where the ability appeared.
    rng = np.random.default_rng(0)
    x = rng.uniform(2.0, 4.5, 48)
    r = find_threshold(x, 0.9 + rng.normal(0, 0.02, 48), CHANCE, n_bootstrap=50)
    assert r.verdict == INSUFFICIENT and "before the first checkpoint" in r.reason, r.reason


def test_too_few_points_or_late_emergence_is_insufficient():
    x, y = hinge_points(0, n=5)
    assert find_threshold(x, y, CHANCE).verdict == INSUFFICIENT
    # Emergence only in the last two checkpoints: a kink, but too few points below it.
    x = np.linspace(4.5, 2.0, 30)
    y = np.full(30, CHANCE) + np.random.default_rng(0).normal(0, 0.01, 30)
    y[-2:] += [0.2, 0.4]
    r = find_threshold(x, y, CHANCE, n_bootstrap=200)
    assert r.verdict == INSUFFICIENT, r.reason
    assert r.n_below < 3


def test_saturating_step_is_emergent_with_onset():
    # A sharp sigmoid saturating near 0.95: the soft hinge; eta is where it leaves chance.
    rng = np.random.default_rng(3)
    x = rng.uniform(2.0, 4.5, 48)
    y = CHANCE + 0.7 / (1 + np.exp((x - 2.8) / 0.05)) + rng.normal(0, 0.03, 48)
    r = find_threshold(x, y, CHANCE, n_bootstrap=200)
    assert r.verdict == EMERGENT and r.preferred == "sigmoid"
    onset = 2.8 + 0.05 * np.log(19)
    assert r.ci_low <= onset <= r.ci_high


def test_per_example_records_widen_the_interval():
    # Scores are means over 100 Bernoulli examples: resampling examples adds their noise.
    rng = np.random.default_rng(0)
    x = rng.uniform(2.0, 4.5, 40)
    p = CHANCE + 0.5 * np.maximum(0.0, ETA - x)
    ex = [(rng.random(100) < pi).astype(float) for pi in p]
    y = np.array([e.mean() for e in ex])
    plain = find_threshold(x, y, CHANCE, n_bootstrap=400, seed=1)
    both = find_threshold(x, y, CHANCE, n_bootstrap=400, seed=1, examples=ex)
    assert both.used_examples and not plain.used_examples
    assert both.to_dict()["threshold"]["bootstrap_over"] == "checkpoints and test examples"
    assert plain.verdict == both.verdict == EMERGENT
    assert both.ci_high - both.ci_low >= 0.9 * (plain.ci_high - plain.ci_low)


def test_extrapolation_flags_an_unpredictable_jump():
    x, y = hinge_points(0, noise=0.01)
    jump = extrapolation_test(x, y, ETA)
    assert jump["rel_error"] > 0.7  # flat above eta said nothing about the rise below
    line = extrapolation_test(x, 1.0 - 0.2 * x, ETA)
    assert line["rel_error"] < 1e-6
    assert extrapolation_test(x, y, 1.0) is None  # nothing below eta


@pytest.mark.parametrize("model, chance", [("sigmoid", CHANCE), ("sigmoid", None), ("hinge", CHANCE), ("hinge", None)])
def test_batched_bootstrap_equals_refitting_each_resample(model, chance):
    # The bootstrap evaluates each grid once for all resamples that share it, with resamples as
    # counts; it must find what refitting every resampled point set one by one finds.
    from losslens.analyze.curves import CurveData, _sigmoid_search, hinge_eta, sigmoid_onset
    from losslens.analyze.threshold import _bootstrap_eta

    rng = np.random.default_rng(5)
    x = rng.uniform(2.0, 4.5, 60)
    y = CHANCE + 0.6 / (1 + np.exp((x - 2.9) / 0.1)) + rng.normal(0, 0.03, 60)
    batched = _bootstrap_eta(model, x, y, chance, 1.0, None, 60, np.random.default_rng(11))
    draw, one_by_one = np.random.default_rng(11), []
    for pick in draw.integers(0, 60, (60, 60)):
        if model == "hinge":
            one_by_one.append(hinge_eta(x[pick], y[pick], chance)[0])  # the full fit, polished
        else:
            m, w, *_ = _sigmoid_search(CurveData(x[pick], y[pick], chance))
            one_by_one.append(sigmoid_onset({"midpoint": m, "width": w}))
    assert len(batched) == 60
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-9 if model == "sigmoid" else 1e-6)


def test_pairs_in_worker_processes_equal_pairs_in_one(monkeypatch):
    # Each pair keeps its seed: the results cannot depend on how many processes computed them.
    from losslens.analyze import pairs
    from losslens.analyze.parallel import WORKERS_ENV, max_workers
    from losslens.analyze.table import Series
    from losslens.errors import LossLensError

    jobs = []
    for i in range(4):
        x, y = hinge_points(i, n=40)
        n = np.repeat([1000, 4000], 20)
        s = Series("t", "acc", np.repeat(["a", "b"], 20), n, n, np.arange(40), 6.0 * n * np.arange(40), x, y,
                   np.full(40, np.nan), np.full(40, np.nan), CHANCE)
        jobs.append((s, None, 100, i))
    monkeypatch.setattr(pairs, "PARALLEL_MIN_WORK", 0)
    runs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        assert max_workers() == int(workers)
        runs[workers] = pairs.analyze_pairs(jobs, progress=False)
    for (one, align1, seeds1), (two, align2, seeds2) in zip(runs["1"], runs["2"]):
        assert one.verdict == two.verdict == EMERGENT and align1 == align2 and seeds1 is seeds2 is None
        np.testing.assert_array_equal(one.bootstrap, two.bootstrap)
    monkeypatch.setenv(WORKERS_ENV, "lots")
    with pytest.raises(LossLensError, match="LOSSLENS_ANALYZE_WORKERS='lots': expected a whole number"):
        max_workers()
