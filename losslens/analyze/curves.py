"""Curve models of a metric against an axis (pretraining loss, or log compute): one record per model.

Each model is declared once, as a :class:`CurveModel` in :data:`CURVES`: its parameters, how it is
fitted (by least squares, in oriented units where larger is better: a lower-is-better metric such as
Brier is negated, so that "rising" always means improving), how it predicts, the verdict it stands
for, and, for the emergent models, where its threshold eta is and how the bootstrap refits eta on
many resamples at once. Thresholds (:mod:`losslens.analyze.threshold`) and backtests
(:mod:`losslens.analyze.backtest`) both fit through :func:`fit_models` and :func:`fit_one`, and
refit a model's bootstrap replicates through :func:`fit_resampled`.

    constant  y = chance                              (k = 0; only when a chance level is given)
    flat      y = c                                   (k = 1: a level of its own, e.g. below chance)
    linear    y = a + b x, b <= 0                     (k = 2)
    sigmoid   y = c + h / (1 + exp((x - m) / w))      (h >= 0, w > 0; k = 3, or 4 with c free;
                                                       m and w within SIGMOID_REACH, SIGMOID_WIDTHS)
    hinge     y = c + s * max(0, eta - x)             (s >= 0, eta in [min x, max x]; k = 2, or 3)

``c`` in the sigmoid and hinge is the chance level when one is given, else a plateau fitted from
the data. Every model but the two nulls improves as loss falls (the line's slope, the sigmoid's
height and the hinge's slope are constrained), so a metric that gets worse with lower loss is never
called smooth or emergent.

**A ceiling** (:attr:`CurveData.ceiling`, the best value the metric can take, from its ``bounds`` in
:mod:`losslens.metrics`) is given for curves that extrapolate (the backtest's step 2), not for
thresholds, which describe the data they have. With one, the sigmoid rises to the ceiling
(h = ceiling - c, one parameter fewer) unless the data show saturation: the free-height sigmoid is
kept only when its top is below the ceiling and its BIC beats the ceiling's by ``BIC_MARGIN``, and
:attr:`Fit.note` says which.

Adding a model is one :func:`register` call: a fit in oriented units returning (params, k, note),
a ``predict`` that is linear in the parameters named in ``levels`` (so one formula serves both
orientations), and its verdict rule; optionally a ``fit_resamples`` that makes the fits of many
resamples share their work (the sigmoid's grid searches), with the same results as ``fit`` on each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from scipy import optimize
from scipy.special import expit

from losslens.analyze import lsq
from losslens.metrics import add_once

EMERGENT, SMOOTH, NOT_LEARNED = "emergent", "smooth", "not-learned"
BIC_MARGIN = 2.0  # the BIC difference a claim needs (Kass & Raftery 1995: "positive evidence")
FLAT_FRACTION = 0.05  # a sigmoid point is "on the floor" below 5 % of the sigmoid's height
HINGE_GRID = 256  # eta candidates for the hinge's profile search
# Where a sigmoid may bend, in spans of the data's x: its midpoint at most one span beyond the data,
# its width from 1e-4 to 3 spans. Outside, the data see only an exponential tail (midpoint and height
# trade off) or a straight stretch (width and height do): a ridge with no optimum, along which a fit
# runs until the optimiser's budget stops it, wherever that is. The line is the model for the latter.
SIGMOID_REACH = 1.0
SIGMOID_WIDTHS = (1e-4, 3.0)


@dataclass(frozen=True)
class CurveData:
    """The points a curve is fitted to, in oriented units (larger is better), and what bounds the curve."""

    x: np.ndarray
    y: np.ndarray
    floor: Optional[float] = None  # the chance level; None: a plateau fitted from the data
    ceiling: Optional[float] = None  # the best value the metric can take; None: the rise is not bounded

    @property
    def free(self) -> int:
        """1 when the floor is a fitted parameter, else 0."""
        return int(self.floor is None)


@dataclass(frozen=True)
class CurveModel:
    """One curve model, declared once (see the module docstring)."""

    name: str
    params: tuple[str, ...]  # its parameters, in report order
    levels: tuple[str, ...]  # those in the metric's units: negated for a lower-is-better metric
    fit: Callable[[CurveData], Optional[tuple[dict, int, str]]]  # oriented (params, k, note); None: n/a
    predict: Callable[[dict, np.ndarray], np.ndarray]
    verdict: Callable[[dict, np.ndarray, int], str]  # (params, x, min_side) -> EMERGENT, SMOOTH or NOT_LEARNED
    eta: Optional[Callable[[dict], float]] = None  # where an emergent model's threshold is
    plateau: Optional[Callable[[dict], float]] = None  # the level before the ability, where it has one
    bootstrap_eta: Optional[Callable] = None  # (x, W, Y, floor, lo, hi) -> eta per resample, batched
    # (data, W, resampled) -> ``fit``'s result on each resample (W: draw counts, one column per resample),
    # the searches shared among resamples; None: ``fit`` on each resample in turn.
    fit_resamples: Optional[Callable] = None


CURVES: dict[str, CurveModel] = {}


def register(model: CurveModel) -> CurveModel:
    """Add a curve model; every fit (thresholds, backtests) then includes it."""
    return add_once(CURVES, model.name, model, "curve model")


@dataclass
class Fit:
    """One fitted model of performance against x. ``params`` are in the metric's own units."""

    model: str
    params: dict[str, float]
    rss: float
    k: int  # free parameters of the mean (the noise variance, common to all models, not counted)
    bic: float
    note: str = ""  # how the model's bounds were chosen, where that was a choice

    def predict(self, x) -> np.ndarray:
        return CURVES[self.model].predict(self.params, np.asarray(x, dtype=float))

    def verdict(self, x: np.ndarray, min_side: int) -> str:
        return CURVES[self.model].verdict(self.params, x, min_side)


