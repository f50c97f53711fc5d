"""Loss thresholds: does a task's performance leave its chance level, and below which loss?

Following Du et al. (2024), performance y is read as a function of pretraining loss x. Every curve
model of :mod:`losslens.analyze.curves` (constant, flat, linear, sigmoid, hinge, ...) is fitted by
least squares, in oriented units where larger is better, with the metric's chance level as the
floor (a metric without one gets a plateau fitted from the data). Each model declares there the
verdict it stands for (``not-learned``, ``smooth`` or ``emergent``) and, if emergent, where its
threshold eta is.

The model is chosen by the Bayesian information criterion for Gaussian errors,

    BIC = n ln(RSS / n) + k ln n,

lowest wins, and its verdict (the model's own rule, from its record) is the claim. Claims need evidence (a BIC difference of 2 is "positive evidence",
Kass & Raftery 1995):

* a smooth or emergent model that beats the better null by less than 2 -> ``not-learned``;
* flat at a level clearly above chance (it beats constant-at-chance by 2) with no trend ->
  ``insufficient-data``: the ability was there before the first checkpoint;
* the best emergent and the best smooth model within 2 of each other -> ``insufficient-data``;
* emergent, but fewer than ``min_side`` points on either side of eta, or a confidence interval
  wider than half the observed loss range or reaching its edge -> ``insufficient-data``.

The threshold eta comes from the preferred emergent model (its record's ``eta``: the hinge's kink,
or for a soft hinge the loss where the sigmoid has risen 5 % of its height). The interval is a percentile bootstrap:
where some size was trained with several seeds, resample the seeds within each size first
(:mod:`losslens.analyze.seeds`); then the checkpoints (points) with replacement, from the drawn
seeds' points; and, where per-example records exist, the test examples too (the same resampled
examples for every checkpoint, since every checkpoint answers the same test set); then refit eta.
With seeds, the replicates' spread around eta is widened by the small-sample factor of
:func:`losslens.analyze.intervals.seed_inflation` (a bootstrap over 2-3 seeds understates their
variance), and the interval of the bootstrap without the seed level is kept beside it, to say how
much of the width the seeds make. An interval that misses eta (a lopsided bootstrap) is extended to
it and marked ``ci_widened``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from losslens.analyze.curves import (BIC_MARGIN, CURVES, EMERGENT, NOT_LEARNED, SMOOTH, Fit, fit_models,
                                     sigmoid_onset)  # re-exported: threshold's public names
from losslens.analyze.intervals import around, percentile, seed_inflation
from losslens.analyze.seeds import SeedLevel

__all__ = ["EMERGENT", "SMOOTH", "NOT_LEARNED", "INSUFFICIENT", "Fit", "ThresholdResult", "find_threshold",
           "fit_models", "sigmoid_onset", "extrapolation_test"]

INSUFFICIENT = "insufficient-data"


@dataclass
class ThresholdResult:
    """The answer of :func:`find_threshold` for one task x metric.

    ``eta``/``ci_low``/``ci_high`` hold eta and its bootstrap interval when the data
    pointed to an emergent shape (verdict ``emergent``, or ``insufficient-data`` after a failed
    check), and NaN otherwise: a threshold is never reported for a smooth or flat curve.
    """

    verdict: str
    reason: str
    eta: float  # report.json keeps its key: threshold.loss
    ci_low: float
    ci_high: float
    preferred: str  # model with the lowest BIC
    delta_bic: float  # BIC of the best model standing for another verdict minus the preferred one's
    fits: dict[str, Fit]
    chance: float | None
    plateau: float  # the level before the ability: chance, or the hinge's fitted plateau
    plateau_fitted: bool
    higher_is_better: bool
    n_points: int
    n_above: int  # points with loss >= eta (0 when no eta)
    n_below: int
    loss_range: tuple[float, float]
    ci_level: float = 0.95
    n_bootstrap: int = 0
    used_examples: bool = False
    bootstrap: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    used_seeds: bool = False  # the bootstrap resampled seeds within sizes first
    ci_without_seeds: tuple[float, float] | None = None  # the interval of the same bootstrap without the seed level
    ci_widened: bool = False  # the percentile interval missed eta and was extended to it
    seed_inflation: float = 1.0  # the seed level's small-sample factor on the replicates' spread

    def to_dict(self) -> dict:
        over = ["seeds within sizes"] * self.used_seeds + ["checkpoints"] + ["test examples"] * self.used_examples
        seedless = {} if self.ci_without_seeds is None else {"ci_without_seeds": list(self.ci_without_seeds)}
        if self.used_seeds:
            seedless["seed_inflation"] = self.seed_inflation
        if self.ci_widened:
            seedless["ci_widened"] = "the bootstrap's percentile interval missed eta; extended to it"
        return {
            "verdict": self.verdict, "reason": self.reason,
            "threshold": {"loss": self.eta, "ci_low": self.ci_low, "ci_high": self.ci_high,
                          "ci_level": self.ci_level, "n_bootstrap": self.n_bootstrap,
                          "bootstrap_over": ", ".join(over[:-1]) + " and " + over[-1] if len(over) > 1 else over[0],
                          **seedless},
            "preferred_model": self.preferred, "delta_bic": self.delta_bic,
            "fits": {name: {"params": f.params, "rss": f.rss, "k": f.k, "bic": f.bic} for name, f in self.fits.items()},
            "chance": self.chance, "plateau": self.plateau, "plateau_fitted": self.plateau_fitted,
            "higher_is_better": self.higher_is_better, "n_points": self.n_points,
            "n_above": self.n_above, "n_below": self.n_below, "loss_range": list(self.loss_range),
        }


def _resamples(y, examples, n_boot, rng, seeds: SeedLevel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw the bootstrap: (W, Y), n x n_boot, how often each point is drawn and its score in each
    resample. Random numbers are drawn in a fixed order, so a seed gives the same resamples.
    Without a seed level, the draws are those of a flat bootstrap over points."""
    n = len(y)
    if examples is None and seeds is not None:
        return seeds.counts(rng, n_boot), np.repeat(y[:, None], n_boot, axis=1)
    if examples is None:  # the points alone: one draw for all resamples gives the same numbers
        picks = rng.integers(0, n, (n_boot, n))
        W = np.bincount((picks + n * np.arange(n_boot)[:, None]).ravel(), minlength=n * n_boot)
        return W.reshape(n_boot, n).T.astype(float), np.repeat(y[:, None], n_boot, axis=1)
    ex_means = np.array([np.nan if e is None else e.mean() for e in examples])
    paired = len({len(e) for e in examples if e is not None}) == 1
    W, Y = np.empty((n, n_boot)), np.empty((n, n_boot))
    for b in range(n_boot):
        # Shift each score by how much its mean moves when the test set is resampled. The
        # table's value stays the centre even if it was aggregated differently (e.g. per token).
        if paired:
            m = len(next(e for e in examples if e is not None))
            idx = rng.integers(0, m, m)
        shift = np.array([0.0 if e is None else (e[idx] if paired else e[rng.integers(0, len(e), len(e))]).mean()
                          - ex_means[i] for i, e in enumerate(examples)])
        Y[:, b] = y + shift
        W[:, b] = np.bincount(rng.integers(0, n, n), minlength=n) if seeds is None else seeds.counts(rng, 1)[:, 0]
    return W, Y


