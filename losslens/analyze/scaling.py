"""The scaling law L(N, D) = E + A / N^alpha + B / D^beta, and forecasts of when loss crosses eta.

Fitted as in Hoffmann et al. (2022, approach 3): with a = ln A, b = ln B, e = ln E,

    ln L_hat = logsumexp(a - alpha ln N, b - beta ln D, e),

minimize sum_i Huber_delta(ln L_hat_i - ln L_i) with delta = 1e-3 by damped Newton steps
(:mod:`losslens.analyze.law_solver`, many fits at once) from the best few starts of a grid of
initialisations. N is the non-embedding parameter count, D the
training tokens. Points with a single token count cannot separate B / D^beta from E: the
reduced form L(N) = E' + A / N^alpha is fitted instead (``form == "fixed-tokens"``), valid at
that token count only.

What the data do not pin down is said, not hidden:

* Intervals are percentile bootstraps over points (with seeds, over seeds within sizes first,
  then points of the drawn seeds: :mod:`losslens.analyze.seeds`); each replicate is polished from
  the full-data optimum and from the best grid starts of its own resample, so a replicate can
  leave the full-data optimum's basin.
* E, alpha and beta are profiled: each is fixed at its optimum and on a grid across its whole
  range, the others refitted, the ends of the kept values refined by bisection (1/32 of a grid
  step), and a value is kept while the residual sum of squares stays within the F-test
  bound RSS <= RSS_min (1 + F_{1, n-k}(level) / (n - k)) (Bates & Watts 1988). A parameter
  whose kept values reach an end of its range, or that sits at a bound of the fit, is
  **not identified**; A and B follow their exponents. Predictions then widen their bootstrap
  interval to the range over every kept parameter set (``predict_interval``).
* No estimate is shown outside its own interval: a bootstrap interval that misses the optimum
  (or a prediction, or a forecast) is extended to it and marked (``intervals_widened``, the
  forecast's ``interval`` text); a profile interval of zero width is marked in ``profile_notes``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from losslens.analyze import law_solver
from losslens.analyze.intervals import around, around_arrays, percentile
from losslens.analyze.seeds import SeedLevel

HUBER_DELTA = 1e-3
PARAMS = ("E", "A", "B", "alpha", "beta")
FULL, FIXED_TOKENS = "full", "fixed-tokens"
BOOT_GRID_STARTS = 1  # per bootstrap replicate, polished besides the full-data optimum
PROFILE_GRID = 9  # values per profiled parameter
PROFILE_REFINE = 5  # bisection steps at each end of a profile interval: 1/32 of a grid step
NOT_IDENTIFIED = "not identified"


def _rss(theta, lnN, lnD, lnL) -> float:
    a, b, e, alpha, beta = theta
    lse = logsumexp(np.stack([a - alpha * lnN, b - beta * lnD, np.full_like(lnN, e)]), axis=0)
    return float(((lse - lnL) ** 2).sum())


# (a, b, e, alpha, beta) starts, after Hoffmann et al.'s grid, thinned: only the best few are polished.
_STARTS = np.array(list(itertools.product(
    [0.0, 5.0, 10.0, 15.0, 20.0], [0.0, 5.0, 10.0, 15.0, 20.0], [-1.0, 0.0, 0.5, 1.0, 1.5],
    [0.1, 0.3, 0.5, 1.0, 2.0], [0.1, 0.3, 0.5, 1.0, 2.0])))
_BOUNDS = [(-30, 60), (-30, 60), (-10, 5), (0.0, 4.0), (0.0, 4.0)]
# The reduced form: the D term switched off (B = e^-30, beta = 0), E absorbs B / D^beta.
_FIXED_TOKENS_BOUNDS = [_BOUNDS[0], (-30, -30), _BOUNDS[2], _BOUNDS[3], (0.0, 0.0)]
_INDEX = {"E": 2, "alpha": 3, "beta": 4, "A": 0, "B": 1}


def _point_values(starts, lnN, lnD, lnL, delta):
    """Each start's Huber term at each point (starts x points), to pick the starts worth polishing."""
    a, b, e, al, be = (starts[:, i][:, None] for i in range(5))
    terms = np.stack([a - al * lnN, b - be * lnD, np.broadcast_to(e, (len(starts), len(lnN)))])
    r = np.abs(logsumexp(terms, axis=0) - lnL)
    return np.where(r <= delta, 0.5 * r ** 2, delta * (r - 0.5 * delta))


