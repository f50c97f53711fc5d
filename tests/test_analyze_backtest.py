"""The backtest on synthetic studies with a known truth: convergence, coverage, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from losslens.analyze.backtest import choose_holdout, run_backtest
from losslens.analyze.table import ResultsError, read_results
from tests.conftest import call_cli, write_results_csv

LAW = dict(E=1.8, A=80.0, B=120.0, alpha=0.3, beta=0.3)
SIZES = (1e5, 3e5, 1e6, 3e6)
BUDGETS = (2e6, 8e6, 3.2e7)


def true_loss(N, D):
    return LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / D ** LAW["beta"]


def true_metric(loss):
    """A continuous metric, the same function of loss for every size (Du et al.'s premise). Negative at high
    loss, so the table names it like an unbounded metric of another tool ('score'), not a probability."""
    return 1.5 - 0.35 * loss


def make_table(path: Path, noise: float, seed: int = 0, sizes=SIZES, budgets=BUDGETS, checkpoints: int = 4) -> Path:
    """results.csv of a study whose loss follows LAW and whose metric follows true_metric, with
    relative loss noise ``noise`` and metric noise of the same size."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in sizes:
        for budget in budgets:
            for tokens in np.geomspace(budget / 8, budget, checkpoints).astype(int):
                loss = true_loss(N, tokens) * (1 + noise * rng.normal())
                value = true_metric(true_loss(N, tokens)) + noise * rng.normal()
                rows.append({"run": f"n{int(N)}_d{int(budget)}", "n_params": int(N) + 1000, "n_params_nonembed": int(N),
                             "tokens": int(tokens), "step": int(tokens // 1000), "flops": 6 * N * tokens,
                             "loss": loss, "task": "t", "metric": "score", "value": value, "ci_low": "",
                             "ci_high": "", "n": "", "chance": ""})
    return write_results_csv(path, rows)


def backtest(path: Path, n_bootstrap: int, seed: int = 0, points: str = "all") -> dict:
    table = read_results(path)
    return run_backtest(table, choose_holdout(table, None), [], scaling_points=points, n_bootstrap=n_bootstrap,
                        scaling_bootstrap=n_bootstrap, seed=seed, ci_level=0.95)


def _largest_final(bt: dict) -> dict:
    return next(r for r in bt["metrics"] if r["run"] == f"n{int(SIZES[-1])}_d{int(BUDGETS[-1])}")


def test_prediction_converges_to_the_truth_as_noise_falls(tmp_path):
    truth = true_metric(true_loss(SIZES[-1], BUDGETS[-1]))
    errors = []
    for noise in (0.03, 0.01, 0.001):
        bt = backtest(make_table(tmp_path / f"{noise}.csv", noise), n_bootstrap=0)
        assert bt["held_out"]["runs"] == [f"n{int(SIZES[-1])}_d{int(b)}" for b in BUDGETS]
        errors.append(abs(_largest_final(bt)["two_stage"]["predicted"] - truth))
    assert errors[-1] < 0.005 and errors[-1] < errors[0], errors


def test_loss_predictions_of_the_held_out_size(tmp_path):
    bt = backtest(make_table(tmp_path / "r.csv", 0.002), n_bootstrap=20, points="decayed")
    assert bt["scaling"]["n_points"] == 9 and not bt["scaling"]["note"]  # 3 sizes x 3 budgets, final checkpoints
    rows = bt["loss"]["rows"]
    assert len(rows) == len(BUDGETS) * 4 and sum(r["decayed"] for r in rows) == len(BUDGETS)
    assert bt["loss"]["decayed"]["mean_rel_error"] < 0.02
    for r in rows:
        assert r["ci"][0] <= r["predicted"] <= r["ci"][1]


@pytest.mark.slow
def test_intervals_cover_the_truth_in_most_seeds(tmp_path):
    """A nominal 95% interval must cover the noise-free value in at least 85% of studies.

    Slow (20 backtests, each refitting the scaling law 20 times): a calibration check, not a smoke test."""
    truth = true_metric(true_loss(SIZES[-1], BUDGETS[-1]))
    hits, widths = [], []
    for seed in range(20):
        path = make_table(tmp_path / f"{seed}.csv", 0.01, seed=seed, budgets=BUDGETS[1:], checkpoints=3)
        ts = _largest_final(backtest(path, n_bootstrap=20, seed=seed))["two_stage"]
        hits.append(ts["ci"][0] <= truth <= ts["ci"][1])
        widths.append(ts["ci"][1] - ts["ci"][0])
    assert np.mean(hits) >= 0.85, hits
    assert np.median(widths) < 0.25, widths  # informative: the metric spans 0.3 over the held-out size


def test_default_skips_with_fewer_than_three_sizes(tmp_path):
    table = read_results(make_table(tmp_path / "r.csv", 0.01, sizes=SIZES[:2]))
    assert "skipped" in choose_holdout(table, None)
    assert choose_holdout(table, "none").startswith("not asked")
    with pytest.raises(ResultsError, match="--backtest largest-size: .* 2 model size"):
        choose_holdout(table, "largest-size")
    table = read_results(make_table(tmp_path / "r4.csv", 0.01))
    assert len(choose_holdout(table, "largest-size:2").runs) == 2 * len(BUDGETS)
    with pytest.raises(ResultsError, match="needs at least 5"):
        choose_holdout(table, "largest-size:3")
    with pytest.raises(ResultsError, match="no run 'nope'"):
        choose_holdout(table, "nope")


def test_cli_size_backtest_with_two_sizes_is_exit_2_and_writes_nothing(tmp_path):
    path = make_table(tmp_path / "r.csv", 0.01, sizes=SIZES[:2])
    out = tmp_path / "out"
    r = call_cli("analyze", "--results", str(path), "--out", str(out), "--backtest", "largest-size", "--no-plots",
                 "--bootstrap", "10")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--backtest largest-size" in r.stderr and str(path) in r.stderr
    assert not out.exists()


def test_cli_backtest_in_the_report(tmp_path):
    path = make_table(tmp_path / "r.csv", 0.01, budgets=BUDGETS[1:], checkpoints=3)
    out = tmp_path / "out"
    r = call_cli("analyze", "--results", str(path), "--out", str(out), "--no-plots", "--bootstrap", "20",
                 "--ci-level", "0.9")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "backtest (n3000000_d8000000, n3000000_d32000000 held out)" in r.stdout
    report = json.loads((out / "report.json").read_text())
    bt = report["backtest"]
    # errors are summarised per metric (accuracy and bits per byte do not average), on the CLI and in the report
    by_metric = bt["summary"]["by_metric"]
    assert list(by_metric) == ["score"] and by_metric["score"]["two_stage"] == bt["summary"]["two_stage"]
    assert f"  score: two-stage {by_metric['score']['two_stage']['mae']:.3g} (" in r.stdout
    assert bt["held_out"]["spec"] == "largest-size" and bt["ci_level"] == 0.9
    assert {m["closer"] for m in bt["metrics"]} <= {"two-stage", "direct", "tie"}
    md = (out / "report.md").read_text()
    assert "## Backtest" in md and "| task | metric | run | actual | two-stage | 90% CI |" in md
    assert "| metric | predictions | two-stage MAE | direct MAE |" in md and "| score | 2 |" in md
    assert "95%" not in md  # every interval is at the level asked for


def test_largest_budget_and_named_runs(tmp_path):
    table = read_results(make_table(tmp_path / "r.csv", 0.005, budgets=BUDGETS[1:], checkpoints=3))
    opts = dict(scaling_points="decayed", n_bootstrap=10, scaling_bootstrap=10, seed=0, ci_level=0.95)
    bt = run_backtest(table, choose_holdout(table, "largest-budget"), [], **opts)
    assert bt["held_out"]["runs"] == [f"n{int(n)}_d{int(BUDGETS[-1])}" for n in SIZES]
    # The training runs' final checkpoints share one token count: refitted on all checkpoints.
    assert "share one token count" in bt["scaling"]["note"]
    assert all(r["two_stage"]["predicted"] is not None for r in bt["metrics"])
    run = f"n{int(SIZES[-1])}_d{int(BUDGETS[-1])}"
    bt = run_backtest(table, choose_holdout(table, run), [], **opts)
    assert [r["run"] for r in bt["metrics"]] == [run] and bt["train_runs"] == sorted(
        set(table.runs()) - {run}, key=table.runs().index)


def test_crossing_notes_tell_a_run_that_started_below_eta_from_one_that_never_got_there():
    from losslens.analyze.backtest import crossing_note

    tokens, losses = np.array([2e9, 4e9, 8e9]), np.array([3.1, 2.9, 2.8])
    assert crossing_note(1e9, None, "bootstrap", tokens, losses, eta=3.5).startswith(
        "already below eta at the held-out run's first checkpoint (2B tokens, loss 3.100)")
    assert crossing_note(1e9, None, "bootstrap", tokens, losses, eta=2.5) == (
        "the held-out run's loss never fell below eta (lowest 2.800)")
    assert crossing_note(1e9, 3e9, "bootstrap", tokens, losses, eta=3.0) == ""
    assert crossing_note(None, None, "eta below what the size can reach", tokens, losses, eta=3.0) == (
        "no forecast: eta below what the size can reach")
