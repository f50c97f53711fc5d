"""Harness tasks on losslens' scorer: lm-eval defines the task and computes its metrics, losslens answers.

lm-evaluation-harness stays the task library: its ``TaskManager`` loads the task, the task builds its
``Instance``s (documents, ``doc_to_text``/``doc_to_choice``/``doc_to_target``, ``target_delimiter``,
few-shot sampling with simple_evaluate's seed, the description), and lm-eval's own ``evaluate``
applies the task's filters, its ``process_results`` and its aggregations (groups included). Only the
model calls change: :class:`ScorerLM` answers ``loglikelihood`` requests with losslens' batched,
shared-context :class:`~losslens.evaluate.scoring.Scorer` and ``generate_until`` requests with its
greedy decoder, so ``acc``, ``acc_norm`` and ``acc_mutual_info`` are the harness' numbers.

Requests are built once per task version (:func:`prepare`): the task's ``build_all_requests`` is
replaced on the loaded task object by one that hands back the same instances with their answers
cleared, so every checkpoint reuses them, and they are kept as JSON under
``RUN_DIR/evals/.harness-requests/<fingerprint>.json`` for later sweeps.

Beside the harness' metrics, every multiple-choice task gets losslens' continuous metrics
(``prob_correct``, ``brier``, ``loglik_token``, ``loglik_byte``) and every generative task
``token_prob``, ``loglik_token``, ``loglik_byte`` and the edit distances against its first reference
(scored after the context with the task's ``target_delimiter``), from :data:`losslens.metrics.METRICS`.

What the native path does not do (:func:`unsupported`): ``loglikelihood_rolling``, sampling or
repeated generation, and a custom ``process_results`` for a multiple-choice task. Such a task
runs through ``lm_eval.simple_evaluate`` instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lm_eval.api.model import LM

from losslens.evaluate.requests import GenerationRequest, LanguageModel, LoglikelihoodResult, encode_pairs
from losslens.fsio import atomic_write_text
from losslens.metrics import (GENERATIVE, METRICS, MULTIPLE_CHOICE, ChoiceOutcome, GenerationOutcome, aggregate,
                              chance_levels)

FEWSHOT_SEED = 1234  # simple_evaluate's default fewshot_random_seed: the same shots as the harness draws
CONTINUOUS = {MULTIPLE_CHOICE: ("prob_correct", "brier", "loglik_token", "loglik_byte"),
              GENERATIVE: ("token_prob", "loglik_token", "loglik_byte", "edit_distance", "edit_distance_norm")}


def unsupported(task) -> Optional[str]:
    """Why the native path cannot run this lm-eval task object, or None when it can."""
    output_type = task.get_config("output_type")
    if output_type == "loglikelihood_rolling":
        return "loglikelihood_rolling requests"
    if output_type == "multiple_choice" and task.get_config("process_results") is not None:
        return "a custom process_results for a multiple-choice task"
    if output_type == "generate_until":
        kwargs = task.get_config("generation_kwargs") or {}
        if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0) > 0:
            return "sampled generation"
    if (task.get_config("repeats") or 1) > 1:
        return "repeated requests"
    return None


def prepare(loaded: dict, limit: Optional[int], cache: Optional[Path] = None) -> None:
    """Set the loaded tasks up as simple_evaluate does, and give each the requests it builds, once.

    ``cache`` (a JSON file named by the unit's fingerprint) keeps the requests between sweeps: a
    later sweep of the same task version reads them instead of building them again.
    """
    from lm_eval.evaluator_utils import get_sample_size

    cached = _read_cache(cache)
    built_now = {}
    for name, task in loaded["tasks"].items():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
        n = get_sample_size(task, limit)
        if name in cached:
            built = _instances(name, task, cached[name], n)
        else:
            task.build_all_requests(limit=n, rank=0, world_size=1)
            built = built_now[name] = list(task.instances)
        _reuse(task, built)
    if cache is not None and built_now and not cached:
        _write_cache(cache, built_now)


def _reuse(task, built: list) -> None:
    """From now on the task's ``build_all_requests`` hands back ``built`` with the answers cleared."""
    def reuse(*_, **__):
        for inst in built:  # a fresh answer per checkpoint, on the same requests
            inst.resps.clear()
            inst.filtered_resps.clear()
        task._instances = built

    task.build_all_requests = reuse


def _read_cache(cache: Optional[Path]) -> dict:
    try:
        return json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    except (OSError, ValueError):  # our own file, half-written by an older version: build again
        return {}


def _write_cache(cache: Path, built: dict[str, list]) -> None:
    rows = {name: [{"type": i.request_type, "doc_id": i.doc_id, "idx": i.idx, "arguments": list(i.arguments)}
                   for i in instances] for name, instances in built.items()}
    try:
        text = json.dumps(rows)
    except TypeError:  # arguments that are not plain data (rare generation settings): no cache
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, text)


def _instances(name: str, task, rows: list[dict], limit: Optional[int]) -> list:
    """The cached requests as lm-eval ``Instance``s, each with its document."""
    from lm_eval.api.instance import Instance

    docs = dict(task.doc_iterator(rank=0, limit=limit, world_size=1))
    repeats = task.get_config("repeats") or 1
    return [Instance(request_type=r["type"], doc=docs[r["doc_id"]], arguments=tuple(r["arguments"]), idx=r["idx"],
                     metadata=(name, r["doc_id"], repeats)) for r in rows]