def _polish(starts, lnN, lnD, lnL, delta, bounds):
    """The best optimum reached from ``starts`` (every point counted once): (theta, objective)."""
    thetas, values = law_solver.minimize(starts, lnN, lnD, lnL, np.ones((len(starts), len(lnL))), delta, bounds)
    best = int(np.argmin(values))
    return thetas[best], float(values[best])


def _grid_starts(bounds) -> np.ndarray:
    """The grid of starts, moved inside ``bounds``."""
    return np.clip(_STARTS, [lo for lo, _ in bounds], [hi for _, hi in bounds])


def _best_starts(lnN, lnD, lnL, delta, bounds, k):
    starts = _grid_starts(bounds)
    return starts[np.argsort(_point_values(starts, lnN, lnD, lnL, delta).sum(axis=1))[:k]]


def _natural(t) -> np.ndarray:
    """(a, b, e, alpha, beta) -> (E, A, B, alpha, beta)."""
    return np.array([math.exp(t[2]), math.exp(t[0]), math.exp(t[1]), t[3], t[4]])


def _law(params: np.ndarray, N, D) -> np.ndarray:
    """L for parameter rows (P x 5, natural units) at points N, D -> P x len(N)."""
    E, A, B, alpha, beta = (params[:, i][:, None] for i in range(5))
    return E + A / np.asarray(N, float)[None, :] ** alpha + B / np.asarray(D, float)[None, :] ** beta


