"""``losslens evaluate --adaptive``: which checkpoints it picks, when it stops, and the sweep it writes."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from losslens import contracts
from losslens.analyze.threshold import EMERGENT, INSUFFICIENT
from losslens.evaluate.adaptive import (ETA, MOVES, Eta, Point, budget_units, coarse_positions, gaps_to_refine,
                                        positions_text, run_adaptive)
from losslens.adaptive_judge import provisional_eta
from losslens.evaluate.config import AdaptiveConfig, EvaluateOptions
from losslens.evaluate.sweep import evaluate_study
from tests.conftest import call_cli
from tests.eval_fixtures import make_study

torch.set_num_threads(1)

N = 33  # checkpoints per synthetic run


def _loss(position: int, start: float = 3.0, end: float = 1.0) -> float:
    """Loss falling with tokens along a run of N checkpoints."""
    return start + (end - start) * position / (N - 1)


def _step(loss: float, eta: float) -> float:
    """Accuracy of an emergent task: chance 0.25 above eta, rising steeply below it."""
    return min(1.0, 0.25 + 3.0 * max(0.0, eta - loss))


class Synthetic:
    """An evaluator on made-up runs: a metric as a function of loss, with a fixed interval half-width.

    It stands in for the sweep's :class:`losslens.evaluate.sweep.Evaluator` (which runs real models; the
    end-to-end tests below use it) so that the selection can be checked against a known curve.
    """

    def __init__(self, runs: dict[str, tuple[float, float]], metric, half_width: float = 0.03):
        self.losses = {run: [_loss(p, *ends) for p in range(N)] for run, ends in runs.items()}
        self.ckpts = {run: [Path(run) / str(p) for p in range(N)] for run in runs}
        self.metric, self.half_width = metric, half_width
        self.evaluated: dict[str, set[int]] = {run: set() for run in runs}
        self.loss_runs: list[Path] = []  # every checkpoint the pretraining loss was asked of, in order

    def run(self, ckpt, units) -> None:
        if any(u.name != "pretrain" for u in units):
            self.evaluated[ckpt.parent.name].add(int(ckpt.name))
        self.loss_runs += [ckpt for u in units if u.name == "pretrain"]

    def result(self, ckpt, unit):
        loss = self.losses[ckpt.parent.name][int(ckpt.name)]
        if unit.name == "pretrain":
            return {"metrics": {"loss": {"value": loss}}}
        v = self.metric(loss)
        return {"metrics": {"acc": {"value": v, "ci_low": v - self.half_width, "ci_high": v + self.half_width,
                                    "chance": 0.25}}}

    def sweep(self, **settings):
        class Named:
            def __init__(self, name):
                self.name = name

        runs = {run: list(c) for run, c in self.ckpts.items()}
        config = AdaptiveConfig(n_bootstrap=200, **settings)
        return run_adaptive(runs, [Named("pretrain"), Named("acc_task")], self, config, lambda msg: None, provisional_eta)


def _points(values: list[float], positions: list[int], half_width: float = 0.03) -> dict[str, list[Point]]:
    return {"r": [Point(p, _loss(p), v, v - half_width, v + half_width) for p, v in zip(positions, values)]}


# ---------------------------------------------------------------- the selection, piece by piece


def test_coarse_pass_is_first_last_middle_quarters():
    assert coarse_positions(17, 5) == [0, 16, 8, 4, 12]
    assert coarse_positions(3, 5) == [0, 2, 1]


def test_a_flat_metric_is_not_refined_a_moving_one_is():
    positions = [0, 8, 16, 24, 32]
    flat = gaps_to_refine(_points([0.25] * 5, positions), eta=None)
    assert flat == []
    rising = gaps_to_refine(_points([0.25, 0.25, 0.25, 0.6, 1.0], positions), eta=None)
    assert [(g.lo, g.hi, g.reason) for g in rising] == [(16, 24, MOVES), (24, 32, MOVES)]


def test_overlapping_intervals_do_not_count_as_moving():
    positions = [0, 16, 32]
    assert gaps_to_refine(_points([0.25, 0.27, 0.29], positions, half_width=0.03), eta=None) == []
    assert len(gaps_to_refine(_points([0.25, 0.27, 0.29], positions, half_width=0.005), eta=None)) == 2


def test_gaps_that_reach_eta_come_first_and_adjacent_points_are_no_gap():
    points = _points([0.25, 0.25, 0.25, 0.25], [0, 1, 16, 32])
    eta = Eta(eta=_loss(20), ci_low=_loss(22), ci_high=_loss(18), verdict=INSUFFICIENT)  # loss falls with position
    gaps = gaps_to_refine(points, eta)
    assert [(g.lo, g.hi, g.reason) for g in gaps] == [(16, 32, ETA)]


def test_provisional_eta_is_analyze_threshold_on_the_points_so_far():
    positions = list(range(0, N, 2))
    points = _points([_step(_loss(p), eta=1.8) for p in positions], positions)
    eta = provisional_eta(points, chance=0.25, higher_is_better=True, n_bootstrap=200)
    assert eta is not None and eta.verdict == EMERGENT
    assert abs(eta.eta - 1.8) < 0.1 and eta.ci_low <= eta.eta <= eta.ci_high
    assert provisional_eta(_points([0.25] * len(positions), positions), 0.25, True, n_bootstrap=200) is None


@pytest.mark.parametrize("budget, total, units", [(None, 100, 100), (40, 100, 40), (0.25, 100, 25), (500, 100, 100)])
def test_budget_counts_units_or_a_fraction(budget, total, units):
    assert budget_units(budget, total) == units


def test_positions_are_listed_compactly():
    assert positions_text([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert positions_text([3]) == "3"


# ---------------------------------------------------------------- the rounds, on known curves


RUNS = {"s": (3.0, 1.4), "m": (3.0, 1.2), "l": (3.0, 1.0)}


def test_refines_only_where_the_metric_moves_and_near_eta():
    sweep = Synthetic(RUNS, lambda loss: _step(loss, eta=1.8))
    report = sweep.sweep(eta_width=1e-6)  # never converges: stops when nothing is left to refine
    assert report.tasks["acc_task"].stopped == "settled"
    for run in RUNS:
        chosen = sorted(sweep.evaluated[run])
        flat_far = [p for p in chosen if sweep.losses[run][p] > 2.3]  # well above eta: flat at chance
        assert len(flat_far) <= 3, (run, chosen)
    assert report.units < report.total / 2
    eta = report.tasks["acc_task"].eta
    assert eta is not None and abs(eta.eta - 1.8) < 0.05


def test_the_pretraining_loss_is_evaluated_once_where_a_task_goes_and_nowhere_else():
    sweep = Synthetic(RUNS, lambda loss: _step(loss, eta=1.8))
    report = sweep.sweep(eta_width=1e-6)
    assert len(sweep.loss_runs) == len(set(sweep.loss_runs)) == len(report.with_loss)
    for run in RUNS:
        assert {int(c.name) for c in sweep.loss_runs if c.parent.name == run} == sweep.evaluated[run]
        assert N - 1 in sweep.evaluated[run]  # each run's end: the scaling law's decayed point


def test_a_flat_task_stops_after_the_coarse_pass():
    sweep = Synthetic(RUNS, lambda loss: 0.25)
    report = sweep.sweep()
    assert report.rounds == 0 and report.units == 5 * len(RUNS)
    assert report.tasks["acc_task"].stopped == "settled" and report.tasks["acc_task"].eta is None


def test_stops_when_eta_interval_is_narrower_than_eta_width():
    wide, narrow = (Synthetic(RUNS, lambda loss: _step(loss, eta=1.8)) for _ in range(2))
    loose = wide.sweep(eta_width=1.0)
    tight = narrow.sweep(eta_width=1e-6)
    assert loose.tasks["acc_task"].stopped == "η converged" and loose.tasks["acc_task"].eta.width < 1.0
    assert loose.units < tight.units


@pytest.mark.parametrize("budget, limit", [(20, 20), (0.2, math.floor(0.2 * 3 * N))])
def test_respects_the_budget(budget, limit):
    sweep = Synthetic(RUNS, lambda loss: _step(loss, eta=1.8))
    report = sweep.sweep(eta_width=1e-6, budget=budget)
    assert report.units == sum(map(len, sweep.evaluated.values())) == limit
    assert report.tasks["acc_task"].stopped == "budget"


def test_a_budget_below_the_coarse_pass_cuts_it_coarse_to_fine():
    sweep = Synthetic(RUNS, lambda loss: _step(loss, eta=1.8))
    report = sweep.sweep(budget=6)
    assert report.units == 6 and all(sweep.evaluated[run] == {0, N - 1} for run in RUNS)


# ---------------------------------------------------------------- end to end, on real checkpoints


def _rows(study):
    with open(study / contracts.RESULTS_FILE) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # three sweeps of 9 checkpoints (test_the_study_config_turns_it_on is the quick end to end)
def test_adaptive_sweep_writes_a_normal_table_that_a_full_sweep_completes(tmp_path):
    study = make_study(tmp_path, runs={"xs_64K": [1024 * (i + 1) for i in range(9)]})
    lines: list[str] = []
    summary = evaluate_study(study, EvaluateOptions(adaptive=True, progress=False), judge=provisional_eta,
                             log=lines.append)
    report = summary.adaptive
    assert report.total == 9 * 3 and report.units < report.total
    rows = _rows(study)
    pretrain = {r["tokens"] for r in rows if r["task"] == contracts.PRETRAIN_TASK}
    visited = {r["tokens"] for r in rows if r["task"] != contracts.PRETRAIN_TASK}
    assert pretrain == visited and len(pretrain) == len(report.with_loss) < 9  # the loss where a task went
    for task, skipped in report.skipped.items():
        with_task = {r["tokens"] for r in rows if r["task"] == task}
        assert len(with_task) == 9 - len(skipped)
        assert any(line.startswith(f"adaptive: {task} ") and f"skipped {len(skipped)} checkpoints" in line
                   for line in lines)
    assert summary.evaluated == len(report.with_loss) + report.units

    again = evaluate_study(study, EvaluateOptions(adaptive=True, progress=False), judge=provisional_eta,
                           log=lambda msg: None)
    assert again.evaluated == 0 and again.adaptive.units == report.units  # the same choice, nothing recomputed
    full = evaluate_study(study, EvaluateOptions(progress=False), log=lambda msg: None)
    assert full.evaluated == report.total - report.units + 9 - len(report.with_loss)
    assert full.up_to_date == len(report.with_loss) + report.units
    assert len(_rows(study)) > len(rows)


def test_analyze_reads_an_adaptive_table(tmp_path):
    study = make_study(tmp_path, runs={"xs_64K": [1024 * (i + 1) for i in range(9)]})
    evaluate_study(study, EvaluateOptions(adaptive=True, budget=0.5, progress=False), judge=provisional_eta,
                   log=lambda msg: None)
    result = call_cli("analyze", str(study), "--bootstrap", "20", "--no-plots")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (study / "report.json").is_file()


@pytest.mark.parametrize("args, flag", [
    (["--adaptive", "--eta-width", "0"], "--eta-width"),
    (["--adaptive", "--eta-width", "wide"], "--eta-width"),
    (["--adaptive", "--budget", "0"], "--budget"),
    (["--adaptive", "--budget", "2.5"], "--budget"),
    (["--adaptive", "--budget", "-0.3"], "--budget"),
    (["--budget", "10"], "--budget"),
    (["--eta-width", "0.1"], "--eta-width"),
    (["--adaptive", "--shard", "0/2"], "--adaptive"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, args, flag):
    study = make_study(tmp_path, runs={"xs_64K": [1024, 2048]}, tasks=[])
    result = call_cli("evaluate", str(study), "--no-progress", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert flag in last, result.stderr
    assert not (study / contracts.RESULTS_FILE).exists()


def test_bad_config_names_the_field(tmp_path):
    study = make_study(tmp_path, runs={"xs_64K": [1024, 2048]}, tasks=[])
    cfg = study / contracts.STUDY_FILE
    cfg.write_text(cfg.read_text() + "  adaptive: {enabled: true, budget: 1.5}\n")
    result = call_cli("evaluate", str(study), "--no-progress")
    assert result.returncode == 2 and "eval.adaptive.budget" in result.stderr.strip().splitlines()[-1], result.stderr


def test_the_study_config_turns_it_on(tmp_path):
    study = make_study(tmp_path, runs={"xs_64K": [1024 * (i + 1) for i in range(5)]})
    cfg = study / contracts.STUDY_FILE
    cfg.write_text(cfg.read_text() + "  adaptive: {enabled: true, budget: 6}\n")
    summary = evaluate_study(study, EvaluateOptions(progress=False), judge=provisional_eta, log=lambda msg: None)
    units = summary.adaptive.units
    assert units == 6  # the coarse pass cut to each task's first and last checkpoint
    visited = len(summary.adaptive.with_loss)
    assert visited == 2 and summary.evaluated == visited + units  # the loss only where the tasks went: first, last
    full = evaluate_study(study, EvaluateOptions(adaptive=False, progress=False), log=lambda msg: None)
    assert full.adaptive is None and full.evaluated == 5 * (1 + 3) - units - visited  # loss + 3 tasks each
