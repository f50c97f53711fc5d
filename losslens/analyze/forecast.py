"""A task metric at a held-out (N, D), through an intermediate chosen out of sample.

Three ways to forecast a metric y of a task at a model of N parameters trained on D tokens:

* ``loss`` (Du et al. 2024): (N, D) -> pretraining loss by the scaling law, loss -> y by a curve;
* a **task loss** METRIC (Bhagia et al. 2024, the OLMo ladder's two steps): (N, D) -> a continuous
  loss-like metric of the same task (bits per byte or log-likelihood of the correct answer) by its
  own law E + A / N^alpha + B / D^beta, then that task loss -> y by a curve;
* ``direct``: y against log10 compute, the baseline an intermediate must beat.

``intermediate: auto`` picks per task x metric by an **inner backtest**: on the training runs alone,
hold out their largest size (their largest budget when the outer backtest holds out a budget), refit
every way on the rest (point estimates) and score each by its mean absolute error there. The first
way, in the order above, whose inner error is within the metric's noise floor of the smallest is
chosen: a difference smaller than checkpoint-to-checkpoint noise is no evidence. The outer held-out
runs are never looked at to choose, so the outer backtest stays an honest test.

Curves (step 2 and the direct fit) skip each run's earliest checkpoints and smooth along the run
(:mod:`losslens.analyze.smoothing`). Task-loss laws (and the inner backtest's pretraining-loss
law) are fitted to each run's final checkpoint as measured; the outer pretraining-loss law is the
backtest's own (``--scaling-points``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from losslens.analyze.prediction import LARGEST_BUDGET, Curve, curve_info, fit_curve, interval, scored, subset, two_stage
from losslens.analyze.config import AUTO, DIRECT_WAY, LOSS_WAY, ForecastConfig
from losslens.analyze.scaling import ScalingFit, fit_scaling_law
from losslens.analyze.seeds import SeedLevel
from losslens.analyze.smoothing import moving_average, noise_floor, skip_early
from losslens.analyze.table import Table
from losslens.contracts import metric_info
from losslens.errors import ResultsError

# Continuous metrics of a task that ``auto`` tries as its task loss: the loss of the correct answer.
TASK_LOSS_NAMES = ("bits_per_byte", "bpb", "loglik_byte", "loglik_token")
INNER_MIN_SIZES = 3  # an inner size backtest fits on at least 2 sizes


def is_task_loss(metric: str) -> bool:
    base = metric.partition(":")[0]
    return base in TASK_LOSS_NAMES or base.endswith("_bpb")


def _loss_like(metric: str, values: np.ndarray) -> np.ndarray:
    """A metric turned so that lower is better (a log-likelihood becomes a positive loss)."""
    return np.asarray(values, float) * (-1.0 if metric_info(metric).higher_is_better else 1.0)


def ways_for(table: Table, task: str, metric: str, setting: str) -> tuple[list[str], str]:
    """The ways to try for a task x metric under ``setting``, and a note when the setting falls back."""
    others = [m for m in table.metrics(task) if m != metric and not metric_info(m).discontinuous]
    if setting == AUTO:
        return [LOSS_WAY, *[m for m in others if is_task_loss(m)], DIRECT_WAY], ""
    if setting in (LOSS_WAY, DIRECT_WAY) or setting in others:
        return [setting], ""
    why = "is the metric forecast" if setting == metric else "is not a continuous metric of this task"
    return [LOSS_WAY], f"{setting} {why}: through the pretraining loss instead"


def check_setting(table: Table, setting: str) -> None:
    """A named intermediate must be a metric of some task (ResultsError otherwise)."""
    known = sorted({m for t in table.tasks() for m in table.metrics(t)})
    if setting not in (AUTO, LOSS_WAY, DIRECT_WAY) and setting not in known:
        raise ResultsError(f"--intermediate {setting}: no task of {table.path} has that metric (use auto, loss, "
                           f"direct or one of {', '.join(known)})")


# --- step 1: laws of the pretraining loss and of each task loss ---------------------------------

def _law_on_finals(run, N, D, L, seeds, n_bootstrap: int, seed: int, ci_level: float, identify: bool) -> ScalingFit:
    """E + A / N^alpha + B / D^beta fitted to each run's final checkpoint, or to every checkpoint
    where the final ones are too few. Raises ValueError when neither fits."""
    for use in (_final_mask(run, D), np.ones(len(run), bool)):
        try:
            return fit_scaling_law(N[use], D[use], L[use], n_bootstrap=n_bootstrap, seed=seed, ci_level=ci_level,
                                   seeds=seeds[use], identify=identify)
        except ValueError as e:
            error = e
    raise error


def task_law(table: Table, task: str, metric: str, n_bootstrap: int, seed: int, ci_level: float,
             identify: bool = True) -> ScalingFit:
    """The law of a task loss (a metric of ``task``, turned so that lower is better)."""
    s = table.series(task, metric)
    return _law_on_finals(s.run, s.n_params_nonembed, s.tokens, _loss_like(metric, s.value), s.seed, n_bootstrap,
                          seed, ci_level, identify)


def point_loss_law(table: Table) -> ScalingFit | None:
    """The pretraining loss law as a point estimate (no bootstrap, no profiles): enough to choose by."""
    ck = table.checkpoints()
    try:
        return _law_on_finals(ck["run"], ck["n_params_nonembed"], ck["tokens"], ck["x"], ck["seed"], 0, 0, 0.95,
                              False)
    except ValueError:
        return None


def _final_mask(run: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    last: dict[str, int] = {}
    for r, t in zip(run.tolist(), tokens.tolist()):
        last[r] = max(last.get(r, t), t)
    return np.array([t == last[r] for r, t in zip(run.tolist(), tokens.tolist())], bool)


class Laws:
    """Step-1 laws of one set of training runs, fitted once each and shared by every task x metric."""

    def __init__(self, table: Table, loss_law: ScalingFit | None, n_bootstrap: int, seed: int, ci_level: float,
                 identify: bool = True):
        self.table, self.n_bootstrap, self.seed, self.ci_level = table, n_bootstrap, seed, ci_level
        self.identify = identify  # profile what the data do not pin down (for intervals; a choice needs none)
        self._fits: dict[tuple[str, str], ScalingFit | str] = {(LOSS_WAY, ""): loss_law or "no scaling fit"}

    def get(self, way: str, task: str) -> ScalingFit | str:
        """The law of ``way`` (the pretraining loss, or a task loss of ``task``), or why there is none."""
        key = (way, "") if way == LOSS_WAY else (way, task)
        if key not in self._fits:
            try:
                self._fits[key] = task_law(self.table, task, way, self.n_bootstrap, self.seed, self.ci_level,
                                           self.identify)
            except ValueError as e:
                self._fits[key] = f"no law of {way}: {e}"
        return self._fits[key]


# --- step 2: curves of the metric against each way's x ------------------------------------------

@dataclass
class Way:
    """One way, fitted: a law (None for direct) and the metric's curve against the law's quantity."""

    name: str
    law: ScalingFit | None
    curve: Curve

    def x_at(self, N: float, D: float, flops: float) -> float:
        if self.law is None:
            return -math.log10(max(flops, 1.0))
        return float(self.law.predict(N, D))

    def point(self, N: float, D: float, flops: float) -> float:
        x = self.x_at(N, D, flops)
        return self.curve.predict(x) if math.isfinite(x) else math.nan

    def scored(self, N: float, D: float, flops: float, actual: float, ci_level: float, rng) -> dict:
        if self.law is not None:
            out = two_stage(self.law, self.curve, N, D, actual, ci_level, rng)
            return {**out, "intermediate": self.name}
        x = self.x_at(N, D, flops)
        ci = interval(self.curve.samples(np.array([x]), rng), ci_level)
        return {**scored(self.curve.predict(x), ci, actual), **curve_info(self.curve), "axis": "log10 compute",
                "intermediate": DIRECT_WAY}


def curve_points(table: Table, task: str, metric: str, ways: list[str], cfg: ForecastConfig) -> dict:
    """A task x metric's points for curves: early checkpoints skipped, y and every way's x smoothed
    along each run. Returns run, tokens, y, y_measured (unsmoothed), seeds (a SeedLevel) and x (way -> values)."""
    s = table.series(task, metric)
    xs = {LOSS_WAY: s.x.astype(float), DIRECT_WAY: -np.log10(np.maximum(s.flops, 1.0))}
    for way in ways:
        if way not in xs:
            q = table.series(task, way)
            at = dict(zip(zip(q.run.tolist(), q.tokens.tolist()), _loss_like(way, q.value).tolist()))
            xs[way] = np.array([at.get(k, math.nan) for k in zip(s.run.tolist(), s.tokens.tolist())])
    keep = skip_early(s.run, s.tokens, cfg.skip_fraction) & np.isfinite(s.value)
    for way in ways:
        keep &= np.isfinite(xs[way])
    run, tokens = s.run[keep], s.tokens[keep]
    smooth = lambda v: moving_average(run, tokens, v[keep], cfg.smooth_window)  # noqa: E731
    return {"run": run, "tokens": tokens, "y": smooth(s.value.astype(float)), "y_measured": s.value[keep].astype(float),
            "x": {w: smooth(xs[w]) for w in ways}, "seeds": SeedLevel.of(s.n_params[keep], s.seed[keep]),
            "shape": (s.chance, s.higher_is_better, metric_info(metric).bounds)}


def fit_ways(table: Table, laws: Laws, task: str, metric: str, ways: list[str], cfg: ForecastConfig,
             n_bootstrap: int, rng) -> dict[str, Way | str]:
    """Each way fitted on ``table`` (the way, or why it cannot be fitted)."""
    pts = curve_points(table, task, metric, ways, cfg)
    out: dict[str, Way | str] = {}
    for way in ways:
        law = None if way == DIRECT_WAY else laws.get(way, task)
        if isinstance(law, str):
            out[way] = law
        elif len(pts["y"]) < 3 or np.ptp(pts["x"][way]) == 0:
            out[way] = f"{len(pts['y'])} points after skipping early checkpoints: too few for a curve"
        else:
            curve = fit_curve(pts["x"][way], pts["y"], *pts["shape"], n_bootstrap, rng, pts["seeds"])
            # What is predicted is one measurement, not a smoothed one: intervals add the measured
            # points' scatter about the curve (smoothing alone would narrow them below their coverage).
            scatter = pts["y_measured"] - curve.point.predict(pts["x"][way])
            out[way] = Way(way, law, dataclasses.replace(curve, residuals=scatter))
    return out


# --- the inner backtest and the choice --------------------------------------------------------

def inner_split(train: Table, spec: str) -> tuple[Table, Table] | str:
    """The training runs split like the outer backtest: their largest budget held out for a budget
    backtest, else their largest size; or why no inner backtest is possible."""
    if spec == LARGEST_BUDGET and len(train.budgets()) >= 2:
        held = {r for r in train.runs() if train.run_budget(r) == max(train.budgets())}
    elif len(train.sizes()) >= INNER_MIN_SIZES:
        held = {r for r in train.runs() if train.run_size(r) == train.sizes()[-1]}
    else:
        return f"the training runs span {len(train.sizes())} sizes; an inner backtest needs {INNER_MIN_SIZES}"
    return subset(train, held, keep=False), subset(train, held)


def final_points(held: Table, task: str, metric: str) -> list[tuple[str, float, float, float, float]]:
    """(run, N, D, flops, measured value) at each held-out run's final checkpoint of a task x metric."""
    h = held.series(task, metric)
    last: dict[str, int] = {}
    for i, r in enumerate(h.run.tolist()):
        if r not in last or h.tokens[i] > h.tokens[last[r]]:
            last[r] = i
    return [(r, float(h.n_params_nonembed[i]), float(h.tokens[i]), float(h.flops[i]), float(h.value[i]))
            for r, i in last.items()]