class ScorerLM(LM):
    """A :class:`~losslens.evaluate.requests.LanguageModel` as lm-eval's ``LM``; remembers each scored request."""

    def __init__(self, lm: LanguageModel, progress: bool = False):
        super().__init__()
        self.lm, self.progress = lm, progress
        self.scored: dict[tuple[str, str], LoglikelihoodResult] = {}

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return [(r.loglik, r.is_greedy) for r in self.score([req.args for req in requests])]

    def score(self, pairs: list[tuple[str, str]]) -> list[LoglikelihoodResult]:
        results = self.lm.loglikelihood(encode_pairs(self.lm.tokenizer, pairs), progress=self.progress,
                                        desc="lm-eval")
        self.scored.update(zip(pairs, results))
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        tok = self.lm.tokenizer
        contexts = [req.args[0] for req in requests]
        asks = []
        for ids, req in zip(tok(contexts)["input_ids"], requests):
            kwargs = req.args[1]
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            asks.append(GenerationRequest(tuple(ids), tuple(until), int(kwargs.get("max_gen_toks", 256))))
        return [out.text for out in self.lm.generate_until(asks, progress=self.progress)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("loglikelihood_rolling tasks run through simple_evaluate (see unsupported())")


def evaluate_native(loaded: dict, lm: LanguageModel, settings: dict, progress: bool) -> tuple[dict, ScorerLM]:
    """lm-eval's ``evaluate`` on the prepared tasks, answered by losslens; its output as simple_evaluate's."""
    from lm_eval.evaluator import evaluate

    scorer = ScorerLM(lm, progress)
    out = evaluate(lm=scorer, task_dict=loaded, limit=settings["limit"],
                   bootstrap_iters=settings["bootstrap"], log_samples=True)
    return out, scorer


@dataclass
class _Doc:
    """One document's outcome, for losslens' metrics."""

    leaf: str
    doc_id: Any
    outcome: Any  # ChoiceOutcome or GenerationOutcome
    n_choices: Optional[int]

    @property
    def kind(self) -> str:
        return MULTIPLE_CHOICE if isinstance(self.outcome, ChoiceOutcome) else GENERATIVE


def continuous_metrics(loaded: dict, out: dict, scorer: ScorerLM, settings: dict) -> tuple[dict, dict]:
    """losslens' continuous metrics over every document of the unit: ({name: entry}, {(leaf, doc_id): {name: value}}).

    A metric that applies to both kinds (``loglik_token``) pools the documents of a group that mixes them.
    """
    docs = [d for leaf, task in loaded["tasks"].items() for d in _outcomes(leaf, task, out["samples"].get(leaf, []),
                                                                            scorer)]
    metrics, per_doc = {}, {}
    for name in dict.fromkeys(n for kind in CONTINUOUS.values() for n in kind):
        group = [d for d in docs if name in CONTINUOUS[d.kind]]
        if not group:
            continue
        choice = all(d.kind == MULTIPLE_CHOICE for d in group)
        chance = chance_levels([name], np.array([d.n_choices for d in group]) if choice else None, None)
        values = [METRICS[name].per_example(d.outcome) for d in group]
        agg = aggregate(values, settings["bootstrap"], settings["confidence"], FEWSHOT_SEED)
        metrics[name] = {**agg, "chance": chance.get(name), "discontinuous": METRICS[name].discontinuous}
        for d, v in zip(group, values):
            per_doc.setdefault((d.leaf, d.doc_id), {})[name] = v
    return metrics, per_doc


def _outcomes(leaf: str, task, samples: list[dict], scorer: ScorerLM) -> list[_Doc]:
    """One outcome per document (samples repeat a document once per filter)."""
    first = list({s["doc_id"]: s for s in reversed(samples)}.values())[::-1]
    if task.get_config("output_type") == "multiple_choice":
        return [d for d in (_choice_doc(leaf, task, s, scorer) for s in first) if d is not None]
    if task.get_config("output_type") == "generate_until":
        return _generation_docs(leaf, task, first, scorer)
    return []


def _choice_doc(leaf: str, task, sample: dict, scorer: ScorerLM) -> Optional[_Doc]:
    pairs = [tuple(a) for a in sample["arguments"]]
    if "acc_mutual_info" in sample.get("metrics", []):
        pairs = pairs[: len(pairs) // 2]  # the unconditional requests follow the conditional ones
    gold = sample["target"]
    if isinstance(gold, list):  # several right answers: the first one
        gold = gold[0] if gold else None
    if isinstance(gold, str):
        choices = task.doc_to_choice(sample["doc"])
        gold = choices.index(gold) if gold in choices else None
    if not isinstance(gold, int) or not 0 <= gold < len(pairs):
        return None
    res = [scorer.scored[p] for p in pairs]
    outcome = ChoiceOutcome(np.array([r.loglik for r in res]), tuple(len(r.token_logprobs) for r in res),
                            tuple(len(cont.encode("utf-8")) for _, cont in pairs), gold)
    return _Doc(leaf, sample["doc_id"], outcome, len(pairs))


def _generation_docs(leaf: str, task, samples: list[dict], scorer: ScorerLM) -> list[_Doc]:
    """The first reference scored after the context (with the task's delimiter), and the raw greedy output."""
    delimiter = task.get_config("target_delimiter") or ""
    refs = [s["target"][0] if isinstance(s["target"], list) else s["target"] for s in samples]
    kept = [(s, str(r)) for s, r in zip(samples, refs) if r is not None and str(r)]
    scored = scorer.score([(s["arguments"][0][0], delimiter + ref) for s, ref in kept])
    tok = scorer.lm.tokenizer
    docs = []
    for (s, ref), res in zip(kept, scored):
        prediction = s["resps"][0][0]
        pred_ids = tok(prediction.strip(), add_special_tokens=False)["input_ids"]
        ref_ids = tok(ref.strip(), add_special_tokens=False)["input_ids"]
        outcome = GenerationOutcome(prediction, ref, res.loglik, res.token_logprobs, tuple(pred_ids), tuple(ref_ids))
        docs.append(_Doc(leaf, s["doc_id"], outcome, None))
    return docs
