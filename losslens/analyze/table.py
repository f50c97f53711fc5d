"""Read and validate ``results.csv`` into typed numpy columns.

The table is the only input of analyze (see ``losslens.contracts``): one row per
checkpoint x task x metric. Every problem is reported as one line naming the file, the
line number and the column, so that a table written by another tool can be fixed by hand.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from losslens.contracts import (DEFAULT_X_LABEL, META_FILE, PRETRAIN_TASK, RESULTS_COLUMNS, X_LABEL_COLUMN,
                                checkpoint_dirname, list_runs, metric_info, read_meta)
from losslens.errors import LossLensError


class ResultsError(LossLensError):
    """A results table (or a per-example record) that cannot be analyzed."""


# column -> (parser, may the cell be empty?)
_INT, _FLOAT, _STR = "int", "float", "str"
_SCHEMA = {
    "run": (_STR, False), "n_params": (_INT, False), "n_params_nonembed": (_INT, False),
    "tokens": (_INT, False), "step": (_INT, False), "flops": (_FLOAT, True), "loss": (_FLOAT, False),
    "task": (_STR, False), "metric": (_STR, False), "value": (_FLOAT, False),
    "ci_low": (_FLOAT, True), "ci_high": (_FLOAT, True), "n": (_INT, True), "chance": (_FLOAT, True),
}
assert tuple(_SCHEMA) == RESULTS_COLUMNS


def count_label(n: float) -> str:
    """Short label for a count: 812345 -> '0.81M', 4.2e6 -> '4.2M', 32768 -> '33K', 1.5e9 -> '1.5B'."""
    for suffix, scale, floor in (("T", 1e12, 1e12), ("B", 1e9, 1e9), ("M", 1e6, 1e5), ("K", 1e3, 1e3)):
        if n >= floor:
            v = n / scale
            return f"{v:.0f}{suffix}" if v >= 100 else f"{v:.2g}{suffix}"
    return f"{n:g}"


def _parse(text: str, kind: str, where: str) -> float | int | str:
    if kind == _STR:
        return text
    try:
        v = float(text)
    except ValueError:
        raise ResultsError(f"{where}: expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise ResultsError(f"{where}: expected a finite number, got {text!r}")
    if kind == _INT:
        if v != int(v):
            raise ResultsError(f"{where}: expected an integer, got {text!r}")
        return int(v)
    return v


@dataclass
class Series:
    """The points of one task x metric: one per checkpoint, ordered by run then tokens."""

    task: str
    metric: str
    run: np.ndarray  # str
    n_params: np.ndarray
    n_params_nonembed: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    value: np.ndarray
    ci_low: np.ndarray  # nan where absent
    ci_high: np.ndarray
    chance: float | None  # median of the column's non-empty cells; None if all empty

    def __len__(self) -> int:
        return len(self.value)

    @property
    def discontinuous(self) -> bool:
        return metric_info(self.metric).discontinuous

    @property
    def higher_is_better(self) -> bool:
        return metric_info(self.metric).higher_is_better


@dataclass
class Table:
    """All rows of a results table as numpy columns (``cols[name]``), plus the source path and what
    the ``loss`` column holds (``x_label``: the pretraining loss, or a stand-in named by the table)."""

    path: Path
    cols: dict[str, np.ndarray]
    x_label: str = DEFAULT_X_LABEL

    def __len__(self) -> int:
        return len(self.cols["run"])

    # --- the study's grid -------------------------------------------------------------
    def runs(self) -> list[str]:
        """Runs ordered by model size, then by data budget."""
        return sorted(set(self.cols["run"].tolist()), key=lambda r: (self.run_size(r), self.run_budget(r), r))

    def run_size(self, run: str) -> int:
        return int(self.cols["n_params"][self.cols["run"] == run][0])

    def run_nonembed(self, run: str) -> int:
        return int(self.cols["n_params_nonembed"][self.cols["run"] == run][0])

    def run_budget(self, run: str) -> int:
        """The data budget of a run: the most tokens any of its checkpoints has seen."""
        return int(self.cols["tokens"][self.cols["run"] == run].max())

    def sizes(self) -> list[int]:
        """Distinct model sizes (``n_params``), ascending."""
        return sorted(set(self.cols["n_params"].tolist()))

    def size_label(self, n_params: int) -> str:
        """'0.8M'-style label of a size, from its non-embedding parameter count."""
        ne = self.cols["n_params_nonembed"][self.cols["n_params"] == n_params][0]
        return count_label(float(ne))

    def budgets(self) -> list[int]:
        return sorted({self.run_budget(r) for r in set(self.cols["run"].tolist())})

    def tasks(self) -> list[str]:
        """Downstream tasks. The ``pretrain`` rows (validation loss, bpb) are the x-axis, not a task:
        they feed the training curves and the scaling law, never a threshold or a verdict."""
        return sorted(set(self.cols["task"].tolist()) - {PRETRAIN_TASK})

    def metrics(self, task: str) -> list[str]:
        """A task's metrics, discontinuous ones first, then in order of first appearance."""
        seen = list(dict.fromkeys(self.cols["metric"][self.cols["task"] == task].tolist()))
        return sorted(seen, key=lambda m: (not metric_info(m).discontinuous, seen.index(m)))

    def checkpoints(self) -> dict[str, np.ndarray]:
        """One row per distinct (run, tokens): run, n_params, n_params_nonembed, tokens, step, flops, loss."""
        keys = list(zip(self.cols["run"].tolist(), self.cols["tokens"].tolist()))
        first = sorted({k: i for i, k in reversed(list(enumerate(keys)))}.values(),
                       key=lambda i: (self.run_size(keys[i][0]), keys[i][0], keys[i][1]))
        idx = np.array(first, dtype=int)
        names = ("run", "n_params", "n_params_nonembed", "tokens", "step", "flops", "loss")
        return {c: self.cols[c][idx] for c in names}

    def series(self, task: str, metric: str) -> Series:
        c = self.cols
        sel = np.flatnonzero((c["task"] == task) & (c["metric"] == metric))
        order = sorted(sel, key=lambda i: (c["n_params"][i], c["run"][i], c["tokens"][i]))
        idx = np.array(order, dtype=int)
        chances = c["chance"][idx]
        chances = chances[np.isfinite(chances)]
        return Series(
            task=task, metric=metric, run=c["run"][idx], n_params=c["n_params"][idx],
            n_params_nonembed=c["n_params_nonembed"][idx], tokens=c["tokens"][idx], flops=c["flops"][idx],
            loss=c["loss"][idx], value=c["value"][idx], ci_low=c["ci_low"][idx], ci_high=c["ci_high"][idx],
            chance=float(np.median(chances)) if len(chances) else None,
        )


