"""One checkpoint on one task: examples -> requests -> model answers -> per-example metrics -> aggregate.

Also the pretraining loss, measured with the shared :func:`losslens.valloss.validation_loss`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Optional

import numpy as np

from losslens import contracts
from losslens.errors import DataError
from losslens.evaluate import metrics as M
from losslens.evaluate.generation import greedy_generate
from losslens.evaluate.requests import GenerationRequest, encode_pairs
from losslens.evaluate.scoring import Scorer
from losslens.evaluate.tasks import MULTIPLE_CHOICE, PRETRAIN, Task


@dataclass
class TaskSettings:
    """What changes a task's numbers besides the model and the task file (part of the result's fingerprint)."""

    seed: int = 1234
    bootstrap: int = 1000
    confidence: float = 0.95
    max_examples: Optional[int] = None
    max_new_tokens: int = 32


def evaluate_task(scorer: Scorer, task: Task, settings: TaskSettings, per_example: bool = False,
                  progress: bool = False) -> dict:
    """Evaluate ``task`` with ``scorer``'s model; returns the JSON-ready result (aggregates, optional records).

    Per-example records hold the prediction, the reference, the log-likelihoods, and each metric's
    value under its own name (where ``losslens.analyze`` reads them).
    """
    examples = task.examples[: settings.max_examples] if settings.max_examples else task.examples
    if task.kind == MULTIPLE_CHOICE:
        values, records = _multiple_choice(scorer, task, examples, settings, progress)
    else:
        values, records = _generative(scorer, task, examples, settings, progress)
    chance = task.chance_levels(examples)
    out = {"task": task.name, "kind": task.kind, "n_examples": len(examples), "metrics": {}}
    for name in task.metrics:
        agg = M.aggregate(values[name], settings.bootstrap, settings.confidence, settings.seed)
        out["metrics"][name] = {**agg, "chance": chance.get(name)}
    if per_example:
        out["examples"] = records
    return out


def _multiple_choice(scorer: Scorer, task: Task, examples, settings: TaskSettings, progress: bool):
    tok = scorer.tokenizer
    pairs, spans = [], []
    for i, ex in enumerate(examples):
        context = task.fewshot_prefix(i, settings.seed) + ex.context
        spans.append((len(pairs), len(ex.choices), context))
        pairs += [(context, task.separator + c) for c in ex.choices]
    answers = scorer.loglikelihood(encode_pairs(tok, pairs), progress=progress, desc=task.name)

    values: dict[str, list[float]] = {m: [] for m in task.metrics}
    records = []
    for ex, (first, k, context) in zip(examples, spans):
        res = answers[first : first + k]
        ll = np.array([r.loglik for r in res])
        n_tok = [len(r.token_logprobs) for r in res]
        n_bytes = [len(c.encode("utf-8")) for c in ex.choices]
        probs = M.choice_probs(ll)
        a = ex.answer
        per = {
            "acc": M.accuracy(ll, a),
            "acc_norm": M.accuracy_norm(ll, n_bytes, a),
            "prob_correct": float(probs[a]),
            "brier": M.brier_score(probs, a),
            "loglik_token": M.loglik_per_token(ll[a], n_tok[a]),
            "loglik_byte": M.loglik_per_byte(ll[a], n_bytes[a]),
        }
        for m in task.metrics:
            values[m].append(per[m])
        records.append({
            "context": context, "choices": list(ex.choices), "reference": a, "prediction": int(np.argmax(ll)),
            "logliks": ll.tolist(), "n_tokens": n_tok, **{m: per[m] for m in task.metrics},
        })
    return values, records


def _generative(scorer: Scorer, task: Task, examples, settings: TaskSettings, progress: bool):
    tok = scorer.tokenizer
    default_stop = task.stop if task.stop is not None else (task.fewshot_separator,)
    max_new = task.max_new_tokens or settings.max_new_tokens
    prompts = [task.fewshot_prefix(i, settings.seed) + ex.prompt + task.separator for i, ex in enumerate(examples)]
    # Teacher-forced scoring of the reference, and greedy generation, from the same prompt.
    scored = scorer.loglikelihood(encode_pairs(tok, [(p, ex.reference) for p, ex in zip(prompts, examples)]),
                                  progress=progress, desc=task.name)
    gen_requests = [
        GenerationRequest(tuple(ids), ex.stop if ex.stop is not None else default_stop, max_new)
        for ids, ex in zip(tok(prompts)["input_ids"], examples)
    ]
    outputs = greedy_generate(scorer.model, tok, gen_requests, scorer.batch_size, scorer.max_length,
                              scorer.device, progress)

    values: dict[str, list[float]] = {m: [] for m in task.metrics}
    records = []
    for ex, prompt, res, out in zip(examples, prompts, scored, outputs):
        # Edit distance on the stripped texts' tokens, like exact match: 0 exactly when they match.
        pred_ids = tok(out.text.strip(), add_special_tokens=False)["input_ids"]
        ref_ids = tok(ex.reference.strip(), add_special_tokens=False)["input_ids"]
        dist = M.token_edit_distance(pred_ids, ref_ids)
        per = {
            "exact_match": M.exact_match(out.text, ex.reference),
            "token_prob": M.token_prob(res.token_logprobs),
            "loglik_token": M.loglik_per_token(res.loglik, len(res.token_logprobs)),
            "loglik_byte": M.loglik_per_byte(res.loglik, len(ex.reference.encode("utf-8"))),
            "edit_distance": float(dist),
            "edit_distance_norm": dist / max(len(ref_ids), 1),
        }
        for m in task.metrics:
            values[m].append(per[m])
        records.append({
            "prompt": prompt, "prediction": out.text, "reference": ex.reference, "loglik": res.loglik,
            "token_logprobs": res.token_logprobs.tolist(), **{m: per[m] for m in task.metrics},
        })
    return values, records


# ---------------------------------------------------------------- pretraining loss


def read_validation(study_dir: Path) -> tuple[np.ndarray, dict]:
    """The study's validation tokens (``data/val.bin``) and ``data/data.json``."""
    data = Path(study_dir) / contracts.DATA_DIR
    meta_path, shard = data / contracts.DATA_META_FILE, data / contracts.VAL_SHARD
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: missing (the study's data description)")
    try:
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{meta_path}: unreadable ({type(e).__name__}: {e})") from None
    if not shard.is_file():
        raise DataError(f"{shard}: validation shard missing")
    tokens = np.memmap(shard, dtype=dtype, mode="r")
    if "val_tokens" in meta and len(tokens) != meta["val_tokens"]:
        raise DataError(f"{shard}: has {len(tokens)} tokens, {meta_path.name} says {meta['val_tokens']} (truncated?)")
    return tokens, meta


def evaluate_pretrain(model, tokens: np.ndarray, data_meta: dict, seq_len: int, max_tokens: int,
                      batch_size: int, confidence: float, device=None) -> dict:
    """Validation loss (nats/token) with a normal-approximation interval, and bits per byte.

    loss ± z·stderr, with the standard error over validation windows (see losslens.valloss);
    bpb = loss · (val_tokens / val_bytes) / ln 2 with the token/byte ratio of the whole shard.
    """
    from losslens.valloss import validation_loss

    vl = validation_loss(model, tokens, seq_len=seq_len, max_tokens=max_tokens, batch_size=batch_size, device=device)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * vl.stderr if math.isfinite(vl.stderr) else float("nan")
    out = {"task": PRETRAIN, "kind": "pretrain", "n_examples": vl.n_tokens, "stderr": vl.stderr, "metrics": {
        "loss": {"value": vl.mean, "ci_low": vl.mean - half, "ci_high": vl.mean + half, "n": vl.n_tokens, "chance": None},
    }}
    n_tok, n_bytes = data_meta.get("val_tokens"), data_meta.get("val_bytes")
    if n_tok and n_bytes:
        bpb = [M.bits_per_byte(x, n_tok, n_bytes) for x in (vl.mean, vl.mean - half, vl.mean + half)]
        out["metrics"]["bpb"] = {"value": bpb[0], "ci_low": bpb[1], "ci_high": bpb[2], "n": vl.n_tokens, "chance": None}
    return out
