"""Other labs' result files -> a losslens ``results.csv``.

``losslens import-results MAPPING.yaml --out results.csv`` reads either wide CSV exports (one row per
checkpoint, one column per metric, as Weights & Biases and the OLMo ladder write them: the mapping's
``wide:`` section, :mod:`losslens.import_wide`, ``configs/import/olmo-ladder.yaml``) or one harness
result JSON per checkpoint, in either layout the harness has written:

* before 0.4: ``{"results": {task: {"acc": v, "acc_stderr": s, ...}}, "config": {"model_args": ...}}``;
* 0.4: ``{"results": {task: {"acc,none": v, "acc_stderr,none": s, "alias": ...}}, ...}``, where
  ``metric,filter`` becomes ``metric`` for the filter ``none`` and ``metric:filter`` otherwise, as in
  ``losslens evaluate --lm-eval``.

A small YAML (see ``configs/import/pythia-deduped.yaml``) says which files belong to which run,
the run's parameter counts, and how far each checkpoint was trained: ``step``/``tokens`` per file,
or the step read from the file's own ``config.model_args`` (``revision=stepN``) times
``tokens_per_step``. Such files hold no pretraining loss, so ``x_axis`` names the task metric that
stands for it (e.g. LAMBADA perplexity, as ln ppl with ``transform: ln``): its value fills the
``loss`` column, its label the ``x_label`` column (``losslens.contracts.X_LABEL_COLUMN``), and the
report and plots say that this is the x-axis. The x-axis metric itself is not written as a task row
(against itself it is a straight line). A wide mapping names its loss column instead (``wide.loss``).

Every problem is one line naming the file and key (exit code 2), and nothing is written unless every
file was read; the table is written atomically. Imports nothing heavy (no torch).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import glob
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from losslens.records import build_dataclass, read_yaml_mapping
from losslens.contracts import RESULTS_COLUMNS, RESULTS_SCHEMA, X_LABEL_COLUMN, metric_info
from losslens.errors import ConfigError, DataError, ResultsError
from losslens.fsio import atomic_write_text, read_text_file
from losslens.import_wide import WideSpec, check_wide_spec, read_wide_file
from losslens.outputs import refuse_overwriting_inputs
from losslens.results_reader import parse_results_columns
from losslens.metrics import metric_name, normal_interval
from losslens.schema import NonNegativeInt, PositiveInt

CONFIDENCE = 0.95  # the harness reports a standard error; the table holds this normal interval around the value
_REVISION_RE = re.compile(r"(?:^|,)\s*revision\s*=\s*(?:[\w.-]*?)step(\d+)\s*(?:,|$)")


@dataclass
class XAxis:
    """The task metric that stands for pretraining loss on the x-axis."""

    task: str
    metric: str
    transform: Literal["none", "ln"] = "none"  # ln: e.g. perplexity -> ln ppl, a cross-entropy in nats
    label: Optional[str] = None  # default: "<task> <metric>" (with "ln" in front when transformed)

    def describe(self) -> str:
        if self.label:
            return self.label
        return f"{'ln ' if self.transform == 'ln' else ''}{self.task} {self.metric}"


@dataclass
class FileSpec:
    """One result file, with its training progress when the file does not say it."""

    path: str
    step: Optional[NonNegativeInt] = None
    tokens: Optional[NonNegativeInt] = None


@dataclass
class RunSpec:
    n_params: Annotated[int, RESULTS_SCHEMA["n_params"].range]
    files: Union[str, list[Union[str, FileSpec]]]  # glob pattern(s) or paths, relative to ``root``
    # default: n_params (e.g. the OLMo ladder's N counts every weight); at most n_params
    n_params_nonembed: Optional[Annotated[int, RESULTS_SCHEMA["n_params_nonembed"].range]] = None

    @property
    def nonembed(self) -> int:
        return self.n_params if self.n_params_nonembed is None else self.n_params_nonembed


@dataclass
class ImportMapping:
    runs: dict[str, RunSpec]  # run name -> its files and size
    x_axis: Optional[XAxis] = None  # harness result files: the task metric on the x-axis
    wide: Optional[WideSpec] = None  # wide CSV exports instead: their columns (losslens.import_wide)
    root: Optional[str] = None  # where file paths start; relative to the mapping file (default: its folder)
    tokens_per_step: Optional[PositiveInt] = None  # tokens = step x this, where a file gives no tokens
    tasks: Optional[list[str]] = None  # harness files: names or fnmatch patterns; default: every task in the files
    metrics: Optional[list[str]] = None  # harness files: default every numeric metric
    # task -> chance level of its accuracies
    chance: dict[str, Annotated[float, RESULTS_SCHEMA["chance"].range]] = field(default_factory=dict)


@dataclass
class HarnessFile:
    """One harness result file, both layouts read into one shape."""

    path: Path
    results: dict[str, dict[str, tuple[float, Optional[float]]]]  # task -> metric -> (value, stderr)
    model_args: str
    # task -> metric -> what the file holds instead of a finite number (NaN, Infinity, "N/A", true): not
    # imported, and counted aloud (:func:`import_results`), never dropped without a word
    not_numbers: dict[str, dict[str, object]] = field(default_factory=dict)

    def step(self) -> Optional[int]:
        m = _REVISION_RE.search(self.model_args)
        return int(m.group(1)) if m else None


@dataclass
class ImportSummary:
    out: Path
    n_rows: int
    runs: list[str]
    n_checkpoints: int
    tasks: list[str]
    x_label: str
    skipped: list[str] = field(default_factory=list)  # results that are not numbers, "FILE: results.T.M = 'N/A'"


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _number(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def read_harness_file(path: str | Path) -> HarnessFile:
    """Parse one lm-evaluation-harness result JSON (pre-0.4 or 0.4 layout)."""
    path = Path(path)
    text = read_text_file(path, DataError)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    results = raw.get("results") if isinstance(raw, dict) else None
    if not isinstance(results, dict):
        raise DataError(f"{path}: results: missing or not a mapping (is this an lm-evaluation-harness result file?)")
    parsed: dict[str, dict[str, tuple[float, Optional[float]]]] = {}
    not_numbers: dict[str, dict[str, object]] = {}
    for task, entries in results.items():
        if not isinstance(entries, dict):
            raise DataError(f"{path}: results.{task}: expected a mapping of metrics, got {type(entries).__name__}")
        parsed[str(task)], not_numbers[str(task)] = _metrics_of(path, str(task), entries)
    config = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    args = config.get("model_args", "")
    if isinstance(args, dict):  # 0.4 may keep them as a mapping
        args = ",".join(f"{k}={v}" for k, v in args.items())
    return HarnessFile(path, parsed, str(args or ""), {t: bad for t, bad in not_numbers.items() if bad})


_NOT_METRICS = {"alias", "sample_len", "samples", "sample_count"}  # entries of a task that are no metric


def _metrics_of(path: Path, task: str, entries: dict) -> tuple[dict, dict]:
    """(metric -> (value, stderr), metric -> a value that is not a finite number) of one task's entries."""
    metrics, not_numbers = {}, {}
    layout_04 = any("," in str(k) for k in entries)
    for key, value in entries.items():
        metric, _, filt = str(key).partition(",")
        if metric.endswith("_stderr") or metric in _NOT_METRICS or (layout_04 and not filt):
            continue  # stderr entries go with their metric
        name = metric_name(metric, filt) if filt else metric
        if _number(value) is None:
            not_numbers[name] = value
            continue
        stderr_key = f"{metric}_stderr,{filt}" if filt else f"{metric}_stderr"
        stderr = _number(entries.get(stderr_key))  # "N/A" (the harness without a bootstrap): no interval
        if stderr is not None and stderr < 0:
            raise DataError(f"{path}: results.{task}.{stderr_key}: a standard error is not negative, got {stderr:g}")
        metrics[name] = (_number(value), stderr)
    return metrics, not_numbers


