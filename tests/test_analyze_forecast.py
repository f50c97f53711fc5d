"""Forecasts through intermediates (losslens.analyze.forecast): the inner backtest picks the way
that the data favour, on synthetic studies where the truth is known; smoothing and the noise floor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit
from threadpoolctl import threadpool_limits

from losslens.analyze.backtest import choose_holdout, run_backtest
from losslens.analyze.config import ForecastConfig
from losslens.analyze.smoothing import moving_average, noise_floor, skip_early
from losslens.analyze.table import read_results
from tests.conftest import call_cli, write_results_csv

SIZES = (1e5, 3e5, 1e6, 3e6)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """As analyze does: BLAS calls on 5 x 5 matrices only synchronise threads (10x slower on a busy machine)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
BUDGETS = (2e6, 8e6, 3.2e7)


def pretrain_loss(N, D):
    return 1.8 + 80.0 / N ** 0.3 + 120.0 / D ** 0.3


def task_loss(N, D):
    """The task's own loss: far more sensitive to size than the pretraining loss, less to tokens."""
    return 0.5 + 300.0 / N ** 0.45 + 20.0 / D ** 0.25


def accuracy_of(x, midpoint, width):
    return 0.25 + 0.7 * expit((midpoint - x) / width)


def make_study(path: Path, driver: str, noise: float = 0.003, seed: int = 0, checkpoints: int = 8) -> Path:
    """Accuracy driven by the task loss (``driver='task'``) or by the pretraining loss (``'loss'``);
    both losses are in the table, with relative noise ``noise`` and accuracy noise of the same size."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in SIZES:
        for budget in BUDGETS:
            run = f"n{int(N)}_d{int(budget)}"
            for tokens in np.geomspace(budget / 16, budget, checkpoints).astype(int):
                L, T = pretrain_loss(N, tokens), task_loss(N, tokens)
                acc = accuracy_of(T, 1.6, 0.2) if driver == "task" else accuracy_of(L, 4.3, 0.4)
                base = {"run": run, "n_params": int(N) + 1000, "n_params_nonembed": int(N), "tokens": int(tokens),
                        "step": int(tokens // 1000), "flops": 6 * N * tokens, "loss": L * (1 + noise * rng.normal()),
                        "task": "t", "ci_low": "", "ci_high": "", "n": ""}
                rows.append({**base, "metric": "acc", "value": acc + noise * rng.normal(), "chance": 0.25})
                rows.append({**base, "metric": "bits_per_byte", "value": T * (1 + noise * rng.normal()), "chance": ""})
    return write_results_csv(path, rows)


def backtest(path: Path, intermediate: str = "auto", n_bootstrap: int = 0, **settings) -> dict:
    """Point forecasts only by default (the choice needs no interval), to keep the tests quick."""
    table = read_results(path)
    return run_backtest(table, choose_holdout(table, None), [], scaling_points="decayed", n_bootstrap=n_bootstrap,
                        scaling_bootstrap=n_bootstrap, seed=0, ci_level=0.95,
                        forecast=ForecastConfig(intermediate=intermediate, **settings))


def _acc_rows(bt: dict) -> list[dict]:
    return [r for r in bt["metrics"] if r["metric"] == "acc"]


def _mae(rows: list[dict], way: str) -> float:
    return float(np.mean([r["ways"][way]["abs_error"] for r in rows]))


def test_auto_chooses_the_task_loss_when_accuracy_follows_it(tmp_path):
    bt = backtest(make_study(tmp_path / "results.csv", driver="task"))
    rows = _acc_rows(bt)
    assert bt["forecast"]["inner_held_out"] == [f"n{int(SIZES[-2])}_d{int(b)}" for b in BUDGETS]
    assert not set(bt["forecast"]["inner_held_out"]) & set(bt["held_out"]["runs"])
    inner = rows[0]["intermediate"]["inner_mae"]
    assert inner["bits_per_byte"] < inner["loss"], inner
    assert {r["forecast"]["way"] for r in rows} == {"bits_per_byte"}
    # ... and on the outer, honest backtest the choice beats the pretraining loss.
    assert _mae(rows, "bits_per_byte") < 0.5 * _mae(rows, "loss")
    assert bt["forecast"]["by_metric"]["acc"]["chosen"]["mae"] == pytest.approx(_mae(rows, "bits_per_byte"))


def test_auto_keeps_the_pretraining_loss_when_accuracy_follows_it(tmp_path):
    bt = backtest(make_study(tmp_path / "results.csv", driver="loss"))
    rows = _acc_rows(bt)
    inner = rows[0]["intermediate"]["inner_mae"]
    assert inner["loss"] < inner["bits_per_byte"], inner
    assert {r["forecast"]["way"] for r in rows} != {"bits_per_byte"}
    assert bt["forecast"]["by_metric"]["acc"]["chosen"]["mae"] < _mae(rows, "bits_per_byte")


def test_a_fixed_intermediate_is_used_without_an_inner_backtest(tmp_path):
    bt = backtest(make_study(tmp_path / "results.csv", driver="task"), intermediate="loss")
    rows = _acc_rows(bt)
    assert {r["forecast"]["way"] for r in rows} == {"loss"}
    assert all(r["intermediate"]["inner_mae"] is None for r in rows)
    assert bt["forecast"]["inner_held_out"] == []
    # A task without the named metric falls back to the pretraining loss, and says so.
    bt = backtest(make_study(tmp_path / "results.csv", driver="task"), intermediate="acc")
    row = _acc_rows(bt)[0]
    assert row["forecast"]["way"] == "loss" and "is the metric forecast" in row["intermediate"]["note"]


def test_largest_budget_backtest_holds_out_the_training_runs_largest_budget_inside(tmp_path):
    table = read_results(make_study(tmp_path / "results.csv", driver="task"))
    bt = run_backtest(table, choose_holdout(table, "largest-budget"), [], scaling_points="decayed", n_bootstrap=0,
                      scaling_bootstrap=0, seed=0, ci_level=0.95)
    assert bt["forecast"]["inner_held_out"] == [f"n{int(N)}_d{int(BUDGETS[1])}" for N in SIZES]


# --- noise handling ---------------------------------------------------------------------------

def test_skip_early_drops_each_runs_first_tenth_of_tokens():
    run = np.array(["a"] * 5 + ["b"] * 3)
    tokens = np.array([0, 5, 10, 50, 100, 0, 900, 10_000])
    assert skip_early(run, tokens, 0.1).tolist() == [False, False, True, True, True, False, False, True]
    assert skip_early(run, tokens, 0.0).all()


def test_moving_average_keeps_a_trend_and_the_final_point_and_cuts_noise():
    rng = np.random.default_rng(0)
    run = np.repeat(["a", "b"], 200)
    tokens = np.tile(np.arange(200), 2)
    trend = 3.0 - 0.01 * tokens
    assert moving_average(run, tokens, trend, 5) == pytest.approx(trend)  # a straight line is unbent, ends too
    noisy = trend + rng.normal(0, 0.1, len(trend))
    smooth = moving_average(run, tokens, noisy, 5)
    assert smooth[[199, 399]] == pytest.approx(noisy[[199, 399]], abs=1e-12)  # each run's last point as measured
    inner = np.r_[2:198, 202:398]
    assert np.std(smooth[inner] - trend[inner]) == pytest.approx(0.1 / np.sqrt(5), rel=0.15)
    assert moving_average(run[::-1], tokens[::-1], noisy[::-1], 5)[::-1] == pytest.approx(smooth)  # order-free


def test_noise_floor_measures_the_scatter_about_each_runs_trend():
    rng = np.random.default_rng(1)
    run, tokens, values = [], [], []
    for k in range(40):  # 40 runs, each still improving at the end, final levels 0.3 apart in all
        t = np.arange(10)
        run += [f"r{k}"] * 10
        tokens += list(t * 100)
        values += list(0.4 + 0.3 * k / 39 + 0.01 * t + rng.normal(0, 0.02, 10))
    n = noise_floor(np.array(run), np.array(tokens), np.array(values), last=5)
    assert n["sd"] == pytest.approx(0.02, rel=0.15)  # the trend is not counted as noise
    assert n["snr"] == pytest.approx(n["signal"] / n["sd"]) and n["signal"] == pytest.approx(0.3, abs=0.05)
    assert noise_floor(np.array(["a", "a"]), np.array([1, 2]), np.array([0.1, 0.2]), last=5)["sd"] is None


def test_curves_skip_and_smooth_while_the_measurement_to_predict_stays_raw(tmp_path):
    from losslens.analyze.forecast import curve_points, final_points

    table = read_results(make_study(tmp_path / "results.csv", driver="task", noise=0.02, checkpoints=11))
    s = table.series("t", "acc")
    raw = curve_points(table, "t", "acc", ["loss", "bits_per_byte"], ForecastConfig(skip_fraction=0, smooth_window=1))
    pts = curve_points(table, "t", "acc", ["loss", "bits_per_byte"], ForecastConfig())
    assert raw["y"].tolist() == s.value.tolist()
    kept = skip_early(s.run, s.tokens, 0.1)
    budget = np.array([table.run_budget(r) for r in s.run])
    assert len(pts["y"]) == kept.sum() == (s.tokens >= 0.1 * budget).sum() == len(s) - 2 * len(SIZES) * len(BUDGETS)
    truth = accuracy_of(task_loss(s.n_params_nonembed[kept], s.tokens[kept]), 1.6, 0.2)
    assert np.std(pts["y"] - truth) < 0.8 * np.std(s.value[kept] - truth)  # smoothing took noise out
    # What the backtest scores against: each run's final measurement, unsmoothed.
    finals = {r: v for r, _, _, _, v in final_points(table, "t", "acc")}
    assert finals == {r: s.value[i] for i, r in enumerate(s.run.tolist()) if s.tokens[i] == table.run_budget(r)}


# --- through the CLI: settings, report, bad input --------------------------------------------

def test_cli_report_states_the_choice_the_settings_and_the_noise(tmp_path):
    path = make_study(tmp_path / "results.csv", driver="task")
    res = call_cli("analyze", "--results", str(path), "--no-plots", "--bootstrap", "20", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    acc = next(l for l in res.stdout.splitlines() if l.strip().startswith("acc:"))
    assert "; forecast (auto) " in acc and "by way: " in acc, acc
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    fc = report["backtest"]["forecast"]
    assert report["settings"]["forecast"] == {"intermediate": "auto", "skip_fraction": 0.1, "smooth_window": 5,
                                              "noise_window": 5}
    assert fc["by_metric"]["acc"]["choices"] == {"bits_per_byte": len(BUDGETS)}
    assert {n["metric"] for n in report["noise"]} == {"acc", "bits_per_byte"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "### Intermediates" in md and "inner backtest on the training runs only" in md
    assert "skip each run's checkpoints before 10% of its tokens" in md and "## Noise" in md
    for r in report["backtest"]["metrics"]:
        f = r["forecast"]
        assert f["within_noise"] == (f["abs_error"] <= r["noise"]["sd"])


def test_cli_unknown_intermediate_is_exit_2_one_line_and_writes_nothing(tmp_path):
    path = make_study(tmp_path / "results.csv", driver="task", checkpoints=4)
    res = call_cli("analyze", "--results", str(path), "--intermediate", "bpbx", "--out", str(tmp_path / "o"))
    code, err = res.returncode, res.stderr
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--intermediate bpbx" in err and "bits_per_byte" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("key, value, why", [("smooth_window", 4, "odd number"), ("skip_fraction", 1.0, "[0, 1)"),
                                             ("noise_window", 2, "at least 3"), ("intermediate", " ", "expected auto")])
def test_bad_forecast_settings_name_the_field(tmp_path, key, value, why):
    from losslens.analyze.config import read_analyze_config
    from losslens.config import load_study
    from losslens.errors import ConfigError
    from tests.conftest import write_study

    study = write_study(tmp_path, **{f"analyze__forecast__{key}": value})
    with pytest.raises(ConfigError, match=rf"analyze\.forecast\.{key}: .*{__import__('re').escape(why)}"):
        load_study(study)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "study.yaml").write_text(study.read_text())
    with pytest.raises(ConfigError, match=rf"study\.yaml: analyze\.forecast\.{key}: "):
        read_analyze_config(tmp_path / "run")


def test_backtest_rows_do_not_depend_on_the_worker_count(tmp_path, monkeypatch):
    """Each task's forecasts draw from their own random stream, so spreading the tasks over forked
    workers gives the same intervals as one process (and two tasks with the same data get different draws)."""
    import csv

    from losslens.analyze.parallel import WORKERS_ENV

    path = make_study(tmp_path / "one.csv", "task", checkpoints=5)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    write_results_csv(path, rows + [{**r, "task": "u"} for r in rows])
    runs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        runs[workers] = backtest(path, n_bootstrap=8)["metrics"]
    assert json.dumps(runs["1"], sort_keys=True) == json.dumps(runs["2"], sort_keys=True)
    by_task = {t: [r["two_stage"]["ci"] for r in runs["1"] if r["task"] == t and r["metric"] == "acc"] for t in "tu"}
    assert by_task["t"] and by_task["t"] != by_task["u"]
