"""The training loop: one run of the grid, on accelerate (1 process, DDP, FSDP or DeepSpeed ZeRO).

Read ``train_run`` top to bottom: set-up, resume, then the step. The step does no host sync except at
log intervals and checkpoints (losses accumulate on the device and are read every ``log_every`` steps).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs
from tqdm.auto import tqdm

from losslens import contracts
from losslens.config import StudyConfig, format_count
from losslens.errors import CheckpointError, LossLensError
from losslens.train import checkpoint as ckpt_io
from losslens.train.data import TokenStream, load_tokenizer, open_shard
from losslens.train.mfu import device_peak_flops, mfu
from losslens.train.model import build_model, flops_per_token, parameter_counts
from losslens.train.plan import RunPlan
from losslens.train.schedule import build_scheduler
from losslens.valloss import validation_loss


class TrainingDiverged(LossLensError):
    """The loss became NaN or infinite."""


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was saved and the process should exit."""


@dataclass
class RunSummary:
    run: str
    steps: int
    tokens: int
    final_checkpoint: Path
    resumed_from: Optional[int]


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


class MetricsLog:
    """Appends one JSON object per log step to ``train_log.jsonl`` (and TensorBoard, if asked)."""

    def __init__(self, path: Path, enabled: bool, tensorboard: bool):
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise LossLensError("train.tensorboard: install the extra: pip install 'losslens[tensorboard]'") from None
            self.tb = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and value is not None:
                    self.tb.add_scalar(key, value, record["step"])

    def truncate_after(self, step: int) -> None:
        """On resume, drop log lines of steps that are about to be trained again."""
        if not (self.enabled and self.path.is_file()):
            return
        kept = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
        self.path.write_text("".join(l + "\n" for l in kept))