def load_mapping(path: str | Path) -> ImportMapping:
    path = Path(path)
    mapping = build_dataclass(ImportMapping, read_yaml_mapping(path, "import mapping"), "", str(path))
    if not mapping.runs:
        raise ConfigError(f"{path}: runs: no runs given")
    for run, spec in mapping.runs.items():
        if spec.nonembed > spec.n_params:
            raise ConfigError(f"{path}: runs.{run}.n_params_nonembed: {spec.nonembed} is more than "
                              f"n_params {spec.n_params}")
    if (mapping.x_axis is None) == (mapping.wide is None):
        raise ConfigError(f"{path}: x_axis: give x_axis (harness result files) or wide (CSV exports), not "
                          f"{'both' if mapping.wide else 'neither'}")
    if mapping.wide is not None:
        for key in ("tasks", "metrics"):
            if getattr(mapping, key) is not None:
                raise ConfigError(f"{path}: {key}: for harness result files; a wide mapping names them in wide.{key}")
        check_wide_spec(mapping.wide, path)
    return mapping


def _x_label(mapping: ImportMapping) -> str:
    return mapping.wide.describe_x() if mapping.wide is not None else mapping.x_axis.describe()


def _run_files(mapping_path: Path, root: Path, run: str, spec: RunSpec) -> list[FileSpec]:
    """The files of one run: globs expanded (sorted), explicit paths checked to exist."""
    items = [spec.files] if isinstance(spec.files, str) else spec.files
    out: list[FileSpec] = []
    for i, item in enumerate(items):
        where = f"{mapping_path}: runs.{run}.files" + ("" if isinstance(spec.files, str) else f"[{i}]")
        entry = FileSpec(item) if isinstance(item, str) else item
        if _is_pattern(entry.path):
            found = sorted(glob.glob(str(root / entry.path)))
            if not found:
                raise ConfigError(f"{where}: pattern {entry.path!r} matches no file under {root}")
            out += [FileSpec(p, entry.step, entry.tokens) for p in found]
        elif not (root / entry.path).is_file():
            raise ConfigError(f"{where}: {root / entry.path} not found")
        else:
            out.append(FileSpec(str(root / entry.path), entry.step, entry.tokens))
    return out


