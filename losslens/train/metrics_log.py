"""What the loop reports: the train loss of each log window, kept on the device between log lines,
and ``train_log.jsonl`` (plus the experiment trackers of ``train.trackers``)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from accelerate import Accelerator

from losslens import contracts
from losslens.metrics import bits_per_byte
from losslens.tracking import TOKENS, TrackerRun, Where

if TYPE_CHECKING:
    from losslens.train.loop import RunState


class LossWindow:
    """Micro-batch losses since the last log line, summed on the device so the step never syncs.

    With ``skip_nonfinite`` a NaN/inf micro-batch loss counts in neither the sum nor the count: the
    logged loss is the mean of the losses that were measured, not biased low by zeros.
    """

    def __init__(self, device: torch.device, skip_nonfinite: bool):
        self.sums = torch.zeros(2, device=device)  # [sum of micro-batch losses, how many]
        self.skip_nonfinite = skip_nonfinite
        self.tokens = 0
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        if self.skip_nonfinite:
            finite = torch.isfinite(loss)
            self.sums += torch.stack([torch.where(finite, loss, 0.0), finite.to(loss.dtype)])
        else:
            self.sums[0] += loss
            self.sums[1] += 1

    def restart_clock(self) -> None:
        """Keep time spent outside training steps (saving a checkpoint) out of tokens/s."""
        self.started = time.perf_counter()

    def mean_loss(self, accelerator: Accelerator) -> Optional[float]:
        """The mean micro-batch loss over all processes (a host sync); None if every loss was skipped."""
        total, count = accelerator.reduce(self.sums, reduction="sum").tolist()
        if count == 0:
            return None if self.skip_nonfinite else math.nan
        return total / count

    def tokens_per_s(self) -> float:
        return self.tokens / (time.perf_counter() - self.started)


class MetricsLog:
    """Appends one JSON object per log step to ``train_log.jsonl`` and sends it, with each checkpoint's
    validation loss, to the run's experiment trackers (main process only), against training tokens."""

    def __init__(self, path: Path, enabled: bool, trackers: Optional[TrackerRun] = None,
                 val_counts: Optional[tuple[int, int]] = None):
        self.path, self.enabled = path, enabled
        self.trackers = trackers if enabled and trackers is not None else TrackerRun()
        self.val_counts = val_counts  # tokens and UTF-8 bytes of the validation shard, for bits per byte
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, run: "RunState", data_dir: Path) -> "MetricsLog":
        """The run's log, and its tracker run (started, or resumed by name) in each of ``train.trackers``."""
        study, plan, main = run.study, run.plan, run.accelerator.is_main_process
        names = study.train.tracker_names() if main else []
        trackers = TrackerRun.open(names, Where(study.output_dir, study.name, plan.name), hyperparameters(run))
        data = json.loads((data_dir / contracts.DATA_META_FILE).read_text())
        counts = (data["val_tokens"], data["val_bytes"]) if data.get("val_tokens") and data.get("val_bytes") else None
        return cls(run.run_dir / "train_log.jsonl", main, trackers, counts)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.trackers.log({f"train/{k}": v for k, v in record.items()
                           if k != TOKENS and isinstance(v, (int, float))}, record[TOKENS])  # None: not measured

    def checkpoint(self, meta: dict) -> None:
        """The validation loss (and bits per byte) measured at a checkpoint."""
        values = {"val/loss": meta["val_loss"], "val/loss_stderr": meta["val_loss_stderr"]}
        if self.val_counts:
            values["val/bpb"] = bits_per_byte(meta["val_loss"], *self.val_counts)
        self.trackers.log(values, meta["tokens"])

    def close(self) -> None:
        self.trackers.finish()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def truncate_after(self, step: int) -> None:
        """On resume, drop log lines of steps that are about to be trained again."""
        if not (self.enabled and self.path.is_file()):
            return
        kept = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
        self.path.write_text("".join(l + "\n" for l in kept))


def hyperparameters(run: "RunState") -> dict:
    """What the tracker shows of a run's config: its size, budget, seeds, schedule and batch."""
    study, plan, t = run.study, run.plan, run.study.train
    return {
        "study": study.name, "run": plan.name, "size": plan.size_name, "width": plan.size.width,
        "depth": plan.size.depth, "heads": plan.size.heads, "ffn": plan.size.ffn_width(), "context": plan.context,
        "n_params": run.n_params, "n_params_nonembed": run.n_nonembed, "budget_tokens": plan.budget_tokens,
        "total_steps": plan.total_steps, "seed_init": plan.seed.init, "seed_data": plan.seed.data,
        "branch_of": plan.branch.trunk if plan.branch else "", "global_batch": t.global_batch,
        "micro_batch": t.micro_batch, "lr": t.optimizer.lr, "weight_decay": t.optimizer.weight_decay,
        "grad_clip": t.optimizer.grad_clip, "schedule": t.schedule.kind, "warmup": t.schedule.warmup,
        "min_lr_ratio": t.schedule.min_lr_ratio, "config_hash": study.hash(),
        **({"cooldown": t.schedule.cooldown, "decay_type": t.schedule.decay_type} if t.schedule.kind == "wsd" else {}),
    }
