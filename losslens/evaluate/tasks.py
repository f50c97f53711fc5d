"""Tasks: local JSONL files of examples, an optional small YAML around them, and a registry of names.

Examples are one JSON object a line, of a kind declared in :mod:`losslens.evaluate.kinds`
(multiple choice ``{"context", "choices", "answer"}`` or generative ``{"prompt", "reference",
"stop"}``). A task is a JSONL path (its kind told by the fields of its first example, its name by the file
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
file and line: a missing field, a key given twice, an answer out of range, fewer than two choices,
identical choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, NoReturn, Optional

import numpy as np

from losslens.contracts import PRETRAIN_TASK, RESULTS_SCHEMA
from losslens.errors import ConfigError, DataError
from losslens.evaluate.kinds import TASK_KINDS, kind_of
from losslens.lazy import load_entry
from losslens.metrics import chance_levels, kind_metrics
from losslens.paths import local_path  # also imported from here by evaluate.sweep
from losslens.records import build_dataclass, read_yaml_mapping
from losslens.schema import NonNegativeInt, PositiveInt
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TaskOptions:
    """A task YAML file: each option declared once. Types and unknown keys are checked by
    ``losslens.config.build_dataclass``, and every option but the file paths is part of the task's
    fingerprint (the files count by their content), so a new option cannot reuse stale results."""

    data: str  # JSONL file of examples, relative to the YAML file
    name: Optional[str] = None  # default: the file's stem
    kind: Optional[str] = None  # a name in losslens.evaluate.kinds.TASK_KINDS; default: told by the data's fields
    fewshot_file: Optional[str] = None  # a separate split to draw few-shot examples from
    num_fewshot: NonNegativeInt = 0
    chance: Optional[Annotated[float, RESULTS_SCHEMA["chance"].range]] = None  # default: each metric's rule
    metrics: Optional[list[str]] = None  # default: all of the kind's metrics
    separator: str = ""  # between context and choice (prompt and reference)
    fewshot_separator: str = "\n\n"  # between few-shot examples and before the question
    stop: Optional[list[str]] = None  # generative: default stop strings (default: fewshot_separator)
    max_new_tokens: Optional[PositiveInt] = None  # generative: default from the study's eval.max_new_tokens


_PATH_OPTIONS = ("data", "fewshot_file")  # hashed by content, not by where they are

Example = Any  # one example, of the dataclass its kind declares (losslens.evaluate.kinds)


@dataclass
class Task:
    options: TaskOptions  # as read, with name, kind and metrics filled in
    source: Path  # the YAML or JSONL file the task was read from
    examples: list[Example]
    fewshot_examples: list[Example] = field(default_factory=list)
    fingerprint: str = ""  # hash of the data and every option: a changed task is evaluated again

    @property
    def name(self) -> str:
        return self.options.name  # type: ignore[return-value]

    @property
    def kind(self) -> str:
        return self.options.kind  # type: ignore[return-value]

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.options.metrics or ())

    def fewshot_prefix(self, index: int, seed: int) -> str:
        """The few-shot examples shown before example ``index``, ending with the separator ('' for zero-shot).

        Drawn without replacement from the few-shot split with a generator seeded by (seed, index):
        the same shots for an example whatever the order, batch or shard it is evaluated in.
        """
        o = self.options
        if not o.num_fewshot:
            return ""
        rng = np.random.default_rng([seed, index])
        picks = rng.choice(len(self.fewshot_examples), size=o.num_fewshot, replace=False)
        shots = [self._solved(self.fewshot_examples[int(i)]) for i in picks]
        return o.fewshot_separator.join(shots) + o.fewshot_separator

    def characters(self) -> Counter[str]:
        """How often each character occurs in what the model is shown: examples, few-shot split, separators."""
        texts = TASK_KINDS[self.kind].texts
        counts = Counter(ch for ex in (*self.examples, *self.fewshot_examples) for text in texts(ex) for ch in text)
        o = self.options
        counts.update(o.separator + (o.fewshot_separator if o.num_fewshot else ""))
        return counts

    def _solved(self, ex: Example) -> str:
        return TASK_KINDS[self.kind].solved(ex, self.options.separator)

    def chance_levels(self, examples: Optional[list[Example]] = None) -> dict[str, Optional[float]]:
        """Chance level of each metric, by the metric's rule (losslens.metrics) and the stated chance."""
        examples = self.examples if examples is None else examples
        count = TASK_KINDS[self.kind].n_choices
        n_choices = np.array([count(ex) for ex in examples]) if count else None
        return chance_levels(self.metrics, n_choices, self.options.chance)


# ---------------------------------------------------------------- reading JSONL


class _DuplicateKey(ValueError):
    """A JSON object names a key twice: ``json.loads`` would keep the last value without a word."""


def _object_without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        keys = [k for k, _ in pairs]
        raise _DuplicateKey(next(k for i, k in enumerate(keys) if k in keys[:i]))
    return obj