def inner_errors(inner: tuple[Table, Table], laws: Laws, task: str, metric: str, ways: list[str],
                 cfg: ForecastConfig) -> dict[str, float | None]:
    """Each way's mean absolute error on the inner held-out runs (None: no prediction)."""
    fitted = fit_ways(inner[0], laws, task, metric, ways, cfg, 0, np.random.default_rng(0))
    finals = final_points(inner[1], task, metric)
    errors: dict[str, float | None] = {}
    for way, w in fitted.items():
        errs = [abs(w.point(N, D, f) - v) for _, N, D, f, v in finals] if isinstance(w, Way) else []
        errors[way] = float(np.mean(errs)) if errs and all(map(math.isfinite, errs)) else None
    return errors


def choose(ways: list[str], errors: dict[str, float | None], tolerance: float = 0.0) -> str:
    """The first way (in ``ways``' order: pretraining loss, task losses, direct) whose inner error is
    within ``tolerance`` of the smallest. With the noise floor as tolerance, a difference that a
    re-run of the same checkpoints could reverse is no reason to leave the default way."""
    scored = {w: e for w in ways if (e := errors.get(w)) is not None}
    if not scored:
        return ways[0]
    best = min(scored.values())
    return next(w for w in ways if w in scored and scored[w] <= best + tolerance)