def _progress(hf: HarnessFile, spec: FileSpec, mapping: ImportMapping, where: str) -> tuple[int, int]:
    """(step, tokens) of one checkpoint: from the mapping, else ``revision=stepN`` x tokens_per_step."""
    step = spec.step if spec.step is not None else hf.step()
    if step is None:
        raise DataError(f"{hf.path}: config.model_args: no revision=stepN in {hf.model_args!r}; "
                        f"give step (or step and tokens) for this file in {where}")
    if spec.tokens is not None:
        return step, spec.tokens
    if mapping.tokens_per_step is None:
        raise ConfigError(f"{where}: tokens_per_step: required to turn step {step} of {hf.path.name} into tokens")
    return step, step * mapping.tokens_per_step


def _x_value(hf: HarnessFile, x: XAxis) -> float:
    value = hf.results.get(x.task, {}).get(x.metric)
    if value is None and x.metric in hf.not_numbers.get(x.task, {}):
        raise DataError(f"{hf.path}: results.{x.task}.{x.metric}: {hf.not_numbers[x.task][x.metric]!r} is not a "
                        f"finite number (the x-axis, x_axis in the mapping)")
    if value is None:
        raise DataError(f"{hf.path}: results.{x.task}.{x.metric}: missing (the x-axis, x_axis in the mapping)")
    v = value[0]
    if x.transform == "ln":
        if v <= 0:
            raise DataError(f"{hf.path}: results.{x.task}.{x.metric}: {v:g} has no logarithm (x_axis.transform: ln)")
        v = math.log(v)
    if v <= 0:
        raise DataError(f"{hf.path}: results.{x.task}.{x.metric}: the x-axis must be positive, got {v:g}")
    return v


def _selected(hf: HarnessFile, mapping: ImportMapping) -> list[tuple[str, str]]:
    """(task, metric) pairs of a file to write (those that are not numbers included: the caller counts them).
    A task named literally in ``tasks`` must be there."""
    names = mapping.tasks
    if names is None:
        tasks = sorted(hf.results)
    else:
        for name in names:
            if not _is_pattern(name) and name not in hf.results:
                raise DataError(f"{hf.path}: results.{name}: missing (the mapping's tasks name it)")
        tasks = sorted(t for t in hf.results if any(fnmatch.fnmatchcase(t, n) for n in names))
    pairs = []
    for task in tasks:
        for metric in [*hf.results[task], *hf.not_numbers.get(task, {})]:
            if (task, metric) == (mapping.x_axis.task, mapping.x_axis.metric):
                continue
            if mapping.metrics is None or metric in mapping.metrics or metric.partition(":")[0] in mapping.metrics:
                pairs.append((task, metric))
    return pairs


def _row(mapping: ImportMapping, run: str, spec: RunSpec, step: int, tokens: int, loss: float, task: str,
         metric: str, value: float, stderr: Optional[float] = None) -> dict:
    """One results.csv row; a discontinuous metric gets its task's chance level from the mapping."""
    chance = mapping.chance.get(task) if metric_info(metric).discontinuous else None
    low, high = ("", "") if stderr is None else map(repr, normal_interval(value, stderr, CONFIDENCE))
    return {
        "run": run, "n_params": spec.n_params, "n_params_nonembed": spec.nonembed,
        "tokens": tokens, "step": step, "flops": "", "loss": repr(loss), "task": task, "metric": metric,
        "value": repr(value), "ci_low": low, "ci_high": high,
        "n": "", "chance": "" if chance is None else repr(chance), X_LABEL_COLUMN: _x_label(mapping),
    }


def _check_new(seen: dict[tuple[str, int], str], run: str, tokens: int, step: int, where: str) -> None:
    """One source per checkpoint: two files (or rows) at the same tokens of a run are a mistake."""
    if (run, tokens) in seen:
        raise DataError(f"{where}: run {run!r} at {tokens} tokens (step {step}) is also {seen[(run, tokens)]}")
    seen[(run, tokens)] = where


