"""``losslens evaluate RUN_DIR``: evaluate every checkpoint of a study that is not evaluated yet."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from losslens.argtypes import device, flag, positive_float, shard
from losslens.evaluate.config import LOCK_TIMEOUT, ORDERS, EvaluateOptions, budget_problem


def budget(text: str) -> float:
    """A budget of units: a whole count (``40``) or a fraction of the full sweep below 1 (``0.4``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count of units or a fraction below 1, got {text!r}") from None
    problem = budget_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="study folder (holds study.yaml, data/ and the runs)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", default=None,
                   help="task YAML/JSONL files or PREFIX:NAME entries, instead of the study's eval.tasks")
    p.add_argument("--lm-eval", action="append", metavar="TASK[,TASK...]", default=None,
                   help="lm-evaluation-harness tasks, groups or tags, instead of the study's eval.lm_eval "
                        "(needs the lm-eval extra; see docs/lm-eval.md); '' for none")
    p.add_argument("--lm-eval-include", metavar="DIR", default=None,
                   help="folder of harness task YAMLs (default eval.lm_eval_include)")
    p.add_argument("--shard", metavar="I/N", type=shard, default=None,
                   help="take part I of N disjoint parts of the checkpoints, counting from 0 (0/4 ... 3/4), for "
                        "job arrays; 'slurm' reads SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and "
                        "SLURM_ARRAY_TASK_COUNT (ids may start at 1); default: the rank under accelerate launch, else all")
    p.add_argument("--batch-size", type=flag(EvaluateOptions, "batch_size"), default=None, help="sequences per forward pass (default eval.batch_size)")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1, ... (default: cuda:LOCAL_RANK if available)")
    p.add_argument("--per-example", action="store_true", default=None,
                   help="also write per-example records (prediction, reference, per-choice log-likelihoods)")
    p.add_argument("--max-examples", type=flag(EvaluateOptions, "max_examples"), default=None, help="evaluate only the first N examples of each task")
    p.add_argument("--force", action="store_true", help="recompute results that are already up to date")
    p.add_argument("--order", choices=ORDERS, default="tokens",
                   help="visit checkpoints run by run (tokens), or so that any prefix of the sweep spans every "
                        "run's tokens evenly: first, last, middle, quarters, ... (coarse-to-fine)")
    p.add_argument("--adaptive", action="store_true", default=None,
                   help="evaluate tasks on a coarse pass of checkpoints, then only where a task's metric moves and "
                        "around its provisional threshold (docs/evaluate.md; default eval.adaptive.enabled)")
    p.add_argument("--eta-width", type=flag(EvaluateOptions, "eta_width"), default=None, metavar="NATS",
                   help="with --adaptive: a task is done when its threshold's interval is narrower "
                        "(default eval.adaptive.eta_width, 0.05)")
    p.add_argument("--budget", type=budget, default=None, metavar="N|FRACTION",
                   help="with --adaptive: evaluate at most N (checkpoint, task) units, or this fraction of the full "
                        "sweep's, coarse pass included (default eval.adaptive.budget: no limit)")
    p.add_argument("--threads", type=flag(EvaluateOptions, "threads"), default=None, help="CPU threads for torch")
    p.add_argument("--lock-timeout", type=positive_float, default=LOCK_TIMEOUT,
                   help="seconds after which a claim by an evaluator on another host counts as abandoned")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from losslens.adaptive_judge import provisional_eta
    from losslens.evaluate.harness import parse_names
    from losslens.evaluate.sweep import evaluate_study

    # Each option flag's dest is its EvaluateOptions field: the record is built from them in one go.
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(EvaluateOptions) if f.name != "progress"}
    options = EvaluateOptions(**given | {
        "lm_eval": parse_names(args.lm_eval) if args.lm_eval is not None else None,
        "progress": not args.no_progress and sys.stderr.isatty()})
    summary = evaluate_study(args.run_dir, options, judge=provisional_eta)
    return 0 if summary.table is not None else 1
