"""Typed configuration of the evaluation stage (the ``eval:`` section of a study). No torch import."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

from losslens.argtypes import flag_name
from losslens.errors import ConfigError
from losslens.schema import PROBABILITY, Bootstrap, PositiveFloat, PositiveInt, Range, SeedInt, Threads, check_fields


@dataclass
class AdaptiveConfig:
    """``eval.adaptive``: an adaptive sweep (losslens.evaluate.adaptive; ``losslens evaluate --adaptive``)."""

    enabled: bool = False  # evaluate adaptively by default (the --adaptive flag turns it on for one sweep)
    eta_width: PositiveFloat = 0.05  # a task is done when its emergent threshold's interval is narrower (nats)
    # task units at most: a whole count (>= 1) or a fraction of the full sweep (< 1): budget_problem
    budget: Optional[PositiveFloat] = None
    coarse: Annotated[int, Range(ge=2)] = 5  # checkpoints per run in the coarse pass: first, last, middle, quarters
    n_bootstrap: Bootstrap = 1000  # resamples for the provisional threshold's interval (analyze's default)


def budget_problem(budget: float) -> Optional[str]:
    """Why a budget of task units cannot be used, or None: a whole count >= 1, or a fraction in (0, 1)."""
    if not 0 < budget < float("inf"):
        return f"must be a positive count of units or a fraction below 1, got {budget:g}"
    if budget >= 1 and budget != int(budget):
        return f"a count of units must be whole (or a fraction below 1), got {budget:g}"
    return None


def adaptive_problem(a: AdaptiveConfig) -> Optional[tuple[str, str]]:
    """(field, why) for an unusable setting of ``eval.adaptive`` that its fields' ranges cannot say, or None."""
    if a.budget is not None and budget_problem(a.budget):
        return "budget", budget_problem(a.budget)
    return None


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)  # task YAML or JSONL paths, or "demo:<name>"
    lm_eval: list[str] = field(default_factory=list)  # lm-evaluation-harness task/group/tag names (docs/lm-eval.md)
    lm_eval_include: Optional[str] = None  # folder of harness task YAMLs (TaskManager include_path)
    val_tokens: Optional[PositiveInt] = None  # validation tokens for the pretraining loss; default checkpoints.val_tokens
    batch_size: PositiveInt = 32  # sequences per scoring forward pass
    bootstrap: Bootstrap = 1000  # resamples for the confidence intervals
    confidence: Annotated[float, PROBABILITY] = 0.95
    max_examples: Optional[PositiveInt] = None  # per task; None = all
    per_example: bool = False  # also write per-example records
    max_new_tokens: PositiveInt = 32  # generation limit for generative tasks
    seed: SeedInt = 1234  # few-shot sampling and bootstrap
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weights; log-probabilities are always float32
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)


Order = Literal["tokens", "coarse-to-fine"]  # how a sweep visits checkpoints (losslens.evaluate.order)
ORDERS = typing.get_args(Order)
LOCK_TIMEOUT = 6 * 3600  # seconds


@dataclass
class EvaluateOptions:
    """The options of one sweep, beside the study's ``eval:`` (:class:`EvalConfig`): what the flags of
    ``losslens evaluate`` set (they take their types from here: ``losslens.argtypes.flag``). A field left
    None takes the study's setting, named beside it. :meth:`check` refuses a record made in Python."""

    tasks: Optional[list[str]] = None  # task files or PREFIX:NAME entries; None: eval.tasks
    lm_eval: Optional[list[str]] = None  # lm-evaluation-harness task, group or tag names; None: eval.lm_eval
    lm_eval_include: Optional[str] = None  # folder of harness task YAMLs; None: eval.lm_eval_include
    batch_size: Optional[PositiveInt] = None  # sequences per forward pass; None: eval.batch_size
    max_examples: Optional[PositiveInt] = None  # per task; None: eval.max_examples
    per_example: Optional[bool] = None  # also write per-example records; None: eval.per_example
    device: Optional[str] = None  # cpu, cuda, cuda:N or mps; None: cuda:LOCAL_RANK where there is CUDA, else cpu
    threads: Optional[Threads] = None  # CPU threads for torch; None: as the process has them
    # (i, n): the i-th of n disjoint parts of the checkpoints, from 0; None: the rank under a launcher, else all
    shard: Optional[tuple[int, int]] = None
    order: Order = "tokens"  # run by run, or coarse-to-fine (losslens.evaluate.order)
    force: bool = False  # recompute results that are up to date
    progress: bool = True  # progress bars
    lock_timeout: PositiveFloat = LOCK_TIMEOUT  # seconds after which another host's claim counts as abandoned
    adaptive: Optional[bool] = None  # tasks evaluated adaptively (evaluate/adaptive.py); None: eval.adaptive.enabled
    eta_width: Optional[PositiveFloat] = None  # with adaptive; None: eval.adaptive.eta_width
    budget: Optional[PositiveFloat] = None  # with adaptive, task units (budget_problem); None: eval.adaptive.budget

    def check(self) -> None:
        """Raise ConfigError naming the flag (``--batch-size: ...``) of the first setting out of its range."""
        check_fields(self, label=flag_name)
        if self.order not in ORDERS:
            raise ConfigError(f"--order: expected one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ConfigError(f"--shard: need 0 <= I < N (parts count from 0), got {self.shard[0]}/{self.shard[1]}")
        if self.budget is not None and budget_problem(self.budget):
            raise ConfigError(f"--budget: {budget_problem(self.budget)}")
