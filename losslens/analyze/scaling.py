"""The scaling law L(N, D) = E + A / N^alpha + B / D^beta, and forecasts of when loss crosses eta.

Fitted as in Hoffmann et al. (2022, approach 3): with a = ln A, b = ln B, e = ln E,

    ln L_hat = logsumexp(a - alpha ln N, b - beta ln D, e),

minimize sum_i Huber_delta(ln L_hat_i - ln L_i) with delta = 1e-3 by L-BFGS-B from the best
few starts of a grid of initialisations. N is the non-embedding parameter count, D the
training tokens. Intervals are percentile bootstraps over checkpoints.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

HUBER_DELTA = 1e-3
PARAMS = ("E", "A", "B", "alpha", "beta")


def _objective(theta: np.ndarray, lnN: np.ndarray, lnD: np.ndarray, lnL: np.ndarray, delta: float):
    """Huber loss of the log-space residuals, and its gradient in theta = (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * lnN, b - beta * lnD, np.full_like(lnN, e)])
    top = terms.max(axis=0)
    w = np.exp(terms - top)  # stable logsumexp; w / w.sum() is its gradient (the softmax)
    total = w.sum(axis=0)
    r = top + np.log(total) - lnL
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r ** 2, delta * (np.abs(r) - 0.5 * delta)).sum()
    psi = np.where(small, r, delta * np.sign(r))  # d Huber / d r
    p = w * (psi / total)  # d lse / d term, times psi
    grad = np.array([p[0].sum(), p[1].sum(), p[2].sum(), -(p[0] * lnN).sum(), -(p[1] * lnD).sum()])
    # Divided by delta: the sum of Huber terms is ~1e-4 here, and L-BFGS-B's tolerances are
    # absolute enough to stop at once on a scale that small.
    return value / delta, grad / delta


# (a, b, e, alpha, beta) starts, after Hoffmann et al.'s grid, thinned: only the best few are polished.
_STARTS = np.array(list(itertools.product(
    [0.0, 5.0, 10.0, 15.0, 20.0], [0.0, 5.0, 10.0, 15.0, 20.0], [-1.0, 0.0, 0.5, 1.0, 1.5],
    [0.1, 0.3, 0.5, 1.0, 2.0], [0.1, 0.3, 0.5, 1.0, 2.0])))
_BOUNDS = [(-30, 60), (-30, 60), (-10, 5), (0.0, 4.0), (0.0, 4.0)]


def _grid_values(lnN, lnD, lnL, delta):
    """Objective at every start at once (vectorized), to pick the starts worth polishing."""
    a, b, e, al, be = (_STARTS[:, i][:, None] for i in range(5))
    terms = np.stack([a - al * lnN, b - be * lnD, np.broadcast_to(e, (len(_STARTS), len(lnN)))])
    r = np.abs(logsumexp(terms, axis=0) - lnL)
    return np.where(r <= delta, 0.5 * r ** 2, delta * (r - 0.5 * delta)).sum(axis=1)


def _polish(starts, lnN, lnD, lnL, delta):
    best = None
    for theta0 in starts:
        res = optimize.minimize(_objective, theta0, args=(lnN, lnD, lnL, delta), jac=True,
                                method="L-BFGS-B", bounds=_BOUNDS,
                                options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8})
        if best is None or res.fun < best.fun:
            best = res
    return best.x, float(best.fun) * delta


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

    def predict(self, n_params, tokens) -> np.ndarray:
        N, D = np.asarray(n_params, float), np.asarray(tokens, float)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    def tokens_to_reach(self, loss: float, n_params) -> np.ndarray:
        """D at which L(N, D) = loss: D = (B / (loss - E - A / N^alpha))^(1 / beta); inf if never."""
        return _tokens_to_reach(np.array([[self.E, self.A, self.B, self.alpha, self.beta]]), loss,
                                np.atleast_1d(np.asarray(n_params, float)))[0]

    def to_dict(self) -> dict:
        return {**{p: getattr(self, p) for p in PARAMS}, "n_points": self.n_points, "objective": self.objective,
                "intervals": {k: list(v) for k, v in self.intervals.items()}, "n_bootstrap": len(self.boot),
                "form": "L(N, D) = E + A / N^alpha + B / D^beta; N non-embedding parameters, D tokens"}


