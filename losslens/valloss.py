"""Validation loss: the one measurement that training (at save time) and evaluation share.

Both stages call :func:`validation_loss` on the same held-out tokens, so the value recorded in a
checkpoint's ``meta.json`` and the value recomputed later from the saved weights agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ValLoss:
    mean: float  # nats per token
    stderr: float  # standard error of the mean, over sequences
    n_tokens: int  # predicted tokens behind the mean


def validation_windows(tokens: np.ndarray, seq_len: int, max_tokens: int) -> np.ndarray:
    """The first ``max_tokens`` predicted tokens of ``tokens`` cut into windows of ``seq_len + 1``.

    Windows are disjoint in their targets (each token is predicted once) and always the same for a
    given shard, ``seq_len`` and ``max_tokens``: every checkpoint is scored on identical tokens.
    """
    n_windows = min((len(tokens) - 1) // seq_len, max(1, max_tokens // seq_len))
    if n_windows < 1:
        raise ValueError(f"validation shard has {len(tokens)} tokens, fewer than one window of {seq_len + 1}")
    idx = np.arange(n_windows)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return np.asarray(tokens[idx], dtype=np.int64)


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    max_tokens: int,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> ValLoss:
    """Mean next-token cross-entropy (nats) of ``model`` on held-out ``tokens``.

    Computed in float32 from the logits, sequence by sequence, so that the result does not depend on
    ``batch_size``. The standard error treats each window's mean loss as one sample.
    """
    windows = validation_windows(tokens, seq_len, max_tokens)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_window = []
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(windows[start : start + batch_size]).to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=inputs).logits
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        per_window.append(nll.mean(dim=1).double().cpu())
    model.train(was_training)
    losses = torch.cat(per_window).numpy()
    stderr = float(losses.std(ddof=1) / math.sqrt(len(losses))) if len(losses) > 1 else float("nan")
    return ValLoss(mean=float(losses.mean()), stderr=stderr, n_tokens=int(windows.shape[0] * seq_len))
