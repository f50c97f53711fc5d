"""Tasks: local JSONL files of examples, an optional small YAML around them, and a registry of names.

Two kinds of example, one JSON object a line:

* multiple choice — ``{"context": str, "choices": [str, ...], "answer": int}``: each choice is
  scored by its log-likelihood given the context;
* generative — ``{"prompt": str, "reference": str, "stop": [str, ...]}`` (``stop`` optional):
  greedy decoding from the prompt, compared with the reference.

A task is a JSONL path (its kind told by the fields of its first example, its name by the file
stem) or a YAML file::

    name: arith2
    kind: multiple_choice          # or generative; default: from the data
    data: arith2.jsonl             # relative to the YAML file
    fewshot_file: arith2_train.jsonl   # a separate split to draw few-shot examples from
    num_fewshot: 3
    chance: 0.25                   # default: mean of 1/number of choices (0 for exact match)
    metrics: [acc, prob_correct]   # default: all of the kind's metrics
    separator: ""                  # between context and choice (prompt and reference) — choices
                                   # carry their own leading space; none is added silently
    fewshot_separator: "\\n\\n"     # between few-shot examples and before the question
    stop: ["\\n"]                   # generative: default stop strings (default: fewshot_separator)
    max_new_tokens: 16             # generative: default from the study's eval.max_new_tokens

``PREFIX:NAME`` entries (``demo:arith``) are resolved by :data:`TASK_SOURCES`. Errors name the
file and line: a missing field, an answer out of range, empty choices.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import yaml

from losslens.errors import DataError

MULTIPLE_CHOICE = "multiple_choice"
GENERATIVE = "generative"
KINDS = (MULTIPLE_CHOICE, GENERATIVE)

MC_METRICS = ("acc", "acc_norm", "prob_correct", "brier", "loglik_token", "loglik_byte")
GEN_METRICS = ("exact_match", "token_prob", "loglik_token", "loglik_byte", "edit_distance", "edit_distance_norm")
KIND_METRICS = {MULTIPLE_CHOICE: MC_METRICS, GENERATIVE: GEN_METRICS}

PRETRAIN = "pretrain"  # the reserved name of the pretraining-loss "task"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_YAML_KEYS = {
    "name", "kind", "data", "fewshot_file", "num_fewshot", "chance", "metrics",
    "separator", "fewshot_separator", "stop", "max_new_tokens",
}


@dataclass(frozen=True)
class MCExample:
    context: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class GenExample:
    prompt: str
    reference: str
    stop: Optional[tuple[str, ...]] = None  # None: the task's default


Example = Union[MCExample, GenExample]


@dataclass
class Task:
    name: str
    kind: str
    source: Path  # the YAML or JSONL file the task was read from
    examples: list[Example]
    fewshot_examples: list[Example] = field(default_factory=list)
    num_fewshot: int = 0
    chance: Optional[float] = None  # as stated in the task file
    metrics: tuple[str, ...] = ()
    separator: str = ""
    fewshot_separator: str = "\n\n"
    stop: Optional[tuple[str, ...]] = None
    max_new_tokens: Optional[int] = None
    fingerprint: str = ""  # hash of the data and every setting: a changed task is evaluated again

    def fewshot_prefix(self, index: int, seed: int) -> str:
        """The few-shot examples shown before example ``index``, ending with the separator ('' for zero-shot).

        Drawn without replacement from the few-shot split with a generator seeded by (seed, index):
        the same shots for an example whatever the order, batch or shard it is evaluated in.
        """
        if not self.num_fewshot:
            return ""
        rng = np.random.default_rng([seed, index])
        picks = rng.choice(len(self.fewshot_examples), size=self.num_fewshot, replace=False)
        shots = [self._solved(self.fewshot_examples[int(i)]) for i in picks]
        return self.fewshot_separator.join(shots) + self.fewshot_separator

    def _solved(self, ex: Example) -> str:
        if isinstance(ex, MCExample):
            return ex.context + self.separator + ex.choices[ex.answer]
        return ex.prompt + self.separator + ex.reference

    def chance_levels(self, examples: Optional[list[Example]] = None) -> dict[str, Optional[float]]:
        """Chance level of each metric: what a model that cannot tell the choices apart scores.

        acc, acc_norm, prob_correct: the stated chance, else the mean of 1/k over examples with k
        choices; brier: mean of 1 − 1/k (uniform probabilities); exact_match: the stated chance,
        else 0. Other metrics have none.
        """
        examples = self.examples if examples is None else examples
        levels: dict[str, Optional[float]] = {m: None for m in self.metrics}
        if self.kind == MULTIPLE_CHOICE:
            inv_k = np.array([1.0 / len(ex.choices) for ex in examples])
            for m in ("acc", "acc_norm", "prob_correct"):
                if m in levels:
                    levels[m] = self.chance if self.chance is not None else float(inv_k.mean())
            if "brier" in levels:
                levels["brier"] = float((1.0 - inv_k).mean())
        elif "exact_match" in levels:
            levels["exact_match"] = self.chance if self.chance is not None else 0.0
        return levels


# ---------------------------------------------------------------- reading JSONL


def _kind_of(obj: dict) -> Optional[str]:
    if "choices" in obj or "answer" in obj:
        return MULTIPLE_CHOICE
    if "reference" in obj or "prompt" in obj:
        return GENERATIVE
    return None


def _parse_example(obj: object, kind: str, where: str) -> Example:
    def fail(why: str):
        raise DataError(f"{where}: {why}")

    if not isinstance(obj, dict):
        fail(f"expected a JSON object, got {type(obj).__name__}")
    required = ("context", "choices", "answer") if kind == MULTIPLE_CHOICE else ("prompt", "reference")
    for key in required:
        if key not in obj:
            fail(f"missing field '{key}' (a {kind.replace('_', ' ')} example needs {', '.join(required)})")
    if kind == MULTIPLE_CHOICE:
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
    prompt, reference, stop = obj["prompt"], obj["reference"], obj.get("stop")
    if not isinstance(prompt, str):
        fail(f"'prompt' must be a string, got {type(prompt).__name__}")
    if not isinstance(reference, str) or not reference:
        fail("'reference' must be a non-empty string")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        fail("'stop' must be a list of non-empty strings")
    return GenExample(prompt, reference, tuple(stop) if stop is not None else None)


def read_examples(path: Path, kind: Optional[str] = None) -> tuple[str, list[Example]]:
    """Parse and validate a JSONL file; returns (kind, examples). Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: task data file not found")
    examples: list[Example] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        if kind is None:
            kind = _kind_of(obj) if isinstance(obj, dict) else None
            if kind is None:
                raise DataError(
                    f"{where}: cannot tell the task kind: expected 'context'/'choices'/'answer' "
                    f"(multiple choice) or 'prompt'/'reference' (generative)"
                )
        examples.append(_parse_example(obj, kind, where))
    if not examples:
        raise DataError(f"{path}: no examples")
    return kind, examples


