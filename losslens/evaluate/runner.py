"""One checkpoint on one task: examples -> requests -> model answers -> outcomes -> per-example metrics -> aggregate.

A task kind's *observer* turns its examples into requests (:mod:`losslens.evaluate.requests`), has
the model answer them, and returns one outcome per example (:class:`losslens.metrics.ChoiceOutcome`,
:class:`losslens.metrics.GenerationOutcome`) with a record for the per-example file. Each metric of
the task then reads the outcomes through its registry entry (:data:`losslens.metrics.METRICS`).

Also the pretraining loss, measured with the shared :func:`losslens.valloss.validation_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from losslens.contracts import PRETRAIN_TASK
from losslens.evaluate.requests import GenerationRequest, LanguageModel, encode_pairs
from losslens.evaluate.tasks import Example, Task
from losslens.metrics import (GENERATIVE, METRICS, MULTIPLE_CHOICE, ChoiceOutcome, GenerationOutcome, aggregate,
                              bits_per_byte, normal_interval)


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
    outcomes, records = OBSERVERS[task.kind](lm, task, examples, settings, progress)
    values = {m: [METRICS[m].per_example(o) for o in outcomes] for m in task.metrics}
    chance = task.chance_levels(examples)
    out = {"task": task.name, "kind": task.kind, "n_examples": len(examples), "metrics": {}}
    for name in task.metrics:
        agg = aggregate(values[name], settings.bootstrap, settings.confidence, settings.seed)
        out["metrics"][name] = {**agg, "chance": chance.get(name)}
    if per_example:
        out["examples"] = [{**rec, **{m: values[m][i] for m in task.metrics}} for i, rec in enumerate(records)]
    return out


def _observe_choices(lm: LanguageModel, task: Task, examples: list[Example], settings: TaskSettings,
                     progress: bool) -> tuple[list[ChoiceOutcome], list[dict]]:
    """Score every choice after its context (few-shot prefix included): one loglikelihood request per choice."""
    pairs, contexts = [], []
    for i, ex in enumerate(examples):
        contexts.append(task.fewshot_prefix(i, settings.seed) + ex.context)
        pairs += [(contexts[-1], task.options.separator + c) for c in ex.choices]
    answers = iter(lm.loglikelihood(encode_pairs(lm.tokenizer, pairs), progress=progress, desc=task.name))
    outcomes, records = [], []
    for ex, context in zip(examples, contexts):
        res = [next(answers) for _ in ex.choices]
        o = ChoiceOutcome(np.array([r.loglik for r in res]), tuple(len(r.token_logprobs) for r in res),
                          tuple(len(c.encode("utf-8")) for c in ex.choices), ex.answer)
        outcomes.append(o)
        records.append({"context": context, "choices": list(ex.choices), "reference": ex.answer,
                        "prediction": int(np.argmax(o.logliks)), "logliks": o.logliks.tolist(),
                        "n_tokens": list(o.n_tokens)})
    return outcomes, records


def _observe_generations(lm: LanguageModel, task: Task, examples: list[Example], settings: TaskSettings,
                         progress: bool) -> tuple[list[GenerationOutcome], list[dict]]:
    """Greedy generation from each prompt, and teacher-forced scoring of the reference from the same prompt."""
    tok, o = lm.tokenizer, task.options
    default_stop = tuple(o.stop) if o.stop is not None else (o.fewshot_separator,)
    prompts = [task.fewshot_prefix(i, settings.seed) + ex.prompt + o.separator for i, ex in enumerate(examples)]
    scored = lm.loglikelihood(encode_pairs(tok, [(p, ex.reference) for p, ex in zip(prompts, examples)]),
                              progress=progress, desc=task.name)
    max_new = o.max_new_tokens or settings.max_new_tokens
    outputs = lm.generate_until([
        GenerationRequest(tuple(ids), ex.stop if ex.stop is not None else default_stop, max_new)
        for ids, ex in zip(tok(prompts)["input_ids"], examples)
    ], progress=progress)
    outcomes, records = [], []
    for ex, prompt, res, out in zip(examples, prompts, scored, outputs):
        # Edit distance on the stripped texts' tokens, like exact match: 0 exactly when they match.
        pred_ids = tok(out.text.strip(), add_special_tokens=False)["input_ids"]
        ref_ids = tok(ex.reference.strip(), add_special_tokens=False)["input_ids"]
        outcomes.append(GenerationOutcome(out.text, ex.reference, res.loglik, res.token_logprobs,
                                          tuple(pred_ids), tuple(ref_ids)))
        records.append({"prompt": prompt, "prediction": out.text, "reference": ex.reference, "loglik": res.loglik,
                        "token_logprobs": res.token_logprobs.tolist()})
    return outcomes, records


# A task kind's observer: (model, task, examples, settings, progress) -> (outcomes, per-example records).
OBSERVERS: dict[str, Callable[..., tuple[list, list[dict]]]] = {
    MULTIPLE_CHOICE: _observe_choices,
    GENERATIVE: _observe_generations,
}


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
