"""Everything an evaluation result depends on, listed in one place: its fingerprint covers all of it.

A result (``evals/<run>/<ckpt>/<unit>.json``) is up to date only while every one of its inputs is what
it was when the result was computed:

- the checkpoint: its ``meta.json`` (run, step, tokens, the context it was trained at), its weights,
  and every other file a model or tokenizer is loaded from (``config.json``, the tokenizer files):
  :func:`losslens.evaluate.weights.checkpoint_fingerprint`;
- the unit's own data and settings (``Unit.fingerprint``): for the pretraining loss the bytes of the
  validation shard and ``data.json``, the number of validation tokens and the confidence level; for a
  task its files' contents and every option (few-shot, seed, bootstrap, max examples, ...); for a
  harness task the lm-eval version and its resolved configs;
- the evaluation settings that change numbers whatever the unit: ``eval.dtype`` (the model is loaded
  in it).

Not inputs, because results do not depend on them: the batch size (scores are computed sequence by
sequence), the device, progress bars, whether per-example records are kept (checked separately).
"""

from __future__ import annotations

from losslens.evaluate.units import RunOptions, Unit, fingerprint


def result_inputs(ckpt_hash: str, unit: Unit, options: RunOptions) -> dict:
    """The inputs of one unit's result on one checkpoint (see the module docstring)."""
    return {"checkpoint": ckpt_hash, "unit": unit.fingerprint, "dtype": options.dtype}


def result_fingerprint(ckpt_hash: str, unit: Unit, options: RunOptions) -> str:
    return fingerprint(result_inputs(ckpt_hash, unit, options))
