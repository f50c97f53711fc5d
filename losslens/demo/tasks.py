"""The demo task suite, drawn from the items the demo corpus holds out.

=============  ===============  ==========================================================================
name           kind             what it asks
=============  ===============  ==========================================================================
addition       generative       ``a+b=`` -> the sum, digits reversed (exact match jumps; edit distance and
                                per-token probability move smoothly: the mirage comparison)
addition_mc    multiple choice  the same sums, the answer among 3 near misses (carry and digit slips)
copy           generative       ``copy xkqbe:`` -> ``xkqbe`` (in-context copying)
next_word      multiple choice  a sentence prefix of the background language -> its most likely next
                                word among 4 (word statistics: improves with the loss from the start)
proofread      generative       ``fix wjadn:`` -> ``jwadn`` (copy the passage, fixing the planted
                                misspellings: exact match beside edit distance and token probability)
=============  ===============  ==========================================================================

Sums, copy strings and proofreading passages come from the held-out hash class that the corpus
generator never emits. The ``next_word`` prefixes are fresh walks of the language, and any whose text
(with the answer) occurs in the training stream is skipped, so no test item is seen in training. A
proofreading question is skipped too when it occurs there; its corrected passage is a walk of the
background language, which occurs in the prose (every word and pair of successive words does), never as
the answer of a proofreading line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from losslens.demo.corpus import (
    LETTERS,
    DemoOptions,
    Language,
    addition_line,
    copy_line,
    demo_documents,
    is_test_item,
    parse_options,
    proofread_line,
)
from losslens.errors import ConfigError
from losslens.fsio import atomic_write_text

TASK_NAMES = ("addition", "addition_mc", "copy", "next_word", "proofread")
N_ITEMS = {"addition": 200, "addition_mc": 200, "copy": 150, "next_word": 200, "proofread": 150}


def _held_out_sums(opts: DemoOptions, rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    hi, seen, out = 10**opts.digits, set(), []
    while len(out) < n:
        a, b = int(rng.integers(hi)), int(rng.integers(hi))
        if (a, b) not in seen and is_test_item(addition_line(a, b)[0], opts.test_every):
            seen.add((a, b))
            out.append((a, b))
    return out


def _near_misses(a: int, b: int, rng: np.random.Generator) -> list[str]:
    """Three wrong answers of the kind a model makes: a dropped carry, an off-by-one digit."""
    true = a + b
    candidates = {true + d for d in (-10, -1, 1, 10, 100, -100, 9, 11) if true + d >= 0} - {true}
    picks = rng.choice(sorted(candidates), size=3, replace=False)
    return [str(int(c))[::-1] for c in picks]


def addition_items(opts, rng):
    for a, b in _held_out_sums(opts, rng, N_ITEMS["addition"]):
        prompt, answer = addition_line(a, b)
        yield {"prompt": prompt, "reference": answer, "stop": ["\n"]}


def addition_mc_items(opts, rng):
    for a, b in _held_out_sums(opts, rng, N_ITEMS["addition_mc"]):
        prompt, answer = addition_line(a, b)
        choices = [answer] + _near_misses(a, b, rng)
        order = rng.permutation(4)
        yield {"context": prompt, "choices": [choices[i] for i in order], "answer": int(np.argmin(order))}


def copy_items(opts, rng):
    seen = set()
    while len(seen) < N_ITEMS["copy"]:
        word = "".join(rng.choice(list(LETTERS), size=opts.copy_length))
        prompt, answer = copy_line(word)
        if word not in seen and is_test_item(prompt, opts.test_every):
            seen.add(word)
            yield {"prompt": prompt, "reference": answer, "stop": ["\n"]}


def next_word_items(opts, rng, seed):
    language = Language(opts, seed)
    training_text = "\n".join(demo_documents(vars(opts), seed))
    made = 0
    while made < N_ITEMS["next_word"]:
        ids = language.walk(rng, int(rng.integers(4, 7)))
        answer_id = language.most_likely_next(ids[-1])
        context = language.text(ids)
        if f"{context} {language.words[answer_id]}" in training_text:
            continue  # seen in training: not a test item
        successors = set(language.next[ids[-1]].tolist())
        wrong = [w for w in rng.permutation(len(language.words)) if int(w) not in successors][:3]
        choices = [" " + language.words[answer_id]] + [" " + language.words[int(w)] for w in wrong]
        order = rng.permutation(4)
        made += 1
        yield {"context": context, "choices": [choices[i] for i in order], "answer": int(np.argmin(order))}


def proofread_items(opts, rng, seed):
    language = Language(opts, seed)
    training_text = "\n".join(demo_documents(vars(opts), seed))
    seen = set()
    for _ in range(200 * N_ITEMS["proofread"]):  # bounded: a small vocabulary has few held-out questions
        if len(seen) == N_ITEMS["proofread"]:
            return
        passage, misspelled = language.proofreading(rng, opts)
        prompt, answer = proofread_line(misspelled, passage)
        if prompt in seen or not is_test_item(passage, opts.test_every) or prompt in training_text:
            continue
        seen.add(prompt)
        yield {"prompt": prompt, "reference": answer, "stop": ["\n"]}
    raise ConfigError(f"data.generator: only {len(seen)} held-out proofreading questions, "
                      f"{N_ITEMS['proofread']} needed: raise vocabulary or proofread_words")


def _task_yaml(name: str, max_new_tokens: int) -> str:
    """A task file around the examples: proofreading answers are longer than the study's generation limit."""
    return f"name: {name}\nkind: generative\ndata: {name}.jsonl\nmax_new_tokens: {max_new_tokens}\n"


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)


def materialize(name: str, study_dir: Path, study) -> Path:
    """Write task ``name`` for this study (its generator options and seed) and return its task file.

    That is the JSONL file of examples, or for ``proofread`` a YAML file around it that sets the
    generation limit to the longest answer plus the stop. Files are rewritten only when their
    content changes, so evaluations stay up to date.
    """
    if name not in TASK_NAMES:
        raise ConfigError(f"eval.tasks: demo:{name}: no such demo task (known: {', '.join(TASK_NAMES)})")
    if study.data.source != "demo":
        raise ConfigError(f"eval.tasks: demo:{name} needs the demo corpus (data.source: demo)")
    opts = parse_options(study.data.generator)
    rng = np.random.default_rng([study.corpus_seed, 3, TASK_NAMES.index(name)])
    if name == "addition":
        items = addition_items(opts, rng)
    elif name == "addition_mc":
        items = addition_mc_items(opts, rng)
    elif name == "copy":
        items = copy_items(opts, rng)
    elif name == "next_word":
        items = next_word_items(opts, rng, study.corpus_seed)
    else:
        items = proofread_items(opts, rng, study.corpus_seed)
    items = list(items)
    tasks_dir = Path(study_dir) / "tasks"
    _write_if_changed(tasks_dir / f"{name}.jsonl", "".join(json.dumps(item) + "\n" for item in items))
    if name != "proofread":
        return tasks_dir / f"{name}.jsonl"
    longest = max(len(item["reference"]) for item in items)
    _write_if_changed(tasks_dir / f"{name}.yaml", _task_yaml(name, longest + 1))
    return tasks_dir / f"{name}.yaml"