def _parse_example(obj: object, kind: str, where: str) -> Example:
    def fail(why: str) -> NoReturn:
        raise DataError(f"{where}: {why}")

    if not isinstance(obj, dict):
        fail(f"expected a JSON object, got {type(obj).__name__}")
    required = TASK_KINDS[kind].fields
    for key in required:
        if key not in obj:
            fail(f"missing field '{key}' (a {kind.replace('_', ' ')} example needs {', '.join(required)})")
    return TASK_KINDS[kind].parse(obj, fail)


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
            obj = json.loads(line, object_pairs_hook=_object_without_duplicate_keys)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        except _DuplicateKey as e:
            raise DataError(f"{where}: key {e.args[0]!r} given twice (JSON would silently keep the last)") from None
        if kind is None:
            kind = kind_of(obj) if isinstance(obj, dict) else None
            if kind is None:
                told = " or ".join(f"{'/'.join(repr(f) for f in k.fields)} ({k.name.replace('_', ' ')})"
                                   for k in TASK_KINDS.values())
                raise DataError(f"{where}: cannot tell the task kind: expected {told}")
        examples.append(_parse_example(obj, kind, where))
    if not examples:
        raise DataError(f"{path}: no examples")
    return kind, examples


# ---------------------------------------------------------------- reading a task


def load_task(path: str | Path) -> Task:
    """A task from a YAML file or a bare JSONL file."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return _load_yaml_task(path)
    kind, examples = read_examples(path)
    options = TaskOptions(data=path.name, name=path.stem, kind=kind, metrics=list(kind_metrics(kind)))
    task = Task(options, source=path, examples=examples)
    _finish(task, [path])
    return task


def _load_yaml_task(path: Path) -> Task:
    options = build_dataclass(TaskOptions, read_yaml_mapping(path, "task file"), "", str(path))
    _check_options(options, path)
    data = path.parent / options.data
    options.kind, examples = read_examples(data, options.kind)
    options.name = options.name or path.stem
    task = Task(options, source=path, examples=examples)
    files = [path, data]
    if options.num_fewshot:
        shots = path.parent / options.fewshot_file  # type: ignore[operator]  (checked)
        if shots.resolve() == data.resolve():
            raise ConfigError(f"{path}: fewshot_file: must be a separate split from 'data' (shots would leak answers)")
        _, task.fewshot_examples = read_examples(shots, options.kind)
        if options.num_fewshot > len(task.fewshot_examples):
            raise ConfigError(f"{path}: num_fewshot: {options.num_fewshot} shots but {shots} has only "
                              f"{len(task.fewshot_examples)} examples")
        files.append(shots)
    known = kind_metrics(options.kind)
    options.metrics = list(known) if options.metrics is None else options.metrics
    if not options.metrics:
        raise ConfigError(f"{path}: metrics: expected a non-empty list of metric names")
    for m in options.metrics:
        if m not in known:
            raise ConfigError(f"{path}: metrics: {m!r} is not a {options.kind} metric (choose from {', '.join(known)})")
    _finish(task, files)
    return task


def _check_options(o: TaskOptions, path: Path) -> None:
    """What the types and their ranges cannot say: a known kind, and the few-shot split a few-shot task needs."""
    def fail(key: str, why: str) -> NoReturn:
        raise ConfigError(f"{path}: {key}: {why}")

    if o.kind is not None and o.kind not in TASK_KINDS:
        fail("kind", f"expected one of {', '.join(TASK_KINDS)}, got {o.kind!r}")
    if o.num_fewshot and not o.fewshot_file:
        fail("fewshot_file", f"num_fewshot is {o.num_fewshot}: give a separate split to draw the examples from")
    if o.stop is not None and not all(o.stop):
        fail("stop", "expected a list of non-empty strings")


def _finish(task: Task, files: list[Path]) -> None:
    """Check the name, and fingerprint the files' contents with every option."""
    if not _NAME_RE.match(task.name):
        raise ConfigError(f"{task.source}: name: {task.name!r} must be letters, digits, '_', '-' or '.'")
    if task.name == PRETRAIN_TASK:
        raise ConfigError(f"{task.source}: name: '{PRETRAIN_TASK}' is reserved for the pretraining loss")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    settings = {k: v for k, v in dataclasses.asdict(task.options).items() if k not in _PATH_OPTIONS}
    h.update(json.dumps(settings, sort_keys=True).encode())
    task.fingerprint = h.hexdigest()[:16]


# ---------------------------------------------------------------- registry


# PREFIX:NAME task entries -> a function (name, study_dir, study) that makes (or finds) the task file and
# returns its path, given as "module:function" (imported on first use, as a data.source generator is:
# losslens.train.corpus.GENERATORS) or as the function itself. The demo registers here as any suite would.
TASK_SOURCES: dict[str, str | Callable[[str, Path, object], Path]] = {"demo": "losslens.demo.tasks:materialize"}
_SPEC_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(.+)$")


def resolve_task(spec: str, study_dir: Path, study=None) -> Task:
    """Load the task named by a study's ``eval.tasks`` entry: ``PREFIX:NAME``, or a file path
    (:func:`losslens.paths.local_path`: as given, else in the study folder)."""
    m = _SPEC_RE.match(spec)
    if m and m.group(1) in TASK_SOURCES:
        source = TASK_SOURCES[m.group(1)]
        source = load_entry(source) if isinstance(source, str) else source
        return load_task(Path(source(m.group(2), Path(study_dir), study)))
    path = local_path(spec, study_dir)
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