# --- one backtest's metric forecasts ------------------------------------------------------------

class MetricForecaster:
    """Every task x metric of a backtest: each way fitted on the training runs, one chosen per
    ``cfg.intermediate`` (auto: by the inner backtest), all scored on the held-out runs."""

    def __init__(self, train: Table, held: Table, spec: str, loss_law: ScalingFit | None, cfg: ForecastConfig, *,
                 n_curve: int, seed: int, ci_level: float):
        self.train, self.held, self.cfg, self.n_curve, self.ci_level = train, held, cfg, n_curve, ci_level
        # A task law's replicates pair one to one with the curve's (prediction.two_stage): more are never used.
        self.laws = Laws(train, loss_law, n_curve, seed, ci_level)
        split = inner_split(train, spec) if cfg.intermediate == AUTO else "intermediate fixed by the settings"
        self.inner, self.inner_laws = None, None
        self.inner_note = split if isinstance(split, str) else ""
        if not isinstance(split, str):
            self.inner = split
            self.inner_laws = Laws(split[0], point_loss_law(split[0]), 0, seed, ci_level, identify=False)

    def describe(self) -> dict:
        c = self.cfg
        return {"intermediate": c.intermediate, "skip_fraction": c.skip_fraction, "smooth_window": c.smooth_window,
                "noise_window": c.noise_window, "inner_note": self.inner_note,
                "inner_held_out": self.inner[1].runs() if self.inner else [],
                "inner_train": self.inner[0].runs() if self.inner else []}

    def _choice(self, task: str, metric: str, ways: list[str], noise_sd: float | None) -> dict:
        setting = self.cfg.intermediate
        if setting != AUTO:
            fixed, note = ways_for(self.train, task, metric, setting)
            return {"setting": setting, "chosen": fixed[0], "inner_mae": None, "note": note}
        if self.inner is None:
            return {"setting": setting, "chosen": LOSS_WAY, "inner_mae": None,
                    "note": f"no inner backtest ({self.inner_note}): through the pretraining loss"}
        errors = inner_errors(self.inner, self.inner_laws, task, metric, ways, self.cfg)
        return {"setting": setting, "chosen": choose(ways, errors, noise_sd or 0.0), "inner_mae": errors,
                "tolerance": noise_sd, "note": ""}

    def rows(self, task: str, metric: str, rng) -> list[dict]:
        """One row per held-out run: the metric at its final checkpoint, every way and the chosen one."""
        s = self.train.series(task, metric)
        finals = final_points(self.held, task, metric)
        if len(s) < 3 or not finals:
            return []
        ways, _ = ways_for(self.train, task, metric, AUTO)
        noise = noise_floor(s.run, s.tokens, s.value.astype(float), self.cfg.noise_window)
        choice = self._choice(task, metric, ways, noise["sd"])
        ways += [] if choice["chosen"] in ways else [choice["chosen"]]
        fitted = fit_ways(self.train, self.laws, task, metric, ways, self.cfg, self.n_curve, rng)
        out = []
        for run, N, D, flops, actual in finals:
            scored = {w: f.scored(N, D, flops, actual, self.ci_level, rng) if isinstance(f, Way)
                      else {"predicted": None, "note": f} for w, f in fitted.items()}
            chosen = scored[choice["chosen"]]
            inside_noise = (None if chosen.get("predicted") is None or noise["sd"] is None
                            else bool(chosen["abs_error"] <= noise["sd"]))
            a, b = scored[LOSS_WAY].get("abs_error"), scored[DIRECT_WAY].get("abs_error")
            closer = None if a is None or b is None else "two-stage" if a < b else "direct" if b < a else "tie"
            out.append({"task": task, "metric": metric, "run": run, "tokens": int(D), "actual": actual,
                        "two_stage": scored[LOSS_WAY], "direct": scored[DIRECT_WAY], "closer": closer,
                        "ways": scored, "intermediate": choice,
                        "forecast": {**chosen, "way": choice["chosen"], "within_noise": inside_noise},
                        "noise": noise})
        return out