def oriented_data(x, y, chance, higher_is_better: bool, ceiling=None) -> tuple[CurveData, float]:
    """(CurveData, sign): the points and bounds in oriented units, and the sign that orients them."""
    sign = 1.0 if higher_is_better else -1.0
    x, y = np.asarray(x, float), np.asarray(y, float)
    return CurveData(x, sign * y, None if chance is None else sign * chance,
                     None if ceiling is None else sign * ceiling), sign


def fit_one(model: str, data: CurveData, sign: float = 1.0) -> Optional[Fit]:
    """``model`` fitted to oriented ``data``, as a Fit in the metric's units (``sign`` undoes the
    orientation); None where the model does not apply (constant without a chance level)."""
    return _as_fit(CURVES[model], data, CURVES[model].fit(data), sign)


def fit_resampled(model: str, data: CurveData, picks: list[np.ndarray], sign: float = 1.0) -> list[Fit]:
    """``model`` refitted on each resample of ``data`` (``picks``: the indices each drew), the same fits as
    :func:`fit_one` on the resampled points; a model with ``fit_resamples`` shares its searches among them."""
    m = CURVES[model]
    resampled = [CurveData(data.x[p], data.y[p], data.floor, data.ceiling) for p in picks]
    if m.fit_resamples is None or not picks:
        outs = [m.fit(d) for d in resampled]
    else:
        W = np.stack([np.bincount(p, minlength=len(data.x)) for p in picks], axis=1).astype(float)
        outs = m.fit_resamples(data, W, resampled)
    fits = [_as_fit(m, d, out, sign) for d, out in zip(resampled, outs)]
    return [f for f in fits if f is not None]


def _as_fit(m: CurveModel, data: CurveData, out, sign: float) -> Optional[Fit]:
    if out is None:
        return None
    params, k, note = out
    rss = float(((data.y - m.predict(params, data.x)) ** 2).sum())
    metric_units = {p: sign * float(params[p]) if p in m.levels else float(params[p]) for p in m.params}
    return Fit(m.name, metric_units, rss, k, lsq.bic(rss, len(data.x), k), note)


def fit_models(x, y, chance, higher_is_better: bool = True, ceiling=None) -> dict[str, Fit]:
    """Every registered model fitted to (x, score y), params in the metric's units. ``ceiling``: the
    best value the metric can take, for curves that extrapolate (see the module docstring)."""
    data, sign = oriented_data(x, y, chance, higher_is_better, ceiling)
    fits = {name: fit_one(name, data, sign) for name in CURVES}
    return {name: f for name, f in fits.items() if f is not None}


