"""Seeds as a level of analyze's bootstraps: synthetic studies whose seeds cross a known threshold at
planted offsets, so the truth (the population η) is known and the intervals can be checked against it."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from losslens.analyze.analysis import analyze, run_analysis
from losslens.analyze.config import AnalyzeConfig
from losslens.analyze.plots import Styles, analysis_styles, task_figure
from losslens.analyze.report import write_report
from losslens.analyze.scaling import fit_scaling_law
from losslens.analyze.seeds import SeedLevel
from losslens.analyze.table import ResultsError, read_results
from losslens.analyze.threshold import EMERGENT, find_threshold
from losslens.contracts import RESULTS_COLUMNS, SEED_COLUMN
from tests.conftest import write_results_csv

ETA, CHANCE, SLOPE = 2.0, 0.25, 0.5
SIZES = (200_000, 400_000, 800_000)


def synthetic_points(rng, n_seeds=3, tau=0.08, sigma=0.02, n_ckpt=12):
    """Accuracy against loss for 3 sizes x ``n_seeds`` seeds: chance above η + δ, rising below it, where
    δ ~ N(0, tau) is each seed's offset (the population η is ETA). Larger sizes reach lower losses."""
    x, y, size, seed = [], [], [], []
    for s, n_params in enumerate(SIZES):
        for j in range(n_seeds):
            loss = np.linspace(3.0 - 0.2 * s, 1.5 - 0.2 * s, n_ckpt)
            offset = rng.normal(0.0, tau)
            acc = CHANCE + SLOPE * np.maximum(0.0, ETA + offset - loss) + rng.normal(0.0, sigma, n_ckpt)
            x.append(loss)
            y.append(np.clip(acc, 0.0, 1.0))
            size += [n_params] * n_ckpt
            seed += [str(j)] * n_ckpt
    return np.concatenate(x), np.concatenate(y), np.array(size), np.array(seed)


