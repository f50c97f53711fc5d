"""Loss thresholds: does a task's performance leave its chance level, and below which loss?

Following Du et al. (2024), performance y is read as a function of pretraining loss x. Four
models of the mean are fitted by least squares (in "oriented" units, where larger is better:
a lower-is-better metric such as Brier is negated, so that "rising" always means improving):

    constant  y = chance                              (k = 0; only when a chance level is given)
    flat      y = c                                   (k = 1: a level of its own, e.g. below chance)
    linear    y = a + b x, b <= 0                     (k = 2)
    sigmoid   y = c + h / (1 + exp((x - m) / w))      (h >= 0, w > 0; k = 3, or 4 with c free)
    hinge     y = c + s * max(0, eta - x)             (s >= 0, eta in [min x, max x]; k = 2, or 3)

``c`` in the sigmoid and hinge is the chance level when one is given. A metric without one
(e.g. edit distance) gets a free plateau instead: the level the model sits at before it
learns, fitted from the data. Every model but the two nulls improves as loss falls (the line's
slope, the sigmoid's height and the hinge's slope are constrained), so a metric that gets worse
with lower loss, or that wanders below its chance level, is never called smooth or emergent:
the free ``flat`` level absorbs an offset from chance, and a declining line collapses onto it.

The model is chosen by the Bayesian information criterion for Gaussian errors,

    BIC = n ln(RSS / n) + k ln n,

lowest wins. Each model stands for a verdict: constant and flat -> ``not-learned``, linear ->
``smooth``, hinge -> ``emergent``. The sigmoid is a smooth alternative unless at least
``min_side`` points sit on its flat floor (fitted value within 5 % of its height above c) and
``min_side`` above it, in which case it is a soft hinge and counts as ``emergent``; a hinge
whose kink leaves fewer than ``min_side`` points on the flat side is a line over the data and
counts as ``smooth``. Claims need evidence (a BIC difference of 2 is "positive evidence",
Kass & Raftery 1995):

* a smooth or emergent model that beats the better null by less than 2 -> ``not-learned``;
* flat at a level clearly above chance (it beats constant-at-chance by 2) with no trend ->
  ``insufficient-data``: the ability was there before the first checkpoint;
* the best emergent and the best smooth model within 2 of each other -> ``insufficient-data``;
* emergent, but fewer than ``min_side`` points on either side of eta, or a confidence interval
  wider than half the observed loss range or reaching its edge -> ``insufficient-data``.

The threshold eta comes from the preferred emergent model: the hinge's kink, or for a soft
hinge the loss where the sigmoid has risen 5 % of its height (it saturates, which a hinge
cannot follow, so the hinge would misplace the onset). The interval is a percentile bootstrap:
where some size was trained with several seeds, resample the seeds within each size first
(:mod:`losslens.analyze.seeds`); then the checkpoints (points) with replacement, from the drawn
seeds' points; and, where per-example records exist, the test examples too (the same resampled
examples for every checkpoint, since every checkpoint answers the same test set); then refit eta.
With seeds, the interval of the bootstrap without the seed level is kept beside it, to say how
much of the width the seeds make.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import expit

from losslens.analyze.seeds import SeedLevel

EMERGENT, SMOOTH, NOT_LEARNED, INSUFFICIENT = "emergent", "smooth", "not-learned", "insufficient-data"
BIC_MARGIN = 2.0  # the BIC difference a claim needs
FLAT_FRACTION = 0.05  # a sigmoid point is "on the floor" below 5 % of the sigmoid's height
HINGE_GRID = 256  # eta candidates for the profile search
BLOCK = 1 << 15  # design elements per block (256 KB): the work of one block stays in cache


@dataclass
class Fit:
    """One fitted model of performance against loss. ``params`` are in the metric's own units."""

    model: str
    params: dict[str, float]
    rss: float
    k: int  # free parameters of the mean (the noise variance, common to all models, not counted)
    bic: float

    def predict(self, loss) -> np.ndarray:
        x = np.asarray(loss, dtype=float)
        p = self.params
        if self.model in ("constant", "flat"):
            return np.full_like(x, p["level"])
        if self.model == "linear":
            return p["intercept"] + p["slope"] * x
        if self.model == "hinge":
            return p["plateau"] + p["slope"] * np.maximum(0.0, p["eta"] - x)
        if self.model == "sigmoid":
            return p["floor"] + p["height"] * expit((p["midpoint"] - x) / p["width"])
        raise ValueError(self.model)