# --- the nulls and the line --------------------------------------------------------------

def _constant(d: CurveData):
    return None if d.floor is None else ({"level": d.floor}, 0, "")


def _flat(d: CurveData):
    return {"level": float(d.y.mean())}, 1, ""


def _linear(d: CurveData):
    # Improving only: oriented performance may not grow with x. A rising fit is the flat one.
    b, a = np.polyfit(d.x, d.y, 1)
    if b > 0:
        b, a = 0.0, float(d.y.mean())
    return {"intercept": float(a), "slope": float(b)}, 2, ""


def _level(p, x):
    return np.full_like(x, p["level"], dtype=float)


register(CurveModel("constant", ("level",), ("level",), _constant, _level, lambda p, x, n: NOT_LEARNED))
register(CurveModel("flat", ("level",), ("level",), _flat, _level, lambda p, x, n: NOT_LEARNED))
register(CurveModel("linear", ("intercept", "slope"), ("intercept", "slope"), _linear,
                    lambda p, x: p["intercept"] + p["slope"] * x, lambda p, x, n: SMOOTH))


# --- the sigmoid -------------------------------------------------------------------------

def sigmoid_onset(params: dict) -> float:
    """Where a sigmoid leaves its floor: the loss at which it has risen 5 % of its height,
    eta = m + w ln((1 - f) / f) with f = 0.05."""
    return params["midpoint"] + params["width"] * math.log((1 - FLAT_FRACTION) / FLAT_FRACTION)


def _sigmoid_predict(p, x):
    return p["floor"] + p["height"] * expit((p["midpoint"] - x) / p["width"])


def _sigmoid_verdict(p, x, min_side: int) -> str:
    """A soft hinge (emergent) when ``min_side`` points sit on its floor and ``min_side`` above it, and
    its bend is one the data show: a sigmoid on the edge of its box (:data:`SIGMOID_REACH`,
    :data:`SIGMOID_WIDTHS`) is the family's smooth limit, an exponential tail or a line, whose "floor"
    is wherever the box ends."""
    if at_box_edge(p, x):
        return SMOOTH
    z = expit((p["midpoint"] - x) / p["width"])
    on_floor = int((z < FLAT_FRACTION).sum())
    return EMERGENT if on_floor >= min_side and len(x) - on_floor >= min_side else SMOOTH


def at_box_edge(p, x, tol: float = 1e-6) -> bool:
    """Whether a sigmoid fitted to points at ``x`` stopped on its box: midpoint at its reach, or widest width."""
    lo, hi = float(np.min(x)), float(np.max(x))
    span = (hi - lo) or 1.0
    reach = SIGMOID_REACH * span * (1 - tol)
    return (p["midpoint"] <= lo - reach or p["midpoint"] >= hi + reach
            or p["width"] >= SIGMOID_WIDTHS[1] * span * (1 - tol))


