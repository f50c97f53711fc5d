"""Does analyze's cost grow linearly with the results table?

Builds two synthetic tables in losslens' columns (seeded; a grid of sizes x checkpoints x tasks x 2
metrics, with emergent, smooth and flat tasks), times ``run_analysis`` on each in this process (no
plots), and prints the time per row on the large table divided by the time per row on the small one.

    python bench/analyze_scaling.py                   # 6x50x20x2 (12k rows) and 8x150x60x2 (144k rows)
    python bench/analyze_scaling.py --bootstrap 200 --profile large

Target: ratio <= 1.5, and the large table in <= 60 s. CPU seconds (this process and analyze's worker
processes) are printed too: on a machine shared with other work they say more than wall time.
Last line: ``ratio per-row large/small: X`` (wall time).
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from losslens.analyze.analysis import run_analysis  # noqa: E402
from losslens.analyze.config import AnalyzeConfig  # noqa: E402
from losslens.contracts import RESULTS_COLUMNS  # noqa: E402

SMALL = (6, 50, 20)  # sizes, checkpoints per run, tasks (x 2 metrics each)
LARGE = (8, 150, 60)


def synthetic_table(path: Path, sizes: int, ckpts: int, tasks: int, seed: int = 0) -> int:
    """Write a results table: loss L = 1.7 + 400/N^0.34 + 400/D^0.28 per checkpoint; per task an
    accuracy (chance 0.25) and a probability of the right answer, emergent (a sigmoid in loss with a
    threshold), smooth (linear in loss) or flat, in turn, plus binomial-sized noise. Returns rows."""
    rng = np.random.default_rng(seed)
    n_params = np.geomspace(1e6, 1e9, sizes).astype(np.int64)
    tokens = np.geomspace(1e7, 2e10, ckpts).astype(np.int64)
    kinds = ["emergent", "smooth", "flat"]
    etas = rng.uniform(2.6, 3.2, tasks)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RESULTS_COLUMNS)
        n_rows = 0
        for n in n_params:
            run = f"s{n}"
            loss = 1.7 + 400 / n ** 0.34 + 400 / tokens ** 0.28
            for t in range(tasks):
                kind = kinds[t % 3]
                if kind == "emergent":
                    score = 0.25 + 0.6 / (1 + np.exp((loss - etas[t] + 0.3) / 0.08))
                elif kind == "smooth":
                    score = np.clip(0.25 + 0.3 * (4.5 - loss), 0.25, 0.95)
                else:
                    score = np.full_like(loss, 0.25)
                acc = np.clip(score + rng.normal(0, 0.015, ckpts), 0, 1)
                prob = np.clip(0.2 + 0.8 * (score - 0.25) + rng.normal(0, 0.01, ckpts), 0, 1)
                for metric, vals, chance in (("acc", acc, 0.25), ("prob_correct", prob, "")):
                    for i in range(ckpts):
                        w.writerow([run, n, int(n * 0.9), tokens[i], i + 1, "", f"{loss[i]:.6f}", f"task{t:02d}",
                                    metric, f"{vals[i]:.6f}", "", "", 1000, chance])
                    n_rows += ckpts
    return n_rows


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (analyze's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(path: Path, n_bootstrap: int, profile: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of one analysis, without plots."""
    prof = cProfile.Profile() if profile else None
    start, cpu = time.perf_counter(), cpu_seconds()
    if prof:
        prof.enable()
    run_analysis(path, config=AnalyzeConfig(bootstrap=n_bootstrap), progress=False)
    if prof:
        prof.disable()
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=1000, help="analyze's bootstrap resamples (default 1000)")
    ap.add_argument("--profile", choices=["small", "large"], help="print a cProfile of one table's run")
    args = ap.parse_args()
    per_row, cpu_per_row = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in (("small", SMALL), ("large", LARGE)):
            path = Path(tmp) / f"{name}.csv"
            rows = synthetic_table(path, *shape)
            seconds, cpu = timed(path, args.bootstrap, args.profile == name)
            per_row[name], cpu_per_row[name] = seconds / rows, cpu / rows
            print(f"{name}: {shape[0]} sizes x {shape[1]} checkpoints x {shape[2]} tasks x 2 metrics = {rows} rows, "
                  f"{shape[2] * 2} pairs: {seconds:.1f} s wall, {cpu:.1f} s CPU ({1e6 * per_row[name]:.0f} us/row)",
                  flush=True)
    print(f"ratio CPU per-row large/small: {cpu_per_row['large'] / cpu_per_row['small']:.2f}")
    print(f"ratio per-row large/small: {per_row['large'] / per_row['small']:.2f}")


if __name__ == "__main__":
    main()
