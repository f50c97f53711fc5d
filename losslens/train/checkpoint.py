"""Checkpoints: a self-contained Hugging Face model directory plus the state for an exact resume.

Layout of ``RUN_DIR/<run>/ckpt-<tokens>/``::

    config.json, model.safetensors, generation_config.json   the model (AutoModelForCausalLM)
    tokenizer.json, tokenizer_config.json                     the tokenizer (AutoTokenizer)
    meta.json                                                 run, step, tokens, sizes, FLOPs, losses
    study.yaml                                                the resolved study config
    train_state/                                              accelerate state: weights, optimizer,
                                                              scheduler, RNG; trainer_state.json

All processes write into ``.tmp-ckpt-<tokens>`` (DeepSpeed needs every rank for its shards); the main
process then fsyncs it and renames it into place, so a checkpoint is either complete or absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from accelerate import Accelerator
from transformers.utils import logging as hf_logging

from losslens import contracts
from losslens.errors import CheckpointError
from losslens.fsio import TMP_PREFIX, apply_umask, atomic_write_json, atomic_write_text, publish_directory

TRAINER_STATE = "trainer_state.json"


def save_checkpoint(
    accelerator: Accelerator,
    model,
    tokenizer,
    run_dir: Path,
    tokens: int,
    meta: dict,
    study_yaml: str,
) -> Path:
    """Write a checkpoint atomically; every process must call this."""
    hf_logging.disable_progress_bar()  # one bar per saved shard is noise in the training bar
    final = run_dir / contracts.checkpoint_dirname(tokens)
    tmp = run_dir / f"{TMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a killed writer
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()

    try:
        accelerator.save_state(str(tmp / contracts.TRAIN_STATE_DIR))
        state_dict = accelerator.get_state_dict(model)  # gathers shards on every rank (ZeRO-3, FSDP)
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            atomic_write_text(tmp / contracts.STUDY_FILE, study_yaml)
            atomic_write_json(tmp / contracts.TRAIN_STATE_DIR / TRAINER_STATE, {"step": meta["step"], "tokens": tokens})
            atomic_write_json(tmp / contracts.META_FILE, meta)  # written last: its presence marks completeness
            apply_umask(tmp)  # safetensors writes model.safetensors 0600
            publish_directory(tmp, final)
    except (OSError, RuntimeError) as e:  # disk full, quota, permissions (torch.save raises RuntimeError)
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[0]
        raise CheckpointError(f"{final}: cannot write checkpoint ({reason}); earlier checkpoints are intact") from None
    accelerator.wait_for_everyone()
    return final


def has_train_state(ckpt: Path) -> bool:
    return (ckpt / contracts.TRAIN_STATE_DIR / TRAINER_STATE).is_file()


def latest_resumable(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint of a run that still has its training state."""
    for ckpt in reversed(contracts.list_checkpoints(run_dir)):
        if has_train_state(ckpt):
            return ckpt
    return None


def load_train_state(accelerator: Accelerator, ckpt: Path) -> int:
    """Restore model, optimizer, scheduler and RNG from ``ckpt``; returns its step."""
    state_dir = ckpt / contracts.TRAIN_STATE_DIR
    try:
        step = json.loads((state_dir / TRAINER_STATE).read_text())["step"]
        accelerator.load_state(str(state_dir))
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{state_dir}: cannot resume from this training state ({type(e).__name__}: {e})") from None
    return int(step)


def prune_train_states(run_dir: Path, keep_steps: tuple[int, ...], keep_all: bool) -> None:
    """Drop the optimizer state of all but the newest checkpoint (and those other runs branch from)."""
    if keep_all:
        return
    ckpts = [c for c in contracts.list_checkpoints(run_dir) if has_train_state(c)]
    for ckpt in ckpts[:-1]:
        if contracts.read_meta(ckpt)["step"] not in keep_steps:
            # Remove the marker first: a half-deleted state must never look resumable.
            (ckpt / contracts.TRAIN_STATE_DIR / TRAINER_STATE).unlink(missing_ok=True)
            shutil.rmtree(ckpt / contracts.TRAIN_STATE_DIR, ignore_errors=True)


def remove_checkpoint(ckpt: Path) -> None:
    """Delete a checkpoint; its meta.json goes first, so a half-deleted one is never listed."""
    (ckpt / contracts.META_FILE).unlink(missing_ok=True)
    shutil.rmtree(ckpt, ignore_errors=True)


def remove_superseded_preemption_saves(run_dir: Path, step: int) -> None:
    """Pre-emption saves fall between scheduled checkpoints; drop them once a later scheduled one exists."""
    for ckpt in contracts.list_checkpoints(run_dir):
        meta = contracts.read_meta(ckpt)
        if not meta.get("scheduled", True) and meta["step"] < step:
            remove_checkpoint(ckpt)
