"""Learning-rate schedules (from transformers): warmup + cosine, and warmup-stable-decay.

With WSD the LR of step ``s`` depends only on ``s`` until the decay starts, so a run for a smaller
budget can branch off the largest run's checkpoint at its decay start and cool down from there.
"""

from __future__ import annotations

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_wsd_schedule

from losslens.train.config import ScheduleConfig
from losslens.train.plan import RunPlan


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, plan: RunPlan) -> torch.optim.lr_scheduler.LambdaLR:
    if cfg.kind == "cosine":
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, plan.warmup_steps, plan.total_steps, min_lr_rate=cfg.min_lr_ratio
        )
    return get_wsd_schedule(
        optimizer,
        num_warmup_steps=plan.warmup_steps,
        num_stable_steps=plan.decay_start - plan.warmup_steps,
        num_decay_steps=plan.total_steps - plan.decay_start,
        decay_type=cfg.decay_type,
        min_lr_ratio=cfg.min_lr_ratio,
    )
