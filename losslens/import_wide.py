"""Wide CSV exports -> checkpoints for ``losslens import-results``.

Weights & Biases (and the OLMo ladder, which publishes W&B exports) write one row per logged step and
one column per logged metric. The mapping's ``wide:`` section (:class:`WideSpec`) says which column is
the loss (the x-axis), which columns are which task x metric, and how to get the tokens seen:

* ``metrics``: each a metric name and a column template holding ``{task}``; ``tasks`` maps each task
  name to the key(s) put in for ``{task}``. Several keys are averaged (e.g. MMLU's four categories).
* a metric marked ``lower_is_better: true`` (bits per byte, perplexity) must read that way in the metric
  registry (:func:`losslens.contracts.metric_info`), because analyze reads direction and bounds from the
  metric's name: the mark is checked here, not stored.
* tokens from the ``tokens`` column where a file has it and the cell is filled, else ``step`` x the
  ``batch_size`` column, else ``step`` x the mapping's ``tokens_per_step``.

Rows with an empty (or NaN) loss cell are steps that logged something else and are skipped; an empty
metric cell means that metric was not evaluated there. Errors name the file, line and column, or the
mapping field. Imports nothing heavy.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from losslens.contracts import metric_info
from losslens.errors import ConfigError, DataError
from losslens.fsio import read_text_file

TASK_SLOT = "{task}"


@dataclass
class WideMetric:
    """One metric: its name in the results table and the columns holding it."""

    metric: str  # e.g. acc_len_norm, bpb: how analyze reads it comes from this name
    column: str  # a template with {task}, e.g. "eval/downstream/{task}_rc_5shot_len_norm"
    lower_is_better: Optional[bool] = None  # checked against the metric registry's reading of ``metric``


@dataclass
class WideSpec:
    """The ``wide:`` section of an import mapping."""

    loss: str  # the column on the x-axis, e.g. "eval/c4_en-validation/CrossEntropyLoss"
    metrics: list[WideMetric]
    tasks: dict[str, Union[str, list[str]]]  # task name -> key(s) for {task}; several are averaged
    x_label: Optional[str] = None  # what the loss column is (default: its name)
    step: str = "_step"  # the optimizer step column
    tokens: Optional[str] = None  # the tokens-seen column, used where a file has it and the cell is filled
    batch_size: Optional[str] = None  # the tokens-per-step column: tokens = step x it otherwise

    def describe_x(self) -> str:
        return self.x_label or self.loss


@dataclass
class WideCheckpoint:
    """One row of a wide file: a checkpoint's progress, loss and (task, metric, value) triples."""

    line: int
    step: int
    tokens: int
    loss: float
    values: list[tuple[str, str, float]] = field(default_factory=list)


def check_wide_spec(spec: WideSpec, mapping_path: Path) -> None:
    """The mapping's own mistakes, before any file is read."""
    if not spec.metrics:
        raise ConfigError(f"{mapping_path}: wide.metrics: no metrics given")
    if not spec.tasks:
        raise ConfigError(f"{mapping_path}: wide.tasks: no tasks given")
    for i, m in enumerate(spec.metrics):
        where = f"{mapping_path}: wide.metrics[{i}]"
        if TASK_SLOT not in m.column:
            raise ConfigError(f"{where}.column: {m.column!r} has no {TASK_SLOT} for the task keys of wide.tasks")
        reads_lower = not metric_info(m.metric).higher_is_better
        if m.lower_is_better is not None and m.lower_is_better != reads_lower:
            raise ConfigError(
                f"{where}.lower_is_better: {str(m.lower_is_better).lower()}, but the metric registry reads "
                f"{m.metric!r} as {'lower' if reads_lower else 'higher'}-is-better; name it accordingly "
                f"(e.g. bpb, bits_per_byte, perplexity are lower-is-better)")
    for task, keys in spec.tasks.items():
        if isinstance(keys, list) and not keys:
            raise ConfigError(f"{mapping_path}: wide.tasks.{task}: no keys given")


def _number(text: str, path: Path, line: int, column: str) -> Optional[float]:
    """A cell as a float; None when empty or NaN (not logged at that step)."""
    text = text.strip()
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"{path}:{line}: column {column!r}: {text!r} is not a number") from None
    if math.isnan(v):
        return None
    if math.isinf(v):
        raise DataError(f"{path}:{line}: column {column!r}: {text} is not finite")
    return v


