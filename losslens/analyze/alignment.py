"""Alignment: do the points of different model sizes fall on one curve?

Du et al. (2024) argue that pretraining loss, unlike parameters or compute, puts models of
every size on one performance curve. We measure that with a leave-one-size-out R^2:

    for each size s: fit a smooth curve to the points of all other sizes, predict the points
    of size s that lie inside the others' x range (no extrapolation), and collect residuals;
    R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean y)^2 over the predicted points.

R^2 near 1: one curve serves every size. Near 0 or below: each size follows its own curve.
The curve is a local-linear smoother with a Gaussian kernel of bandwidth ``BANDWIDTH`` times
the x range, so no functional form is assumed. x is the loss, or log10 of training compute.
"""

from __future__ import annotations

import math

import numpy as np

BANDWIDTH = 0.05  # narrow enough to follow a kink (0.1 smoothed a hinge into R^2 0.25)


def local_linear(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, bandwidth: float) -> np.ndarray:
    """Local-linear regression: at each x0, weighted least squares of y on (1, x - x0) with
    weights exp(-(x - x0)^2 / (2 h^2)); the fitted intercept is the prediction."""
    d = x_train[None, :] - x_eval[:, None]
    w = np.exp(-0.5 * (d / bandwidth) ** 2)
    s0, s1, s2 = w.sum(1), (w * d).sum(1), (w * d * d).sum(1)
    t0, t1 = (w * y_train).sum(1), (w * d * y_train).sum(1)
    det = s0 * s2 - s1 ** 2
    # Where the window holds ~one x value the slope is undetermined: fall back to the weighted mean.
    ok = det > 1e-12 * np.maximum(s0 * s2, 1e-300)
    return np.where(ok, (s2 * t0 - s1 * t1) / np.where(ok, det, 1.0), t0 / np.maximum(s0, 1e-300))


def alignment_r2(x, y, groups, bandwidth: float = BANDWIDTH) -> dict:
    """Leave-one-group-out R^2 of a common smooth curve (see the module docstring).

    Returns ``{"r2": float | None, "n_predicted": int}``; r2 is None with fewer than two groups
    or fewer than 3 points inside the others' ranges.
    """
    x, y, groups = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    span = float(np.ptp(x)) if len(x) else 0.0
    names = list(dict.fromkeys(groups.tolist()))
    if len(names) < 2 or span == 0:
        return {"r2": None, "n_predicted": 0}
    ys, preds = [], []
    for g in names:
        held = groups == g
        xt, yt = x[~held], y[~held]
        inside = held & (x >= xt.min()) & (x <= xt.max())
        if inside.any():
            preds.append(local_linear(xt, yt, x[inside], bandwidth * span))
            ys.append(y[inside])
    if not ys or sum(len(v) for v in ys) < 3:
        return {"r2": None, "n_predicted": sum(len(v) for v in ys)}
    yv, pv = np.concatenate(ys), np.concatenate(preds)
    total = float(((yv - yv.mean()) ** 2).sum())
    r2 = 1.0 - float(((yv - pv) ** 2).sum()) / total if total > 0 else math.nan
    return {"r2": r2, "n_predicted": int(len(yv))}
