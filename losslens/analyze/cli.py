"""``losslens analyze RUN_DIR``: thresholds, verdicts, scaling law, forecasts and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from losslens.analyze.config import X_AXES, AnalyzeConfig
from losslens.errors import ResultsError
from losslens.argtypes import flag, output_dir, unwritable_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option flag overrides a field of the study's ``analyze`` section (AnalyzeConfig), whose
    declared range it takes; a flag not given (None) leaves the study's value, else the default."""
    parser.add_argument("run_dir", nargs="?", type=Path, help="study directory holding results.csv")
    parser.add_argument("--results", type=Path, help="results table to read (default: RUN_DIR/results.csv)")
    parser.add_argument("--out", type=output_dir, help="where report.json, report.md and plots/ go (default: RUN_DIR)")
    parser.add_argument("--bootstrap", type=flag(AnalyzeConfig, "bootstrap"), metavar="N",
                        help="bootstrap resamples: 0 (no intervals) or at least 10 (default 1000)")
    parser.add_argument("--seed", type=flag(AnalyzeConfig, "seed"), help="bootstrap seed (default 0)")
    parser.add_argument("--forecast-sizes", type=flag(AnalyzeConfig, "forecast_sizes"), metavar="N1,N2",
                        help="untrained non-embedding sizes to forecast (default: 10x and 100x the largest)")
    parser.add_argument("--plots", action=argparse.BooleanOptionalAction, default=None,
                        help="draw the figures, or not (--no-plots) (default: analyze.plots of RUN_DIR/study.yaml, "
                             "else yes)")
    parser.add_argument("--scaling-points", metavar="decayed|all",
                        help="checkpoints the scaling law is fitted to: each run's final, fully decayed one "
                             "(default) or all, stable-phase ones included")
    parser.add_argument("--backtest", metavar="SPEC",
                        help="runs to hold out and predict: none, largest-size[:K], largest-budget, or RUN[,RUN] "
                             "(default: largest-size with 3 or more sizes, else none)")
    parser.add_argument("--x", choices=X_AXES, default=None,
                        help="x-axis: validation loss (nats/token) or bits per byte, which compares runs with "
                             "different tokenizers (default: analyze.x of RUN_DIR/study.yaml, else loss)")
    parser.add_argument("--intermediate", dest="forecast.intermediate", metavar="auto|loss|direct|METRIC",
                        help="how the backtest forecasts task metrics: through the pretraining loss, a task's own "
                             "loss-like METRIC (e.g. bpb, loglik_byte), directly against compute, or auto: per task, "
                             "the way an inner backtest on the training runs prefers (default: "
                             "analyze.forecast.intermediate of RUN_DIR/study.yaml, else auto)")
    parser.add_argument("--ci-level", type=flag(AnalyzeConfig, "ci_level"), metavar="P",
                        help="level of every interval (default 0.95)")


# The flags that override AnalyzeConfig fields, by their argparse dest (a dotted dest reaches into forecast).
OPTION_FLAGS = ("bootstrap", "seed", "forecast_sizes", "plots", "scaling_points", "backtest", "x",
                "forecast.intermediate", "ci_level")


def main(args: argparse.Namespace) -> int:
    from losslens.analyze.analysis import analyze
    from losslens.analyze.report import PLOTS_DIR, REPORT_MD, error_and_inside

    if args.run_dir is None and args.results is None:
        raise ResultsError("give a RUN_DIR or --results PATH")
    if args.out is None and args.run_dir is not None and args.run_dir.is_dir() and unwritable_folder(args.run_dir):
        raise ResultsError(f"{unwritable_folder(args.run_dir)}: the report goes there; give --out DIR")
    # The study's analyze section is read after the table (whose problems come first), the flags over it.
    overrides = {k: getattr(args, k) for k in OPTION_FLAGS}
    analysis = analyze(args.run_dir, overrides=overrides, results=args.results, out=args.out)
    out = Path(analysis.settings["out"])
    verdicts = [a.threshold.verdict for a in analysis.metrics.values()]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
    print(f"analyzed {len(analysis.metrics)} task x metric pairs: {counts}")
    if analysis.backtest is not None:
        print(f"backtest ({', '.join(analysis.backtest['held_out']['runs'])} held out), per metric: "
              "mean abs error (inside the interval)")
        forecast = analysis.backtest.get("forecast", {})
        for metric, sm in analysis.backtest["summary"]["by_metric"].items():
            line = f"  {metric}: two-stage {error_and_inside(sm['two_stage'])}, direct {error_and_inside(sm['direct'])}"
            chosen = forecast.get("by_metric", {}).get(metric)
            if chosen:
                ways = ", ".join(f"{w} {'–' if v['mae'] is None else format(v['mae'], '.3g')}" for w, v in chosen["ways"].items())
                line += f"; forecast ({forecast['intermediate']}) {error_and_inside(chosen['chosen'])}, by way: {ways}"
            print(line)
    else:
        print(f"backtest: {analysis.backtest_note}")
    print(f"report: {out / REPORT_MD}")
    if analysis.config.plots:
        print(f"plots:  {out / PLOTS_DIR}/")
    return 0
