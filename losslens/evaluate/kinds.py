"""Task kinds: what one example looks like, and what is asked of the model for it. One record per kind.

A :class:`TaskKind` declares, for one kind of task: the JSON fields of an example and how to parse
one (errors name ``file:line``), how a solved example reads as a few-shot shot, how many choices
an example has (for chance levels), and its *observer*: the function that turns examples into
requests (:mod:`losslens.evaluate.requests`), has a :class:`~losslens.evaluate.requests.LanguageModel`
answer them, and returns one outcome per example for the metrics (:mod:`losslens.metrics`) and one
record per example for the per-example file. Tasks (:mod:`losslens.evaluate.tasks`) and the runner
(:mod:`losslens.evaluate.runner`) look kinds up in :data:`TASK_KINDS`; nothing else knows them.

Two kinds are built in:

* multiple choice — ``{"context": str, "choices": [str, ...], "answer": int}``: each choice is
  scored by its log-likelihood given the context;
* generative — ``{"prompt": str, "reference": str, "stop": [str, ...]}`` (``stop`` optional):
  greedy decoding from the prompt, compared with the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional

import numpy as np

from losslens.evaluate.requests import GenerationRequest, LanguageModel, encode_pairs
from losslens.metrics import GENERATIVE, MULTIPLE_CHOICE, ChoiceOutcome, GenerationOutcome, add_once

if TYPE_CHECKING:
    from losslens.evaluate.runner import TaskSettings
    from losslens.evaluate.tasks import Task

Fail = Callable[[str], NoReturn]  # raises the file:line error for one example


@dataclass(frozen=True)
class TaskKind:
    """One kind of task; see the module docstring."""

    name: str
    fields: tuple[str, ...]  # every example has these
    detect_by: tuple[str, ...]  # a bare JSONL file is of this kind when its first example has one of these
    parse: Callable[[dict, Fail], Any]  # a JSON object that has ``fields`` -> an example
    solved: Callable[[Any, str], str]  # (example, separator) -> the example with its answer, as a shot
    observe: Callable[..., tuple[list, list[dict]]]  # (lm, task, examples, settings, progress) -> (outcomes, records)
    n_choices: Optional[Callable[[Any], int]] = None  # choices of an example; None: not a choice task


TASK_KINDS: dict[str, TaskKind] = {}


def register_kind(kind: TaskKind) -> TaskKind:
    return add_once(TASK_KINDS, kind.name, kind, "task kind")


def kind_of(obj: dict) -> Optional[str]:
    """The kind an example's fields tell, or None."""
    return next((k.name for k in TASK_KINDS.values() if any(f in obj for f in k.detect_by)), None)


# ---------------------------------------------------------------- multiple choice


@dataclass(frozen=True)
class MCExample:
    context: str
    choices: tuple[str, ...]
    answer: int


def _parse_choice_example(obj: dict, fail: Fail) -> MCExample:
    context, choices, answer = obj["context"], obj["choices"], obj["answer"]
    if not isinstance(context, str):
        fail(f"'context' must be a string, got {type(context).__name__}")
    if not isinstance(choices, list) or not choices:
        fail("'choices' must be a non-empty list of strings")
    for i, c in enumerate(choices):
        if not isinstance(c, str) or not c:
            fail(f"choice {i} must be a non-empty string, got {c!r}")
    if isinstance(answer, bool) or not isinstance(answer, int):
        fail(f"'answer' must be an integer index into 'choices', got {answer!r}")
    if not 0 <= answer < len(choices):
        fail(f"answer index {answer} is out of range for {len(choices)} choices")
    return MCExample(context, tuple(choices), answer)


def _observe_choices(lm: LanguageModel, task: Task, examples: list[MCExample], settings: TaskSettings,
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


register_kind(TaskKind(
    MULTIPLE_CHOICE, fields=("context", "choices", "answer"), detect_by=("choices", "answer"),
    parse=_parse_choice_example, solved=lambda ex, sep: ex.context + sep + ex.choices[ex.answer],
    observe=_observe_choices, n_choices=lambda ex: len(ex.choices),
))


# ---------------------------------------------------------------- generative


@dataclass(frozen=True)
class GenExample:
    prompt: str
    reference: str
    stop: Optional[tuple[str, ...]] = None  # None: the task's default


def _parse_generation_example(obj: dict, fail: Fail) -> GenExample:
    prompt, reference, stop = obj["prompt"], obj["reference"], obj.get("stop")
    if not isinstance(prompt, str):
        fail(f"'prompt' must be a string, got {type(prompt).__name__}")
    if not isinstance(reference, str) or not reference:
        fail("'reference' must be a non-empty string")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        fail("'stop' must be a list of non-empty strings")
    return GenExample(prompt, reference, tuple(stop) if stop is not None else None)


def _observe_generations(lm: LanguageModel, task: Task, examples: list[GenExample], settings: TaskSettings,
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


register_kind(TaskKind(
    GENERATIVE, fields=("prompt", "reference"), detect_by=("reference", "prompt"),
    parse=_parse_generation_example, solved=lambda ex, sep: ex.prompt + sep + ex.reference,
    observe=_observe_generations,
))
