"""``losslens train STUDY.yaml [key=value ...] [--run NAME]``."""

from __future__ import annotations

import argparse
import os

from losslens.argtypes import output_dir
from losslens.config import load_study
from losslens.errors import Preempted


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study config (YAML)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.global_batch=64")
    p.add_argument("--run", action="append", metavar="NAME", help="train only this run (repeatable; for job arrays)")
    p.add_argument("--out", type=output_dir, help="output folder (default: the study's out_dir, or checkpoints/<name>)")
    p.add_argument("--list", action="store_true", help="print the runs of the grid and exit")


def main(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    study = load_study(args.study, overrides)
    if args.list:
        from losslens.train.plan import plan_runs

        for p in plan_runs(study):
            branch = f"  (branches from {p.branch.trunk} at step {p.branch.step})" if p.branch else ""
            print(f"{p.name}\t{p.total_steps} steps\t{len(p.checkpoint_steps)} checkpoints{branch}")
        return 0

    from losslens.train.study import train_study

    try:
        summaries = train_study(study, args.run)
    except Preempted as e:
        print(f"pre-empted: {e}")
        return 143
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    for s in summaries:
        state = "up to date, " if s.up_to_date else ""
        print(f"{s.run}: {state}{s.steps} steps, {s.tokens:,} tokens -> {s.final_checkpoint}")
    return 0
