"""The training loop: one run of the grid, on accelerate (1 process, DDP, FSDP or DeepSpeed ZeRO).

``train_run`` reads top to bottom: set up a ``RunState``, resume it, then step, log and checkpoint.
The step does no host sync except at log intervals and checkpoints (losses accumulate on the device
and are read every ``log_every`` steps), and with ``on_nonfinite: skip``, which reads the gradient norm.
"""

from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm

from losslens import contracts
from losslens.config import StudyConfig
from losslens.counts import flops_per_token
from losslens.errors import CheckpointError, Preempted, TrainingDiverged
from losslens.shards import open_shard
from losslens.train import checkpoint as ckpt_io
from losslens.train.data import TokenStream, load_tokenizer
from losslens.train.kernels import apply_liger, use_liger
from losslens.train.metrics_log import LossWindow, MetricsLog
from losslens.train.mfu import device_peak_flops, mfu
from losslens.train.model import build_model, parameter_counts
from losslens.train.plan import RunPlan
from losslens.train.runtime import build_optimizer
from losslens.train.schedule import learning_rate
from losslens.valloss import validation_loss


@dataclass
class RunSummary:
    run: str
    steps: int
    tokens: int
    final_checkpoint: Path
    resumed_from: Optional[int]
    up_to_date: bool = False  # trained before: nothing was done


@dataclass
class RunState:
    """One run while it trains. ``step`` counts the optimizer steps taken; the data position and the
    LR are functions of it, so the model, the optimizer and ``step`` are all a resume restores."""

    study: StudyConfig
    plan: RunPlan
    accelerator: Accelerator
    model: torch.nn.Module  # as prepared by accelerate (DDP, DeepSpeed engine, ...)
    optimizer: torch.optim.Optimizer  # as prepared
    base_optimizer: torch.optim.Optimizer  # the AdamW whose param groups hold the LR
    fused_loss: bool  # Liger's fused linear cross-entropy computes the loss inside the model
    tokenizer: object
    stream: TokenStream
    val_tokens: np.ndarray
    n_params: int
    n_nonembed: int
    flops_per_token: float
    compute_dtype: torch.dtype
    peak_flops: Optional[float]
    step: int = 0
    resumed_from: Optional[int] = None
    grad_norm: Optional[torch.Tensor] = None  # of the last optimizer step; None: not measured (no clipping)
    skipped_steps: int = 0  # optimizer steps skipped for a non-finite gradient (on_nonfinite: skip)

    @property
    def run_dir(self) -> Path:
        return self.study.output_dir / self.plan.name


