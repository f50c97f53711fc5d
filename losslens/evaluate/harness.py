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
saying so. ``harness:NAME`` in ``eval.tasks`` names a harness task too (:data:`PREFIX`).

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
import glob
import hashlib
import json
import math
import numbers
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import yaml

from losslens import contracts
from losslens.errors import DataError, LossLensError
from losslens.evaluate.units import CheckpointContext
from losslens.fsio import jsonable
from losslens.metrics import metric_name, normal_interval

INSTALL_HINT = "pip install 'losslens[lm-eval]'"
# Nothing is downloaded at run time: datasets and models come from local files or caches.
OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
KIND = "lm-eval"  # the "kind" of a harness unit's JSON file
SCORER = "losslens-2"  # how harness units are answered (losslens' scorer, continuous metrics): in fingerprints
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
        self.manager = self._task_manager(names)
        index = self.manager.task_index
        self.tasks = [self._task(index, unit, settings) for name in names for unit in self._units(index, name)]
        _check_disjoint(self.tasks)

    # A TaskManager indexes YAML files when it is made: the include folder alone takes a moment,
    # lm-eval's ~14,000 built-in files some 15 s, so they are indexed only for names not found locally.
    def _task_manager(self, names: list[str]):
        from lm_eval.tasks import TaskManager

        local_index: dict = {}
        if self.include is not None:
            local = TaskManager(include_path=str(self.include), include_defaults=False)
            if all(_members(local.task_index, n) is not None for n in names):
                return local
            local_index = local.task_index
        # Cheap first: a name that no built-in YAML file mentions cannot be a built-in task.
        for name in _not_in_builtin_yaml([n for n in names if n not in local_index]):
            raise self._unknown(name)
        self.log(f"lm-eval: indexing lm-eval {self.version}'s built-in tasks (takes some seconds)")
        manager = TaskManager(include_path=str(self.include) if self.include else None)
        for name in names:
            if name not in manager.task_index:
                raise self._unknown(name)
            if _members(manager.task_index, name) is None:
                where = f" nor in {self.include}" if self.include else ""
                raise DataError(f"--lm-eval: {name}: lists a task that is not built into lm-eval {self.version}{where}")
        return manager

    def _unknown(self, name: str) -> DataError:
        where = f"in {self.include} nor " if self.include else ""
        hint = "" if self.include else " (give --lm-eval-include DIR for task YAMLs of your own)"
        return DataError(f"--lm-eval: unknown task {name!r}: not a task, group or tag {where}"
                         f"of lm-eval {self.version}{hint}")

    def _units(self, index: dict, name: str) -> list[str]:
        """A task, or a group with aggregate metrics, is one unit; a tag, or a group without them, one per task."""
        entry = index[name]
        if entry.kind.name == "TAG" or (entry.kind.name == "GROUP" and not entry.cfg.get("aggregate_metric_list")):
            return sorted({e.name for e in _members(index, name) or [] if e.kind.name in ("TASK", "PY_TASK")})
        return [name]

    def _task(self, index: dict, name: str, settings: dict) -> HarnessTask:
        if "/" in name or name.startswith("."):  # it names a file under RUN_DIR/evals/
            raise DataError(f"--lm-eval: {name!r}: task names with '/' or a leading '.' cannot be results files")
        members = _members(index, name) or []
        leaves = tuple(e.name for e in members if e.kind.name in ("TASK", "PY_TASK"))
        h = hashlib.sha256(json.dumps({"lm_eval": self.version, "settings": settings, "scorer": SCORER},
                                      sort_keys=True).encode())
        for entry in sorted(members, key=lambda e: e.name):
            _hash_entry(h, entry)
        return HarnessTask(name, leaves, h.hexdigest()[:16], self)

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
        return jsonable(self._result(out, task, self.settings["confidence"], options.per_example, extra))

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

    def _result(self, out: dict, task: HarnessTask, confidence: float, per_example: bool,
                extra: tuple[dict, dict]) -> dict:
        """The unit's JSON: lm-eval's metrics (see the module docstring), and losslens' continuous ones (``extra``)."""
        raw = out["results"][task.name]
        samples = [(leaf, s) for leaf in task.leaves for s in out["samples"].get(leaf, [])]
        configs = {leaf: out["configs"].get(leaf) or {} for leaf in task.leaves}
        multiple_choice = all(c.get("output_type") == "multiple_choice" for c in configs.values())
        chance = _chance(samples) if multiple_choice else None
        their_better = out.get("higher_is_better", {}).get(task.name, {})
        metrics = {}
        for key, value in raw.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not _finite(value):
                continue  # "alias", "sample_len", stderr entries, "N/A"
            name = metric_name(metric, filt)
            stderr = raw.get(f"{metric}_stderr,{filt}")
            stderr = float(stderr) if _finite(stderr) else None
            info = contracts.metric_info(name)
            low, high = normal_interval(float(value), stderr, confidence) if stderr is not None else (None, None)
            metrics[name] = {
                "value": float(value), "ci_low": low, "ci_high": high,
                "n": int(raw.get("sample_count", {}).get(key) or raw.get("sample_len") or 0) or None,
                "chance": chance if metric.startswith("acc") else None,
                "stderr": stderr, "higher_is_better": their_better.get(metric),
                "discontinuous": info.discontinuous,
            }
            disagree = their_better.get(metric) is not None and their_better[metric] != info.higher_is_better
            if disagree and (task.name, name) not in self._noted:
                self._noted.add((task.name, name))
                self.log(f"lm-eval: note: {task.name}/{name}: lm-eval says higher is "
                         f"{'better' if their_better[metric] else 'worse'}; losslens analyze reads it the other way")
        continuous, per_doc = extra
        result = {
            "task": task.name, "kind": KIND, "n_examples": len({(leaf, s["doc_id"]) for leaf, s in samples}),
            "scorer": "losslens" if continuous else "lm_eval.simple_evaluate",
            "metrics": dict(sorted((metrics | continuous).items())),
            "lm_eval": {
                "version": self.version, "tasks": list(task.leaves),
                "n_shot": {leaf: out.get("n-shot", {}).get(leaf) for leaf in task.leaves},
                "results": raw, "configs": configs,
            },
        }
        if per_example:
            result["examples"] = [_record(leaf, s) | per_doc.get((leaf, s.get("doc_id")), {}) for leaf, s in samples]
        return result