def synthetic_rows(rng, n_seeds=3, seed_column=True, **kw) -> list[dict]:
    """The points of :func:`synthetic_points` as results-table rows, one run per size x seed, with the
    validation loss falling along each run's tokens."""
    x, y, size, seed = synthetic_points(rng, n_seeds, **kw)
    rows, n_ckpt = [], int((size == SIZES[0]).sum() // n_seeds)
    for i in range(len(x)):
        k = i % n_ckpt
        tokens = 100_000 * (k + 1)
        row = {"run": f"s{SIZES.index(size[i])}_seed{seed[i]}", "n_params": size[i] + 50_000,
               "n_params_nonembed": size[i], "tokens": tokens, "step": k + 1, "flops": 6.0 * size[i] * tokens,
               "loss": x[i], "task": "t", "metric": "acc", "value": y[i], "ci_low": "", "ci_high": "",
               "n": 200, "chance": CHANCE}
        rows.append({**row, SEED_COLUMN: seed[i]} if seed_column else row)
    return rows


def write_table(path, rows, seed_column=True):
    return write_results_csv(path, rows, columns=[*RESULTS_COLUMNS, SEED_COLUMN] if seed_column else None)


def test_seed_level_widens_the_interval_and_covers_the_population_eta():
    # Seeds crossing at their own eta, spread 0.06 nats: resampling 3 seeds alone understates their
    # variance; the small-sample factor (intervals.seed_inflation) restores coverage.
    rng = np.random.default_rng(7)
    covered = covered_flat = covered_uncorrected = 0
    ratios = []
    for i in range(100):
        x, y, size, seed = synthetic_points(rng, tau=0.06)
        th = find_threshold(x, y, CHANCE, n_bootstrap=200, seed=i, sizes=size, seeds=seed)
        assert th.verdict == EMERGENT and th.used_seeds
        assert th.seed_inflation == pytest.approx(1.529, abs=1e-3)  # sqrt(3/2) t_6 / z at 95 %
        lo, hi = th.ci_without_seeds
        covered += th.ci_low <= ETA <= th.ci_high
        covered_flat += lo <= ETA <= hi
        raw = np.quantile(th.eta + (th.bootstrap - th.eta) / th.seed_inflation, [0.025, 0.975])
        covered_uncorrected += raw[0] <= ETA <= raw[1]
        ratios.append((th.ci_high - th.ci_low) / (hi - lo))
        assert th.ci_low <= th.eta <= th.ci_high
    assert covered >= 90
    assert covered >= covered_uncorrected > covered_flat  # checkpoints alone take each seed's luck for the truth
    assert np.median(ratios) > 1.15


def test_one_seed_per_size_is_the_flat_bootstrap_exactly():
    x, y, size, seed = synthetic_points(np.random.default_rng(1), n_seeds=1)
    assert SeedLevel.of(size, seed) is None
    plain = find_threshold(x, y, CHANCE, n_bootstrap=300, seed=3)
    labelled = find_threshold(x, y, CHANCE, n_bootstrap=300, seed=3, sizes=size, seeds=seed)
    np.testing.assert_array_equal(plain.bootstrap, labelled.bootstrap)
    assert (plain.eta, plain.ci_low, plain.ci_high) == (labelled.eta, labelled.ci_low, labelled.ci_high)
    assert not labelled.used_seeds and labelled.ci_without_seeds is None


def test_examples_stay_the_innermost_level():
    rng = np.random.default_rng(8)
    x, y, size, seed = synthetic_points(rng, n_seeds=2)
    examples = [rng.binomial(1, p, 400).astype(float) for p in np.clip(y, 0, 1)]  # one test set of 400 items
    th = find_threshold(x, y, CHANCE, n_bootstrap=100, seed=0, examples=examples, sizes=size, seeds=seed)
    assert th.used_seeds and th.used_examples and th.verdict == EMERGENT
    assert th.to_dict()["threshold"]["bootstrap_over"] == "seeds within sizes, checkpoints and test examples"
    assert th.ci_low < th.eta < th.ci_high


def test_seed_level_draws_seeds_within_sizes_then_points():
    size = np.repeat([1, 1, 1, 2], 5)  # size 1: seeds a, b, c; size 2: one seed
    seed = np.repeat(["a", "b", "c", "a"], 5)
    level = SeedLevel.of(size, seed)
    W = level.counts(np.random.default_rng(0), 2000)
    per_seed = W.reshape(4, 5, -1).sum(axis=1)  # draws of each (size, seed) group per resample
    # the pool is 3 drawn seeds of size 1 plus size 2's one seed: 20 points drawn per resample
    np.testing.assert_array_equal(W.sum(axis=0), 20)
    # a seed left out of a resample contributes no point to it: with 3 seeds that happens in
    # 1 - 6/27 of resamples; a flat bootstrap over 20 points would (almost) never leave out 5 of them
    missing = (per_seed[:3] == 0).any(axis=0).mean()
    assert 0.7 < missing < 0.85
    assert (per_seed[3] > 0).mean() > 0.99


def test_table_without_seed_column_analyzes_as_before(tmp_path):
    rows = synthetic_rows(np.random.default_rng(2), n_seeds=1)
    bare = read_results(write_table(tmp_path / "bare.csv", rows, seed_column=False))
    labelled = read_results(write_table(tmp_path / "labelled.csv", rows))
    assert not bare.has_seeds() and not labelled.has_seeds()
    s = bare.series("t", "acc")
    before = find_threshold(s.x, s.value, s.chance, n_bootstrap=50, seed=0)  # no seed arguments at all
    for table in (bare.path, labelled.path):
        analysis = run_analysis(table, config=AnalyzeConfig(bootstrap=50, backtest="none"), progress=False)
        th = analysis.metrics[("t", "acc")].threshold
        assert th.verdict == before.verdict == EMERGENT
        assert (th.eta, th.ci_low, th.ci_high) == (before.eta, before.ci_low, before.ci_high)
        np.testing.assert_array_equal(th.bootstrap, before.bootstrap)


@pytest.fixture(scope="module")
def seeded_analysis(tmp_path_factory):
    path = write_table(tmp_path_factory.mktemp("seeded") / "results.csv",
                       synthetic_rows(np.random.default_rng(3), tau=0.1))
    return run_analysis(path, config=AnalyzeConfig(bootstrap=50, backtest="none"), progress=False)


def test_report_gives_eta_per_seed_spread_and_share_from_seeds(seeded_analysis, tmp_path):
    write_report(seeded_analysis, tmp_path, plots=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["study"]["seeds_per_size"] == {"0.2M": 3, "0.4M": 3, "0.8M": 3}
    m = next(m for m in report["metrics"] if m["metric"] == "acc")
    assert m["verdict"] == EMERGENT and m["threshold"]["bootstrap_over"] == "seeds within sizes and checkpoints"
    seeds = m["seeds"]
    assert [r["seed"] for r in seeds["per_seed"]] == ["0", "1", "2"]
    etas = [r["eta"] for r in seeds["per_seed"]]
    assert all(r["verdict"] == EMERGENT for r in seeds["per_seed"])
    assert seeds["spread"]["sd"] == pytest.approx(np.std(etas, ddof=1))
    assert seeds["spread"]["range"] == pytest.approx(max(etas) - min(etas)) and seeds["spread"]["range"] > 0
    iv = seeds["interval"]
    assert iv["width_with"] == pytest.approx(m["threshold"]["ci_high"] - m["threshold"]["ci_low"])
    assert iv["share_from_seeds"] == pytest.approx(1 - iv["width_without"] / iv["width_with"])
    assert iv["without_seeds"] == m["threshold"]["ci_without_seeds"]
    md = (tmp_path / "report.md").read_text()
    assert "## Seeds" in md and "share from seeds" in md


def test_plots_draw_a_thin_line_per_seed_and_a_thick_mean_per_size(seeded_analysis):
    styles = Styles(seeded_analysis.table)
    ax = task_figure(seeded_analysis, "t", styles).axes[0]
    widths = [line.get_linewidth() for line in ax.get_lines()]
    assert widths.count(styles.run_line()["lw"]) == 9 and widths.count(2.0) == 3  # 3 sizes x 3 seeds; 3 means
    per_size = {}
    for line in ax.get_lines():
        if line.get_linewidth() in (styles.run_line()["lw"], 2.0):
            per_size.setdefault(line.get_color(), []).append(line.get_linewidth())
    assert len(per_size) == 3 and all(sorted(v) == [0.6, 0.6, 0.6, 2.0] for v in per_size.values())
    ticks = [line for line in ax.get_lines() if line.get_marker() == "|"]
    etas = [r["eta"] for r in seeded_analysis.metrics[("t", "acc")].seeds["per_seed"]]
    assert len(ticks) == 1 and sorted(ticks[0].get_xdata()) == sorted(etas)



def test_plot_legend_gives_the_confidence_level_of_the_analysis(seeded_analysis):
    at_80 = dataclasses.replace(seeded_analysis, settings=seeded_analysis.settings | {"ci_level": 0.8})
    labels = [h.get_label() for h in analysis_styles(at_80).legend_handles()]
    assert "threshold η, 80% CI" in labels and not any("95%" in label for label in labels)

def test_report_has_no_seed_section_without_seeds(tmp_path):
    path = write_table(tmp_path / "results.csv", synthetic_rows(np.random.default_rng(4), n_seeds=1))
    analyze(config=AnalyzeConfig(bootstrap=20, plots=False, backtest="none"), results=path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert "seeds_per_size" not in report["study"] and "seeds" not in report["metrics"][0]
    assert "## Seeds" not in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[5].update({SEED_COLUMN: ""}), ":7: column 'seed': empty"),
    (lambda rows: rows[5].update({SEED_COLUMN: "9"}), ":7: column 'seed': run 's0_seed0' has seed '9', but line 2"),
])
def test_bad_seed_cells_are_named(tmp_path, change, message):
    rows = synthetic_rows(np.random.default_rng(5), n_seeds=2)
    change(rows)
    with pytest.raises(ResultsError, match=message):
        read_results(write_table(tmp_path / "results.csv", rows))