# ---------------------------------------------------------------- reading a task


def _file_hash(h, path: Path) -> None:
    h.update(str(path.name).encode())
    h.update(path.read_bytes())


def load_task(path: str | Path) -> Task:
    """A task from a YAML file or a bare JSONL file."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return _load_yaml_task(path)
    kind, examples = read_examples(path)
    task = Task(name=path.stem, kind=kind, source=path, examples=examples, metrics=KIND_METRICS[kind])
    _finish(task, path, [path])
    return task


def _load_yaml_task(path: Path) -> Task:
    if not path.is_file():
        raise DataError(f"{path}: task file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise DataError(f"{path}{where}: malformed YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a task file is a mapping (name, kind, data, ...)")

    def fail(key: str, why: str):
        raise DataError(f"{path}: {key}: {why}")

    for key in raw:
        if key not in _YAML_KEYS:
            fail(str(key), f"unknown key (known: {', '.join(sorted(_YAML_KEYS))})")
    if "data" not in raw:
        fail("data", "required key is missing (the JSONL file of examples)")
    kind = raw.get("kind")
    if kind is not None and kind not in KINDS:
        fail("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    data = path.parent / str(raw["data"])
    kind, examples = read_examples(data, kind)
    task = Task(name=str(raw.get("name") or path.stem), kind=kind, source=path, examples=examples)
    files = [path, data]

    n_shot = raw.get("num_fewshot", 0)
    if isinstance(n_shot, bool) or not isinstance(n_shot, int) or n_shot < 0:
        fail("num_fewshot", f"expected a non-negative integer, got {n_shot!r}")
    task.num_fewshot = n_shot
    if n_shot:
        if "fewshot_file" not in raw:
            fail("fewshot_file", f"num_fewshot is {n_shot}: give a separate split to draw the examples from")
        shots_path = path.parent / str(raw["fewshot_file"])
        if shots_path.resolve() == data.resolve():
            fail("fewshot_file", "must be a separate split from 'data' (shots would leak answers)")
        _, task.fewshot_examples = read_examples(shots_path, kind)
        if n_shot > len(task.fewshot_examples):
            fail("num_fewshot", f"{n_shot} shots but {shots_path} has only {len(task.fewshot_examples)} examples")
        files.append(shots_path)

    chance = raw.get("chance")
    if chance is not None:
        if isinstance(chance, bool) or not isinstance(chance, (int, float)) or not 0 <= chance <= 1:
            fail("chance", f"expected a number in [0, 1], got {chance!r}")
        task.chance = float(chance)
    metrics = raw.get("metrics", list(KIND_METRICS[kind]))
    if not isinstance(metrics, list) or not metrics:
        fail("metrics", "expected a non-empty list of metric names")
    for m in metrics:
        if m not in KIND_METRICS[kind]:
            fail("metrics", f"{m!r} is not a {kind} metric (choose from {', '.join(KIND_METRICS[kind])})")
    task.metrics = tuple(metrics)
    for key in ("separator", "fewshot_separator"):
        if key in raw:
            if not isinstance(raw[key], str):
                fail(key, f"expected a string, got {raw[key]!r}")
            setattr(task, key, raw[key])
    if "stop" in raw:
        stop = raw["stop"]
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            fail("stop", "expected a list of non-empty strings")
        task.stop = tuple(stop)
    if "max_new_tokens" in raw:
        mnt = raw["max_new_tokens"]
        if isinstance(mnt, bool) or not isinstance(mnt, int) or mnt <= 0:
            fail("max_new_tokens", f"expected a positive integer, got {mnt!r}")
        task.max_new_tokens = mnt
    _finish(task, path, files)
    return task


def _finish(task: Task, path: Path, files: list[Path]) -> None:
    if not _NAME_RE.match(task.name):
        raise DataError(f"{path}: name: {task.name!r} must be letters, digits, '_', '-' or '.'")
    if task.name == PRETRAIN:
        raise DataError(f"{path}: name: '{PRETRAIN}' is reserved for the pretraining loss")
    h = hashlib.sha256()
    for f in files:
        _file_hash(h, f)
    settings = {k: getattr(task, k) for k in (
        "name", "kind", "num_fewshot", "chance", "metrics", "separator", "fewshot_separator", "stop", "max_new_tokens")}
    h.update(json.dumps(settings, sort_keys=True).encode())
    task.fingerprint = h.hexdigest()[:16]


# ---------------------------------------------------------------- registry


def _demo_task(name: str, study_dir: Path, study) -> Path:
    from losslens.demo.tasks import materialize  # lazily: the demo corpus module is optional here

    return Path(materialize(name, study_dir, study))


# PREFIX:NAME task entries: the function makes (or finds) the task file and returns its path.
TASK_SOURCES: dict[str, Callable[[str, Path, object], Path]] = {"demo": _demo_task}
_SPEC_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(.+)$")


def resolve_task(spec: str, study_dir: Path, study=None) -> Task:
    """Load the task named by a study's ``eval.tasks`` entry: ``PREFIX:NAME`` or a file path.

    Relative paths are tried as given (from the working directory), then inside the study folder.
    """
    m = _SPEC_RE.match(spec)
    if m and m.group(1) in TASK_SOURCES:
        return load_task(TASK_SOURCES[m.group(1)](m.group(2), Path(study_dir), study))
    path = Path(spec)
    if not path.is_absolute() and not path.exists() and (Path(study_dir) / spec).exists():
        path = Path(study_dir) / spec
    if not path.exists():
        known = ", ".join(f"{p}:NAME" for p in TASK_SOURCES)
        raise DataError(f"eval.tasks: {spec}: no such task file (or a built-in task: {known})")
    return load_task(path)


def resolve_tasks(specs: list[str], study_dir: Path, study=None) -> list[Task]:
    tasks = [resolve_task(s, study_dir, study) for s in specs]
    seen: dict[str, Path] = {}
    for t in tasks:
        if t.name in seen:
            raise DataError(f"{t.source}: task name {t.name!r} is also used by {seen[t.name]}")
        seen[t.name] = t.source
    return tasks
