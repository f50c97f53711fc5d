"""Least-squares pieces shared by the curve models: the BIC, profiled slopes, and grid searches that
fit many bootstrap resamples at once.

A curve model that is linear in its level parameters given its shape parameters (a hinge given its
kink, a sigmoid given its midpoint and width) is fitted by profiling: for each shape on a grid, the
best levels in closed form (:func:`profile`), the best shape by its residual sum of squares.
Resamples are drawn as counts W (point i drawn W[i, b] times in resample b), so one design matrix
serves every resample that shares a grid (:func:`grid_search_many`).
"""

from __future__ import annotations

import math

import numpy as np

BLOCK = 1 << 15  # design elements per block (256 KB): the work of one block stays in cache


def bic(rss: float, n: int, k: int) -> float:
    """The Bayesian information criterion for Gaussian errors: n ln(RSS / n) + k ln n."""
    return n * math.log(max(rss, 1e-300) / n) + k * math.log(n)


def profile(X: np.ndarray, y: np.ndarray, c: float | None):
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


def blocked_profile(design, grid, x: np.ndarray, y: np.ndarray, c: float | None):
    """:func:`profile` of ``design(grid, x, rows)``, a block of rows at a time: with many points the
    whole design no longer fits in cache, and each element then costs several times more."""
    step = max(1, BLOCK // len(x))
    parts = [profile(design(grid, x, slice(i, i + step)), y, c)
             for i in range(0, math.prod(len(a) for a in grid), step)]
    return tuple(np.concatenate(p) for p in zip(*parts))


def weighted_profile(X: np.ndarray, W: np.ndarray, Y: np.ndarray, c: float | None, paired: bool = False):
    """:func:`profile`'s RSS for many resamples at once, as matrix products.

    X (G x n) holds the design at the n points; resample b draws point i W[i, b] times and has
    oriented scores Y[:, b]. A resample is its points repeated, so these are the same sums as
    :func:`profile` on the repeated points (up to rounding). Returns RSS, G x B; with ``paired``
    (G = B), resample b on design row b only: RSS of length B.
    """
    dot = (lambda A, M: np.einsum("bi,ib->b", A, M)) if paired else (lambda A, M: A @ M)
    if c is not None:
        R = Y - c
        WR = W * R
        xr, xx = dot(X, WR), dot(X * X, W)
        s = np.where(xx > 0, np.maximum(xr, 0.0) / np.where(xx > 0, xx, 1.0), 0.0)
        return (R * WR).sum(axis=0) - s * xr
    # Shift X's rows and Y by one mean for all resamples first, so the centred sums below do not cancel.
    Xs, Ys = X - X.mean(axis=1, keepdims=True), Y - Y.mean()
    n, WY = W.sum(axis=0), W * Ys
    s1, ty = dot(Xs, W), WY.sum(axis=0)
    sxx = dot(Xs * Xs, W) - s1 ** 2 / n
    sxy = dot(Xs, WY) - s1 * ty / n
    syy = (WY * Ys).sum(axis=0) - ty ** 2 / n
    # A constant design row has sxx = 0 up to rounding: no slope, as in profile.
    scale = np.abs(Xs).max(axis=1) ** 2
    flat = sxx <= 1e-12 * n * (scale if paired else scale[:, None])
    s = np.where(flat, 0.0, np.maximum(sxy, 0.0) / np.where(flat, 1.0, sxx))
    return syy - s * sxy


def profile_rss(c: float | None):
    """:func:`weighted_profile` with level ``c``, as :func:`grid_search_many` takes it."""
    return lambda X, W, Y: weighted_profile(X, W, Y, c)


def fixed_slope_rss(s: float):
    """RSS of Y = s X (no free parameter) for many resamples at once (X: G x n, W and Y: n x B) -> G x B."""
    return lambda X, W, Y: (W * Y * Y).sum(axis=0) - 2 * s * (X @ (W * Y)) + s * s * ((X * X) @ W)


def grid_search_many(x, W, Y, grids: list, design, rss) -> list[int]:
    """For each resample b, the index of the row of ``design(grids[b], x, rows)`` with the least
    ``rss(design rows, W, Y)`` (e.g. :func:`profile_rss`). Resamples that share a grid (most do: it
    depends on little) share one design matrix and one matrix product, computed a block of rows at a
    time (see ``BLOCK``)."""
    best = [0] * len(grids)
    groups: dict[tuple, list[int]] = {}
    for b, grid in enumerate(grids):
        groups.setdefault(tuple(a.tobytes() for a in grid), []).append(b)
    for members in groups.values():
        drawn = np.flatnonzero(W[:, members].any(axis=1))  # points no member drew add nothing to its sums
        Wd, Yd, xd = W[np.ix_(drawn, members)], Y[np.ix_(drawn, members)], x[drawn]
        grid, step = grids[members[0]], max(1, BLOCK // len(drawn))
        sums = np.concatenate([rss(design(grid, xd, slice(i, i + step)), Wd, Yd)
                               for i in range(0, math.prod(len(a) for a in grid), step)])
        for b, g in zip(members, np.argmin(sums, axis=0)):
            best[b] = int(g)
    return best


def golden_many(f, lo, hi, iters: int = 40) -> np.ndarray:
    """Golden-section minimisation of B one-dimensional functions at once: ``f(t)`` maps a length-B
    array of arguments to the B values; each is searched in its own bracket [lo[b], hi[b]]
    (40 rounds shrink a bracket 2e8-fold)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = np.asarray(lo, float).copy(), np.asarray(hi, float).copy()
    for _ in range(iters):
        c, d = b - g * (b - a), a + g * (b - a)
        left = f(c) < f(d)  # the minimum lies in [a, d], else in [c, b]
        a, b = np.where(left, a, c), np.where(left, d, b)
    return (a + b) / 2
