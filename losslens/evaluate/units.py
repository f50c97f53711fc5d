"""Units of evaluation work: what the sweep claims, runs and writes for each checkpoint.

A unit is anything with a ``name`` (its results file, ``RUN_DIR/evals/<run>/<ckpt>/<name>.json``),
a ``fingerprint`` (everything besides the checkpoint that changes its numbers) and
``run(context) -> result``. Three kinds implement it: the pretraining loss (:class:`PretrainUnit`),
losslens' own tasks (:class:`TaskUnit`) and lm-evaluation-harness tasks
(:class:`losslens.evaluate.harness.HarnessTask`). The sweep never tells them apart.

A :class:`CheckpointContext` is what a unit runs against: one checkpoint, its model and tokenizer
loaded on first use and shared by every unit of the checkpoint, and a memo for other per-checkpoint
objects built from them (the harness' model wrapper, say). A checkpoint whose units are all done
loads nothing.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from losslens import contracts
from losslens.errors import CheckpointError
from losslens.evaluate.requests import unknown_characters
from losslens.evaluate.runner import TaskSettings, evaluate_pretrain, evaluate_task
from losslens.evaluate.tasks import Task
from losslens.shards import open_shard, read_data_meta


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fingerprint(obj) -> str:
    """A short hash of a JSON-able description."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunOptions:
    """How units run. Of these only ``dtype`` changes the numbers (:mod:`losslens.evaluate.inputs`)."""

    dtype: str = "float32"
    device: str = "cpu"
    batch_size: int = 32
    per_example: bool = False
    progress: bool = False


def load_checkpoint(ckpt: Path, dtype: str, device: str):
    """Model and tokenizer of a checkpoint, from local files only (safetensors, no remote code)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            ckpt, dtype=getattr(torch, dtype), attn_implementation="sdpa", local_files_only=True,
            trust_remote_code=False, use_safetensors=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(ckpt, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises many types for a broken directory
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{ckpt}: cannot load model or tokenizer ({type(e).__name__}: {first})") from None
    if len(tokenizer) > model.config.vocab_size:  # ids past the embedding would crash or read garbage
        raise CheckpointError(
            f"{ckpt}: the tokenizer has {len(tokenizer)} tokens, more than the model's vocabulary of "
            f"{model.config.vocab_size}"
        )
    return model.to(device).eval(), tokenizer


class CheckpointContext:
    """One checkpoint as the units see it; the model is loaded on first use, once."""

    def __init__(self, ckpt: Path, options: RunOptions):
        self.ckpt, self.options = ckpt, options
        self.loads = 0  # models loaded (0 or 1)
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """A per-checkpoint object, made on first request (and dropped with the model)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @property
    def model(self):
        return self._loaded()[0]

    @property
    def tokenizer(self):
        return self._loaded()[1]

    @property
    def lm(self):
        """The model as a :class:`losslens.evaluate.requests.LanguageModel` (batched, packed scoring)."""
        def make():
            from losslens.evaluate.scoring import Scorer  # torch: only when there is work

            return Scorer(self.model, self.tokenizer, batch_size=self.options.batch_size, device=self.options.device)

        return self.memo("scorer", make)

    def _loaded(self):
        def make():
            self.loads += 1
            return load_checkpoint(self.ckpt, self.options.dtype, self.options.device)

        return self.memo("model", make)

    def close(self) -> None:
        self._memo.clear()
        if self.loads:  # a full collection costs most of a second: only when a model is to be freed
            gc.collect()


class Unit(Protocol):
    """One piece of work per checkpoint; see the module docstring."""

    name: str
    fingerprint: str
    has_examples: bool  # its results carry per-example records when asked for

    def run(self, context: CheckpointContext) -> dict: ...


class PretrainUnit:
    """The pretraining loss: validation cross-entropy and bits per byte on the study's held-out shard,
    in windows of the context each checkpoint was trained at (its ``meta.json``)."""

    name = contracts.PRETRAIN_TASK
    has_examples = False

    def __init__(self, study_dir: Path, seq_len: int, max_tokens: int, confidence: float):
        self.data_dir = Path(study_dir) / contracts.DATA_DIR
        self.seq_len, self.max_tokens, self.confidence = seq_len, max_tokens, confidence  # seq_len: when meta has none
        self.fingerprint = fingerprint({"unit": self.name, "val_tokens": max_tokens, "default_seq_len": seq_len,
                                        "confidence": confidence, "data": self._data_digest()})
        self._validation: Optional[tuple] = None

    def _data_digest(self) -> Optional[str]:
        """The validation shard's bytes and data.json: other tokens of the same length are other data."""
        h = hashlib.sha256()
        for name in (contracts.DATA_META_FILE, contracts.VAL_SHARD):
            path = self.data_dir / name
            if not path.is_file():
                return None  # refused when the unit runs (open_shard names the missing file)
            with open(path, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        return h.hexdigest()[:16]

    def run(self, context: CheckpointContext) -> dict:
        if self._validation is None:  # read once per sweep, on first need
            self._validation = (open_shard(self.data_dir, contracts.VAL_SHARD), read_data_meta(self.data_dir))
        tokens, meta = self._validation
        o = context.options
        seq_len = contracts.read_meta(context.ckpt).get("context") or self.seq_len
        return evaluate_pretrain(context.model, tokens, meta, int(seq_len), self.max_tokens, o.batch_size,
                                 self.confidence, o.device)


class TaskUnit:
    """One of losslens' own tasks (:mod:`losslens.evaluate.tasks`)."""

    has_examples = True

    def __init__(self, task: Task, settings: TaskSettings, log: Callable[[str], None] = _log):
        self.task, self.settings, self.log = task, settings, log
        self.name = task.name
        self.fingerprint = fingerprint({"task": task.fingerprint, "settings": asdict(settings)})
        self._characters_checked = False

    def run(self, context: CheckpointContext) -> dict:
        o = context.options
        if not self._characters_checked:  # once per task: the checkpoints of a study share a tokenizer
            self._characters_checked = True
            self._warn_unknown_characters(context.tokenizer)
        return evaluate_task(context.lm, self.task, self.settings, per_example=o.per_example, progress=o.progress)

    def _warn_unknown_characters(self, tokenizer) -> None:
        """Characters the tokenizer cannot encode are all scored as one unknown token: say so, in one line."""
        unknown = unknown_characters(tokenizer, self.task.characters())
        if unknown:
            shown = ", ".join(repr(ch) for ch, _ in unknown.most_common(5))
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            self.log(f"warning: task {self.name!r} ({self.task.source}): {unknown.total()} characters map to the "
                     f"tokenizer's unknown token {tokenizer.unk_token!r}, so they are scored as one another: "
                     f"{shown}{more}")