@dataclass
class ScalingFit:
    """A fitted L(N, D) = E + A / N^alpha + B / D^beta (N non-embedding parameters, D tokens)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    n_points: int
    objective: float  # Huber loss at the optimum
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # bootstrap percentile CI
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 5)), repr=False)  # rows: E, A, B, alpha, beta
    form: str = FULL
    fixed_tokens: float | None = None  # the one token count of a fixed-tokens fit
    ci_level: float = 0.95
    not_identified: dict[str, str] = field(default_factory=dict)  # parameter -> why
    profile: dict[str, tuple[float, float]] = field(default_factory=dict)  # profile-likelihood interval
    region: np.ndarray = field(default_factory=lambda: np.empty((0, 5)), repr=False)  # kept profile rows
    profile_notes: dict[str, str] = field(default_factory=dict)  # parameter -> what is odd about its profile
    intervals_widened: list[str] = field(default_factory=list)  # bootstrap intervals extended to hold the optimum

    @property
    def params(self) -> np.ndarray:
        return np.array([self.E, self.A, self.B, self.alpha, self.beta])

    def applies_at(self, tokens: np.ndarray) -> np.ndarray:
        """Where the fit applies: everywhere, or (fixed-tokens form) at its one token count only."""
        if self.form == FULL:
            return np.ones(tokens.shape, bool)
        return np.isclose(tokens, self.fixed_tokens, rtol=1e-6)

    def predict(self, n_params, tokens) -> np.ndarray:
        """L at (N, D); NaN where the fit does not apply (another D than a fixed-tokens fit's)."""
        N, D = np.broadcast_arrays(np.asarray(n_params, float), np.asarray(tokens, float))
        L = self.E + self.A / N ** self.alpha + self.B / D ** self.beta
        return np.where(self.applies_at(D), L, np.nan)

    def predict_samples(self, n_params, tokens) -> np.ndarray:
        """L under each bootstrap replicate: B x len(N) (NaN where the fit does not apply)."""
        N, D = (np.atleast_1d(v).astype(float) for v in np.broadcast_arrays(n_params, tokens))
        return np.where(self.applies_at(D)[None, :], _law(self.boot, N, D), np.nan)

    def predict_interval(self, n_params, tokens) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap percentile interval of L, widened to the profile region's range when a
        parameter is not identified (so the interval is as wide as the data allow)."""
        N, D = (np.atleast_1d(v).astype(float) for v in np.broadcast_arrays(n_params, tokens))
        q = (1 - self.ci_level) / 2
        lo, hi = np.full(len(N), np.nan), np.full(len(N), np.nan)
        ok = self.applies_at(D)
        if len(self.boot) and ok.any():
            s = _law(self.boot, N[ok], D[ok])
            lo[ok], hi[ok] = np.quantile(s, q, axis=0), np.quantile(s, 1 - q, axis=0)
        if self.not_identified and len(self.region):
            r = np.where(self.applies_at(D)[None, :], _law(self.region, N, D), np.nan)
            lo, hi = np.fmin(lo, r.min(axis=0)), np.fmax(hi, r.max(axis=0))
        return around_arrays(self.predict(N, D), lo, hi)[:2]

    def tokens_to_reach(self, loss: float, n_params) -> np.ndarray:
        """D at which L(N, D) = loss: D = (B / (loss - E - A / N^alpha))^(1 / beta); inf if never."""
        return _tokens_to_reach(self.params[None, :], loss, np.atleast_1d(np.asarray(n_params, float)))[0]

    def to_dict(self) -> dict:
        """Estimates, with "not identified" in place of a number the data do not pin down."""
        est = {p: NOT_IDENTIFIED if p in self.not_identified else getattr(self, p) for p in PARAMS}
        form = ("L(N, D) = E + A / N^alpha + B / D^beta; N non-embedding parameters, D tokens" if self.form == FULL
                else f"L(N) = E + A / N^alpha at D = {self.fixed_tokens:.4g} tokens (one token count: "
                     f"B / D^beta is part of E)")
        return {**est, "optimum": {p: getattr(self, p) for p in PARAMS}, "n_points": self.n_points,
                "objective": self.objective, "form": form, "fixed_tokens": self.fixed_tokens,
                "ci_level": self.ci_level, "intervals": {k: list(v) for k, v in self.intervals.items()},
                "n_bootstrap": len(self.boot), "not_identified": dict(self.not_identified),
                "profile_intervals": {k: list(v) for k, v in self.profile.items()},
                **({"profile_notes": dict(self.profile_notes)} if self.profile_notes else {}),
                **({"intervals_widened": list(self.intervals_widened)} if self.intervals_widened else {})}


def _tokens_to_reach(params: np.ndarray, loss, N: np.ndarray) -> np.ndarray:
    """tokens_to_reach for many parameter rows (P x 5) and losses (scalar or P) -> P x len(N)."""
    E, A, B, alpha, beta = (params[:, i][:, None] for i in range(5))
    loss = np.broadcast_to(np.asarray(loss, float), (len(params),))[:, None]
    gap = loss - E - A / N[None, :] ** alpha
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        D = np.where(gap > 0, (B / np.where(gap > 0, gap, 1.0)) ** (1.0 / beta), np.inf)
    return D


def _profile_grid(name: str, lnL: np.ndarray) -> np.ndarray:
    """Values spanning a profiled parameter's whole range, in fitting units (e = ln E)."""
    if name == "E":  # from the lower bound to just below the smallest loss
        return np.log(np.maximum(np.linspace(0.0, 0.995 * math.exp(lnL.min()), PROFILE_GRID), math.exp(_BOUNDS[2][0])))
    return np.linspace(0.0, 3.0, PROFILE_GRID)  # alpha, beta: 3 is far steeper than any measured law


def _fixed_fits(jobs: list[tuple[int, float, np.ndarray]], lnN, lnD, lnL, delta, bounds) -> np.ndarray:
    """The law refitted once per job (i, v, start): parameter ``i`` fixed at ``v`` (fitting units), the
    rest warm-started at ``start``; all jobs in one batch."""
    starts = np.array([start for _, _, start in jobs], float)
    limits = np.repeat(np.asarray(bounds, float)[None], len(jobs), axis=0)
    for k, (i, v, _) in enumerate(jobs):
        starts[k, i] = v
        limits[k, i] = v
    return law_solver.minimize(starts, lnN, lnD, lnL, np.ones((len(jobs), len(lnL))), delta, limits)[0]


@dataclass
class _Walk:
    """One side of one parameter's profile: its grid values outward from the optimum, each fit warm-started
    at the one before (so the walk follows the valley), then bisection between the farthest kept value
    and the first rejected one beyond it."""

    name: str
    index: int
    values: list[float]  # grid values not yet fitted, nearest first
    start: np.ndarray  # warm start for the next grid value
    last: float  # the farthest kept value, and its fit
    last_fit: np.ndarray
    rejected: float | None = None
    kept: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def next_job(self, refining: bool):
        if not refining:
            return (self.index, self.values[0], self.start) if self.values else None
        return None if self.rejected is None else (self.index, (self.last + self.rejected) / 2, self.last_fit)

    def take(self, v: float, fit: np.ndarray, inside: bool, refining: bool) -> None:
        if not refining:
            self.values.pop(0)
            self.start = fit
        if inside:
            self.kept.append((v, fit))
            self.last, self.last_fit = v, fit
            if not refining:
                self.rejected = None
        elif refining or self.rejected is None:
            self.rejected = v  # the first value outside, beyond the farthest kept one so far


def _profiles(names, theta, lnN, lnD, lnL, delta, bounds, limit) -> dict[str, tuple[list[float], list]]:
    """Each parameter of ``names`` fixed at each grid value and at its optimum, the rest refitted, walking
    outward from the optimum on both sides (:class:`_Walk`), the ends refined by ``PROFILE_REFINE``
    bisection steps. Every walk steps together: one batch of fits per step. Returns, per name, (kept
    values, kept natural rows); the optimum is always kept."""
    walks = []
    for name in names:
        i, grid = _INDEX[name], _profile_grid(name, lnL)
        for side in (grid[grid < theta[i]][::-1], grid[grid > theta[i]]):
            walks.append(_Walk(name, i, list(side), theta, theta[i], theta))
    for refining in [False] * PROFILE_GRID + [True] * PROFILE_REFINE:
        todo = [(w, job) for w in walks if (job := w.next_job(refining)) is not None]
        if todo:
            fits = _fixed_fits([job for _, job in todo], lnN, lnD, lnL, delta, bounds)
            for (w, (_, v, _)), fit in zip(todo, fits):
                w.take(v, fit, _rss(fit, lnN, lnD, lnL) <= limit, refining)
    out = {}
    for name in names:
        kept = [(theta[_INDEX[name]], theta)] + [k for w in walks if w.name == name for k in w.kept]
        out[name] = ([math.exp(v) if name == "E" else float(v) for v, _ in kept], [_natural(t) for _, t in kept])
    return out


def _identify(fit: ScalingFit, theta, lnN, lnD, lnL, delta, bounds) -> None:
    """Fill fit.not_identified, fit.profile and fit.region (see the module docstring)."""
    free = [p for p in ("E", "alpha", "beta") if bounds[_INDEX[p]][0] < bounds[_INDEX[p]][1]]
    dof = len(lnL) - (len(free) + sum(bounds[_INDEX[p]][0] < bounds[_INDEX[p]][1] for p in ("A", "B")))
    if fit.form == FIXED_TOKENS:
        why = f"one token count among the fitted points: B / D^beta is part of E (at D = {fit.fixed_tokens:.4g})"
        fit.not_identified.update({"B": why, "beta": why})
    if dof <= 0:
        for p in PARAMS:
            fit.not_identified.setdefault(p, f"{len(lnL)} points for {len(lnL) - dof} free parameters")
        return
    rss0 = _rss(theta, lnN, lnD, lnL)
    limit = rss0 * (1 + stats.f.ppf(fit.ci_level, 1, dof) / dof) + 1e-12
    region = [fit.params]
    profiles = _profiles(free, theta, lnN, lnD, lnL, delta, bounds, limit)
    for p in free:
        i = _INDEX[p]
        lo, hi = bounds[i]
        if min(theta[i] - lo, hi - theta[i]) <= 1e-6 * (hi - lo):
            fit.not_identified[p] = f"at a bound of the fit ({math.exp(theta[i]) if p == 'E' else theta[i]:.3g})"
        kept, rows = profiles[p]
        region += rows
        if kept:
            fit.profile[p] = (min(kept), max(kept))
            if min(kept) == max(kept):
                fit.profile_notes[p] = (f"zero width: the profile leaves its bound within 1/{2 ** PROFILE_REFINE} "
                                        f"of a grid step on both sides of the optimum")
            grid = _profile_grid(p, lnL)
            ends = (math.exp(grid[0]) if p == "E" else grid[0], math.exp(grid[-1]) if p == "E" else grid[-1])
            if np.isclose(min(kept), ends[0]) or np.isclose(max(kept), ends[1]):
                fit.not_identified.setdefault(
                    p, f"flat profile: the data allow {p} from {min(kept):.3g} to {max(kept):.3g} "
                       f"(searched {ends[0]:.3g} to {ends[1]:.3g})")
    for coef, exponent in (("A", "alpha"), ("B", "beta")):
        lo, hi = bounds[_INDEX[coef]]
        t = theta[_INDEX[coef]]
        if lo < hi and min(t - lo, hi - t) <= 1e-6 * (hi - lo):
            fit.not_identified.setdefault(coef, "at a bound of the fit")
        elif exponent in fit.not_identified:
            fit.not_identified.setdefault(coef, f"tied to {exponent}, which is not identified")
    fit.region = np.array(region)


def _bootstrap(theta, lnN, lnD, lnL, delta, bounds, n_bootstrap, seed, full_form,
               seeds: SeedLevel | None = None) -> np.ndarray:
    """Parameter rows refitted on resampled points (seeds within sizes first, where given), each from
    several starts (see the module docstring); all refits in one batch (:mod:`law_solver`)."""
    rng = np.random.default_rng(seed)
    n = len(lnL)
    counts = []
    for _ in range(n_bootstrap):
        pick = rng.integers(0, n, n) if seeds is None else seeds.picks(rng)
        drawn = np.bincount(pick, minlength=n)
        if len(np.unique(lnN[drawn > 0])) < 2 or (full_form and len(np.unique(lnD[drawn > 0])) < 2):
            continue  # this resample cannot separate the terms
        counts.append(drawn)
    if not counts:
        return np.empty((0, 5))
    counts = np.array(counts, float)
    # A resample only reweights the points, so the grid's objective on every resample is one product.
    grid = _grid_starts(bounds)
    best_grid = np.argsort(_point_values(grid, lnN, lnD, lnL, delta) @ counts.T, axis=0)[:BOOT_GRID_STARTS]
    starts = np.concatenate([np.broadcast_to(theta, (len(counts), 5))[None], grid[best_grid]])  # S x R x 5
    thetas, values = law_solver.minimize(starts.reshape(-1, 5), lnN, lnD, lnL, np.tile(counts, (len(starts), 1)),
                                         delta, bounds)
    best = np.argmin(values.reshape(len(starts), -1), axis=0)
    return np.array([_natural(t) for t in thetas.reshape(len(starts), -1, 5)[best, np.arange(len(counts))]])


def fit_scaling_law(n_params, tokens, losses, *, n_bootstrap: int = 0, seed: int = 0,
                    delta: float = HUBER_DELTA, ci_level: float = 0.95, identify: bool = True,
                    seeds=None) -> ScalingFit:
    """Fit E + A / N^alpha + B / D^beta to (N, D, L) points; optional bootstrap intervals.

    Points with D <= 0 or non-finite values are dropped (D = 0 has no finite prediction). The
    full form needs >= 5 points over >= 2 sizes and >= 2 token counts; points at one token count
    get the reduced fixed-tokens form (>= 3 points over >= 2 sizes). Raises ValueError
    otherwise. ``identify`` profiles E, alpha and beta to mark what is not identified. ``seeds``
    optionally labels each point's seed: where a size has several, the bootstrap resamples them first.
    """
    N, D, L = (np.asarray(v, float).ravel() for v in (n_params, tokens, losses))
    ok = np.isfinite(N) & np.isfinite(D) & np.isfinite(L) & (N > 0) & (D > 0) & (L > 0)
    N, D, L = N[ok], D[ok], L[ok]
    level = None if seeds is None else SeedLevel.of(N, np.asarray(seeds, dtype=str).ravel()[ok])
    n_sizes, n_tokens = len(np.unique(N)), len(np.unique(D))
    full_form = n_tokens >= 2
    if n_sizes < 2 or len(L) < (5 if full_form else 3):
        raise ValueError(f"a scaling fit needs >= 5 points over >= 2 sizes and token counts (or >= 3 points over "
                         f">= 2 sizes at one token count), got {len(L)} points, {n_sizes} sizes, "
                         f"{n_tokens} token counts")
    bounds = _BOUNDS if full_form else _FIXED_TOKENS_BOUNDS
    lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)
    theta, obj = _polish(_best_starts(lnN, lnD, lnL, delta, bounds, 8), lnN, lnD, lnL, delta, bounds)
    fit = ScalingFit(*_natural(theta), n_points=len(L), objective=obj, form=FULL if full_form else FIXED_TOKENS,
                     fixed_tokens=None if full_form else float(D[0]), ci_level=ci_level)
    if identify:
        _identify(fit, theta, lnN, lnD, lnL, delta, bounds)
    if n_bootstrap > 0:
        fit.boot = _bootstrap(theta, lnN, lnD, lnL, delta, bounds, n_bootstrap, seed, full_form, level)
        for i, p in enumerate(PARAMS):
            if len(fit.boot) and p not in fit.not_identified:
                lo, hi, widened = around(getattr(fit, p), *percentile(fit.boot[:, i], ci_level))
                fit.intervals[p] = (lo, hi)
                fit.intervals_widened += [p] * widened
    return fit


