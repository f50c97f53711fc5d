"""Typed configuration of the evaluation stage (the ``eval:`` section of a study). No torch import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass
class AdaptiveConfig:
    """``eval.adaptive``: an adaptive sweep (losslens.evaluate.adaptive; ``losslens evaluate --adaptive``)."""

    enabled: bool = False  # evaluate adaptively by default (the --adaptive flag turns it on for one sweep)
    eta_width: float = 0.05  # a task is done when its emergent threshold's interval is narrower (nats)
    budget: Optional[float] = None  # task units at most: a count (>= 1) or a fraction of the full sweep (< 1)
    coarse: int = 5  # checkpoints per run in the coarse pass: first, last, middle, quarters
    n_bootstrap: int = 1000  # resamples for the provisional threshold's interval (analyze's default)


def budget_problem(budget: float) -> Optional[str]:
    """Why a budget of task units cannot be used, or None: a whole count >= 1, or a fraction in (0, 1)."""
    if not 0 < budget < float("inf"):
        return f"must be a positive count of units or a fraction below 1, got {budget:g}"
    if budget >= 1 and budget != int(budget):
        return f"a count of units must be whole (or a fraction below 1), got {budget:g}"
    return None


def adaptive_problem(a: AdaptiveConfig) -> Optional[tuple[str, str]]:
    """(field, why) for the first unusable setting of ``eval.adaptive``, or None."""
    if not 0 < a.eta_width < float("inf"):
        return "eta_width", f"must be a positive number of nats, got {a.eta_width:g}"
    if a.budget is not None and budget_problem(a.budget):
        return "budget", budget_problem(a.budget)
    if a.coarse < 2:
        return "coarse", f"must be at least 2 (the first and last checkpoint of each run), got {a.coarse}"
    if a.n_bootstrap < 1:
        return "n_bootstrap", f"must be positive, got {a.n_bootstrap}"
    return None


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)  # task YAML or JSONL paths, or "demo:<name>"
    lm_eval: list[str] = field(default_factory=list)  # lm-evaluation-harness task/group/tag names (docs/lm-eval.md)
    lm_eval_include: Optional[str] = None  # folder of harness task YAMLs (TaskManager include_path)
    val_tokens: Optional[int] = None  # validation tokens for the pretraining loss; default checkpoints.val_tokens
    batch_size: int = 32  # sequences per scoring forward pass
    bootstrap: int = 1000  # resamples for the confidence intervals
    confidence: float = 0.95
    max_examples: Optional[int] = None  # per task; None = all
    per_example: bool = False  # also write per-example records
    max_new_tokens: int = 32  # generation limit for generative tasks
    seed: int = 1234  # few-shot sampling and bootstrap
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weights; log-probabilities are always float32
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