def read_results(path: str | Path) -> Table:
    """Parse and validate a results table.

    Checks: every column of ``RESULTS_COLUMNS`` present (extra columns are ignored, but an
    ``x_label`` column must hold one label for the whole table), every cell
    of the right type (only flops, ci_low, ci_high, n and chance may be empty), loss > 0,
    tokens >= 0, one size per run, and no checkpoint x task x metric given twice.
    A missing ``flops`` cell is filled with the usual estimate 6 * N_nonembed * tokens.
    """
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: results table not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in RESULTS_COLUMNS if c not in header]
        if missing:
            raise ResultsError(f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(header) or 'none'})")
        rows: dict[str, list] = {c: [] for c in RESULTS_COLUMNS}
        lines: list[int] = []
        x_labels: dict[str, int] = {}  # label -> first line
        for row in reader:
            line = reader.line_num
            if None in row:  # more cells than header fields
                raise ResultsError(f"{path}:{line}: more cells than columns in the header")
            if X_LABEL_COLUMN in row:
                x_labels.setdefault((row[X_LABEL_COLUMN] or "").strip(), line)
            for col, (kind, optional) in _SCHEMA.items():
                text = (row[col] or "").strip()
                where = f"{path}:{line}: column {col!r}"
                if text == "" and not optional:
                    raise ResultsError(f"{where}: empty")
                if optional and text.lower() in ("", "nan"):
                    rows[col].append(math.nan)
                    continue
                rows[col].append(_parse(text, kind, where))
            lines.append(line)
    if not lines:
        raise ResultsError(f"{path}: no rows")
    x_label = _x_label(path, x_labels)

    cols = {c: np.array(v, dtype=str if _SCHEMA[c][0] == _STR else float) for c, v in rows.items()}
    for c in ("n_params", "n_params_nonembed", "tokens", "step"):
        cols[c] = cols[c].astype(np.int64)

    def fail(i: int, col: str, why: str) -> ResultsError:
        return ResultsError(f"{path}:{lines[i]}: column {col!r}: {why}")

    bad = np.flatnonzero(cols["loss"] <= 0)
    if len(bad):
        raise fail(bad[0], "loss", f"must be positive (nats/token), got {cols['loss'][bad[0]]:g}")
    for c in ("n_params", "n_params_nonembed"):
        bad = np.flatnonzero(cols[c] <= 0)
        if len(bad):
            raise fail(bad[0], c, f"must be positive, got {cols[c][bad[0]]}")
    bad = np.flatnonzero(cols["tokens"] < 0)
    if len(bad):
        raise fail(bad[0], "tokens", f"must be >= 0, got {cols['tokens'][bad[0]]}")

    size_of: dict[str, tuple[int, int]] = {}
    seen: dict[tuple, int] = {}
    for i, run in enumerate(rows["run"]):
        size = (int(cols["n_params"][i]), int(cols["n_params_nonembed"][i]))
        if size_of.setdefault(run, size) != size:
            raise fail(i, "n_params", f"run {run!r} has two sizes: {size_of[run][0]} and {size[0]}")
        key = (run, int(cols["tokens"][i]), rows["task"][i], rows["metric"][i])
        if key in seen:
            raise ResultsError(
                f"{path}:{lines[i]}: duplicate row for run {run!r}, tokens {key[1]}, task {key[2]!r}, "
                f"metric {key[3]!r} (first on line {seen[key]})")
        seen[key] = lines[i]

    no_flops = ~np.isfinite(cols["flops"])
    cols["flops"][no_flops] = 6.0 * cols["n_params_nonembed"][no_flops] * cols["tokens"][no_flops]
    cols["line"] = np.array(lines)
    return Table(path=path, cols=cols, x_label=x_label)