def _bootstrap_eta(model, x, y, chance, sign, examples, n_boot, rng, seeds: SeedLevel | None = None) -> np.ndarray:
    """eta of ``model`` refitted on ``n_boot`` resamples of the seeds (if given), the points, and the
    test examples (if given).

    Each resample is fitted as the full data are, but all at once: the model's ``bootstrap_eta``
    (:mod:`losslens.analyze.curves`).
    """
    co = None if chance is None else sign * chance
    W, Y = _resamples(y, examples, n_boot, rng, seeds)
    drawn = W > 0
    lo = np.where(drawn, x[:, None], np.inf).min(axis=0)
    hi = np.where(drawn, x[:, None], -np.inf).max(axis=0)
    ok = hi > lo  # a resample of one loss value cannot place eta
    if not ok.any():
        return np.empty(0)
    W, Y, lo, hi = W[:, ok], sign * Y[:, ok], lo[ok], hi[ok]
    etas = CURVES[model].bootstrap_eta(x, W, Y, co, lo, hi)
    return etas[np.isfinite(etas)]


def _declines(x: np.ndarray, y: np.ndarray, sign: float) -> bool:
    """Does performance get worse as loss falls (an unconstrained line's oriented slope > 0)?"""
    return bool(np.polyfit(x, sign * y, 1)[0] > 0)


