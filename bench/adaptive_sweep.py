"""Adaptive sweep against the full sweep on a trained study: units evaluated, and η with its interval.

    .venv/bin/python bench/adaptive_sweep.py STUDY_DIR [--tasks copy next_word] [--work DIR]
                                             [--eta-width 0.05] [--budget N|FRACTION] [--bootstrap 1000]

STUDY_DIR is a trained study (``losslens train``; its evals and results are not used). Its checkpoints
are copied twice into ``--work`` (default: a temporary folder), without evals/, results.csv, reports
or optimizer states; ``losslens evaluate`` runs on one copy and ``losslens evaluate --adaptive`` on
the other, each in its own process, one after the other. Both tables are then analyzed as
``losslens analyze`` does (:func:`losslens.analyze.analysis.run_analysis`), and for each task of
``--tasks`` the headline metric's η and interval are compared (the metric that steers the adaptive
sweep: the task's first discontinuous one). Target (issue 12): at most 50 % of the (checkpoint, task)
units, with the adaptive η inside the full sweep's interval.

The last line is the ratio of the task units evaluated, adaptive over full.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from losslens import contracts  # noqa: E402
from losslens.analyze.analysis import run_analysis  # noqa: E402
from losslens.evaluate.adaptive import headline_metric  # noqa: E402

# what a copy leaves out: results of earlier sweeps and analyses, and optimizer states (not evaluated)
NOT_COPIED = (contracts.EVALS_DIR, contracts.RESULTS_FILE, "report.json", "report.md", "plots",
              contracts.TRAIN_STATE_DIR)


def copy_study(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*NOT_COPIED))
    return dst


def evaluate(study: Path, extra: list[str]) -> float:
    """Seconds for ``losslens evaluate STUDY EXTRA`` in a fresh process (its log beside the study)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with open(study.parent / f"{study.name}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "losslens", "evaluate", str(study), "--no-progress", *extra],
                       env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def task_units(study: Path) -> int:
    """(checkpoint, task) pairs in results.csv, the pretraining loss not counted."""
    with open(study / contracts.RESULTS_FILE) as f:
        rows = csv.DictReader(f)
        return len({(r["run"], r["tokens"], r["task"]) for r in rows if r["task"] != contracts.PRETRAIN_TASK})


def thresholds(study: Path, tasks: list[str], n_bootstrap: int) -> dict[str, tuple[str, object]]:
    """task -> (headline metric, its ThresholdResult) from the study's results.csv."""
    analysis = run_analysis(study / contracts.RESULTS_FILE, study, overrides={"bootstrap": n_bootstrap},
                            progress=False)
    out = {}
    for task in tasks:
        metrics = {m: None for (t, m) in analysis.metrics if t == task}
        if not metrics:
            raise SystemExit(f"--tasks: {task!r} is not in {study / contracts.RESULTS_FILE}")
        metric = headline_metric(metrics)
        out[task] = (metric, analysis.metrics[(task, metric)].threshold)
    return out


def _eta(th) -> str:
    return "no η" if not math.isfinite(th.eta) else f"{th.eta:.3f} [{th.ci_low:.3f}, {th.ci_high:.3f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="a trained study folder")
    p.add_argument("--tasks", nargs="+", default=["copy", "next_word"], help="tasks whose η to compare")
    p.add_argument("--work", type=Path, default=None, help="where the two copies go (default: a temporary folder)")
    p.add_argument("--eta-width", default=None, help="passed to --adaptive")
    p.add_argument("--budget", default=None, help="passed to --adaptive")
    p.add_argument("--bootstrap", type=int, default=1000, help="analyze's resamples (default 1000, as analyze)")
    args = p.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="adaptive-bench-"))
    full, adaptive = copy_study(args.study, work / "full"), copy_study(args.study, work / "adaptive")
    flags = ["--adaptive"] + [x for flag, v in (("--eta-width", args.eta_width), ("--budget", args.budget))
                              if v is not None for x in (flag, v)]
    seconds = {"full": evaluate(full, []), "adaptive": evaluate(adaptive, flags)}
    units = {"full": task_units(full), "adaptive": task_units(adaptive)}
    studies = {"full": full, "adaptive": adaptive}
    etas = {way: thresholds(study, args.tasks, args.bootstrap) for way, study in studies.items()}

    print(f"study {args.study} (copies in {work}); adaptive flags: {' '.join(flags)}")
    for way in ("full", "adaptive"):
        print(f"{way:>8}: {units[way]} task units ({units[way] / units['full']:.0%}), evaluate {seconds[way]:.0f} s")
    met = units["adaptive"] <= 0.5 * units["full"]
    for task in args.tasks:
        (metric, f), (_, a) = etas["full"][task], etas["adaptive"][task]
        inside = math.isfinite(a.eta) and f.ci_low <= a.eta <= f.ci_high
        met = met and inside
        print(f"{task} ({metric}): full η {_eta(f)} {f.verdict}; adaptive η {_eta(a)} {a.verdict}; "
              f"adaptive η inside the full interval: {'yes' if inside else 'no'}")
    print(f"target (<= 50 % of the units, η inside the full interval): {'met' if met else 'not met'}")
    print(f"ratio units adaptive/full: {units['adaptive'] / units['full']:.2f}")


if __name__ == "__main__":
    main()