@dataclass
class ThresholdResult:
    """The answer of :func:`find_threshold` for one task x metric.

    ``loss``/``ci_low``/``ci_high`` hold eta and its bootstrap interval when the data
    pointed to an emergent shape (verdict ``emergent``, or ``insufficient-data`` after a failed
    check), and NaN otherwise: a threshold is never reported for a smooth or flat curve.
    """

    verdict: str
    reason: str
    loss: float
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

    def to_dict(self) -> dict:
        over = ["seeds within sizes"] * self.used_seeds + ["checkpoints"] + ["test examples"] * self.used_examples
        seedless = {} if self.ci_without_seeds is None else {"ci_without_seeds": list(self.ci_without_seeds)}
        return {
            "verdict": self.verdict, "reason": self.reason,
            "threshold": {"loss": self.loss, "ci_low": self.ci_low, "ci_high": self.ci_high,
                          "ci_level": self.ci_level, "n_bootstrap": self.n_bootstrap,
                          "bootstrap_over": ", ".join(over[:-1]) + " and " + over[-1] if len(over) > 1 else over[0],
                          **seedless},
            "preferred_model": self.preferred, "delta_bic": self.delta_bic,
            "fits": {name: {"params": f.params, "rss": f.rss, "k": f.k, "bic": f.bic} for name, f in self.fits.items()},
            "chance": self.chance, "plateau": self.plateau, "plateau_fitted": self.plateau_fitted,
            "higher_is_better": self.higher_is_better, "n_points": self.n_points,
            "n_above": self.n_above, "n_below": self.n_below, "loss_range": list(self.loss_range),
        }


# --- least-squares pieces, in oriented units (larger is better) ---------------------------

def _bic(rss: float, n: int, k: int) -> float:
    return n * math.log(max(rss, 1e-300) / n) + k * math.log(n)


def _profile(X: np.ndarray, y: np.ndarray, c: float | None):
    """For each row g of the design X (G x n), least squares of y = c + s X[g] with s >= 0.

    With c given the fit is s = max(0, X.r / X.X) on r = y - c; with c free it is the usual
    slope cov(X, y) / var(X), clipped at 0. Returns (rss, s, c) arrays of length G.
    """
    if c is not None:
        r = y - c
        xr, xx = X @ r, np.einsum("gi,gi->g", X, X)
        s = np.where(xx > 0, np.maximum(xr, 0.0) / np.where(xx > 0, xx, 1.0), 0.0)
        return r @ r - s * xr, s, np.full(len(X), c)
    xm, ym = X.mean(axis=1), y.mean()
    Xc, yc = X - xm[:, None], y - ym
    sxy, sxx = Xc @ yc, np.einsum("gi,gi->g", Xc, Xc)
    s = np.where(sxx > 0, np.maximum(sxy, 0.0) / np.where(sxx > 0, sxx, 1.0), 0.0)
    return yc @ yc - s * sxy, s, ym - s * xm