@dataclass
class _Points:
    """The finite points of one :func:`find_threshold` call, and what each of its results repeats."""

    x: np.ndarray
    y: np.ndarray
    chance: float | None
    higher_is_better: bool
    ci_level: float
    examples: list | None
    seeds: SeedLevel | None

    @property
    def sign(self) -> float:
        return 1.0 if self.higher_is_better else -1.0

    @property
    def loss_range(self) -> tuple[float, float]:
        return (float(self.x.min()), float(self.x.max())) if len(self.x) else (math.nan, math.nan)

    def result(self, verdict, reason, fits=None, preferred="", delta=math.nan, eta=math.nan, lo=math.nan,
               hi=math.nan, boot=np.empty(0), plateau=None, ci_without_seeds=None, widened=False) -> ThresholdResult:
        x, found = self.x, math.isfinite(eta)
        plateau = self.chance if plateau is None else plateau
        return ThresholdResult(
            verdict=verdict, reason=reason, eta=float(eta), ci_low=float(lo), ci_high=float(hi),
            preferred=preferred, delta_bic=float(delta), fits=fits or {}, chance=self.chance,
            plateau=math.nan if plateau is None else float(plateau), plateau_fitted=self.chance is None,
            higher_is_better=self.higher_is_better, n_points=len(x), n_above=int((x >= eta).sum()) if found else 0,
            n_below=int((x < eta).sum()) if found else 0, loss_range=self.loss_range, ci_level=self.ci_level,
            n_bootstrap=len(boot), used_examples=self.examples is not None and len(boot) > 0, bootstrap=boot,
            used_seeds=self.seeds is not None and len(boot) > 0, ci_without_seeds=ci_without_seeds,
            ci_widened=widened,
            seed_inflation=seed_inflation(self.seeds.seeds_per_size, self.ci_level) if self.seeds is not None else 1.0,
        )


