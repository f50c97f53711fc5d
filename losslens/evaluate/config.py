"""Typed configuration of the evaluation stage (the ``eval:`` section of a study). No torch import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

from losslens.schema import PROBABILITY, Bootstrap, PositiveFloat, PositiveInt, Range, SeedInt


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