def _hinge_eta(x: np.ndarray, y: np.ndarray, c: float | None, grid: int = HINGE_GRID, refine: bool = False):
    """The hinge's least-squares eta over [min x, max x]: profile on a grid, then (optionally) polish."""
    etas = np.linspace(x.min(), x.max(), grid)
    rss, s, cc = _profile(np.maximum(0.0, etas[:, None] - x[None, :]), y, c)
    g = int(np.argmin(rss))
    if not refine:
        return etas[g], s[g], cc[g], rss[g]

    def one(eta):
        return _profile(np.maximum(0.0, eta - x)[None, :], y, c)

    lo, hi = etas[max(g - 1, 0)], etas[min(g + 1, grid - 1)]
    if hi > lo:
        res = optimize.minimize_scalar(lambda e: one(e)[0][0], bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-9 * (x.max() - x.min() + 1)})
        if res.fun < rss[g]:
            r, ss, c2 = one(res.x)
            return float(res.x), ss[0], c2[0], r[0]
    return etas[g], s[g], cc[g], rss[g]


def _sigmoid_search(x: np.ndarray, y: np.ndarray, c: float | None, rounds: int = 3):
    """Least squares of y = c + h expit((m - x) / w) by grid search over (m, w), with (c, h)
    profiled out: a coarse grid, then ``rounds`` finer grids around the best cell (each 5x finer).
    Returns (m, w, h, c, rss). (The bootstrap runs the same search on many resamples at once:
    :func:`_bootstrap_sigmoid`.)"""
    grid = _sigmoid_grid(float(x.min()), float(x.max()))
    rss, h, cc = _sigmoid_profile(grid, x, y, c)
    g = int(np.argmin(rss))
    for _ in range(rounds):
        grid = _finer_grid(grid, g)
        rss, h, cc = _sigmoid_profile(grid, x, y, c)
        g = int(np.argmin(rss))
    m, w = _cell(grid, g)
    return m, w, h[g], cc[g], float(rss[g])


