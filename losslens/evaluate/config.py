"""Typed configuration of the evaluation stage (the ``eval:`` section of a study). No torch import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


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
