"""How much do seeds widen η's interval on a real multi-seed study?

Analyzes a study's results table (and its per-example records, given the run directory) and prints, for
every task x metric with a threshold: η with its interval with and without the seed level, the ratio of
their widths, η of each seed alone, the between-seed sd and range, and the mean width of the per-seed
intervals (within a seed). The same numbers are in the study's report.json (``seeds`` blocks).

    python bench/seed_study.py RUN_DIR [--bootstrap 1000] [--out DIR]   # --out: also write the report there

Last line: ``ratio width with/without seeds (median over thresholds): X``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from losslens.analyze.analysis import run_analysis  # noqa: E402


def fmt(v, spec=".3f") -> str:
    return "–" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, help="write report.json, report.md and plots/ here")
    args = ap.parse_args()
    start = time.perf_counter()
    analysis = run_analysis(args.run_dir / "results.csv", args.run_dir, overrides={"bootstrap": args.bootstrap},
                            progress=False)
    t = analysis.table
    if args.out is not None:
        from losslens.analyze.report import write_report

        write_report(analysis, args.out)
    print(f"{len(t.runs())} runs, seeds per size {t.seeds_per_size()}, analyzed in {time.perf_counter() - start:.0f} s")
    print("| task | metric | verdict | η | CI with seeds | CI without | width ratio | η per seed | sd | range "
          "| within a seed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for (task, metric), a in analysis.metrics.items():
        th, sd = a.threshold, a.seeds
        if sd is None:
            continue
        iv, sp = sd["interval"], sd["spread"]
        ratio = iv["width_with"] / iv["width_without"] if iv["width_without"] else None
        if ratio is not None:
            ratios.append(ratio)
        per = ", ".join(f"{r['seed']}: {fmt(r['eta'])}" if r["eta"] is not None else f"{r['seed']}: {r['verdict']}"
                        for r in sd["per_seed"])
        print(f"| {task} | {metric} | {th.verdict} | {th.eta:.3f} | [{th.ci_low:.3f}, {th.ci_high:.3f}] "
              f"| [{iv['without_seeds'][0]:.3f}, {iv['without_seeds'][1]:.3f}] | {fmt(ratio, '.2f')} | {per} "
              f"| {fmt(sp['sd'])} | {fmt(sp['range'])} | {fmt(sp['within_seed_width_mean'])} |")
    median = float(np.median(ratios)) if ratios else float("nan")
    print(f"ratio width with/without seeds (median over thresholds): {median:.2f}")


if __name__ == "__main__":
    main()
