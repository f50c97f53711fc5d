"""How often do analyze's 95 % intervals cover the truth? Synthetic studies with a planted answer.

``--seeds N``: N studies of 3 sizes x 3 seeds x ``--checkpoints`` checkpoints, accuracy at chance above
a loss threshold and rising below it, each seed crossing at its own η (offsets ~ N(0, ``--tau``), noise
``--sigma``; as tests/test_seed_bootstrap.py). Counts how often η's interval (200 resamples) covers the
population η: as reported (seed level with its small-sample factor), with the seed level but without
the factor, and without the seed level.

``--backtest N``: N studies of 4 sizes x 3 budgets x ``--seeds-per-size`` seeds on a known scaling law,
with an emergent accuracy (its η offset per seed, ``--tau``) and a continuous metric (a sigmoid of
loss), backtested with the largest size held out (100 resamples). Counts how often the two-stage and
direct prediction intervals hold the held-out runs' final measurements.

    python bench/interval_coverage.py --seeds 200 --tau 0.06
    python bench/interval_coverage.py --backtest 30

Last line: ``ratio covered/nominal: X`` (the reported intervals' coverage over 0.95).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from losslens.analyze.analysis import run_analysis  # noqa: E402
from losslens.analyze.config import AnalyzeConfig  # noqa: E402
from losslens.analyze.intervals import percentile  # noqa: E402
from losslens.analyze.threshold import find_threshold  # noqa: E402
from losslens.contracts import RESULTS_COLUMNS, SEED_COLUMN  # noqa: E402

ETA, CHANCE = 2.0, 0.25
LAW = dict(E=1.8, A=80.0, B=120.0, alpha=0.3, beta=0.3)
BACKTEST_ETA = 4.5


def seed_study(rng, tau: float, sigma: float, checkpoints: int):
    x, y, size, seed = [], [], [], []
    for s in range(3):
        for j in range(3):
            loss = np.linspace(3.0 - 0.2 * s, 1.5 - 0.2 * s, checkpoints)
            acc = CHANCE + 0.5 * np.maximum(0.0, ETA + rng.normal(0, tau) - loss) + rng.normal(0, sigma, checkpoints)
            x.append(loss), y.append(np.clip(acc, 0, 1))
            size.append(np.full(checkpoints, s)), seed.append(np.full(checkpoints, str(j)))
    return (np.concatenate(v) for v in (x, y, size, seed))


def seeds_coverage(n: int, rng, tau: float, sigma: float, checkpoints: int) -> float:
    covered = {"reported": 0, "no factor": 0, "no seed level": 0}
    widths = []
    for i in range(n):
        x, y, size, seed = seed_study(rng, tau, sigma, checkpoints)
        th = find_threshold(x, y, CHANCE, n_bootstrap=200, seed=i, sizes=size, seeds=seed)
        raw = percentile(th.eta + (th.bootstrap - th.eta) / th.seed_inflation, th.ci_level)
        for key, (lo, hi) in (("reported", (th.ci_low, th.ci_high)), ("no factor", raw),
                              ("no seed level", th.ci_without_seeds)):
            covered[key] += lo <= ETA <= hi
        widths.append(th.ci_high - th.ci_low)
    print(f"{n} studies, seed offsets sd {tau}, noise {sigma}, {checkpoints} checkpoints, factor "
          f"{th.seed_inflation:.3f}: " + ", ".join(f"{k} {v}/{n}" for k, v in covered.items())
          + f"; median width {np.median(widths):.3f}")
    return covered["reported"] / n


def backtest_rows(rng, seeds: int, tau: float) -> list[dict]:
    rows = []
    for N in (1e5, 3e5, 1e6, 3e6):
        for j in range(seeds):
            offset = rng.normal(0, tau)
            for budget in (2e6, 8e6, 3.2e7):
                for tokens in np.geomspace(budget / 16, budget, 5).astype(int):
                    true = LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / tokens ** LAW["beta"]
                    common = {"run": f"n{int(N)}_d{int(budget)}_s{j}", "n_params": int(N) + 1000,
                              "n_params_nonembed": int(N), "tokens": int(tokens), "step": int(tokens // 1000),
                              "flops": 6 * N * tokens, "loss": true * (1 + 0.01 * rng.normal()), "task": "t",
                              "ci_low": "", "ci_high": "", "n": 500, "chance": CHANCE, SEED_COLUMN: str(j)}
                    acc = CHANCE + 0.2 * max(0.0, BACKTEST_ETA + offset - true) + 0.01 * rng.normal()
                    prob = 0.25 + 0.5 / (1 + math.exp(true - 4.0)) + 0.01 * rng.normal()
                    rows.append({**common, "metric": "acc", "value": min(max(acc, 0.0), 1.0)})
                    rows.append({**common, "metric": "prob_correct", "value": min(max(prob, 0.0), 1.0)})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*RESULTS_COLUMNS, SEED_COLUMN])
        w.writeheader()
        w.writerows(rows)
    return path


def backtest_coverage(n: int, rng, seeds: int, tau: float) -> float:
    inside = {"two_stage": [0, 0], "direct": [0, 0]}
    widened = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            path = write_csv(Path(tmp) / f"r{i}.csv", backtest_rows(rng, seeds, tau))
            bt = run_analysis(path, config=AnalyzeConfig(bootstrap=100, seed=i), progress=False).backtest
            for row in bt["metrics"]:
                for way in inside:
                    if row[way].get("inside") is not None:
                        inside[way][0] += row[way]["inside"]
                        inside[way][1] += 1
                        widened += bool(row[way].get("ci_widened"))
    print(f"{n} studies, {seeds} seed(s) per size, held out: the largest size's final checkpoints: "
          + ", ".join(f"{k} {a}/{b} inside" for k, (a, b) in inside.items())
          + f"; intervals extended to their estimate: {widened}")
    a, b = inside["two_stage"]
    return a / max(b, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=0, help="η coverage over this many seed studies")
    ap.add_argument("--backtest", type=int, default=0, help="held-out coverage over this many backtests")
    ap.add_argument("--tau", type=float, default=0.06)
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--checkpoints", type=int, default=12)
    ap.add_argument("--seeds-per-size", type=int, default=1)
    ap.add_argument("--rng", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.rng)
    ratio = math.nan
    if args.seeds:
        ratio = seeds_coverage(args.seeds, rng, args.tau, args.sigma, args.checkpoints) / 0.95
    if args.backtest:
        ratio = backtest_coverage(args.backtest, rng, args.seeds_per_size, args.tau) / 0.95
    print(f"ratio covered/nominal: {ratio:.3f}")


if __name__ == "__main__":
    main()
