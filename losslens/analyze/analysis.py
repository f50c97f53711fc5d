"""The analyze stage end to end: results table -> thresholds, verdicts, scaling law, forecasts.

:func:`run_analysis` computes everything into an :class:`Analysis` (no files written);
:func:`analyze` also writes ``report.json``, ``report.md`` and ``plots/``.
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from losslens.analyze.backtest import Holdout, choose_holdout, fit_law, run_backtest
from losslens.analyze.config import AnalyzeConfig, analyze_config, with_overrides
from losslens.analyze.forecast import check_setting, noise_table
from losslens.analyze.pairs import PARALLEL_MIN_WORK, analyze_pairs
from losslens.analyze.parallel import call, fork_map, max_workers
from losslens.analyze.scaling import ScalingFit, forecast
from losslens.analyze.study_folder import check_table_matches_study
from losslens.analyze.table import Series, Table, read_results, with_x_axis
from losslens.analyze.threshold import EMERGENT, INSUFFICIENT, SMOOTH, ThresholdResult, extrapolation_test
from losslens.analyze.tokenizers import mixed_tokenizers_warning
from losslens.analyze.tracking import analysis_trackers, log_analysis
from losslens.contracts import RESULTS_FILE
from losslens.errors import ResultsError
from losslens.outputs import refuse_overwriting_inputs

SCALING_BOOTSTRAP_MAX = 200  # scaling-law refits are ~100x dearer than eta refits
MIN_SIDE = 3  # points an emergent claim needs on each side of eta
EXTRA_SIZES = (10, 100)  # forecast also for these multiples of the largest trained size


@dataclass
class MetricAnalysis:
    series: Series
    threshold: ThresholdResult
    alignment: dict  # {"loss": {...}, "compute": {...}}
    extrapolation: dict | None = None
    seeds: dict | None = None  # η seed by seed and the seed level's share of the interval (pairs.seed_summary)


@dataclass
class Analysis:
    table: Table
    metrics: dict[tuple[str, str], MetricAnalysis]
    mirage: dict[str, dict]
    reference_eta: dict[str, tuple[str, float] | None]  # task -> (metric, eta) used for extrapolation
    scaling: ScalingFit | None
    scaling_error: str | None
    forecasts: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    scaling_alternative: dict | None = None  # the law on the other point set, to show how much it moves
    backtest: dict | None = None
    backtest_note: str | None = None  # why there is no backtest
    noise: list[dict] = field(default_factory=list)  # per task x metric: noise floor, signal-to-noise
    config: AnalyzeConfig = field(default_factory=AnalyzeConfig)  # the options it was made with


def _mirage(task: str, verdicts: dict[str, tuple[bool, str]]) -> dict:
    """Side by side: the verdicts of a task's discontinuous and continuous metrics.

    Flag ``mirage`` when a discontinuous metric is emergent while a continuous one improves
    smoothly (Schaeffer et al. 2023: the jump is made by the metric), ``disagree`` for any other
    difference between the two sides, ignoring insufficient-data; None when they agree or a side
    is missing.
    """
    disc = {m: v for m, (d, v) in verdicts.items() if d}
    cont = {m: v for m, (d, v) in verdicts.items() if not d}
    flag, note = None, ""
    if disc and cont:
        dv = {v for v in disc.values() if v != INSUFFICIENT}
        cv = {v for v in cont.values() if v != INSUFFICIENT}
        if EMERGENT in dv and SMOOTH in cv:
            jumpy = ", ".join(m for m, v in disc.items() if v == EMERGENT)
            smooth = ", ".join(m for m, v in cont.items() if v == SMOOTH)
            flag, note = "mirage", f"{jumpy} jumps while {smooth} improves smoothly: the jump may be made by the metric"
        elif dv and cv and dv != cv:
            flag, note = "disagree", "discontinuous and continuous metrics reach different verdicts"
        else:
            note = "verdicts agree" if dv and cv else "too little data on one side to compare"
    return {"task": task, "discontinuous": disc, "continuous": cont, "flag": flag, "note": note}


@contextmanager
def _one_blas_thread():
    """Every fit here is tiny (5 parameters, ~100 points), where a threaded BLAS only adds
    synchronisation: on a busy 2-core machine it doubled the run time."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# The bootstrap holds a few (points x resamples) float arrays of a task x metric at once, and every fit a
# (grid x points) design: beyond these a table is refused up front, not met as an allocation of tens of GiB.
MAX_POINTS = 200_000
MAX_RESAMPLED_POINTS = 25_000_000