def _sigmoid_profile(grid, x: np.ndarray, y: np.ndarray, c: float | None):
    """:func:`_profile` of the sigmoid design, a block of rows at a time: with many points the whole
    design no longer fits in cache, and each element then costs several times more."""
    step = max(1, BLOCK // len(x))
    parts = [_profile(_sigmoid_design(grid, x, slice(i, i + step)), y, c)
             for i in range(0, len(grid[0]) * len(grid[1]), step)]
    return tuple(np.concatenate(p) for p in zip(*parts))


def _fit_sigmoid(x: np.ndarray, y: np.ndarray, c: float | None):
    """The sigmoid's least-squares fit: grid search, then polished by scipy's least_squares."""
    m, w, h, c0, rss = _sigmoid_search(x, y, c)
    span = float(x.max() - x.min()) or 1.0
    start = [m, math.log(w), h] + ([] if c is not None else [c0])

    def resid(p):
        floor = c if c is not None else p[3]
        return floor + p[2] * expit((p[0] - x) / math.exp(p[1])) - y

    lo = [-np.inf, math.log(span * 1e-4), 0.0] + ([] if c is not None else [-np.inf])
    hi = [np.inf, math.log(span * 100), np.inf] + ([] if c is not None else [np.inf])
    try:
        res = optimize.least_squares(resid, np.clip(start, lo, hi), bounds=(lo, hi), max_nfev=400)
        if 2 * res.cost < rss:
            p = res.x
            return p[0], math.exp(p[1]), p[2], (c if c is not None else p[3]), 2 * float(res.cost)
    except (ValueError, FloatingPointError):
        pass
    return m, w, h, c0, rss


def fit_models(x: np.ndarray, y: np.ndarray, chance: float | None, higher_is_better: bool = True) -> dict[str, Fit]:
    """Fit the models of the module docstring to (loss x, score y); params in the metric's units."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    sign = 1.0 if higher_is_better else -1.0
    yo = sign * y  # oriented: larger is better
    co = None if chance is None else sign * chance
    n, free = len(x), co is None
    fits = {}

    if not free:
        rss = float(((yo - co) ** 2).sum())
        fits["constant"] = Fit("constant", {"level": sign * co}, rss, 0, _bic(rss, n, 0))
    level = float(yo.mean())
    rss = float(((yo - level) ** 2).sum())
    fits["flat"] = Fit("flat", {"level": sign * level}, rss, 1, _bic(rss, n, 1))

    # Improving only: oriented performance may not grow with loss. A rising fit is the flat one.
    b, a = np.polyfit(x, yo, 1)
    if b > 0:
        b, a = 0.0, level
    rss = float(((yo - a - b * x) ** 2).sum())
    fits["linear"] = Fit("linear", {"intercept": sign * a, "slope": sign * b}, rss, 2, _bic(rss, n, 2))

    m, w, h, c, rss = _fit_sigmoid(x, yo, co)
    k = 3 + free
    fits["sigmoid"] = Fit("sigmoid", {"floor": sign * c, "height": sign * h, "midpoint": m, "width": w},
                          rss, k, _bic(rss, n, k))

    eta, s, c, rss = _hinge_eta(x, yo, co, refine=True)
    k = 2 + free
    fits["hinge"] = Fit("hinge", {"eta": float(eta), "slope": sign * float(s), "plateau": sign * float(c)},
                        float(rss), k, _bic(rss, n, k))
    return fits


def _verdict_of(fit: Fit, x: np.ndarray, min_side: int) -> str:
    """The verdict a model stands for, given where the data lie on it (see the module docstring)."""
    if fit.model in ("constant", "flat"):
        return NOT_LEARNED
    if fit.model == "linear":
        return SMOOTH
    if fit.model == "hinge":
        # No flat side to speak of: the hinge is a straight line over the data.
        return SMOOTH if (x >= fit.params["eta"]).sum() < min_side else EMERGENT
    z = expit((fit.params["midpoint"] - x) / fit.params["width"])
    on_floor = int((z < FLAT_FRACTION).sum())
    return EMERGENT if on_floor >= min_side and len(x) - on_floor >= min_side else SMOOTH


def sigmoid_onset(params: dict) -> float:
    """Where a sigmoid leaves its floor: the loss at which it has risen 5 % of its height,
    eta = m + w ln((1 - f) / f) with f = 0.05."""
    return params["midpoint"] + params["width"] * math.log((1 - FLAT_FRACTION) / FLAT_FRACTION)


def _weighted_profile(X: np.ndarray, W: np.ndarray, Y: np.ndarray, c: float | None) -> np.ndarray:
    """:func:`_profile`'s RSS for many resamples at once, as matrix products.

    X (G x n) holds the design at the n points; resample b draws point i W[i, b] times and has
    oriented scores Y[:, b]. A resample is its points repeated, so these are the same sums as
    :func:`_profile` on the repeated points (up to rounding). Returns RSS, G x B.
    """
    if c is not None:
        R = Y - c
        WR = W * R
        xr, xx = X @ WR, (X * X) @ W
        s = np.where(xx > 0, np.maximum(xr, 0.0) / np.where(xx > 0, xx, 1.0), 0.0)
        return (R * WR).sum(axis=0) - s * xr
    # Shift X's rows and Y by one mean for all resamples first, so the centred sums below do not cancel.
    Xs, Ys = X - X.mean(axis=1, keepdims=True), Y - Y.mean()
    n, WY = W.sum(axis=0), W * Ys
    s1, ty = Xs @ W, WY.sum(axis=0)
    sxx = (Xs * Xs) @ W - s1 ** 2 / n
    sxy = Xs @ WY - s1 * ty / n
    syy = (WY * Ys).sum(axis=0) - ty ** 2 / n
    # A constant design row has sxx = 0 up to rounding: no slope, as in _profile.
    flat = sxx <= 1e-12 * n * np.abs(Xs).max(axis=1, keepdims=True) ** 2
    s = np.where(flat, 0.0, np.maximum(sxy, 0.0) / np.where(flat, 1.0, sxx))
    return syy - s * sxy


def _sigmoid_grid(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The coarse (midpoint, width) grid of :func:`_sigmoid_search` for points spanning [lo, hi]."""
    span = (hi - lo) or 1.0
    return np.linspace(lo - 0.5 * span, hi + 0.5 * span, 41), span * np.geomspace(0.01, 3.0, 20)


def _grid_search_many(x, W, Y, co, grids: list, design) -> list[int]:
    """For each resample b, the index of the best row of ``design(grids[b], x, rows)``. Resamples that
    share a grid (most do: it depends on little) share one design matrix and one matrix product,
    computed a block of rows at a time (see ``BLOCK``)."""
    best = [0] * len(grids)
    groups: dict[tuple, list[int]] = {}
    for b, grid in enumerate(grids):
        groups.setdefault(tuple(a.tobytes() for a in grid), []).append(b)
    for members in groups.values():
        drawn = np.flatnonzero(W[:, members].any(axis=1))  # points no member drew add nothing to its sums
        Wd, Yd, xd = W[np.ix_(drawn, members)], Y[np.ix_(drawn, members)], x[drawn]
        grid, step = grids[members[0]], max(1, BLOCK // len(drawn))
        rss = np.concatenate([_weighted_profile(design(grid, xd, slice(i, i + step)), Wd, Yd, co)
                              for i in range(0, math.prod(len(a) for a in grid), step)])
        for b, g in zip(members, np.argmin(rss, axis=0)):
            best[b] = int(g)
    return best


def _sigmoid_design(grid, x, rows=slice(None)):
    """Rows ``rows`` of the sigmoid design over the (midpoint, width) grid ``meshgrid(ms, ws)``."""
    ms, ws = grid
    cells = np.arange(len(ms) * len(ws))[rows]  # meshgrid(ms, ws).ravel() order: ms varies fastest
    mm, ww = ms[cells % len(ms)], ws[cells // len(ms)]
    return expit((mm[:, None] - x[None, :]) / ww[:, None])


def _hinge_design(grid, x, rows=slice(None)):
    return np.maximum(0.0, grid[0][rows, None] - x[None, :])


def _cell(grid, g: int) -> tuple[float, float]:
    """(midpoint, width) of row ``g`` of a sigmoid design (``meshgrid(ms, ws)`` raveled)."""
    ms, ws = grid
    return ms[g % len(ms)], ws[g // len(ms)]


def _finer_grid(grid, g: int) -> tuple[np.ndarray, np.ndarray]:
    """An 11 x 11 grid around cell ``g``, 5x finer in both directions."""
    (ms, ws), (m, w) = grid, _cell(grid, g)
    dm, ratio = ms[1] - ms[0], ws[1] / ws[0]
    return np.linspace(m - dm, m + dm, 11), np.geomspace(w / ratio, w * ratio, 11)


def _bootstrap_sigmoid(x, W, Y, co, lo, hi, rounds: int = 3) -> np.ndarray:
    """:func:`_sigmoid_search`'s onset on every resample: the same coarse grid and ``rounds`` finer
    ones, each resample's grid following its own best cell, evaluated a shared grid at a time."""
    coarse = {key: _sigmoid_grid(*key) for key in set(zip(lo, hi))}
    grids = [coarse[key] for key in zip(lo, hi)]
    for _ in range(rounds):
        best = _grid_search_many(x, W, Y, co, grids, _sigmoid_design)
        # Resamples with one grid and one best cell share the next grid: build it once.
        finer = {(id(grid), g): grid for grid, g in zip(grids, best)}
        finer = {key: _finer_grid(grid, key[1]) for key, grid in finer.items()}
        grids = [finer[(id(grid), g)] for grid, g in zip(grids, best)]
    best = _grid_search_many(x, W, Y, co, grids, _sigmoid_design)
    return np.array([sigmoid_onset(dict(zip(("midpoint", "width"), _cell(grid, g)))) for grid, g in zip(grids, best)])


def _bootstrap_hinge(x, W, Y, co, lo, hi, grid: int = 128) -> np.ndarray:
    """:func:`_hinge_eta`'s eta (a ``grid``-point profile, no polish) on every resample."""
    grids = [(np.linspace(a, b, grid),) for a, b in zip(lo, hi)]
    best = _grid_search_many(x, W, Y, co, grids, _hinge_design)
    return np.array([g[0][i] for g, i in zip(grids, best)])


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

    Each resample is fitted exactly as the full data are (:func:`_sigmoid_search`, :func:`_hinge_eta`
    on a 128-point grid), but all at once: see :func:`_grid_search_many`.
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
    fit = _bootstrap_hinge if model == "hinge" else _bootstrap_sigmoid
    etas = fit(x, W, Y, co, lo, hi)
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
               hi=math.nan, boot=np.empty(0), plateau=None, ci_without_seeds=None) -> ThresholdResult:
        x, found = self.x, math.isfinite(eta)
        plateau = self.chance if plateau is None else plateau
        return ThresholdResult(
            verdict=verdict, reason=reason, loss=float(eta), ci_low=float(lo), ci_high=float(hi),
            preferred=preferred, delta_bic=float(delta), fits=fits or {}, chance=self.chance,
            plateau=math.nan if plateau is None else float(plateau), plateau_fitted=self.chance is None,
            higher_is_better=self.higher_is_better, n_points=len(x), n_above=int((x >= eta).sum()) if found else 0,
            n_below=int((x < eta).sum()) if found else 0, loss_range=self.loss_range, ci_level=self.ci_level,
            n_bootstrap=len(boot), used_examples=self.examples is not None and len(boot) > 0, bootstrap=boot,
            used_seeds=self.seeds is not None and len(boot) > 0, ci_without_seeds=ci_without_seeds,
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
    kind = {name: _verdict_of(f, x, min_side) for name, f in fits.items()}
    best = min(fits.values(), key=lambda f: f.bic)
    best_bic = {v: min((f.bic for name, f in fits.items() if kind[name] == v), default=math.inf)
                for v in (EMERGENT, SMOOTH, NOT_LEARNED)}
    delta = min(b for v, b in best_bic.items() if v != kind[best.model]) - best.bic
    plateau = fits["sigmoid"].params["floor"] if best.model == "sigmoid" else fits["hinge"].params["plateau"]
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


def _eta_interval(pts: _Points, model: str, n_bootstrap: int, seed: int, seeds: SeedLevel | None):
    """Bootstrap replicates of eta and their percentile interval (NaNs without replicates)."""
    rng = np.random.default_rng(seed)
    boot = (_bootstrap_eta(model, pts.x, pts.y, pts.chance, pts.sign, pts.examples, n_bootstrap, rng, seeds)
            if n_bootstrap > 0 else np.empty(0))
    alpha = (1 - pts.ci_level) / 2
    lo, hi = (np.quantile(boot, [alpha, 1 - alpha]) if len(boot) else (math.nan, math.nan))
    return boot, float(lo), float(hi)


def _emergent(pts: _Points, best: Fit, best_bic: dict, common: dict, n_bootstrap: int, seed: int,
              min_side: int) -> ThresholdResult:
    """Emergent by BIC: locate eta with the preferred model and check the data can carry it."""
    unsure = _learned_but_unsure(pts, best, EMERGENT, best_bic, common)
    if unsure is not None:
        return unsure
    x, (low, high), delta = pts.x, pts.loss_range, common["delta"]
    eta = common["fits"]["hinge"].params["eta"] if best.model == "hinge" else sigmoid_onset(best.params)
    boot, lo, hi = _eta_interval(pts, best.model, n_bootstrap, seed, pts.seeds)
    if pts.seeds is not None and n_bootstrap > 0:  # the same bootstrap without the seed level, to compare
        common["ci_without_seeds"] = _eta_interval(pts, best.model, n_bootstrap, seed, None)[1:]
    common.update(eta=eta, lo=lo, hi=hi, boot=boot)
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
