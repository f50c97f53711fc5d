"""Out-of-sample backtest: fit on some runs, predict the held-out ones, say how wrong it was.

As model ladders do (OLMo, Llama 3), the largest size is held out by default; everything is
refitted on the other runs and compared with what the held-out runs measured:

* (a) the validation loss at each held-out checkpoint, from the scaling law L(N, D);
* (b) each task metric at each held-out run's final checkpoint, every way of
  :mod:`losslens.analyze.forecast`: **two-stage** (N, D -> loss by the scaling law; loss -> metric
  by the BIC-preferred curve of the metric against loss on the other runs), through the task's own
  loss where the table has one, and **direct** (the same family of curves against log10 compute),
  the baseline a loss axis must beat; one of them chosen per task by an inner backtest;
* (c) for each emergent task x metric, the tokens at which the held-out run's loss crosses eta
  (eta and the law both refitted on the other runs).

Intervals are bootstrap prediction intervals: each replicate refits the curve on resampled
points (seeds within sizes first, where a size has several: :mod:`losslens.analyze.seeds`), evaluates it at a replicate of the scaling law's prediction (two-stage) and adds a
resampled residual, so they cover the scatter of a measurement around the curve. Where the
scaling law has a parameter that is not identified, the two-stage interval also spans the
law's profile region (see :mod:`losslens.analyze.scaling`).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import numpy as np

from losslens.analyze.config import ForecastConfig
from losslens.analyze.forecast import MetricForecaster, summarise
from losslens.analyze.parallel import call, fork_map, max_workers
from losslens.analyze.prediction import LARGEST_BUDGET, LARGEST_SIZE, NONE, scored, subset
from losslens.analyze.scaling import FIXED_TOKENS, ScalingFit, fit_scaling_law, forecast
from losslens.analyze.startup import startup_eta
from losslens.analyze.table import Table
from losslens.analyze.threshold import EMERGENT, find_threshold
from losslens.counts import count_label
from losslens.errors import ResultsError

CURVE_BOOTSTRAP_MAX = 100  # each replicate refits every curve model of a pair, twice
MIN_TRAIN_SIZES = 2


@dataclasses.dataclass
class Holdout:
    """Which runs a backtest holds out, and why."""

    spec: str
    runs: list[str]

    def to_dict(self, table: Table) -> dict:
        return {"spec": self.spec, "runs": self.runs,
                "sizes": sorted({table.size_label(table.run_size(r)) for r in self.runs})}


def choose_holdout(table: Table, spec: str | None) -> Holdout | str:
    """The runs to hold out for ``spec`` (None: the default), or a note saying why there is no backtest.

    ``spec``: ``none``, ``largest-size`` (all runs of the largest size), ``largest-size:K`` (the
    K largest sizes), ``largest-budget`` (all runs of the largest budget), or run names joined
    by commas. Raises ResultsError for a spec this table cannot serve.
    """
    sizes = table.sizes()
    if spec is None:
        if len(sizes) < MIN_TRAIN_SIZES + 1:
            return f"skipped: {len(sizes)} model size(s); a size backtest needs at least {MIN_TRAIN_SIZES + 1}"
        spec = LARGEST_SIZE
    if spec == NONE:
        return "not asked for (--backtest none)"
    if spec.split(":")[0] == LARGEST_SIZE:
        k = _count_after_colon(spec)
        if len(sizes) - k < MIN_TRAIN_SIZES:
            raise ResultsError(f"--backtest {spec}: {table.path} has {len(sizes)} model size(s); holding out {k} "
                               f"needs at least {k + MIN_TRAIN_SIZES}")
        held = set(sizes[-k:])
        return Holdout(spec, [r for r in table.runs() if table.run_size(r) in held])
    if spec == LARGEST_BUDGET:
        top = max(table.budgets())
        runs = [r for r in table.runs() if table.run_budget(r) == top]
        if len(runs) == len(table.runs()):
            raise ResultsError(f"--backtest {spec}: every run of {table.path} has the largest budget; nothing to fit on")
        return Holdout(spec, runs)
    runs = [r.strip() for r in spec.split(",") if r.strip()]
    twice = next((r for i, r in enumerate(runs) if r in runs[:i]), None)
    if twice is not None:
        raise ResultsError(f"--backtest {spec}: run {twice!r} is named twice")
    unknown = [r for r in runs if r not in table.runs()]
    if unknown or not runs:
        raise ResultsError(f"--backtest {spec}: no run {', '.join(unknown) or spec!r} in {table.path} "
                           f"(runs: {', '.join(table.runs())}; or none, largest-size[:K], largest-budget)")
    if len({table.run_size(r) for r in table.runs() if r not in runs}) < MIN_TRAIN_SIZES:
        raise ResultsError(f"--backtest {spec}: the runs left to fit on span fewer than {MIN_TRAIN_SIZES} sizes")
    return Holdout(spec, runs)


def _count_after_colon(spec: str) -> int:
    text = spec.partition(":")[2] or "1"
    if not text.isdigit() or int(text) < 1:
        raise ResultsError(f"--backtest {spec}: expected largest-size:K with K a positive integer")
    return int(text)


def decayed_mask(ckpts: dict[str, np.ndarray]) -> np.ndarray:
    """Each run's final checkpoint: the only fully decayed one (a cosine run at its budget, a
    WSD run or branch at the end of its cooldown). Earlier checkpoints sit above the law."""
    last = {}
    for r, t in zip(ckpts["run"].tolist(), ckpts["tokens"].tolist()):
        last[r] = max(last.get(r, t), t)
    return np.array([t == last[r] for r, t in zip(ckpts["run"].tolist(), ckpts["tokens"].tolist())])


def fit_law(table: Table, points: str, n_bootstrap: int, seed: int, ci_level: float) -> tuple[ScalingFit, str]:
    """The scaling law on a table's decayed checkpoints (``points='decayed'``) or all of them.

    Returns the fit and a note, empty unless too few decayed checkpoints forced a fit to all of
    them (then the law is biased upward by stable-phase points, and the note says so).
    Raises ValueError when no point set can be fitted.
    """
    ck = table.checkpoints()
    every = np.ones(len(ck["run"]), bool)

    def fit(use):
        return fit_scaling_law(ck["n_params_nonembed"][use], ck["tokens"][use], ck["x"][use],
                               n_bootstrap=n_bootstrap, seed=seed, ci_level=ci_level, seeds=ck["seed"][use])

    if points == "all":
        return fit(every), ""
    try:
        return fit(decayed_mask(ck)), ""
    except ValueError as e:
        note = (f"too few decayed checkpoints ({e}): fitted to all checkpoints instead, stable-phase ones "
                f"included, which sit above the decayed law")
        return fit(every), note


# --- the three predictions --------------------------------------------------------------

def predict_losses(law: ScalingFit, held: Table) -> dict:
    """(a) The law's loss at every held-out checkpoint with tokens > 0, against the measurement."""
    ck = held.checkpoints()
    pos = ck["tokens"] > 0
    decayed = decayed_mask(ck)
    N, D, L = ck["n_params_nonembed"][pos], ck["tokens"][pos], ck["x"][pos]
    pred = law.predict(N, D)
    lo, hi = law.predict_interval(N, D)
    rows = [{"run": str(r), "tokens": int(d), "decayed": bool(dec), "actual": float(a),
             **scored(float(p), [float(x), float(y)], float(a))}
            for r, d, dec, a, p, x, y in zip(ck["run"][pos], D, decayed[pos], L, pred, lo, hi)]

    def summary(sel):
        errs = [r["rel_error"] for r in sel if math.isfinite(r["predicted"])]
        inside = [r["inside"] for r in sel if r["inside"] is not None]
        return {"n": len(errs), "mean_rel_error": float(np.mean(errs)) if errs else None,
                "inside": sum(inside), "n_with_interval": len(inside)}

    return {"rows": rows, "decayed": summary([r for r in rows if r["decayed"]]), "all": summary(rows)}



