"""Learning-rate schedules as pure functions of the step (as nanoGPT's ``get_lr``): warmup + cosine,
and warmup-stable-decay.

The loop sets the LR of step ``s`` from ``learning_rate(s, ...)``, so a resumed run needs no replay.
The formulas are those of transformers' ``get_cosine_with_min_lr_schedule_with_warmup`` and
``get_wsd_schedule`` (linear warmup), so curves trained before this module keep their values.

With WSD the LR of step ``s`` depends only on ``s`` until the decay starts, so a run for a smaller
budget can branch off the largest run's checkpoint at its decay start and cool down from there.
"""

from __future__ import annotations

import math

from losslens.train.config import ScheduleConfig
from losslens.train.plan import RunPlan


def lr_factor(step: int, cfg: ScheduleConfig, plan: RunPlan) -> float:
    """The LR of optimizer step ``step`` (0-based) as a fraction of the peak LR."""
    if cfg.kind == "cosine":
        if step < plan.warmup_steps:
            return step / max(1, plan.warmup_steps)
        progress = (step - plan.warmup_steps) / max(1, plan.total_steps - plan.warmup_steps)
        return _above_floor(0.5 * (1.0 + math.cos(math.pi * progress)), cfg.min_lr_ratio)
    if step < plan.warmup_steps:  # WSD warms up from the floor, not from zero
        return _above_floor(step / max(1, plan.warmup_steps), cfg.min_lr_ratio)
    if step < plan.decay_start:
        return 1.0
    if step >= plan.total_steps:
        return cfg.min_lr_ratio
    progress = (step - plan.decay_start) / max(1, plan.total_steps - plan.decay_start)
    decayed = {"linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress)),
               "1-sqrt": 1.0 - math.sqrt(progress)}[cfg.decay_type]
    return _above_floor(decayed, cfg.min_lr_ratio)


def learning_rate(step: int, peak_lr: float, cfg: ScheduleConfig, plan: RunPlan) -> float:
    return peak_lr * lr_factor(step, cfg, plan)


def _above_floor(factor: float, floor: float) -> float:
    """Map ``factor`` in [0, 1] to [floor, 1]."""
    return max(0.0, factor * (1.0 - floor) + floor)