def _finite_points(losses, scores, chance, higher_is_better, ci_level, examples, sizes, seeds) -> _Points:
    """The points with a finite loss and score, with their per-example records and seed level."""
    x, y = np.asarray(losses, dtype=float), np.asarray(scores, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"losses and scores must be 1-D of one length, got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    if examples is not None:
        examples = [None if e is None or len(e) == 0 else np.asarray(e, float)
                    for e, keep in zip(examples, ok) if keep]
        if all(e is None for e in examples):
            examples = None
    level = None if seeds is None else SeedLevel.of(np.asarray(sizes)[ok], np.asarray(seeds, dtype=str)[ok])
    return _Points(x[ok], y[ok], chance, higher_is_better, ci_level, examples, level)


def find_threshold(
    losses,
    scores,
    chance: float | None = None,
    *,
    higher_is_better: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    examples: list | None = None,
    min_side: int = 3,
    ci_level: float = 0.95,
    sizes=None,
    seeds=None,
) -> ThresholdResult:
    """Find the loss below which a task's performance rises above chance, with a verdict.

    ``losses`` and ``scores`` are one point per checkpoint (validation loss in nats/token, the
    metric's value in its own units). ``chance`` is the metric's chance level, or None to fit a
    plateau from the data. ``examples`` optionally gives, per point, an array of per-example
    metric values (None where missing) for bootstrapping over test examples too. ``sizes`` and
    ``seeds`` optionally give each point's model size and seed label: where a size has several
    seeds, the bootstrap resamples seeds within sizes first. See the module docstring for the
    models, the BIC criterion and the rules behind each verdict.
    """
    pts = _finite_points(losses, scores, chance, higher_is_better, ci_level, examples, sizes, seeds)
    x, n, (low, high) = pts.x, len(pts.x), pts.loss_range
    if n < 2 * min_side or high - low <= 0:
        return pts.result(INSUFFICIENT, f"{n} points over a loss range of {high - low:.3g}; "
                                        f"need at least {2 * min_side} at different losses")
    fits = fit_models(x, pts.y, chance, higher_is_better)
    kind = {name: f.verdict(x, min_side) for name, f in fits.items()}
    best = min(fits.values(), key=lambda f: f.bic)
    best_bic = {v: min((f.bic for name, f in fits.items() if kind[name] == v), default=math.inf)
                for v in (EMERGENT, SMOOTH, NOT_LEARNED)}
    delta = min(b for v, b in best_bic.items() if v != kind[best.model]) - best.bic
    # The level before the ability: the preferred model's, where it has one, else the hinge's.
    own = CURVES[best.model].plateau
    plateau = own(best.params) if own else fits["hinge"].params["plateau"]
    common = dict(fits=fits, preferred=best.model, delta=delta, plateau=plateau)
    if kind[best.model] != EMERGENT:
        return _not_emergent(pts, best, kind[best.model], best_bic, common)
    return _emergent(pts, best, best_bic, common, n_bootstrap, seed, min_side)


def _not_emergent(pts: _Points, best: Fit, claim: str, best_bic: dict, common: dict) -> ThresholdResult:
    """The verdict when the BIC-preferred model is not emergent: not-learned, smooth, or too close to call."""
    chance, delta = pts.chance, common["delta"]
    if claim == NOT_LEARNED:
        fits = common["fits"]
        if best.model == "flat" and chance is not None and pts.sign * (best.params["level"] - chance) > 0 \
                and fits["constant"].bic - best.bic >= BIC_MARGIN:
            return pts.result(INSUFFICIENT, f"flat at {best.params['level']:.3g}, above chance {chance:.3g}, over "
                                            f"the whole loss range: learned before the first checkpoint, no "
                                            f"threshold to find here", **common)
        trend = _declines(pts.x, pts.y, pts.sign)
        return pts.result(NOT_LEARNED, f"{'constant at chance' if best.model == 'constant' else 'a flat level'} has "
                                       f"the lowest BIC (next best +{delta:.1f})"
                                       + ("; performance declines as loss falls" if trend else ""), **common)
    return _learned_but_unsure(pts, best, claim, best_bic, common) or pts.result(
        SMOOTH, f"the {best.model} fit is preferred by ΔBIC {delta:.1f}; performance improves steadily as loss falls",
        **common)


def _learned_but_unsure(pts: _Points, best: Fit, claim: str, best_bic: dict, common: dict) -> ThresholdResult | None:
    """A learned claim (smooth or emergent) the BIC does not carry: too close to flat, or to the rival shape."""
    gain = best_bic[NOT_LEARNED] - best.bic
    if gain < BIC_MARGIN:
        return pts.result(NOT_LEARNED, f"the {best.model} fit beats a flat level by only "
                                       f"ΔBIC {gain:.1f} < {BIC_MARGIN:g}", **common)
    gap = best_bic[SMOOTH if claim == EMERGENT else EMERGENT] - best.bic
    if gap < BIC_MARGIN:
        return pts.result(INSUFFICIENT, f"emergent and smooth fits are within ΔBIC {gap:.1f} < {BIC_MARGIN:g}",
                          **common)
    return None


def _eta_interval(pts: _Points, model: str, n_bootstrap: int, seed: int, seeds: SeedLevel | None, eta: float):
    """Bootstrap replicates of eta, their percentile interval (NaNs without replicates) extended to hold
    eta, and whether it had to be. With a seed level, the replicates' spread around eta is widened by
    the small-sample factor of :func:`losslens.analyze.intervals.seed_inflation`."""
    rng = np.random.default_rng(seed)
    boot = (_bootstrap_eta(model, pts.x, pts.y, pts.chance, pts.sign, pts.examples, n_bootstrap, rng, seeds)
            if n_bootstrap > 0 else np.empty(0))
    if seeds is not None and len(boot):
        boot = eta + seed_inflation(seeds.seeds_per_size, pts.ci_level) * (boot - eta)
    return boot, *around(eta, *percentile(boot, pts.ci_level))


def _emergent(pts: _Points, best: Fit, best_bic: dict, common: dict, n_bootstrap: int, seed: int,
              min_side: int) -> ThresholdResult:
    """Emergent by BIC: locate eta with the preferred model and check the data can carry it."""
    unsure = _learned_but_unsure(pts, best, EMERGENT, best_bic, common)
    if unsure is not None:
        return unsure
    x, (low, high), delta = pts.x, pts.loss_range, common["delta"]
    eta = CURVES[best.model].eta(best.params)
    boot, lo, hi, widened = _eta_interval(pts, best.model, n_bootstrap, seed, pts.seeds, eta)
    if pts.seeds is not None and n_bootstrap > 0:  # the same bootstrap without the seed level, to compare
        common["ci_without_seeds"] = _eta_interval(pts, best.model, n_bootstrap, seed, None, eta)[1:3]
    common.update(eta=eta, lo=lo, hi=hi, boot=boot, widened=widened)
    above, below = int((x >= eta).sum()), int((x < eta).sum())
    if min(above, below) < min_side:
        return pts.result(INSUFFICIENT, f"eta={eta:.3f} leaves {above} point(s) above and {below} below "
                                        f"(need {min_side} on each side)", **common)
    if not len(boot):
        return pts.result(EMERGENT, f"the {best.model} fit is preferred by ΔBIC {delta:.1f} (no bootstrap)", **common)
    edge = 0.01 * (high - low)
    if hi - lo > 0.5 * (high - low) or lo <= low + edge or hi >= high - edge:
        return pts.result(INSUFFICIENT, f"the {pts.ci_level:.0%} interval [{lo:.3f}, {hi:.3f}] of eta is wider than "
                                        f"half the loss range or reaches its edge [{low:.3f}, {high:.3f}]", **common)
    where = "chance" if pts.chance is not None else "a fitted plateau"
    return pts.result(EMERGENT, f"flat at {where} above eta, rising below; the {best.model} fit is preferred by "
                                f"ΔBIC {delta:.1f}", **common)


def extrapolation_test(losses, scores, eta: float, min_side: int = 3) -> dict | None:
    """Could the points below eta have been predicted from those above it?

    Fits a line y = a + b x to the points with loss >= eta only, extrapolates it to the points
    below, and reports the root-mean-square error there, together with the jump it had to
    predict, mean(y below) - mean(y above), and their ratio ``rel_error`` = rmse / |jump|.
    rel_error near 0: the high-loss points foretold the gain; near 1 or more: they did not.
    None when either side has fewer than ``min_side`` points.
    """
    x, y = np.asarray(losses, float), np.asarray(scores, float)
    if not math.isfinite(eta):
        return None
    above = x >= eta
    if above.sum() < min_side or (~above).sum() < min_side or np.ptp(x[above]) == 0:
        return None
    b, a = np.polyfit(x[above], y[above], 1)
    err = a + b * x[~above] - y[~above]
    rmse = float(np.sqrt(np.mean(err ** 2)))
    jump = float(y[~above].mean() - y[above].mean())
    return {"eta": float(eta), "n_fit": int(above.sum()), "n_test": int((~above).sum()), "rmse": rmse,
            "jump": jump, "rel_error": rmse / abs(jump) if jump != 0 else math.inf}
