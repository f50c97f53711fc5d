"""Backtest accuracy of each forecast way (pretraining loss, task loss, direct) and of ``auto``.

    python bench/forecast_intermediates.py RESULTS.csv [--backtest largest-size] [--metric acc_len_norm]
        [--tasks arc_easy,piqa] [--bootstrap 200] [--skip 0.1] [--smooth 5]

Runs the backtest of ``losslens analyze`` (no thresholds, no plots) on a results table, e.g. the OLMo
ladder's (``losslens import-results configs/import/olmo-ladder.yaml``) or Pythia's
(``configs/import/pythia-deduped.yaml``), and prints, for one metric, each way's mean absolute error
(in points, x100) and how many measurements fell inside the interval, then each held-out run's
forecast. Ends with ``ratio auto/loss MAE: R`` (below 1: choosing by the inner backtest helped).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from losslens.analyze.backtest import choose_holdout, run_backtest
from losslens.analyze.config import ForecastConfig
from losslens.analyze.table import read_results


def _stat(scored: list[dict]) -> tuple[float, str]:
    done = [s for s in scored if s and s.get("predicted") is not None]
    mae = 100 * float(np.mean([s["abs_error"] for s in done])) if done else float("nan")
    return mae, f"{sum(bool(s['inside']) for s in done)}/{len(done)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--backtest", default="largest-size")
    p.add_argument("--metric", default="acc_len_norm")
    p.add_argument("--tasks", default="", help="comma-separated; default: every task with the metric")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--skip", type=float, default=ForecastConfig.skip_fraction, help="analyze.forecast.skip_fraction")
    p.add_argument("--smooth", type=int, default=ForecastConfig.smooth_window, help="analyze.forecast.smooth_window")
    args = p.parse_args()
    table = read_results(args.results)
    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        bt = run_backtest(table, choose_holdout(table, args.backtest), [], scaling_points="decayed",
                          n_bootstrap=args.bootstrap, scaling_bootstrap=args.bootstrap, seed=0, ci_level=0.95,
                          forecast=ForecastConfig(skip_fraction=args.skip, smooth_window=args.smooth))
    tasks = set(args.tasks.split(",")) if args.tasks else None
    rows = [r for r in bt["metrics"] if r["metric"] == args.metric and (tasks is None or r["task"] in tasks)]
    fc = bt["forecast"]
    print(f"{args.results}: held out {', '.join(bt['held_out']['runs'])}; inner backtest: fitted on "
          f"{', '.join(fc['inner_train']) or '-'}, scored on {', '.join(fc['inner_held_out']) or '-'} "
          f"({time.perf_counter() - start:.0f} s)")
    ways = list(dict.fromkeys(w for r in rows for w in r["ways"]))
    for way in ways:
        mae, inside = _stat([r["ways"].get(way) for r in rows])
        print(f"  {way:16s} MAE {mae:5.2f} points, inside {inside}")
    auto, inside = _stat([r["forecast"] for r in rows])
    choices = {w: sum(r["forecast"]["way"] == w for r in rows) for w in ways}
    print(f"  {'auto':16s} MAE {auto:5.2f} points, inside {inside}, chose {choices}; within noise: "
          f"{sum(bool(r['forecast']['within_noise']) for r in rows)}/{len(rows)}")
    for r in rows:
        f, inner = r["forecast"], r["intermediate"]["inner_mae"] or {}
        preds = " ".join(f"{w} {100 * v['predicted']:.1f}" if v.get("predicted") is not None else f"{w} -"
                         for w, v in r["ways"].items())
        print(f"    {r['task']:14s} {r['run']:20s} actual {100 * r['actual']:5.1f} | {preds} | {f['way']}: "
              f"err {100 * f['abs_error']:.1f} [{100 * f['ci'][0]:.1f}, {100 * f['ci'][1]:.1f}] | inner "
              + " ".join(f"{w} {100 * e:.2f}" for w, e in inner.items() if e is not None)
              + f" | noise {100 * (r['noise']['sd'] or float('nan')):.2f}")
    print(f"ratio auto/loss MAE: {auto / _stat([r['ways']['loss'] for r in rows])[0]:.3f}")


if __name__ == "__main__":
    main()
