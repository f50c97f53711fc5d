"""lm-evaluation-harness inside losslens: harness tasks in the sweep, and our tasks as harness YAMLs.

**Harness tasks in the sweep** (``losslens evaluate RUN_DIR --lm-eval TASK[,TASK...]``, or the
study's ``eval.lm_eval``). :class:`Harness` resolves the names once per sweep, before any model
work: the extra must be installed, every name must be a task, group or tag of the harness or of
``--lm-eval-include DIR`` (``TaskManager(include_path=DIR)``). A group with aggregate metrics is
one unit holding the aggregate; a tag, or a group without aggregate metrics, stands for its tasks,
one unit each. Each unit gets a fingerprint (the lm-eval version, the resolved YAML configs of the
task and its members, the ``*.py`` helpers next to them, the bytes of local data files, and the
settings that change numbers), so a changed task is evaluated again and an unchanged one never.
Each unit runs on the model the sweep loaded for the checkpoint (shared with the native units):
natively where it can (:mod:`losslens.evaluate.harness_native`: lm-eval builds the requests once and
computes its metrics, losslens' scorer answers, and losslens' continuous metrics are added), else in
its own ``lm_eval.simple_evaluate`` call on the model wrapped in lm-eval's ``HFLM``, with one line
saying so. Three modules: resolving names and fingerprints (:mod:`.harness_resolve`), running a unit
(this one), its result JSON (:mod:`.harness_results`). ``harness:NAME`` in ``eval.tasks`` names a
harness task too (:data:`PREFIX`).

Results become the sweep's JSON files with the columns of native tasks:

* metric names: lm-eval's result key ``"<metric>,<filter>"`` becomes ``<metric>`` for the default
  filter ``none`` and ``<metric>:<filter>`` otherwise (``exact_match:strict-match``), which
  :func:`losslens.contracts.metric_info` reads as its base metric;
* ``ci_low``/``ci_high`` = value ± z·stderr (z = 1.96 at ``eval.confidence`` 0.95) where lm-eval
  reports a standard error; ``n`` = documents evaluated; ``chance`` = mean of 1/(number of choices)
  for the accuracies of multiple-choice tasks, else empty;
* lm-eval's own ``higher_is_better`` is kept in the JSON; where it disagrees with how losslens
  reads the metric name, a note says so.

Harness task names are kept as they are (``mmlu``, ``gsm8k``): a name that is also a native task
of the sweep is refused rather than renamed, since both would write ``<task>.json``.

**Our tasks as harness YAMLs.** ``harness_task_yaml(jsonl, folder, name)`` writes
``folder/<name>.yaml`` that reads a local multiple-choice JSONL with the ``json`` dataset builder (no
download) and scores ``context + choice`` with no delimiter added, the way losslens does (choices
carry their own leading space). Zero-shot only: lm-eval draws few-shot examples with its own
sampler, so few-shot prompts would differ from losslens'.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

from losslens.errors import DataError, LossLensError
from losslens.evaluate import harness_resolve as resolve
from losslens.evaluate.harness_results import unit_result
from losslens.evaluate.units import CheckpointContext
from losslens.fsio import jsonable

INSTALL_HINT = "pip install 'losslens[lm-eval]'"
# Nothing is downloaded at run time: datasets and models come from local files or caches.
OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PREFIX = "harness:"  # an eval.tasks entry "harness:NAME" is the harness task NAME


def harness_task_yaml(jsonl: str | Path, folder: str | Path, name: str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(jsonl).resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "context",  # field names: the raw strings, no template whitespace
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "target_delimiter": "",  # lm-eval's default is " "; losslens adds no separator
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ---------------------------------------------------------------- resolving names


def import_lm_eval():
    """The ``lm_eval`` module, offline; a one-line error when the extra is not installed."""
    for var in OFFLINE_ENV:  # read when datasets / huggingface_hub are first imported
        os.environ.setdefault(var, "1")
    try:
        import lm_eval
        import lm_eval.tasks  # noqa: F401  (TaskManager)
    except ImportError:
        raise LossLensError(f"--lm-eval needs lm-evaluation-harness, which is not installed: {INSTALL_HINT}") from None
    return lm_eval


def parse_names(values: list[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``: comma-separated, repeatable, duplicates and blanks dropped."""
    names: list[str] = []
    for value in values:
        for name in (n.strip() for n in value.split(",")):
            if name and name not in names:
                names.append(name)
    return names


@dataclass(frozen=True)
class HarnessTask:
    """A harness task or group evaluated on every checkpoint: a unit of the sweep (losslens.evaluate.units)."""

    name: str
    leaves: tuple[str, ...]  # the harness tasks it runs (itself, or a group's members)
    fingerprint: str
    harness: "Harness" = field(repr=False, compare=False)
    has_examples = True  # a class attribute, not a field

    def run(self, context: CheckpointContext) -> dict:
        return self.harness.evaluate(context, self)