class _SigtermFlag:
    """Turns SIGTERM (cluster pre-emption) into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def __enter__(self) -> "_SigtermFlag":
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train_run(study: StudyConfig, plan: RunPlan, accelerator: Accelerator, data_dir: Path) -> RunSummary:
    run = set_up(study, plan, accelerator, data_dir)
    start = resume(run)
    if run.step >= plan.total_steps:
        return RunSummary(plan.name, run.step, plan.tokens_at(run.step), start, run.resumed_from)

    t = study.train
    log = MetricsLog.open(run, data_dir)
    log.truncate_after(run.step)
    new_window = partial(LossWindow, accelerator.device, skip_nonfinite=t.on_nonfinite == "skip")
    window, train_loss = new_window(), math.nan
    progress = tqdm(total=plan.total_steps, initial=run.step, desc=plan.name, unit="step",
                    disable=not accelerator.is_main_process, dynamic_ncols=True)
    run.model.train()
    with _SigtermFlag() as sigterm, progress, log:
        while run.step < plan.total_steps:
            train_step(run, window)
            progress.update(1)
            scheduled = run.step in plan.checkpoint_steps
            if run.step % t.log_every == 0 or scheduled or run.step == plan.total_steps:
                train_loss = _log(run, window, log, progress)
                window = new_window()
            stop = _stop_requested(run, sigterm)
            if scheduled or stop:
                path = _checkpoint(run, train_loss, scheduled, log)
                window.restart_clock()
                if stop:
                    raise Preempted(f"run {plan.name}: SIGTERM at step {run.step}; saved {path}")
    final = run.run_dir / contracts.checkpoint_dirname(plan.tokens_at(plan.total_steps))
    return RunSummary(plan.name, run.step, plan.tokens_at(run.step), final, run.resumed_from)


def set_up(study: StudyConfig, plan: RunPlan, accelerator: Accelerator, data_dir: Path) -> RunState:
    """Data, a freshly initialised model and its optimizer, prepared for this process (step 0)."""
    t, device = study.train, accelerator.device
    if t.threads:
        torch.set_num_threads(t.threads)
    data_meta = json.loads((data_dir / contracts.DATA_META_FILE).read_text())
    vocab = data_meta["vocab_size"]
    model = build_model(plan.size, study.model, vocab, data_meta["eos_id"], seed=plan.seed.init)
    n_params, n_nonembed = parameter_counts(model)
    fused_loss = use_liger(t.kernels, device, compiled=t.compile, source=f"{study.source}: train.kernels")
    if fused_loss:
        apply_liger(model)
    model.to(device)
    base_optimizer = build_optimizer(model, study, device)
    if t.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, base_optimizer)
    compute_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    return RunState(
        study=study, plan=plan, accelerator=accelerator, model=model, optimizer=optimizer,
        base_optimizer=base_optimizer, fused_loss=fused_loss, tokenizer=load_tokenizer(data_dir),
        stream=TokenStream(open_shard(data_dir, contracts.TRAIN_SHARD), plan.context, plan.seed.data),
        val_tokens=open_shard(data_dir, contracts.VAL_SHARD), n_params=n_params, n_nonembed=n_nonembed,
        flops_per_token=flops_per_token(n_nonembed, plan.size.width, plan.size.depth, plan.context, vocab),
        compute_dtype=compute_dtype, peak_flops=device_peak_flops(device, compute_dtype, t.peak_flops),
    )


def resume(run: RunState) -> Optional[Path]:
    """Restore the run's newest checkpoint, else (a WSD branch) the trunk's at the branch point.

    Returns the checkpoint restored from (None: a fresh start at step 0).
    """
    plan = run.plan
    start = ckpt_io.latest_resumable(run.run_dir)
    if start is None and plan.branch is not None:
        trunk_dir = run.study.output_dir / plan.branch.trunk
        start = trunk_dir / contracts.checkpoint_dirname(plan.tokens_at(plan.branch.step))
        if not ckpt_io.has_train_state(start):
            raise CheckpointError(
                f"{start}: run {plan.name} branches from run {plan.branch.trunk} at step {plan.branch.step}; "
                f"train {plan.branch.trunk} first (losslens train ... --run {plan.branch.trunk})"
            )
    if start is None:
        return None
    meta = contracts.read_meta(start)
    if meta.get("config_hash") != run.study.hash():
        raise CheckpointError(f"{start}: was trained with a different study config; use a new out_dir")
    init, data = contracts.checkpoint_seeds(meta, start)
    if (init, data) != (plan.seed.init, plan.seed.data):
        raise CheckpointError(f"{start}: was trained with seeds init {init}, data {data}, not run {plan.name}'s "
                              f"init {plan.seed.init}, data {plan.seed.data}; use a new out_dir")
    run.step = run.resumed_from = ckpt_io.load_train_state(run.accelerator, start)
    return start


def train_step(run: RunState, window: LossWindow) -> None:
    """One optimizer step: gradients accumulated over the micro-batches, then one clipped update."""
    t, acc = run.study.train, run.accelerator
    for group in run.base_optimizer.param_groups:
        group["lr"] = learning_rate(run.step, t.optimizer.lr, t.schedule, run.plan)
    for micro in range(acc.gradient_accumulation_steps):
        batch = run.stream.micro_batch(run.step, t.global_batch, t.micro_batch, micro,
                                       acc.process_index, acc.num_processes).to(acc.device)
        with acc.accumulate(run.model):  # gradients are all-reduced on the last micro-batch only
            loss = _micro_batch_loss(run, batch)
            acc.backward(loss)
        window.add(loss.detach())
    if _clip_gradients(run):
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    window.tokens += run.plan.tokens_per_step


def _micro_batch_loss(run: RunState, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a (micro_batch, context + 1) window batch."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    if run.fused_loss:  # Liger never materialises the logits; targets are already shifted
        # Liger flattens the labels with .view(): a strided slice of the window batch fails there.
        return run.model(input_ids=inputs, shift_labels=targets.contiguous()).loss
    logits = run.model(input_ids=inputs).logits
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def _clip_gradients(run: RunState) -> bool:
    """Clip to ``grad_clip``; False when the update must be skipped (non-finite, ``on_nonfinite: skip``)."""
    clip, skip_nonfinite = run.study.train.optimizer.grad_clip, run.study.train.on_nonfinite == "skip"
    if not (clip or skip_nonfinite):
        return True
    norm = run.accelerator.clip_grad_norm_(run.model.parameters(), clip or math.inf)
    if norm is not None:  # None under DeepSpeed before its engine has stepped
        run.grad_norm = torch.as_tensor(norm)
    if skip_nonfinite and run.grad_norm is not None and not math.isfinite(run.grad_norm.item()):  # a host sync, by request
        run.skipped_steps += 1
        return False
    return True


def _log(run: RunState, window: LossWindow, log: MetricsLog, progress: tqdm) -> float:
    """Read the window's losses (the loop's host sync), stop on a non-finite loss, write a log line."""
    plan, t = run.plan, run.study.train
    mean_loss = window.mean_loss(run.accelerator)
    if mean_loss is not None and not math.isfinite(mean_loss):
        last = ckpt_io.latest_resumable(run.run_dir)
        raise TrainingDiverged(
            f"run {plan.name}: loss is {mean_loss} at step {run.step}; last good checkpoint: "
            f"{last or 'none'} (lower train.optimizer.lr, or set train.on_nonfinite: skip)"
        )
    tokens_per_s = window.tokens_per_s()
    log.write({
        "step": run.step, "tokens": plan.tokens_at(run.step), "loss": mean_loss,
        "lr": learning_rate(run.step, t.optimizer.lr, t.schedule, plan),  # of the next step
        "grad_norm": None if run.grad_norm is None else run.grad_norm.item(), "tokens_per_s": tokens_per_s,
        "mfu": mfu(run.flops_per_token, tokens_per_s / run.accelerator.num_processes, run.peak_flops),
        "skipped_steps": run.skipped_steps,
    })
    if mean_loss is not None:
        progress.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
    return math.nan if mean_loss is None else mean_loss


def _stop_requested(run: RunState, sigterm: _SigtermFlag) -> bool:
    """SIGTERM on this process, or (checked at log intervals, a collective) on any other."""
    if run.accelerator.num_processes == 1 or run.step % run.study.train.log_every:
        return sigterm.raised
    flag = torch.tensor(float(sigterm.raised), device=run.accelerator.device)
    return run.accelerator.reduce(flag, reduction="sum").item() > 0


def _checkpoint(run: RunState, train_loss: float, scheduled: bool, log: Optional[MetricsLog] = None) -> Path:
    """Measure the validation loss, write the checkpoint (all processes), prune older training state;
    the validation loss goes to ``log``'s trackers."""
    meta = _meta(run, train_loss, scheduled)
    path = ckpt_io.save_checkpoint(run.accelerator, run.model, run.tokenizer, run.run_dir,
                                   run.plan.tokens_at(run.step), meta, run.study.to_yaml())
    if log is not None:
        log.checkpoint(meta)
    if run.accelerator.is_main_process:
        if scheduled:
            ckpt_io.remove_superseded_preemption_saves(run.run_dir, run.step)
        ckpt_io.prune_train_states(run.run_dir, run.plan.keep_state_steps,
                                   keep_all=run.study.checkpoints.keep_train_state == "all")
    return path