def _tokens_to_reach(params: np.ndarray, loss, N: np.ndarray) -> np.ndarray:
    """tokens_to_reach for many parameter rows (P x 5) and losses (scalar or P) -> P x len(N)."""
    E, A, B, alpha, beta = (params[:, i][:, None] for i in range(5))
    loss = np.broadcast_to(np.asarray(loss, float), (len(params),))[:, None]
    gap = loss - E - A / N[None, :] ** alpha
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        D = np.where(gap > 0, (B / np.where(gap > 0, gap, 1.0)) ** (1.0 / beta), np.inf)
    return D


def fit_scaling_law(n_params, tokens, losses, *, n_bootstrap: int = 0, seed: int = 0,
                    delta: float = HUBER_DELTA, ci_level: float = 0.95) -> ScalingFit:
    """Fit E + A / N^alpha + B / D^beta to (N, D, L) points; optional bootstrap intervals.

    Points with D <= 0 or non-finite values are dropped (D = 0 has no finite prediction).
    Needs at least 5 points and two distinct N and D; raises ValueError otherwise.
    """
    N, D, L = (np.asarray(v, float).ravel() for v in (n_params, tokens, losses))
    ok = np.isfinite(N) & np.isfinite(D) & np.isfinite(L) & (N > 0) & (D > 0) & (L > 0)
    N, D, L = N[ok], D[ok], L[ok]
    if len(L) < 5 or len(np.unique(N)) < 2 or len(np.unique(D)) < 2:
        raise ValueError(f"a scaling fit needs >= 5 points over >= 2 sizes and token counts, got {len(L)} points, "
                         f"{len(np.unique(N))} sizes, {len(np.unique(D))} token counts")
    lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)
    order = np.argsort(_grid_values(lnN, lnD, lnL, delta))
    theta, obj = _polish(_STARTS[order[:8]], lnN, lnD, lnL, delta)

    def natural(t):
        return np.array([math.exp(t[2]), math.exp(t[0]), math.exp(t[1]), t[3], t[4]])

    fit = ScalingFit(*natural(theta), n_points=len(L), objective=obj)
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(n_bootstrap):
            pick = rng.integers(0, len(L), len(L))
            # Warm start from the full-data optimum: a resample's optimum lies close to it.
            t, _ = _polish([theta], lnN[pick], lnD[pick], lnL[pick], delta)
            rows.append(natural(t))
        fit.boot = np.array(rows)
        q = (1 - ci_level) / 2
        fit.intervals = {p: tuple(float(v) for v in np.quantile(fit.boot[:, i], [q, 1 - q]))
                         for i, p in enumerate(PARAMS)}
    return fit


def forecast(fit: ScalingFit, eta: float, eta_boot: np.ndarray, n_params: list[float],
             flops_per_param_token: float, ci_level: float = 0.95, seed: int = 0) -> list[dict]:
    """Tokens and compute at which a model of each size reaches loss eta, with intervals.

    D(N) = (B / (eta - E - A / N^alpha))^(1 / beta), infinite where eta is below what size N can
    ever reach (E + A / N^alpha). Compute C = k N D with k = ``flops_per_param_token`` (the
    table's own FLOPs per non-embedding parameter per token, so forecasts match its compute
    column; ~6 for a dense transformer). The interval pairs each scaling-law bootstrap replicate
    with a random eta replicate, so it carries the uncertainty of both.
    """
    N = np.asarray(n_params, float)
    point = fit.tokens_to_reach(eta, N)
    lo = hi = np.full(len(N), math.nan)
    share_reachable = np.full(len(N), math.nan)
    if len(fit.boot) and len(eta_boot):
        rng = np.random.default_rng(seed)
        etas = rng.choice(eta_boot, size=len(fit.boot))
        Db = _tokens_to_reach(fit.boot, etas, N)
        q = (1 - ci_level) / 2
        # inf sorts last, so an upper bound of inf says "may never get there" honestly.
        lo, hi = np.quantile(Db, q, axis=0, method="lower"), np.quantile(Db, 1 - q, axis=0, method="higher")
        share_reachable = np.isfinite(Db).mean(axis=0)
    k = flops_per_param_token
    return [{"n_params_nonembed": float(n), "tokens": float(d), "tokens_ci": [float(a), float(b)],
             "flops": float(k * n * d), "flops_ci": [float(k * n * a), float(k * n * b)],
             "reachable": bool(np.isfinite(d)), "share_reachable": float(s)}
            for n, d, a, b, s in zip(N, point, lo, hi, share_reachable)]