def _run_losses(held: Table, run: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's (tokens, loss) at its checkpoints with tokens > 0, by tokens."""
    ck = held.checkpoints()
    sel = (ck["run"] == run) & (ck["tokens"] > 0)
    t, L = ck["tokens"][sel].astype(float), ck["x"][sel]
    order = np.argsort(t)
    return t[order], L[order]


def actual_crossing(held: Table, run: str, eta: float) -> float | None:
    """Tokens at which a run's measured loss first falls below eta (log-linear between
    checkpoints); None if it never does or was already below at its first checkpoint."""
    t, L = _run_losses(held, run)
    below = np.flatnonzero(L < eta)
    if not len(below) or below[0] == 0:
        return None
    i = below[0]
    f = (L[i - 1] - eta) / (L[i - 1] - L[i])
    return float(math.exp(math.log(t[i - 1]) + f * (math.log(t[i]) - math.log(t[i - 1]))))


def predict_crossings(law: ScalingFit | None, train: Table, held: Table, task: str, metric: str,
                      n_bootstrap: int, ci_level: float, seed: int) -> list[dict]:
    """(c) Tokens at which each held-out run reaches the task's eta, refitted on the training runs."""
    s = train.series(task, metric)
    th = find_threshold(s.x, s.value, s.chance, higher_is_better=s.higher_is_better,
                        n_bootstrap=n_bootstrap, seed=seed, ci_level=ci_level, sizes=s.n_params, seeds=s.seed)
    th = startup_eta(th, s.run, s.tokens, s.x, s.value)
    base = {"task": task, "metric": metric, "train_verdict": th.verdict}
    if th.verdict != EMERGENT or law is None:
        why = "no scaling fit" if law is None else f"{th.verdict} on the training runs: no threshold to forecast"
        return [{**base, "run": r, "note": why} for r in held.runs()]
    ck = train.checkpoints()
    pos = ck["tokens"] > 0
    k = float(np.median(ck["flops"][pos] / (ck["n_params_nonembed"][pos] * ck["tokens"][pos])))
    rows = []
    for run in held.runs():
        fc = forecast(law, th.eta, th.bootstrap, [held.run_nonembed(run)], k, ci_level=ci_level, seed=seed)[0]
        actual = actual_crossing(held, run, th.eta)
        pred, ci = fc["tokens"], fc["tokens_ci"]
        ok = actual is not None and pred is not None and math.isfinite(pred)
        rows.append({**base, "run": run, "eta": th.eta, "eta_ci": [th.ci_low, th.ci_high], "predicted_tokens": pred,
                     "tokens_ci": ci, "actual_tokens": actual, "ratio": pred / actual if ok else None,
                     "inside": bool(ci[0] <= actual <= ci[1]) if ok and None not in ci else None,
                     "interval": fc["interval"],
                     "note": crossing_note(pred, actual, fc["interval"], *_run_losses(held, run), th.eta)})
    return rows


def crossing_note(predicted, actual, interval: str, tokens: np.ndarray, losses: np.ndarray, eta: float) -> str:
    """Why a crossing has no actual tokens to compare with: the run started below η, or never got there."""
    if predicted is None:
        return f"no forecast: {interval}"
    if actual is not None or not len(losses):
        return ""
    if losses[0] < eta:
        return (f"already below eta at the held-out run's first checkpoint ({count_label(tokens[0])} tokens, "
                f"loss {losses[0]:.3f}): no crossing to compare")
    return f"the held-out run's loss never fell below eta (lowest {losses.min():.3f})"


def _summary(rows: list[dict], way: str) -> dict:
    scored = [r[way] for r in rows if r[way].get("predicted") is not None]
    inside = [s["inside"] for s in scored if s["inside"] is not None]
    return {"n": len(scored), "mae": float(np.mean([s["abs_error"] for s in scored])) if scored else None,
            "mean_rel_error": float(np.mean([s["rel_error"] for s in scored])) if scored else None,
            "inside": sum(inside), "n_with_interval": len(inside)}


def _training_law(train: Table, held: Table, points: str, n_bootstrap: int, seed: int,
                  ci_level: float) -> tuple[ScalingFit, str]:
    """fit_law on the training runs; a reduced fixed-tokens law that cannot reach the held-out
    runs' token counts (e.g. a largest-budget backtest) is refitted on all checkpoints."""
    law, note = fit_law(train, points, n_bootstrap, seed, ci_level)
    finals = np.array([held.run_budget(r) for r in held.runs()], float)
    if points == "decayed" and law.form == FIXED_TOKENS and not law.applies_at(finals).all():
        law, _ = fit_law(train, "all", n_bootstrap, seed, ci_level)
        note = ("the training runs' decayed checkpoints share one token count and the held-out runs end at "
                "another: fitted to all checkpoints instead, stable-phase ones included")
    return law, note


def run_backtest(table: Table, holdout: Holdout, emergent: list[tuple[str, str]], *, scaling_points: str,
                 n_bootstrap: int, scaling_bootstrap: int, seed: int, ci_level: float,
                 forecast: ForecastConfig | None = None) -> dict:
    """Refit on the runs not held out and score every prediction (see the module docstring).

    ``emergent``: the task x metric pairs whose verdict on the whole table is emergent (for (c)).
    ``forecast``: the intermediates and noise settings of (b) (default: ForecastConfig()).
    """

    train, held = subset(table, set(holdout.runs), keep=False), subset(table, set(holdout.runs))
    law, law_error, law_note = None, None, ""
    try:
        law, law_note = _training_law(train, held, scaling_points, scaling_bootstrap, seed, ci_level)
    except ValueError as e:
        law_error = str(e)
    n_curve = min(n_bootstrap, CURVE_BOOTSTRAP_MAX)
    forecaster = MetricForecaster(train, held, holdout.spec, law, forecast or ForecastConfig(),
                                  n_curve=n_curve, seed=seed, ci_level=ci_level)
    # One task per worker job, each with its own random stream: the rows do not depend on the worker count.
    # The crossings (each seeded on its own too) follow in the same pool, filling the workers' last gaps.
    tasks = [partial(_task_rows, forecaster, task, table.metrics(task), seed, i) for i, task in enumerate(table.tasks())]
    crossing_jobs = [partial(predict_crossings, law, train, held, task, metric, n_bootstrap, ci_level, seed + i)
                     for i, (task, metric) in enumerate(emergent)]
    workers = max_workers() if n_curve and len(tasks) > 1 else 1
    done = list(fork_map(call, tasks + crossing_jobs, workers))
    metrics = [row for rows in done[:len(tasks)] for row in rows]
    crossings = [row for rows in done[len(tasks):] for row in rows]
    closer = [r["closer"] for r in metrics if r["closer"]]
    return {
        "held_out": holdout.to_dict(table), "train_runs": train.runs(), "scaling_points": scaling_points,
        "x_label": table.x_label,
        "ci_level": ci_level, "curve_bootstrap": n_curve,
        "scaling": {**law.to_dict(), "note": law_note} if law is not None else {"error": law_error},
        "loss": predict_losses(law, held) if law is not None else None,
        "metrics": metrics, "crossings": crossings, "forecast": {**forecaster.describe(), **summarise(metrics)},
        "summary": {"two_stage": _summary(metrics, "two_stage"), "direct": _summary(metrics, "direct"),
                    "two_stage_closer": closer.count("two-stage"), "direct_closer": closer.count("direct"),
                    "by_metric": _summary_by_metric(metrics)},
    }


def _task_rows(forecaster: MetricForecaster, task: str, metrics: list[str], seed: int, index: int) -> list[dict]:
    """The metric forecast rows of one task (its task laws fitted once for all its metrics)."""
    rng = np.random.default_rng([seed, index])
    return [row for metric in metrics for row in forecaster.rows(task, metric, rng)]


def _summary_by_metric(rows: list[dict]) -> dict:
    """The summary of each metric alone: errors in accuracy points and in bits per byte do not average."""
    names = dict.fromkeys(r["metric"] for r in rows)
    return {m: {way: _summary([r for r in rows if r["metric"] == m], way) for way in ("two_stage", "direct")}
            for m in names}