# ---------------------------------------------------------------- helpers


def _members(index: dict, name: str, seen: Optional[set] = None) -> Optional[list]:
    """The index entries behind ``name``: itself and, for a group or tag, its members, recursively.

    None when the name or one of its members is not in the index.
    """
    seen = set() if seen is None else seen
    entry = index.get(name)
    if entry is None:
        return None
    if name in seen:
        return []
    seen.add(name)
    out = [entry]
    if entry.kind.name == "TAG":
        children = sorted(entry.tags)
    elif entry.kind.name == "GROUP":
        children = list(_group_children(entry.cfg or {}, index))
    else:
        children = []
    for child in children:
        found = _members(index, child, seen)
        if found is None:
            return None
        out += found
    return out


def _group_children(cfg: dict, index: dict) -> Iterator[str]:
    """Names a group config refers to. Inline task configs are part of the group's own config."""
    items = cfg.get("task", [])
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict) and "group" in item:
            yield from _group_children(item, index)
        elif isinstance(item, dict) and item.get("task") in index:  # a registered task with overrides
            yield item["task"]


def _check_disjoint(tasks: list[HarnessTask]) -> None:
    # lm-eval refuses a task requested twice (alone and in a group, or in two groups).
    owner: dict[str, str] = {}
    for t in tasks:
        for leaf in t.leaves:
            if leaf in owner and owner[leaf] != t.name:
                raise DataError(f"--lm-eval: task {leaf!r} is in both {owner[leaf]!r} and {t.name!r}: name one of them")
            owner[leaf] = t.name


def _not_in_builtin_yaml(names: list[str]) -> list[str]:
    """The names that appear in none of lm-eval's built-in task YAML files (one pass over them)."""
    import lm_eval.tasks

    left = {n: n.encode() for n in names}
    for path in Path(lm_eval.tasks.__file__).parent.rglob("*.yaml"):
        if not left:
            break
        text = path.read_bytes()
        left = {n: b for n, b in left.items() if b not in text}
    return list(left)


def _hash_entry(h, entry) -> None:
    """A task's identity: its YAML config with includes resolved, helper modules beside it, local data files."""
    text = json.dumps(entry.cfg, sort_keys=True, default=str)
    if entry.yaml_path is not None:
        folder = Path(entry.yaml_path).parent
        text = text.replace(str(folder), "<task dir>")  # !function references: the same task wherever it lives
        for helper in sorted(folder.glob("*.py")):
            h.update(helper.name.encode() + helper.read_bytes())
    h.update(entry.name.encode() + text.encode())
    for path in _data_files(entry.cfg or {}):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)


def _data_files(cfg: dict) -> list[Path]:
    """Local files a task reads: ``dataset_kwargs.data_files`` (paths or globs) and a local ``dataset_path``.

    Relative paths are taken from the working directory, as the ``datasets`` library does.
    """
    kwargs = cfg.get("dataset_kwargs") or {}
    specs = kwargs.get("data_files") or []
    if isinstance(specs, dict):
        specs = list(specs.values())
    specs = [specs] if isinstance(specs, str) else list(specs)
    flat = [s for spec in specs for s in ([spec] if isinstance(spec, str) else list(spec))]
    found: list[Path] = []
    for spec in flat:
        found += [Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True))]
    dataset_path = cfg.get("dataset_path")
    if isinstance(dataset_path, str) and Path(dataset_path).expanduser().exists():
        local = Path(dataset_path).expanduser()
        found += [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    return [p for p in found if p.is_file()]


def _chance(samples: list[tuple[str, dict]]) -> Optional[float]:
    """Mean of 1/k over the documents of multiple-choice (task, sample) pairs, k the number of choices."""
    inv = {}
    for leaf, s in samples:
        k = len(s.get("arguments") or [])
        if "acc_mutual_info" in s.get("metrics", []):
            k //= 2  # lm-eval adds an unconditional request per choice
        if k:
            inv[(leaf, s.get("doc_id"))] = 1.0 / k
    return sum(inv.values()) / len(inv) if inv else None


def _record(leaf: str, s: dict) -> dict:
    """A per-example record: the document's id, the answer, and each metric under its results.csv name."""
    rec: dict[str, Any] = {"task": leaf, "doc_id": s.get("doc_id"), "filter": s.get("filter"),
                           "target": s.get("target")}
    resps = s.get("filtered_resps") or []
    if resps and all(isinstance(r, (list, tuple)) and r and _finite(r[0]) for r in resps):
        rec["logliks"] = [float(r[0]) for r in resps]
    elif resps:
        rec["prediction"] = resps[0]
    for metric in s.get("metrics", []):
        rec[metric_name(metric, s.get("filter", "none"))] = s.get(metric)
    return rec


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