def _harness_rows(mapping: ImportMapping, run: str, spec: RunSpec, files: list[FileSpec], where: str,
                  seen: dict[tuple[str, int], str], skipped: list[str]) -> list[dict]:
    rows = []
    for fs in files:
        hf = read_harness_file(fs.path)
        step, tokens = _progress(hf, fs, mapping, where)
        _check_new(seen, run, tokens, step, str(hf.path))
        loss = _x_value(hf, mapping.x_axis)
        for task, metric in _selected(hf, mapping):
            if metric not in hf.results[task]:
                skipped.append(f"{hf.path}: results.{task}.{metric} = {hf.not_numbers[task][metric]!r}")
                continue
            value, stderr = hf.results[task][metric]
            rows.append(_row(mapping, run, spec, step, tokens, loss, task, metric, value, stderr))
    return rows


def _wide_rows(mapping: ImportMapping, run: str, spec: RunSpec, files: list[FileSpec], where: str,
               seen: dict[tuple[str, int], str]) -> list[dict]:
    rows = []
    for i, fs in enumerate(files):
        if fs.step is not None or fs.tokens is not None:
            raise ConfigError(f"{where}[{i}]: step/tokens are for harness files; a wide file's rows give them")
        for ck in read_wide_file(fs.path, mapping.wide, mapping.tokens_per_step):
            _check_new(seen, run, ck.tokens, ck.step, f"{fs.path}:{ck.line}")
            rows += [_row(mapping, run, spec, ck.step, ck.tokens, ck.loss, task, metric, value)
                     for task, metric, value in ck.values]
    return rows


def _rows_of_run(mapping: ImportMapping, run: str, spec: RunSpec, files: list[FileSpec], where: str,
                 seen: dict[tuple[str, int], str], skipped: list[str]) -> list[dict]:
    if mapping.wide is not None:
        return _wide_rows(mapping, run, spec, files, where, seen)
    return _harness_rows(mapping, run, spec, files, where, seen, skipped)


def import_results(mapping: str | Path, out: str | Path, *, root: str | Path | None = None) -> ImportSummary:
    """Read the result files a mapping names and write them as one ``results.csv`` at ``out``.

    ``root`` (default: the mapping's ``root``, relative to the mapping file, else its folder) is where
    the mapping's file paths start. Nothing is written if any file or key is wrong.
    """
    mapping_path = Path(mapping)
    spec = load_mapping(mapping_path)
    if root is None:
        root = mapping_path.parent / spec.root if spec.root else mapping_path.parent
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{mapping_path}: root: {root} is not a directory")
    rows: list[dict] = []
    seen: dict[tuple[str, int], str] = {}
    skipped: list[str] = []
    inputs: list[Path] = [mapping_path]
    for run, run_spec in spec.runs.items():
        files = _run_files(mapping_path, root, run, run_spec)
        inputs += [fs.path for fs in files]
        rows += _rows_of_run(spec, run, run_spec, files, f"{mapping_path}: runs.{run}.files", seen, skipped)
    if not rows:
        raise DataError(f"{mapping_path}: tasks/metrics: no result matches them in the files")
    rows.sort(key=lambda r: (r["n_params"], r["run"], r["tokens"], r["task"], r["metric"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*RESULTS_COLUMNS, X_LABEL_COLUMN], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out = Path(out)
    refuse_overwriting_inputs([out], inputs, "--out")
    try:  # nothing analyze would refuse is written: the same schema and checks, before writing
        parse_results_columns(buf.getvalue(), out)
    except ResultsError as e:
        raise DataError(f"{mapping_path}: not written, analyze would refuse the table: {e}") from None
    atomic_write_text(out, buf.getvalue())
    return ImportSummary(out, len(rows), list(spec.runs), len(seen), sorted({r["task"] for r in rows}),
                         _x_label(spec), skipped)


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mapping", type=Path, help="YAML mapping result files (harness JSON or wide CSV) to runs "
                             "(configs/import/*.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="results table to write (e.g. results.csv)")
    parser.add_argument("--root", type=Path, help="folder the mapping's file paths start from (default: its root)")


def main(args: argparse.Namespace) -> int:
    s = import_results(args.mapping, args.out, root=args.root)
    if s.skipped:
        print(f"warning: {len(s.skipped)} results are not numbers and were not imported (first: {s.skipped[0]})",
              file=sys.stderr)
    print(f"imported {s.n_checkpoints} checkpoints of {len(s.runs)} runs, {len(s.tasks)} tasks: {s.n_rows} rows")
    print(f"x-axis: {s.x_label}")
    print(f"table:  {s.out}  (next: losslens analyze --results {s.out})")
    return 0
