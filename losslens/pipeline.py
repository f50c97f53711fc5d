"""``losslens run STUDY.yaml``: train the grid, evaluate every checkpoint, analyze, in one go.

Only a chain of the three stages' Python APIs: each stage still reads and writes the on-disk
contracts, so a run that stops part-way is finished by running the same command again (training
resumes, evaluation skips what is done, analysis is redone).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from losslens.analyze.config import AnalyzeConfig
from losslens.argtypes import flag, output_dir
from losslens.config import load_study
from losslens.threads import use_free_cores


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study config (YAML), e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--out", type=output_dir, help="study folder (default: the config's out_dir, or checkpoints/<name>)")
    p.add_argument("--bootstrap", type=flag(AnalyzeConfig, "bootstrap"), metavar="N",
                   help="bootstrap resamples in analyze (default: analyze.bootstrap, 1000)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")


def run_study(study_path: str | Path, overrides: list[str] | None = None,
              analyze_overrides: dict | None = None) -> dict:
    """Train, evaluate and analyze (with the study's ``analyze`` options, ``analyze_overrides`` over them, e.g.
    ``{"bootstrap": 200}``: for this analysis only, not written to the study folder's study.yaml); returns the
    study folder, report paths and wall time per stage."""
    from losslens.adaptive_judge import provisional_eta
    from losslens.analyze import analyze
    from losslens.evaluate import evaluate_study
    from losslens.train import train_study

    study = load_study(study_path, overrides)
    out = study.output_dir
    _check_task_files(study)  # before hours of training, not after
    timings = {}

    def stage(name: str, fn):
        threads = use_free_cores()  # a phase's threads are decided at its start: the machine changes
        print(f"== {name} ==" + (f" ({threads} threads)" if threads else ""), flush=True)
        start = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - start
        return result

    stage("train", lambda: train_study(study))
    # A multi-process launch trains together; evaluation and analysis then run on the main process.
    if int(os.environ.get("RANK", "0")) != 0:
        return {"out": out, "timings": timings}
    stage("evaluate", lambda: evaluate_study(out, judge=provisional_eta))
    analysis = stage("analyze", lambda: analyze(out, study.analyze, overrides=analyze_overrides))
    return {"out": out, "analysis": analysis, "timings": timings, "report": out / "report.md",
            "plots": out / "plots" if analysis.config.plots else None}


def _check_task_files(study) -> None:
    """Read every task given as a file (``PREFIX:NAME`` tasks are made in the study folder later)."""
    from losslens.evaluate.harness import PREFIX as HARNESS_PREFIX
    from losslens.evaluate.tasks import TASK_SOURCES, resolve_tasks

    made_later = tuple(f"{p}:" for p in TASK_SOURCES) + (HARNESS_PREFIX,)
    resolve_tasks([t for t in study.eval.tasks if not t.startswith(made_later)], study.output_dir, study)


def main(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    result = run_study(args.study, overrides, {"bootstrap": args.bootstrap, "plots": False if args.no_plots else None})
    if "report" not in result:
        return 0
    times = ", ".join(f"{k} {v:.1f} s" for k, v in result["timings"].items())
    print(f"done in {sum(result['timings'].values()):.0f} s ({times})")
    print(f"report: {result['report']}")
    if result["plots"] is not None:
        print(f"plots:  {result['plots']}/")
    return 0