def _sigmoid_grid(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The coarse (midpoint, width) grid of :func:`_sigmoid_search` for points spanning [lo, hi]."""
    span = (hi - lo) or 1.0
    return np.linspace(lo - 0.5 * span, hi + 0.5 * span, 41), span * np.geomspace(0.01, 3.0, 20)


def _sigmoid_design(grid, x, rows=slice(None)):
    """Rows ``rows`` of the sigmoid design over the (midpoint, width) grid ``meshgrid(ms, ws)``."""
    ms, ws = grid
    cells = np.arange(len(ms) * len(ws))[rows]  # meshgrid(ms, ws).ravel() order: ms varies fastest
    mm, ww = ms[cells % len(ms)], ws[cells // len(ms)]
    return expit((mm[:, None] - x[None, :]) / ww[:, None])


def _cell(grid, g: int) -> tuple[float, float]:
    """(midpoint, width) of row ``g`` of a sigmoid design (``meshgrid(ms, ws)`` raveled)."""
    ms, ws = grid
    return ms[g % len(ms)], ws[g // len(ms)]


def _finer_grid(grid, g: int) -> tuple[np.ndarray, np.ndarray]:
    """An 11 x 11 grid around cell ``g``, 5x finer in both directions."""
    (ms, ws), (m, w) = grid, _cell(grid, g)
    dm, ratio = ms[1] - ms[0], ws[1] / ws[0]
    return np.linspace(m - dm, m + dm, 11), np.geomspace(w / ratio, w * ratio, 11)


def _sigmoid_profile(grid, d: CurveData, bound: bool):
    """(rss, h, c) per grid cell, the levels profiled out: free height, or (``bound``) h = ceiling - c."""
    if not bound:
        return lsq.blocked_profile(_sigmoid_design, grid, d.x, d.y, d.floor)
    top = d.ceiling
    if d.floor is None:  # y - top = (c - top)(1 - z): a slope s = top - c >= 0 on the design 1 - z
        rss, s, _ = lsq.blocked_profile(lambda g, x, rows: 1.0 - _sigmoid_design(g, x, rows), grid, d.x,
                                        top - d.y, 0.0)
        return rss, s, top - s
    Z = _sigmoid_design(grid, d.x)
    h = top - d.floor
    return ((d.y - d.floor - h * Z) ** 2).sum(axis=1), np.full(len(Z), h), np.full(len(Z), d.floor)


def _sigmoid_search(d: CurveData, bound: bool = False, rounds: int = 3):
    """Least squares of the sigmoid by grid search over (m, w), with (c, h) profiled out: a coarse
    grid, then ``rounds`` finer grids around the best cell (each 5x finer). Returns (m, w, h, c, rss).
    (The bootstrap runs the same search on many resamples at once: :func:`_bootstrap_sigmoid`.)"""
    grid = _sigmoid_grid(float(d.x.min()), float(d.x.max()))
    rss, h, cc = _sigmoid_profile(grid, d, bound)
    g = int(np.argmin(rss))
    for _ in range(rounds):
        grid = _finer_grid(grid, g)
        rss, h, cc = _sigmoid_profile(grid, d, bound)
        g = int(np.argmin(rss))
    m, w = _cell(grid, g)
    return m, w, h[g], cc[g], float(rss[g])


def _sigmoid_polish(d: CurveData, bound: bool, start):
    """:func:`_sigmoid_search`'s result polished by scipy's least_squares (kept only if better)."""
    m, w, h, c0, rss = start
    x, free_h, free_c = d.x, not bound, d.floor is None
    span = float(x.max() - x.min()) or 1.0

    def unpack(p):
        c = p[2 + free_h] if free_c else d.floor
        return p[0], math.exp(p[1]), (p[2] if free_h else d.ceiling - c), c

    def resid(p):
        mm, ww, hh, cc = unpack(p)
        return cc + hh * expit((mm - x) / ww) - d.y

    def jac(p):
        # Analytic: a finite-difference Jacobian costs one residual per parameter per step, and the
        # bootstrap polishes thousands of sigmoids (most of analyze's time before it was given).
        mm, ww, hh, _ = unpack(p)
        u = (mm - x) / ww
        z = expit(u)
        slope = hh * z * (1.0 - z)
        cols = [slope / ww, -slope * u] + [z] * free_h + [np.ones_like(x) if free_h else 1.0 - z] * free_c
        return np.column_stack(cols)

    x0 = [m, math.log(w)] + [h] * free_h + [c0] * free_c
    reach, (narrow, wide) = SIGMOID_REACH * span, SIGMOID_WIDTHS
    lo = [float(x.min()) - reach, math.log(span * narrow)] + [0.0] * free_h + [-np.inf] * free_c
    hi = [float(x.max()) + reach, math.log(span * wide)] + [np.inf] * free_h + [d.ceiling if bound else np.inf] * free_c
    try:
        res = optimize.least_squares(resid, np.clip(x0, lo, hi), jac=jac, bounds=(lo, hi), max_nfev=400)
        if 2 * res.cost < rss:
            return (*unpack(res.x), 2 * float(res.cost))
    except (ValueError, FloatingPointError):
        pass
    return m, w, h, c0, rss


def _has_bound(d: CurveData) -> bool:
    return d.ceiling is not None and (d.floor is None or d.floor < d.ceiling)


def _fit_sigmoid(d: CurveData, searched=None):
    """The sigmoid, its height free or (with a ceiling, unless the data show saturation) to the ceiling.
    ``searched``: the (free, bound) grid searches' results where they were made for many resamples at once."""
    if searched is None:
        searched = (_sigmoid_search(d), _sigmoid_search(d, bound=True) if _has_bound(d) else None)
    free_start, bound_start = searched
    free = _sigmoid_polish(d, False, free_start)
    k = 3 + d.free
    chosen, note = free, ""
    if _has_bound(d):
        bound = _sigmoid_polish(d, True, bound_start)
        gain = lsq.bic(bound[4], len(d.x), k - 1) - lsq.bic(free[4], len(d.x), k)
        # Saturation is a top below the bound; a free top above it is a curve the metric cannot follow.
        if gain >= BIC_MARGIN and free[2] + free[3] < d.ceiling:
            note = f"ceiling fitted at {free[2] + free[3]:.4g}: the data show saturation (ΔBIC {gain:.1f} " \
                   f"over the metric's bound {d.ceiling:.4g})"
        else:
            chosen, k = bound, k - 1
            why = f"ΔBIC {gain:.1f} < {BIC_MARGIN:g}" if gain < BIC_MARGIN else f"at {free[2] + free[3]:.4g}, past the bound"
            note = f"ceiling at the metric's bound {d.ceiling:.4g} (a fitted one: {why})"
    m, w, h, c, _ = chosen
    return {"floor": float(c), "height": float(h), "midpoint": float(m), "width": float(w)}, k, note


def _search_many(x, W, Y, lo, hi, rss, design=_sigmoid_design, rounds: int = 3) -> list[tuple[float, float]]:
    """:func:`_sigmoid_search`'s best (midpoint, width) on every resample: the same coarse grid and
    ``rounds`` finer ones, each resample's grid following its own best cell, evaluated a shared grid at
    a time (``rss``: the profile's residuals, as :func:`losslens.analyze.lsq.grid_search_many` takes)."""
    coarse = {key: _sigmoid_grid(*key) for key in set(zip(lo, hi))}
    grids = [coarse[key] for key in zip(lo, hi)]
    for _ in range(rounds):
        best = lsq.grid_search_many(x, W, Y, grids, design, rss)
        # Resamples with one grid and one best cell share the next grid: build it once.
        finer = {(id(grid), g): grid for grid, g in zip(grids, best)}
        finer = {key: _finer_grid(grid, key[1]) for key, grid in finer.items()}
        grids = [finer[(id(grid), g)] for grid, g in zip(grids, best)]
    return [_cell(grid, g) for grid, g in zip(grids, lsq.grid_search_many(x, W, Y, grids, design, rss))]


def _bootstrap_sigmoid(x, W, Y, co, lo, hi) -> np.ndarray:
    """:func:`_sigmoid_search`'s onset on every resample (see :func:`_search_many`)."""
    cells = _search_many(x, W, Y, lo, hi, lsq.profile_rss(co))
    return np.array([sigmoid_onset({"midpoint": m, "width": w}) for m, w in cells])


def _sigmoid_resamples(d: CurveData, W: np.ndarray, resampled: list[CurveData]) -> list:
    """:func:`_fit_sigmoid` on every resample, the grid searches of all made at once."""
    lo = [float(r.x.min()) for r in resampled]
    hi = [float(r.x.max()) for r in resampled]
    Y = np.broadcast_to(d.y[:, None], W.shape)
    free = _search_many(d.x, W, Y, lo, hi, lsq.profile_rss(d.floor))
    bound = None
    if _has_bound(d) and d.floor is None:  # the height fixed to reach the ceiling: see _sigmoid_profile
        bound = _search_many(d.x, W, d.ceiling - Y, lo, hi, lsq.profile_rss(0.0),
                             lambda g, x, rows: 1.0 - _sigmoid_design(g, x, rows))
    elif _has_bound(d):
        bound = _search_many(d.x, W, Y - d.floor, lo, hi, lsq.fixed_slope_rss(d.ceiling - d.floor))
    return [_fit_sigmoid(r, (_at_cell(r, free[b], False), bound and _at_cell(r, bound[b], True)))
            for b, r in enumerate(resampled)]


def _at_cell(d: CurveData, cell: tuple[float, float], bound: bool):
    """(m, w, h, c, rss) of the sigmoid at one (midpoint, width), its levels profiled out, as
    :func:`_sigmoid_search` returns it."""
    grid = (np.array([cell[0]]), np.array([cell[1]]))
    rss, h, c = _sigmoid_profile(grid, d, bound)
    return cell[0], cell[1], h[0], c[0], float(rss[0])


register(CurveModel("sigmoid", ("floor", "height", "midpoint", "width"), ("floor", "height"), _fit_sigmoid,
                    _sigmoid_predict, _sigmoid_verdict, sigmoid_onset, lambda p: p["floor"], _bootstrap_sigmoid,
                    _sigmoid_resamples))


# --- the hinge ---------------------------------------------------------------------------

def _hinge_design(grid, x, rows=slice(None)):
    return np.maximum(0.0, grid[0][rows, None] - x[None, :])


def hinge_eta(x: np.ndarray, y: np.ndarray, c: float | None, grid: int = HINGE_GRID, refine: bool = True):
    """The hinge's least-squares eta over [min x, max x]: profile on a grid, then polished between the
    best cell's neighbours. Returns (eta, slope, plateau, rss)."""
    etas = np.linspace(x.min(), x.max(), grid)
    rss, s, cc = lsq.profile(np.maximum(0.0, etas[:, None] - x[None, :]), y, c)
    g = int(np.argmin(rss))
    if not refine:
        return etas[g], s[g], cc[g], rss[g]

    def one(eta):
        return lsq.profile(np.maximum(0.0, eta - x)[None, :], y, c)

    lo, hi = etas[max(g - 1, 0)], etas[min(g + 1, grid - 1)]
    if hi > lo:
        res = optimize.minimize_scalar(lambda e: one(e)[0][0], bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-9 * (x.max() - x.min() + 1)})
        if res.fun < rss[g]:
            r, ss, c2 = one(res.x)
            return float(res.x), ss[0], c2[0], r[0]
    return etas[g], s[g], cc[g], rss[g]


