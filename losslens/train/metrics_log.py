"""What the loop reports: the train loss of each log window, kept on the device between log lines,
and ``train_log.jsonl`` (plus TensorBoard, if asked)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator

from losslens.errors import LossLensError


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