def _check_fits_in_memory(table: Table, series: list[Series], n_bootstrap: int) -> None:
    for s in series:
        if len(s) > MAX_POINTS or len(s) * n_bootstrap > MAX_RESAMPLED_POINTS:
            raise ResultsError(
                f"{table.path}: task {s.task!r} metric {s.metric!r} has {len(s):,} points; analyze takes at most "
                f"{MAX_POINTS:,} per task x metric, and points x --bootstrap at most {MAX_RESAMPLED_POINTS:,} "
                f"(here {len(s) * n_bootstrap:,}): lower --bootstrap or split the table")


def run_analysis(results: str | Path, run_dir: str | Path | None = None, config: AnalyzeConfig | None = None, *,
                 overrides: dict[str, Any] | None = None, progress: bool | None = None) -> Analysis:
    """Analyze a results table; ``run_dir`` (if given) is searched for per-example records.

    The options are ``config`` (:class:`losslens.analyze.config.AnalyzeConfig`: bootstrap, seed, interval
    level, x-axis, scaling points, backtest, forecast sizes and intermediate; None: the ``analyze`` section
    of ``RUN_DIR/study.yaml``, else the defaults) with ``overrides`` over it, e.g. ``{"bootstrap": 200}``
    (:func:`losslens.analyze.config.with_overrides`: what the flags of ``losslens analyze`` give).
    """
    overrides = overrides or {}
    with_overrides(config or AnalyzeConfig(), overrides)  # a bad value is refused before any work
    with _one_blas_thread():
        return _run_analysis(results, run_dir, config, overrides, progress)


def _run_analysis(results, run_dir, config: AnalyzeConfig | None, overrides: dict, progress: bool | None) -> Analysis:
    table = read_results(results)
    if run_dir is not None:
        check_table_matches_study(table, run_dir)
    # The study's options after the table: its problems come first.
    config = with_overrides(analyze_config(run_dir) if config is None else config, overrides)
    table = with_x_axis(table, config.x)
    tokenizer_warning = mixed_tokenizers_warning(table, run_dir) if config.x == "loss" else None
    if tokenizer_warning:
        print(tokenizer_warning, file=sys.stderr, flush=True)
    holdout = choose_holdout(table, config.backtest)  # before any work: a bad --backtest fails fast
    check_setting(table, config.forecast.intermediate)
    metrics = _per_metric(table, run_dir, config, progress)
    mirage, reference = _per_task(table, metrics)
    scaling_bootstrap = min(config.bootstrap, SCALING_BOOTSTRAP_MAX)
    # The laws of the whole table and the backtest (which refits on the training runs) share nothing:
    # on two cores they run side by side (each with its own seeds, so the results are the same either way).
    stages = [partial(_laws, table, config.scaling_points, scaling_bootstrap, config.seed, config.ci_level)]
    if isinstance(holdout, Holdout):
        emergent = [key for key, a in metrics.items() if a.threshold.verdict == EMERGENT]
        stages.append(partial(run_backtest, table, holdout, emergent, scaling_points=config.scaling_points,
                              n_bootstrap=config.bootstrap, scaling_bootstrap=scaling_bootstrap, seed=config.seed,
                              ci_level=config.ci_level, forecast=config.forecast))
    workers = max_workers() if len(table) * max(config.bootstrap, 1) >= PARALLEL_MIN_WORK else 1
    (scaling, scaling_error, scaling_note, alternative), *backtest_result = fork_map(call, stages, workers)

    forecasts = [] if scaling is None else _forecasts(table, metrics, scaling, config)
    settings = {"results": str(results), "run_dir": None if run_dir is None else str(run_dir),
                "n_bootstrap": config.bootstrap, "scaling_bootstrap": scaling_bootstrap, "seed": config.seed,
                "ci_level": config.ci_level, "min_side": MIN_SIDE, "scaling_points": config.scaling_points,
                "scaling_note": scaling_note, "x": config.x, "x_label": table.x_label, "x_warning": tokenizer_warning,
                "backtest": holdout.spec if isinstance(holdout, Holdout) else "none",
                "forecast": dataclasses.asdict(config.forecast)}
    analysis = Analysis(table, metrics, mirage, reference, scaling, scaling_error, forecasts, settings, alternative,
                        noise=noise_table(table, config.forecast), config=config)
    if backtest_result:
        analysis.backtest = backtest_result[0]
    else:
        analysis.backtest_note = holdout
    return analysis


def _per_metric(table: Table, run_dir, config: AnalyzeConfig, progress: bool | None) -> dict:
    """Threshold, alignment and seed summary of every task x metric (each its own bootstrap seed)."""
    items = [(t, m) for t in table.tasks() for m in table.metrics(t)]
    series = [table.series(task, metric) for task, metric in items]
    _check_fits_in_memory(table, series, config.bootstrap)
    jobs = [(s, run_dir, config.bootstrap, config.seed + i, config.ci_level, MIN_SIDE) for i, s in enumerate(series)]
    return {key: MetricAnalysis(s, res, align, seeds=per_seed)
            for key, s, (res, align, per_seed) in zip(items, series, analyze_pairs(jobs, progress))}