def _count(text: str, path: Path, line: int, column: str) -> Optional[int]:
    v = _number(text, path, line, column)
    if v is None:
        return None
    if v < 0 or v != int(v):
        raise DataError(f"{path}:{line}: column {column!r}: expected a whole number >= 0, got {text.strip()}")
    return int(v)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    text = read_text_file(path, DataError)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected a header row of column names)")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise DataError(f"{path}:{i}: {len(row)} cells, but the header has {len(rows[0])}")
    return rows[0], rows[1:]


def _column_index(header: list[str], path: Path, column: str, field_name: str) -> int:
    try:
        return header.index(column)
    except ValueError:
        raise DataError(f"{path}: column {column!r}: not in the file (named by {field_name})") from None


@dataclass
class _ValueColumns:
    """The column(s) of one task x metric in a file; several are averaged."""

    task: str
    metric: str
    indices: list[int]
    names: list[str]
    bounds: tuple[float, float]  # the metric's range in the registry


@dataclass
class _Columns:
    """Where each mapped column sits in one file's header."""

    loss: int
    step: int
    tokens: Optional[int]
    batch: Optional[int]
    values: list[_ValueColumns]


def _columns(header: list[str], path: Path, spec: WideSpec, tokens_per_step: Optional[int]) -> _Columns:
    def index(column: str, field_name: str) -> int:
        return _column_index(header, path, column, f"wide.{field_name}")

    tokens = header.index(spec.tokens) if spec.tokens in header else None
    batch = index(spec.batch_size, "batch_size") if spec.batch_size else None
    if tokens is None and batch is None and tokens_per_step is None:
        missing = f"no column {spec.tokens!r} (wide.tokens)" if spec.tokens else "no tokens column"
        raise ConfigError(f"{path}: {missing}; give wide.batch_size or tokens_per_step to count tokens as step x it")
    values = []
    for i, m in enumerate(spec.metrics):
        for task, keys in spec.tasks.items():
            names = [m.column.replace(TASK_SLOT, k) for k in ([keys] if isinstance(keys, str) else keys)]
            indices = [index(n, f"metrics[{i}].column for task {task}") for n in names]
            values.append(_ValueColumns(task, m.metric, indices, names, metric_info(m.metric).bounds))
    return _Columns(index(spec.loss, "loss"), index(spec.step, "step"), tokens, batch, values)


def _tokens(row: list[str], cols: _Columns, step: int, tokens_per_step: Optional[int], path: Path,
            line: int, header: list[str]) -> int:
    if cols.tokens is not None:
        tokens = _count(row[cols.tokens], path, line, header[cols.tokens])
        if tokens is not None:
            return tokens
    if cols.batch is not None:
        batch = _count(row[cols.batch], path, line, header[cols.batch])
        if batch is not None:
            return step * batch
    if tokens_per_step is None:
        raise DataError(f"{path}:{line}: no tokens count (empty tokens and batch-size cells, no tokens_per_step)")
    return step * tokens_per_step


def _mean_value(row: list[str], cols: _ValueColumns, path: Path, line: int) -> Optional[float]:
    """The mean of a task's key columns; None where any is empty (not evaluated at that step)."""
    parts = [_number(row[i], path, line, n) for i, n in zip(cols.indices, cols.names)]
    if any(p is None for p in parts):
        return None
    low, high = cols.bounds
    for v, n in zip(parts, cols.names):
        if not low <= v <= high:
            raise DataError(f"{path}:{line}: column {n!r}: {v:g} is outside [{low:g}, {high:g}], "
                            f"the range of metric {cols.metric!r}")
    return sum(parts) / len(parts)


def read_wide_file(path: str | Path, spec: WideSpec, tokens_per_step: Optional[int] = None) -> list[WideCheckpoint]:
    """The checkpoints of one wide CSV file (rows with a loss), in file order."""
    path = Path(path)
    header, rows = _read_csv(path)
    cols = _columns(header, path, spec, tokens_per_step)
    out = []
    for line, row in enumerate(rows, start=2):
        loss = _number(row[cols.loss], path, line, spec.loss)
        if loss is None:
            continue
        if loss <= 0:
            raise DataError(f"{path}:{line}: column {spec.loss!r}: the x-axis must be positive, got {loss:g}")
        step = _count(row[cols.step], path, line, spec.step)
        if step is None:
            raise DataError(f"{path}:{line}: column {spec.step!r}: empty (the step, wide.step)")
        ck = WideCheckpoint(line, step, _tokens(row, cols, step, tokens_per_step, path, line, header), loss)
        for vc in cols.values:
            value = _mean_value(row, vc, path, line)
            if value is not None:
                ck.values.append((vc.task, vc.metric, value))
        out.append(ck)
    if not out:
        raise DataError(f"{path}: column {spec.loss!r}: no row has a loss (wide.loss)")
    return out
