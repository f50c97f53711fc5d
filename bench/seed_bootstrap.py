"""What does the seed level cost η's bootstrap?

A synthetic study of 3 sizes x 3 seeds x ``--checkpoints`` checkpoints (accuracy at chance above a loss
threshold, rising below it; each seed crosses at its own offset), bootstrapped ``--bootstrap`` times
by the same batched fit, once flat over checkpoints and once with seeds within sizes first. Prints
the seconds of each, and of ``find_threshold`` with seeds (which runs both, to report the seed level's
share of the interval).

    python bench/seed_bootstrap.py --bootstrap 1000 --checkpoints 40
    python bench/seed_bootstrap.py --coverage 100 --rng 1   # coverage of the population η, 100 studies

``--coverage N`` draws N studies of 3 sizes x 3 seeds x 12 checkpoints (seed offsets of η ~ N(0, 0.08),
noise 0.02; as tests/test_seed_bootstrap.py) and counts how often η's interval (200 resamples) covers
the planted η, with and without the seed level.

Target: ratio seeds/flat <= 1.6. The batched refits are the same; what costs more is that η spreads
wider over resamples with seeds, so fewer resamples share each refined sigmoid grid (measured: 621
distinct grids in the last round instead of 421 for 1000 resamples of this study).
Last line: ``ratio seeds/flat: X`` (with ``--coverage``: ``ratio covered with/without seeds: X``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from losslens.analyze.seeds import SeedLevel  # noqa: E402
from losslens.analyze.threshold import _bootstrap_eta, find_threshold  # noqa: E402


def study(rng, checkpoints: int, sizes: int = 3, seeds: int = 3):
    x, y, size, seed = [], [], [], []
    for s in range(sizes):
        for j in range(seeds):
            loss = np.linspace(3.0 - 0.2 * s, 1.5 - 0.2 * s, checkpoints)
            acc = 0.25 + 0.5 * np.maximum(0.0, 2.0 + rng.normal(0, 0.08) - loss) + rng.normal(0, 0.02, checkpoints)
            x.append(loss), y.append(acc), size.append(np.full(checkpoints, s)), seed.append(np.full(checkpoints, str(j)))
    return (np.concatenate(v) for v in (x, y, size, seed))


def coverage(n_studies: int, rng) -> None:
    covered, covered_flat, ratios = 0, 0, []
    for i in range(n_studies):
        x, y, size, seed = study(rng, 12)
        th = find_threshold(x, y, 0.25, n_bootstrap=200, seed=i, sizes=size, seeds=seed)
        lo, hi = th.ci_without_seeds
        covered += th.ci_low <= 2.0 <= th.ci_high
        covered_flat += lo <= 2.0 <= hi
        ratios.append((th.ci_high - th.ci_low) / (hi - lo))
    print(f"covered: {covered}/{n_studies} with seeds, {covered_flat}/{n_studies} without; "
          f"median width ratio {np.median(ratios):.2f}")
    print(f"ratio covered with/without seeds: {covered / max(covered_flat, 1):.2f}")


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--checkpoints", type=int, default=40)
    ap.add_argument("--coverage", type=int, default=0, help="instead: coverage over this many synthetic studies")
    ap.add_argument("--rng", type=int, default=1, help="seed of the synthetic studies (--coverage)")
    args = ap.parse_args()
    if args.coverage:
        return coverage(args.coverage, np.random.default_rng(args.rng))
    x, y, size, seed = study(np.random.default_rng(0), args.checkpoints)
    level = SeedLevel.of(size, seed)
    for model in ("hinge", "sigmoid"):
        flat = best_of(lambda: _bootstrap_eta(model, x, y, 0.25, 1.0, None, args.bootstrap, np.random.default_rng(0)))
        seeded = best_of(lambda: _bootstrap_eta(model, x, y, 0.25, 1.0, None, args.bootstrap,
                                                np.random.default_rng(0), level))
        print(f"{model}: {len(x)} points, {args.bootstrap} resamples: flat {flat:.2f} s, seeds {seeded:.2f} s")
    full = best_of(lambda: find_threshold(x, y, 0.25, n_bootstrap=args.bootstrap, sizes=size, seeds=seed), 1)
    print(f"find_threshold with seeds (both bootstraps): {full:.2f} s")
    print(f"ratio seeds/flat: {seeded / flat:.2f}")


if __name__ == "__main__":
    main()
