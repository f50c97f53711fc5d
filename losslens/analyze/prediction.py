"""The pieces every forecast of a task metric is made of: a curve of the metric against an axis (loss,
a task's own loss, or -log10 compute) with its bootstrap refits, and a prediction scored against what
was measured. The backtest (:mod:`losslens.analyze.backtest`) and the forecast routes
(:mod:`losslens.analyze.forecast`) both build on them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from losslens.analyze.curves import Fit, fit_models, fit_resampled, oriented_data
from losslens.analyze.intervals import around, percentile
from losslens.analyze.seeds import SeedLevel
from losslens.analyze.table import Table

# How a backtest holds runs out (losslens.analyze.backtest.choose_holdout); the inner backtest of
# losslens.analyze.forecast splits the training runs the same way.
NONE, LARGEST_SIZE, LARGEST_BUDGET = "none", "largest-size", "largest-budget"


def subset(table: Table, runs: set[str], keep: bool = True) -> Table:
    """The rows of ``runs`` (or, with keep=False, of every other run), as a Table of its own."""
    mask = np.isin(table.cols["run"], list(runs)) == keep
    return dataclasses.replace(table, cols={c: v[mask] for c, v in table.cols.items()})


@dataclasses.dataclass
class Curve:
    """The BIC-preferred model of a metric against x, with bootstrap refits and residuals.

    Predictions and prediction samples are clipped to ``limits``, the values the metric can take
    (its ``bounds`` in :mod:`losslens.metrics`: [0, 1] for accuracies and probabilities, <= 0 for
    log-likelihoods, unbounded for a metric of another tool that is not an accuracy).
    """

    model: str
    point: Fit
    replicates: list[Fit]  # one per bootstrap replicate
    residuals: np.ndarray
    limits: tuple[float, float]

    def predict(self, x: float) -> float:
        return float(np.clip(self.point.predict(np.array([x]))[0], *self.limits))

    def samples(self, x_samples: np.ndarray, rng) -> np.ndarray:
        """One prediction per replicate at x_samples[b] (cycled), plus a resampled residual."""
        if not self.replicates:
            return np.empty(0)
        xs = np.resize(np.asarray(x_samples, float), len(self.replicates))
        noise = rng.choice(self.residuals, len(self.replicates))
        curve = np.array([f.predict(np.array([x]))[0] for f, x in zip(self.replicates, xs)])
        return np.clip(curve + noise, *self.limits)


def ceiling_of(bounds: tuple[float, float], higher_is_better: bool) -> float | None:
    """The best value a metric with these bounds can take (None where that side is unbounded)."""
    best = bounds[1] if higher_is_better else bounds[0]
    return best if math.isfinite(best) else None


def fit_curve(x, y, chance, higher_is_better: bool, bounds: tuple[float, float], n_bootstrap: int, rng,
              seeds: SeedLevel | None = None) -> Curve:
    """The BIC-preferred curve model (:func:`losslens.analyze.curves.fit_models`, its rise bounded by
    the best value the metric can take); replicates refit that model alone, fully, on points resampled
    with ``seeds`` as the outer level where given."""
    ceiling = ceiling_of(bounds, higher_is_better)
    fits = fit_models(x, y, chance, higher_is_better, ceiling)
    best = min(fits.values(), key=lambda f: f.bic)
    picks = [rng.integers(0, len(x), len(x)) if seeds is None else seeds.picks(rng) for _ in range(n_bootstrap)]
    data, sign = oriented_data(x, y, chance, higher_is_better, ceiling)
    reps = fit_resampled(best.model, data, [p for p in picks if np.ptp(x[p]) > 0], sign)
    return Curve(best.model, best, reps, y - best.predict(x), (float(bounds[0]), float(bounds[1])))


def interval(samples: np.ndarray, ci_level: float) -> list[float]:
    return list(percentile(samples[np.isfinite(samples)], ci_level))


def scored(predicted: float, ci: list[float], actual: float) -> dict:
    """A prediction against the measurement; its interval extended to hold the prediction if it
    missed it (``ci_widened``)."""
    lo, hi, widened = around(predicted, *ci)
    err = predicted - actual
    return {"predicted": predicted, "ci": [lo, hi], "abs_error": abs(err),
            "rel_error": abs(err) / abs(actual) if actual != 0 else math.inf,
            "inside": bool(lo <= actual <= hi) if all(map(math.isfinite, (lo, hi))) else None,
            **({"ci_widened": True} if widened else {})}




def two_stage(law, curve: Curve, N: float, D: float, actual: float, ci_level: float, rng) -> dict:
    if law is None:
        return {"predicted": None, "note": "no scaling fit on the training runs"}
    loss = float(law.predict(N, D))
    if not math.isfinite(loss):
        return {"predicted": None, "note": "the scaling fit does not apply at this token count"}
    samples = [curve.samples(law.predict_samples(N, D)[:, 0], rng)] if len(law.boot) else []
    how = "bootstrap"
    if law.not_identified:
        lo, hi = law.predict_interval(N, D)
        samples += [curve.samples(np.array([v]), rng) for v in (lo[0], hi[0]) if math.isfinite(v)]
        how += f" widened to the scaling law's profile region ({', '.join(law.not_identified)} not identified)"
    ci = [math.nan, math.nan]
    if samples:
        bounds = [interval(v, ci_level) for v in samples if len(v)]
        ci = [min(b[0] for b in bounds), max(b[1] for b in bounds)] if bounds else ci
    return {**scored(curve.predict(loss), ci, actual), **curve_info(curve), "loss": loss, "interval": how}


def curve_info(curve: Curve) -> dict:
    """The curve's model, and how its ceiling was chosen where that was a choice."""
    return {"model": curve.model, **({"ceiling": curve.point.note} if curve.point.note else {})}