def _fit_hinge(d: CurveData):
    eta, s, c, _ = hinge_eta(d.x, d.y, d.floor)
    return {"eta": float(eta), "slope": float(s), "plateau": float(c)}, 2 + d.free, ""


def _hinge_verdict(p, x, min_side: int) -> str:
    # No flat side to speak of: the hinge is a straight line over the data.
    return SMOOTH if (x >= p["eta"]).sum() < min_side else EMERGENT


def _bootstrap_hinge(x, W, Y, co, lo, hi, grid: int = HINGE_GRID) -> np.ndarray:
    """:func:`hinge_eta` on every resample: the same ``grid``-point profile, then each resample's eta
    polished between its best cell's neighbours (golden sections, all resamples at once)."""
    grids = [(np.linspace(a, b, grid),) for a, b in zip(lo, hi)]
    best = lsq.grid_search_many(x, W, Y, grids, _hinge_design, lsq.profile_rss(co))
    left = np.array([g[0][max(i - 1, 0)] for g, i in zip(grids, best)])
    right = np.array([g[0][min(i + 1, grid - 1)] for g, i in zip(grids, best)])
    at_grid = np.array([g[0][i] for g, i in zip(grids, best)])

    def rss(etas):
        return lsq.weighted_profile(np.maximum(0.0, etas[:, None] - x[None, :]), W, Y, co, paired=True)

    polished = lsq.golden_many(rss, left, right)
    return np.where(rss(polished) < rss(at_grid), polished, at_grid)


register(CurveModel("hinge", ("eta", "slope", "plateau"), ("slope", "plateau"), _fit_hinge,
                    lambda p, x: p["plateau"] + p["slope"] * np.maximum(0.0, p["eta"] - x),
                    _hinge_verdict, lambda p: p["eta"], lambda p: p["plateau"], _bootstrap_hinge))