def _x_label(path: Path, labels: dict[str, int]) -> str:
    """The table's one ``x_label`` (``losslens.contracts.X_LABEL_COLUMN``; label -> first line), or the default."""
    if not labels:
        return DEFAULT_X_LABEL
    if "" in labels:
        raise ResultsError(f"{path}:{labels['']}: column {X_LABEL_COLUMN!r}: empty (label every row, or drop the column)")
    if len(labels) > 1:
        (a, la), (b, lb) = sorted(labels.items(), key=lambda kv: kv[1])[:2]
        raise ResultsError(f"{path}:{lb}: column {X_LABEL_COLUMN!r}: {b!r}, but line {la} says {a!r}; "
                           f"a table has one x-axis")
    return next(iter(labels))


def check_table_matches_study(table: Table, run_dir: str | Path) -> None:
    """Refuse a table whose runs are not this study's: a results.csv copied from another study
    would otherwise yield a report that looks right and describes other models.

    A folder with no runs (e.g. one holding a table made elsewhere) is not checked. A checkpoint
    deleted after it was evaluated is fine; one that exists must have the table's parameter count.
    """
    runs = {p.name: p for p in list_runs(run_dir)}
    if not runs:
        return
    c = table.cols
    for i in range(len(table)):
        run, tokens = str(c["run"][i]), int(c["tokens"][i])
        where = f"{table.path}:{int(c['line'][i])}"
        if run not in runs:
            raise ResultsError(f"{where}: run {run!r} is not a run of the study in {run_dir} (its runs: "
                               f"{', '.join(sorted(runs))}); is this a results table from another study?")
        ckpt = runs[run] / checkpoint_dirname(tokens)
        if (ckpt / META_FILE).is_file():
            try:
                n_params = int(read_meta(ckpt)["n_params"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # an unreadable meta.json is evaluate's to report, not analyze's
            if n_params != int(c["n_params"][i]):
                raise ResultsError(f"{where}: run {run!r} has n_params {int(c['n_params'][i])} but its checkpoint "
                                   f"{ckpt} has {n_params}; is this a results table from another study?")


def load_examples(run_dir: str | Path | None, series: Series) -> list[np.ndarray | None] | None:
    """Per-example values of ``series.metric`` for each point, from ``RUN_DIR/evals/<run>/<ckpt>/<task>.json``.

    Returns None when no point has records (the usual case for tables made elsewhere), else a
    list with an array (or None where that checkpoint has no record) per point. Examples that
    lack the metric or hold a non-number are skipped.
    """
    if run_dir is None:
        return None
    out: list[np.ndarray | None] = []
    for run, tokens in zip(series.run, series.tokens):
        path = Path(run_dir) / "evals" / str(run) / checkpoint_dirname(int(tokens)) / f"{series.task}.json"
        if not path.is_file():
            out.append(None)
            continue
        try:
            records = json.loads(path.read_text(encoding="utf-8")).get("examples")
        except (OSError, ValueError, AttributeError) as e:
            raise ResultsError(f"{path}: cannot read per-example records ({e})") from None
        vals = [ex.get(series.metric) for ex in (records or []) if isinstance(ex, dict)]
        vals = np.array([v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)], dtype=float)
        out.append(vals if len(vals) else None)
    return out if any(v is not None for v in out) else None