def _stats(scored: list[dict]) -> dict:
    done = [s for s in scored if s.get("predicted") is not None]
    inside = [s["inside"] for s in done if s["inside"] is not None]
    return {"n": len(done), "mae": float(np.mean([s["abs_error"] for s in done])) if done else None,
            "inside": sum(inside), "n_with_interval": len(inside)}


def summarise(rows: list[dict]) -> dict:
    """Mean absolute error and coverage per way and of the chosen forecasts, overall and per metric
    (an accuracy's and a bits-per-byte's errors are not averaged together there)."""
    def block(sel: list[dict]) -> dict:
        ways = list(dict.fromkeys(w for r in sel for w in r["ways"]))
        chosen = [r["forecast"]["way"] for r in sel]
        return {"ways": {w: _stats([r["ways"][w] for r in sel if w in r["ways"]]) for w in ways},
                "chosen": _stats([r["forecast"] for r in sel]),
                "choices": {w: chosen.count(w) for w in dict.fromkeys(chosen)},
                "within_noise": sum(bool(r["forecast"]["within_noise"]) for r in sel)}

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    return {**block(rows), "by_metric": {m: block([r for r in rows if r["metric"] == m]) for m in metrics}}


def noise_table(table: Table, cfg: ForecastConfig) -> list[dict]:
    """Per task x metric over every run: the noise floor and signal-to-noise (smoothing.noise_floor)."""
    out = []
    for task in table.tasks():
        for metric in table.metrics(task):
            s = table.series(task, metric)
            out.append({"task": task, "metric": metric,
                        **noise_floor(s.run, s.tokens, s.value.astype(float), cfg.noise_window)})
    return out