def _meta(run: RunState, train_loss: float, scheduled: bool) -> dict:
    """The checkpoint's meta.json, with the validation loss measured now."""
    study, plan, step = run.study, run.plan, run.step
    val = validation_loss(
        run.model, run.val_tokens, plan.context, study.checkpoints.val_tokens, study.checkpoints.val_batch,
        device=run.accelerator.device,
        autocast_dtype=run.compute_dtype if run.compute_dtype != torch.float32 else None,
    )
    if not math.isfinite(val.mean):
        last = ckpt_io.latest_resumable(run.run_dir)
        raise TrainingDiverged(
            f"run {plan.name}: validation loss is {val.mean} at step {step}, not saving; last good checkpoint: "
            f"{last or 'none'} (lower train.optimizer.lr)"
        )
    tokens = plan.tokens_at(step)
    return {
        "study": study.name, "run": plan.name, "size": plan.size_name, "budget_tokens": plan.budget_tokens,
        "step": step, "tokens": tokens, "n_params": run.n_params, "n_params_nonembed": run.n_nonembed,
        "flops": run.flops_per_token * tokens, "train_loss": train_loss, "val_loss": val.mean,
        "val_loss_stderr": val.stderr, "val_tokens": val.n_tokens, "config_hash": study.hash(),
        "context": plan.context, "width": plan.size.width, "depth": plan.size.depth, "heads": plan.size.heads,
        "scheduled": scheduled, "branch_of": plan.branch.trunk if plan.branch else None,
        "world_size": run.accelerator.num_processes, "seed_init": plan.seed.init, "seed_data": plan.seed.data,
    }