def _per_task(table: Table, metrics: dict[tuple[str, str], MetricAnalysis]) -> tuple[dict, dict]:
    """Extrapolation and mirage, per task: one reference eta (from an emergent metric, a discontinuous
    one first, the tightest interval next) applied to every metric of the task."""
    mirage, reference = {}, {}
    for task in table.tasks():
        mine = [(m, a) for (t, m), a in metrics.items() if t == task]
        emergent = [(not a.series.discontinuous, a.threshold.ci_high - a.threshold.ci_low, m, a.threshold.eta)
                    for m, a in mine if a.threshold.verdict == EMERGENT]
        reference[task] = (min(emergent)[2], min(emergent)[3]) if emergent else None
        if reference[task]:
            for m, a in mine:
                a.extrapolation = extrapolation_test(a.series.x, a.series.value, reference[task][1])
        mirage[task] = _mirage(task, {m: (a.series.discontinuous, a.threshold.verdict) for m, a in mine})
    return mirage, reference


def _laws(table: Table, scaling_points: str, n_bootstrap: int, seed: int, ci_level: float):
    """The scaling law of the whole table (or why there is none), its note, and the law on the other points."""
    scaling, error, note = None, None, ""
    try:
        scaling, note = fit_law(table, scaling_points, n_bootstrap, seed, ci_level)
    except ValueError as e:
        error = str(e)
    return scaling, error, note, _alternative_law(table, scaling_points, ci_level)


def _forecasts(table: Table, metrics: dict, scaling: ScalingFit, config: AnalyzeConfig):
    """For each emergent task x metric: tokens and compute at which each size reaches its eta."""
    ckpts = table.checkpoints()
    trained = sorted({float(n) for n in ckpts["n_params_nonembed"]})
    extra = sorted(set(config.forecast_sizes or [trained[-1] * f for f in EXTRA_SIZES]) - set(trained))
    pos = ckpts["tokens"] > 0
    k = float(np.median(ckpts["flops"][pos] / (ckpts["n_params_nonembed"][pos] * ckpts["tokens"][pos])))
    out = []
    for (task, metric), a in metrics.items():
        th = a.threshold
        if th.verdict != EMERGENT:
            continue
        rows = forecast(scaling, th.eta, th.bootstrap, trained + extra, k, ci_level=config.ci_level,
                        seed=config.seed)
        for r in rows:
            r["trained"] = r["n_params_nonembed"] in trained
        out.append({"task": task, "metric": metric, "eta": th.eta, "eta_ci": [th.ci_low, th.ci_high],
                    "flops_per_param_token": k, "sizes": rows})
    return out


def _alternative_law(table: Table, scaling_points: str, ci_level: float) -> dict | None:
    """The law's point estimate on the other point set (no bootstrap): how much do stable-phase
    checkpoints move it? None where that set cannot be fitted."""
    other = "all" if scaling_points == "decayed" else "decayed"
    try:
        fit, note = fit_law(table, other, 0, 0, ci_level)
    except ValueError:
        return None
    return None if note else {"points": other, **fit.to_dict()}


def analyze(run_dir: str | Path | None = None, config: AnalyzeConfig | None = None, *,
            overrides: dict[str, Any] | None = None, results: str | Path | None = None,
            out: str | Path | None = None, progress: bool | None = None) -> Analysis:
    """Analyze ``RUN_DIR/results.csv`` (or ``results``) with the options of ``config`` and ``overrides``
    (see :func:`run_analysis`) and write report.json, report.md and plots/ (unless the options' ``plots`` is
    off). Output goes to ``out`` (default: ``run_dir``, else the folder of ``results``).
    """
    if run_dir is None and results is None:
        raise ResultsError("analyze needs a run directory or a results table")
    results = Path(results) if results is not None else Path(run_dir) / RESULTS_FILE
    if run_dir is not None and not Path(run_dir).is_dir():
        raise ResultsError(f"{run_dir}: run directory not found")
    out = Path(out) if out is not None else Path(run_dir) if run_dir is not None else results.parent
    refuse_overwriting_inputs([out / name for name in ("report.json", "report.md", "plots")], [results], "--out")
    analysis = run_analysis(results, run_dir, config, overrides=overrides, progress=progress)
    # Imported here: matplotlib costs a second, and run_analysis must not need it.
    from losslens.analyze.report import write_report

    trackers = analysis_trackers(run_dir)  # after the table (its problems come first), before any output
    analysis.settings["out"] = str(out)
    log_analysis(write_report(analysis, out, plots=analysis.config.plots), out, trackers)
    return analysis
