"""The scaling law's bootstrap refits: the batched Newton solver against one L-BFGS-B fit per replicate.

    python bench/law_solver.py RESULTS.csv [--bootstrap 200] [--metric bpb]

On a results table (e.g. the OLMo ladder's: ``losslens import-results configs/import/olmo-ladder.yaml``),
takes each run's final checkpoint of the pretraining loss and of every task's ``--metric`` (a lower-is-better
one: bits per byte), draws ``--bootstrap`` resamples of those points as analyze does, and refits the law on
each from the same two starts (the full-data optimum and the resample's best grid start) twice: with
``losslens.analyze.law_solver`` (every replicate at once) and with the reference, scipy's L-BFGS-B one
replicate at a time, as analyze did before the solver (its settings: maxiter 2000, ftol 1e-12, gtol 1e-8).
Prints, per law, both CPU times and how many replicates ended lower or higher with the solver (relative
difference of the Huber objective over 1e-9). Last line: ``ratio law-bootstrap solver/L-BFGS-B CPU: R``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

from losslens.analyze import law_solver, scaling
from losslens.analyze.table import read_results


def reference_objective(theta, lnN, lnD, lnL, delta):
    """Huber objective and gradient of one resample (its points repeated as drawn), scaled by 1 / delta."""
    a, b, e, alpha, beta = theta
    t0, t1 = a - alpha * lnN, b - beta * lnD
    top = np.maximum(np.maximum(t0, t1), e)
    w0, w1, w2 = np.exp(t0 - top), np.exp(t1 - top), np.exp(e - top)
    total = w0 + w1 + w2
    r = top + np.log(total) - lnL
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r ** 2, delta * (np.abs(r) - 0.5 * delta)).sum()
    q = np.where(small, r, delta * np.sign(r)) / total
    p0, p1 = w0 * q, w1 * q
    grad = np.array([p0.sum(), p1.sum(), (w2 * q).sum(), -(p0 * lnN).sum(), -(p1 * lnD).sum()])
    return value / delta, grad / delta


def reference_fit(starts, lnN, lnD, lnL, delta, bounds) -> float:
    best = np.inf
    for start in starts:
        res = optimize.minimize(reference_objective, np.clip(start, *np.array(bounds).T), args=(lnN, lnD, lnL, delta),
                                jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8})
        best = min(best, res.fun * delta)
    return best


def finals(run, N, D, L):
    last: dict[str, int] = {}
    for i, r in enumerate(run.tolist()):
        if r not in last or D[i] > D[last[r]]:
            last[r] = i
    idx = np.array(list(last.values()))
    return np.log(N[idx]), np.log(D[idx]), np.log(L[idx])


def compare(name: str, lnN, lnD, lnL, n_bootstrap: int) -> tuple[float, float]:
    delta, bounds, n = scaling.HUBER_DELTA, scaling._BOUNDS, len(lnL)
    theta = scaling._polish(scaling._best_starts(lnN, lnD, lnL, delta, bounds, 8), lnN, lnD, lnL, delta, bounds)[0]
    rng = np.random.default_rng(0)
    picks = [p for p in (rng.integers(0, n, n) for _ in range(n_bootstrap))
             if len(np.unique(lnN[p])) > 1 and len(np.unique(lnD[p])) > 1]
    counts = np.array([np.bincount(p, minlength=n) for p in picks], float)
    starts = [[theta, *scaling._best_starts(lnN[p], lnD[p], lnL[p], delta, bounds, 1)] for p in picks]

    clock = time.process_time()
    ref = np.array([reference_fit(s, lnN[p], lnD[p], lnL[p], delta, bounds) for s, p in zip(starts, picks)])
    ref_cpu = time.process_time() - clock

    clock = time.process_time()
    flat = np.array(starts).transpose(1, 0, 2).reshape(-1, 5)  # every replicate's first start, then the second
    values = law_solver.minimize(flat, lnN, lnD, lnL, np.tile(counts, (2, 1)), delta, bounds)[1]
    new = values.reshape(2, -1).min(axis=0)
    new_cpu = time.process_time() - clock

    rel = (new - ref) / np.maximum(ref, 1e-300)
    print(f"  {name:28s} {len(picks)} replicates on {n} points: L-BFGS-B {ref_cpu:6.2f} s, solver {new_cpu:5.2f} s; "
          f"solver lower in {(rel < -1e-9).sum()}, higher in {(rel > 1e-9).sum()} "
          f"(largest: {rel.min():+.2g}, {rel.max():+.2g})")
    return ref_cpu, new_cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--metric", default="bpb")
    args = p.parse_args()
    table = read_results(args.results)
    ck = table.checkpoints()
    laws = {"pretraining loss": finals(ck["run"], ck["n_params_nonembed"], ck["tokens"], ck["x"])}
    for task in table.tasks():
        if args.metric in table.metrics(task):
            s = table.series(task, args.metric)
            laws[f"{task} {args.metric}"] = finals(s.run, s.n_params_nonembed, s.tokens, s.value)
    totals = np.zeros(2)
    with threadpool_limits(limits=1, user_api="blas"):
        for name, points in laws.items():
            totals += compare(name, *points, args.bootstrap)
    print(f"all: L-BFGS-B {totals[0]:.1f} s, solver {totals[1]:.1f} s of CPU")
    print(f"ratio law-bootstrap solver/L-BFGS-B CPU: {totals[1] / totals[0]:.3f}")


if __name__ == "__main__":
    main()
