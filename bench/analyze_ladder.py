"""``losslens analyze`` on the OLMo ladder table, against the same command at a reference commit.

    python bench/analyze_ladder.py [--reference 4635010] [--bootstrap 1000] [--shared ../shared]

Imports shared/data/olmo-ladder through configs/import/olmo-ladder.yaml (16 runs, 1,566 checkpoints,
25,056 rows), then runs ``losslens analyze --results T --no-plots`` twice in subprocesses: once with the
code at ``--reference`` (a ``git archive`` of that commit in a temporary folder) and once with this
checkout. Prints each run's wall seconds and CPU seconds (the process and its workers; on a machine
shared with other work they say more than wall time), the load average, and whether the numbers that
the speed work touches are the same in both report.json files (scaling laws, backtest losses and
metrics, thresholds). Target: analyze <= 60 s on the 2-core machine. Last line:
``ratio analyze-ladder new/reference wall: R``.

``--stages`` first runs this checkout's analysis in this process, one stage after the other
(``LOSSLENS_ANALYZE_WORKERS=1``), and prints each stage's CPU seconds and the wall time they make on
an idle 2-core machine (thresholds over two workers, then the laws beside the backtest): on a shared
machine a better guide to the target than the wall time measured beside other people's work.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPING = ROOT / "configs" / "import" / "olmo-ladder.yaml"
REFERENCE = "4635010"  # main before the wide import and the parallel analyze stages


def checkout(commit: str, into: Path) -> Path:
    """The tracked files of ``commit`` under ``into`` (git archive; the working tree is left alone)."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return into


def timed_analyze(code: Path, table: Path, out: Path, bootstrap: int) -> tuple[float, float]:
    """(wall s, CPU s of the process and its children) of one ``losslens analyze`` with ``code`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "losslens", "analyze", "--results", str(table), "--out", str(out),
                           "--no-plots", "--bootstrap", str(bootstrap)], env=env, cwd=code, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"analyze failed with {code}:\n{done.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def stage_seconds(table: Path, bootstrap: int) -> dict[str, float]:
    """CPU seconds of each stage of this checkout's analysis, run in this process one after the other."""
    from losslens.analyze import analysis
    from losslens.analyze.config import AnalyzeConfig

    cpu: dict[str, float] = {}

    def timed(name, fn):
        def run(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                cpu[name] = cpu.get(name, 0.0) + time.process_time() - start
        return run

    stages = {"thresholds": "analyze_pairs", "laws": "_laws", "backtest": "run_backtest"}
    for name, attr in stages.items():
        setattr(analysis, attr, timed(name, getattr(analysis, attr)))
    before = os.environ.get("LOSSLENS_ANALYZE_WORKERS")
    os.environ["LOSSLENS_ANALYZE_WORKERS"] = "1"  # every stage in this process, where process_time sees it
    try:
        start = time.process_time()
        analysis.run_analysis(table, config=AnalyzeConfig(bootstrap=bootstrap), progress=False)
        cpu["total"] = time.process_time() - start
    finally:
        if before is None:
            del os.environ["LOSSLENS_ANALYZE_WORKERS"]
        else:
            os.environ["LOSSLENS_ANALYZE_WORKERS"] = before
    return cpu


def compared(report: dict) -> dict:
    """The numbers the speed work could change: laws, backtest losses and task metrics, thresholds."""
    bt = report["backtest"]
    return {"scaling": report["scaling"], "scaling_alternative": report["scaling_alternative"],
            "backtest_scaling": bt.get("scaling"), "backtest_loss": bt.get("loss"),
            "backtest_metrics": [{k: r[k] for k in ("task", "metric", "run", "actual", "two_stage", "direct")}
                                 for r in bt.get("metrics", [])],
            "thresholds": [{k: m[k] for k in ("task", "metric", "threshold", "fits")} for m in report["metrics"]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default=REFERENCE, help=f"commit to compare with (default {REFERENCE})")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--shared", type=Path, default=Path(os.environ.get("LOSSLENS_SHARED", ROOT.parent / "shared")))
    p.add_argument("--stages", action="store_true", help="also CPU seconds per stage, in this process")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from losslens.import_results import import_results

    with tempfile.TemporaryDirectory(prefix="bench-ladder-") as tmp:
        tmp = Path(tmp)
        table = tmp / "ladder.csv"
        summary = import_results(MAPPING, table, root=args.shared / "data" / "olmo-ladder")
        print(f"table: {summary.n_rows} rows, {summary.n_checkpoints} checkpoints, {len(summary.runs)} runs; "
              f"cores {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}", flush=True)
        if args.stages:
            cpu = stage_seconds(table, args.bootstrap)
            rest = cpu["total"] - cpu["thresholds"] - cpu["laws"] - cpu["backtest"]
            idle = cpu["thresholds"] / 2 + max(cpu["laws"], cpu["backtest"]) + rest
            print("CPU per stage, one process: " + ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
                  + f"; on an idle 2-core machine about {idle:.0f} s (+ imports and report writing); "
                  f"load average now {os.getloadavg()[0]:.1f}", flush=True)
        reference = checkout(args.reference, tmp / "reference")
        times, reports = {}, {}
        for name, code in (("reference", reference), ("new", ROOT)):
            times[name] = timed_analyze(code, table, tmp / name, args.bootstrap)
            reports[name] = json.loads((tmp / name / "report.json").read_text())
            print(f"{name:9s} ({args.reference if name == 'reference' else 'this checkout'}): wall "
                  f"{times[name][0]:.1f} s, CPU {times[name][1]:.1f} s; load average now {os.getloadavg()[0]:.1f}",
                  flush=True)
        same = compared(reports["reference"]) == compared(reports["new"])
        print(f"report.json laws, backtest and thresholds identical: {same}")
        print(f"ratio CPU new/reference: {times['new'][1] / times['reference'][1]:.2f}")
        print(f"ratio analyze-ladder new/reference wall: {times['new'][0] / times['reference'][0]:.2f}")


if __name__ == "__main__":
    main()
