"""One checkpoint on one task: examples -> requests -> model answers -> outcomes -> per-example metrics -> aggregate.

The task kind's observer (:mod:`losslens.evaluate.kinds`) turns the examples into requests, has the
model answer them and returns one outcome per example with a record for the per-example file; each
metric of the task then reads the outcomes through its registry entry (:data:`losslens.metrics.METRICS`).

Also the pretraining loss, measured with the shared :func:`losslens.valloss.validation_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from losslens.contracts import PRETRAIN_TASK
from losslens.evaluate.kinds import TASK_KINDS
from losslens.evaluate.requests import LanguageModel
from losslens.evaluate.tasks import Task
from losslens.metrics import METRICS, aggregate, bits_per_byte, normal_interval


@dataclass
class TaskSettings:
    """What changes a task's numbers besides the model and the task file (part of the result's fingerprint)."""

    seed: int = 1234
    bootstrap: int = 1000
    confidence: float = 0.95
    max_examples: Optional[int] = None
    max_new_tokens: int = 32


def evaluate_task(lm: LanguageModel, task: Task, settings: TaskSettings, per_example: bool = False,
                  progress: bool = False) -> dict:
    """Evaluate ``task`` with the model behind ``lm``; returns the JSON-ready result (aggregates, optional records).

    Per-example records hold the prediction, the reference, the log-likelihoods, and each metric's
    value under its own name (where ``losslens.analyze`` reads them).
    """
    examples = task.examples[: settings.max_examples] if settings.max_examples else task.examples
    outcomes, records = TASK_KINDS[task.kind].observe(lm, task, examples, settings, progress)
    values = {m: [METRICS[m].per_example(o) for o in outcomes] for m in task.metrics}
    chance = task.chance_levels(examples)
    out = {"task": task.name, "kind": task.kind, "n_examples": len(examples), "metrics": {}}
    for name in task.metrics:
        agg = aggregate(values[name], settings.bootstrap, settings.confidence, settings.seed)
        out["metrics"][name] = {**agg, "chance": chance.get(name)}
    if per_example:
        out["examples"] = [{**rec, **{m: values[m][i] for m in task.metrics}} for i, rec in enumerate(records)]
    return out


# ---------------------------------------------------------------- pretraining loss


def evaluate_pretrain(model, tokens: np.ndarray, data_meta: dict, seq_len: int, max_tokens: int,
                      batch_size: int, confidence: float, device=None) -> dict:
    """Validation loss (nats/token) with a normal-approximation interval, and bits per byte.

    loss ± z·stderr, with the standard error over validation windows (see losslens.valloss);
    bpb = loss · (val_tokens / val_bytes) / ln 2 with the token/byte ratio of the whole shard.
    """
    from losslens.valloss import validation_loss

    vl = validation_loss(model, tokens, seq_len=seq_len, max_tokens=max_tokens, batch_size=batch_size, device=device)
    low, high = normal_interval(vl.mean, vl.stderr, confidence)
    out = {"task": PRETRAIN_TASK, "kind": PRETRAIN_TASK, "n_examples": vl.n_tokens, "stderr": vl.stderr, "metrics": {
        "loss": {"value": vl.mean, "ci_low": low, "ci_high": high, "n": vl.n_tokens, "chance": None},
    }}
    n_tok, n_bytes = data_meta.get("val_tokens"), data_meta.get("val_bytes")
    if n_tok and n_bytes:
        bpb = [bits_per_byte(x, n_tok, n_bytes) for x in (vl.mean, low, high)]
        out["metrics"]["bpb"] = {"value": bpb[0], "ci_low": bpb[1], "ci_high": bpb[2], "n": vl.n_tokens, "chance": None}
    return out