def seeded_law_points(rng, offset=0.03):
    """Final losses of 3 sizes x 2 budgets x 3 seeds on L = 1.5 + 400 / N^0.5 + 600 / D^0.4, each
    (size, seed) off the law by its own factor exp(δ), δ ~ N(0, offset), shared by its budgets."""
    N, D, L, seed = [], [], [], []
    for n in SIZES:
        for j in range(3):
            shift = math.exp(rng.normal(0.0, offset))
            for d in (1e7, 4e7):
                N.append(n), D.append(d), seed.append(str(j))
                L.append((1.5 + 400 / n ** 0.5 + 600 / d ** 0.4) * shift * math.exp(rng.normal(0.0, 0.002)))
    return np.array(N, float), np.array(D), np.array(L), np.array(seed)


def test_scaling_bootstrap_resamples_seeds_within_sizes():
    N, D, L, seed = seeded_law_points(np.random.default_rng(11))
    opts = dict(n_bootstrap=10, seed=0, identify=False)
    flat, seeded = fit_scaling_law(N, D, L, **opts), fit_scaling_law(N, D, L, seeds=seed, **opts)
    assert (flat.E, flat.alpha, flat.n_points) == (seeded.E, seeded.alpha, seeded.n_points)  # every point fitted
    assert len(seeded.boot) == 10 and not np.array_equal(seeded.boot, flat.boot)  # other resamples
    one = seed == "0"  # one seed per size: no seed level, the flat bootstrap's very draws
    lone = fit_scaling_law(N[one], D[one], L[one], seeds=seed[one], **opts)
    np.testing.assert_array_equal(lone.boot, fit_scaling_law(N[one], D[one], L[one], **opts).boot)


def test_backtest_scores_every_seed_of_the_held_out_size(tmp_path):
    path = write_table(tmp_path / "results.csv", synthetic_rows(np.random.default_rng(6)))
    bt = run_analysis(path, config=AnalyzeConfig(bootstrap=20, backtest="largest-size"), progress=False).backtest
    held = [f"s2_seed{j}" for j in range(3)]
    assert bt["held_out"]["runs"] == held
    assert sorted(r["run"] for r in bt["metrics"]) == held
    assert sorted(r["run"] for r in bt["crossings"]) == held