def forecast(fit: ScalingFit, eta: float, eta_boot: np.ndarray, n_params: list[float],
             flops_per_param_token: float, ci_level: float = 0.95, seed: int = 0) -> list[dict]:
    """Tokens and compute at which a model of each size reaches loss eta, with intervals.

    D(N) = (B / (eta - E - A / N^alpha))^(1 / beta), infinite where eta is below what size N can
    ever reach (E + A / N^alpha). Compute C = k N D with k = ``flops_per_param_token`` (the
    table's own FLOPs per non-embedding parameter per token, so forecasts match its compute
    column; ~6 for a dense transformer). The interval pairs each scaling-law bootstrap replicate
    with a random eta replicate, so it carries the uncertainty of both; where a parameter is
    not identified it is widened to every parameter set of the profile region (``interval``
    says so). A fixed-tokens fit cannot forecast tokens: every row is marked so.
    """
    N = np.asarray(n_params, float)
    k = flops_per_param_token
    if fit.form == FIXED_TOKENS:
        return [{"n_params_nonembed": float(n), "tokens": None, "tokens_ci": [None, None], "flops": None,
                 "flops_ci": [None, None], "reachable": None, "share_reachable": None,
                 "interval": "none: the fit saw one token count, so it says nothing about tokens"} for n in N]
    point = fit.tokens_to_reach(eta, N)
    lo = hi = np.full(len(N), math.nan)
    share_reachable = np.full(len(N), math.nan)
    q = (1 - ci_level) / 2
    if len(fit.boot) and len(eta_boot):
        rng = np.random.default_rng(seed)
        Db = _tokens_to_reach(fit.boot, rng.choice(eta_boot, size=len(fit.boot)), N)
        # inf sorts last, so an upper bound of inf says "may never get there" honestly.
        lo, hi = np.quantile(Db, q, axis=0, method="lower"), np.quantile(Db, 1 - q, axis=0, method="higher")
        share_reachable = np.isfinite(Db).mean(axis=0)
    how = "bootstrap (scaling law x eta)"
    if fit.not_identified and len(fit.region):
        eta_lo, eta_hi = (np.quantile(eta_boot, [q, 1 - q]) if len(eta_boot) else (eta, eta))
        Dr = np.concatenate([_tokens_to_reach(fit.region, e, N) for e in (eta_lo, eta, eta_hi)])
        lo, hi = np.fmin(lo, Dr.min(axis=0)), np.fmax(hi, Dr.max(axis=0))
        how += f", widened to the profile region ({', '.join(fit.not_identified)} not identified)"
    lo, hi, widened = around_arrays(point, lo, hi)
    return [{"n_params_nonembed": float(n), "tokens": float(d), "tokens_ci": [float(a), float(b)],
             "flops": float(k * n * d), "flops_ci": [float(k * n * a), float(k * n * b)],
             "reachable": bool(np.isfinite(d)), "share_reachable": float(s),
             "interval": how + (", extended to hold the point forecast" if w else "")}
            for n, d, a, b, s, w in zip(N, point, lo, hi, share_reachable, widened)]