def train_run(study: StudyConfig, plan: RunPlan, accelerator: Accelerator, data_dir: Path) -> RunSummary:
    t = study.train
    out_dir = study.output_dir
    run_dir = out_dir / plan.name
    device = accelerator.device
    if t.threads:
        torch.set_num_threads(t.threads)

    # ---- data, model, optimizer ------------------------------------------------------------
    data_meta = json.loads((data_dir / contracts.DATA_META_FILE).read_text())
    tokenizer = load_tokenizer(data_dir)
    stream = TokenStream(open_shard(data_dir, contracts.TRAIN_SHARD), plan.context, study.seed)
    val_tokens = open_shard(data_dir, contracts.VAL_SHARD)
    vocab = data_meta["vocab_size"]
    model = build_model(plan.size, study.model, vocab, data_meta["eos_id"], seed=study.seed)
    n_params, n_nonembed = parameter_counts(model)
    fpt = flops_per_token(n_nonembed, plan.size.width, plan.size.depth, plan.context, vocab)
    model.to(device)
    optimizer = build_optimizer(model, study, device)
    scheduler = build_scheduler(optimizer, t.schedule, plan)
    if t.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    compute_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    peak = device_peak_flops(device, compute_dtype, t.peak_flops)

    # ---- resume: our own latest checkpoint, else (a WSD branch) the trunk's branch point -----
    resumed_from = None
    start_ckpt = ckpt_io.latest_resumable(run_dir)
    if start_ckpt is None and plan.branch is not None:
        start_ckpt = out_dir / plan.branch.trunk / contracts.checkpoint_dirname(plan.branch.step * plan.tokens_per_step)
        if not ckpt_io.has_train_state(start_ckpt):
            raise CheckpointError(
                f"{start_ckpt}: run {plan.name} branches from run {plan.branch.trunk} at step {plan.branch.step}; "
                f"train {plan.branch.trunk} first (losslens train ... --run {plan.branch.trunk})"
            )
    step = 0
    if start_ckpt is not None:
        meta = contracts.read_meta(start_ckpt)
        if meta.get("config_hash") != study.hash():
            raise CheckpointError(f"{start_ckpt}: was trained with a different study config; use a new out_dir")
        step = resumed_from = ckpt_io.load_train_state(accelerator, start_ckpt)
        with warnings.catch_warnings():  # LR schedule of step s is a function of s alone
            warnings.simplefilter("ignore")
            for _ in range(step):
                scheduler.step()
    if step >= plan.total_steps:
        return RunSummary(plan.name, step, plan.tokens_at(step), start_ckpt, resumed_from)

    # ---- the loop --------------------------------------------------------------------------
    log = MetricsLog(run_dir / "train_log.jsonl", accelerator.is_main_process, t.tensorboard)
    log.truncate_after(step)
    accum = accelerator.gradient_accumulation_steps
    rank, world = accelerator.process_index, accelerator.num_processes
    loss_sum = torch.zeros((), device=device)  # summed micro-batch losses since the last log
    losses_in_window, tokens_in_window, skipped_steps = 0, 0, 0
    clip, skip_nonfinite = t.optimizer.grad_clip, t.on_nonfinite == "skip"
    last_train_loss = float("nan")
    grad_norm = torch.zeros((), device=device)
    checkpoint_steps = set(plan.checkpoint_steps)
    progress = tqdm(total=plan.total_steps, initial=step, desc=plan.name, unit="step",
                    disable=not accelerator.is_main_process, dynamic_ncols=True)
    model.train()
    window_start = time.perf_counter()

    with _SigtermFlag() as sigterm, progress:
        while step < plan.total_steps:
            for micro in range(accum):
                batch = stream.micro_batch(step, t.global_batch, t.micro_batch, micro, rank, world).to(device)
                with accelerator.accumulate(model):
                    logits = model(input_ids=batch[:, :-1]).logits
                    loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and (clip or skip_nonfinite):
                        norm = accelerator.clip_grad_norm_(model.parameters(), clip or math.inf)
                        grad_norm = norm if norm is not None else grad_norm
                        if skip_nonfinite and not torch.isfinite(grad_norm):  # a host sync, by request
                            skipped_steps += 1
                            optimizer.zero_grad(set_to_none=True)
                            continue  # no update from this step's batch
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach() if not skip_nonfinite else torch.nan_to_num(loss.detach(), 0.0, 0.0, 0.0)
            scheduler.step()
            step += 1
            losses_in_window += accum
            tokens_in_window += plan.tokens_per_step
            progress.update(1)

            is_checkpoint = step in checkpoint_steps
            if step % t.log_every == 0 or is_checkpoint or step == plan.total_steps:
                mean_loss = accelerator.reduce(loss_sum, reduction="mean").item() / losses_in_window
                if not math.isfinite(mean_loss):
                    last = ckpt_io.latest_resumable(run_dir)
                    raise TrainingDiverged(
                        f"run {plan.name}: loss is {mean_loss} at step {step}; last good checkpoint: "
                        f"{last or 'none'} (lower train.optimizer.lr, or set train.on_nonfinite: skip)"
                    )
                elapsed = time.perf_counter() - window_start
                tokens_per_s = tokens_in_window / elapsed
                utilisation = mfu(fpt, tokens_per_s / world, peak)
                last_train_loss = mean_loss
                log.write({
                    "step": step, "tokens": plan.tokens_at(step), "loss": mean_loss,
                    "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                    "tokens_per_s": tokens_per_s, "mfu": utilisation, "skipped_steps": skipped_steps,
                })
                progress.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
                loss_sum.zero_()
                losses_in_window = tokens_in_window = 0
                window_start = time.perf_counter()

            stop = sigterm.raised
            if world > 1 and step % t.log_every == 0:
                flag = torch.tensor(float(stop), device=device)
                stop = accelerator.reduce(flag, reduction="sum").item() > 0
            if is_checkpoint or stop:
                path = _save(accelerator, model, tokenizer, study, plan, step, val_tokens, last_train_loss,
                             n_params, n_nonembed, fpt, compute_dtype)
                if accelerator.is_main_process:
                    if is_checkpoint:
                        ckpt_io.remove_superseded_preemption_saves(run_dir, step)
                    ckpt_io.prune_train_states(run_dir, plan.keep_state_steps,
                                               keep_all=study.checkpoints.keep_train_state == "all")
                window_start = time.perf_counter()  # keep saving time out of tokens/s
                if stop:
                    raise Preempted(f"run {plan.name}: SIGTERM at step {step}; saved {path}")
    final = run_dir / contracts.checkpoint_dirname(plan.tokens_at(plan.total_steps))
    return RunSummary(plan.name, step, plan.tokens_at(step), final, resumed_from)


def _save(accelerator, model, tokenizer, study, plan, step, val_tokens, train_loss, n_params, n_nonembed,
          fpt, compute_dtype) -> Path:
    """Measure the validation loss and write the checkpoint (all processes)."""
    val = validation_loss(
        model, val_tokens, plan.context, study.checkpoints.val_tokens, study.checkpoints.val_batch,
        device=accelerator.device, autocast_dtype=compute_dtype if compute_dtype != torch.float32 else None,
    )
    if not math.isfinite(val.mean):
        last = ckpt_io.latest_resumable(study.output_dir / plan.name)
        raise TrainingDiverged(
            f"run {plan.name}: validation loss is {val.mean} at step {step}, not saving; last good checkpoint: "
            f"{last or 'none'} (lower train.optimizer.lr)"
        )
    tokens = plan.tokens_at(step)
    meta = {
        "study": study.name, "run": plan.name, "size": plan.size_name, "budget_tokens": plan.budget_tokens,
        "step": step, "tokens": tokens, "n_params": n_params, "n_params_nonembed": n_nonembed,
        "flops": fpt * tokens, "train_loss": train_loss, "val_loss": val.mean, "val_loss_stderr": val.stderr,
        "val_tokens": val.n_tokens, "config_hash": study.hash(), "context": plan.context,
        "width": plan.size.width, "depth": plan.size.depth, "heads": plan.size.heads,
        "scheduled": step in plan.checkpoint_steps, "branch_of": plan.branch.trunk if plan.branch else None,
        "world_size": accelerator.num_processes,
    }
    return ckpt_io.save_checkpoint(accelerator, model, tokenizer, study.output_dir / plan.name, tokens, meta,
                                   study.to_yaml())
