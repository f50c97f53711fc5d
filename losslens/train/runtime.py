"""Where a run executes: the accelerator (1 process, DDP, FSDP or DeepSpeed ZeRO) and the optimizer."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs

from losslens.config import StudyConfig
from losslens.errors import LossLensError


def make_accelerator(study: StudyConfig) -> Accelerator:
    """One Accelerator per process; its launch (accelerate/deepspeed/torchrun) decides the backend."""
    precision = study.train.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    # Without CUDA, a multi-process launch (torchrun, accelerate) must be told to use gloo: cpu=True
    # does that for DDP; under DeepSpeed (which cpu=True would switch off) the backend is named.
    # (accelerate runs FSDP on GPUs only.)
    on_cpu = not torch.cuda.is_available()
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    accelerator = Accelerator(
        mixed_precision="bf16" if precision == "bf16" else "no",
        cpu=on_cpu and not deepspeed,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if on_cpu and deepspeed else None,
    )
    t = study.train
    per_pass = t.micro_batch * accelerator.num_processes
    if t.global_batch % per_pass:
        raise LossLensError(
            f"{study.source}: train.global_batch: {t.global_batch} is not a multiple of micro_batch x processes "
            f"({t.micro_batch} x {accelerator.num_processes})"
        )
    accum = t.global_batch // per_pass
    accelerator.gradient_accumulation_steps = accum
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = t.micro_batch
        ds["gradient_accumulation_steps"] = accum
        ds["train_batch_size"] = t.global_batch
        ds["gradient_clipping"] = t.optimizer.grad_clip
        accelerator.state.deepspeed_plugin.gradient_accumulation_steps = accum
    return accelerator


def build_optimizer(model: torch.nn.Module, study: StudyConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms), fused kernels where the device has them."""
    o = study.train.optimizer
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    fused = o.fused if o.fused is not None else device.type == "cuda"
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused,
    )