class Harness:
    """The harness tasks of one sweep: resolved and fingerprinted once, then run checkpoint by checkpoint."""

    def __init__(self, names: list[str], include: Optional[Path], settings: dict,
                 log: Callable[[str], None] = print, native: bool = True, cache_dir: Optional[Path] = None):
        self.lm_eval = import_lm_eval()
        self.version = self.lm_eval.__version__
        self.include = include
        self.settings = settings  # dtype, limit, bootstrap, confidence: in every task's fingerprint
        self.log = log
        self.native = native  # False: every task through simple_evaluate (bench/eval_throughput.py --harness)
        self.cache_dir = cache_dir  # built requests, <fingerprint>.json (see harness_native.prepare)
        self._noted: set[tuple[str, str]] = set()  # (task, metric) read against lm-eval's direction, told once
        self._native: dict[str, tuple[Optional[dict], Optional[str]]] = {}  # unit -> (prepared tasks, why not)
        if include is not None and not include.is_dir():
            raise DataError(f"--lm-eval-include {include}: no such directory")
        self.manager = resolve.task_manager(names, include, self.version, log)
        index = self.manager.task_index
        self.tasks = [HarnessTask(unit, *resolve.fingerprint(index, unit, self.version, settings), self)
                      for name in names for unit in resolve.units(index, name)]
        resolve.check_disjoint(self.tasks)

    # ------------------------------------------------------------ running

    def evaluate(self, context: CheckpointContext, task: HarnessTask) -> dict:
        """Run one harness task on the context's checkpoint; returns its JSON-ready result.

        Natively (:mod:`losslens.evaluate.harness_native`) where the task allows, else through
        ``simple_evaluate`` on the context's model wrapped once per checkpoint in lm-eval's ``HFLM``.
        """
        from losslens.evaluate import harness_native as native  # imports lm_eval

        options = context.options
        # lm-eval's and datasets' progress bars write to sys.stderr; their log records still show.
        quiet = not options.progress
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull if quiet else sys.stderr):
            loaded, reason = self._prepared(task)
            try:
                if reason is None:
                    out, scorer = native.evaluate_native(loaded, context.lm, self.settings, options.progress)
                    extra = native.continuous_metrics(loaded, out, scorer, self.settings)
                else:
                    out, extra = self._simple_evaluate(context, self._load(task), task), ({}, {})
            except Exception as e:
                raise LossLensError(f"lm-eval on {context.ckpt}: {task.name}: {_first_line(e)}") from e
        return jsonable(unit_result(out, task, self.version, self.settings["confidence"], options.per_example,
                                    extra, self._noted, self.log))

    def _load(self, task: HarnessTask) -> dict:
        try:  # the dataset first, so that a missing one reads as a data error
            return self.manager.load([task.name])
        except Exception as e:  # datasets and lm-eval raise many types for a missing or broken dataset
            raise DataError(f"lm-eval: cannot load {task.name}: {_first_line(e)} (offline, datasets come "
                            f"from local files or HF_DATASETS_CACHE: see docs/lm-eval.md)") from e

    def _prepared(self, task: HarnessTask) -> tuple[Optional[dict], Optional[str]]:
        """The unit's tasks loaded with their requests built (once per sweep); or None and why it falls back."""
        from losslens.evaluate import harness_native as native  # imports lm_eval

        if task.name in self._native:
            return self._native[task.name]
        if not self.native:
            self._native[task.name] = (None, "the native path is turned off")
            return self._native[task.name]
        loaded = self._load(task)
        reasons = [f"{name}: {why}" for name, t in loaded["tasks"].items() if (why := native.unsupported(t))]
        if reasons:
            self.log(f"lm-eval: {task.name} runs through lm_eval.simple_evaluate ({'; '.join(reasons)}: "
                     f"not supported by losslens' scorer)")
            self._native[task.name] = (None, "; ".join(reasons))
            return self._native[task.name]
        try:
            native.prepare(loaded, self.settings["limit"],
                           self.cache_dir / f"{task.fingerprint}.json" if self.cache_dir else None)
        except Exception as e:  # a template or document the task cannot render
            raise DataError(f"lm-eval: {task.name}: cannot build its requests: {_first_line(e)}") from e
        self._native[task.name] = (loaded, None)
        return self._native[task.name]

    def _simple_evaluate(self, context: CheckpointContext, loaded: dict, task: HarnessTask) -> dict:
        found = loaded["groups"] if task.name in loaded["groups"] else loaded["tasks"]
        return self.lm_eval.simple_evaluate(
            model=context.memo("lm_eval.HFLM", lambda: self._model(context)), tasks=[found[task.name]],
            task_manager=self.manager, limit=self.settings["limit"],
            bootstrap_iters=self.settings["bootstrap"], log_samples=True,
        )

    @staticmethod
    def _model(context: CheckpointContext):
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=context.model, tokenizer=context.tokenizer, batch_size=context.options.batch_size)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
