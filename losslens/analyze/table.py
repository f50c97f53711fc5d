"""Read and validate ``results.csv`` into typed numpy columns.

(Over 500 lines: reading, its checks and the Table index still share one file; split pending, issue 22.)

The table is the only input of analyze (see ``losslens.contracts``): one row per
checkpoint x task x metric. Every problem is reported as one line naming the file, the
line number and the column, so that a table written by another tool can be fixed by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from losslens.analyze.study_folder import check_table_matches_study  # noqa: F401  (analysis.py imports it here)
from losslens.contracts import (DEFAULT_X_LABEL, PRETRAIN_TASK, RESULTS_COLUMNS, RESULTS_SCHEMA, SEED_COLUMN,
                                TOKENIZER_COLUMN, X_LABEL_COLUMN, metric_info)
from losslens.counts import count_label  # also imported from here (report, plots, tests)
from losslens.errors import ResultsError


# column -> (parser, may the cell be empty?), from the contract's schema (which also holds each column's range)
_INT, _FLOAT, _STR = int, float, str
_SCHEMA = {name: (column.kind, column.optional) for name, column in RESULTS_SCHEMA.items()}
X_AXES = ("loss", "bpb")  # what a Series' x (``loss``) holds: the table's loss column, or the pretraining bpb
BPB_METRIC = "bpb"
BPB_X_LABEL = "validation bits per byte"
NO_SEED = ""  # the seed of every run of a table without a seed column


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
    seed: np.ndarray | None = None  # str: each point's seed label (``NO_SEED`` for a table without seeds)

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
    the ``loss`` column holds (``x_label``: the pretraining loss, its bits per byte after
    :func:`with_x_axis`, or a stand-in named by the table).

    Per-run and per-(task, metric) indexes are built once, on first use, so that every lookup costs
    the size of its answer, not of the table: ``cols`` must not change after the first query.
    """

    path: Path
    cols: dict[str, np.ndarray]
    x_label: str = DEFAULT_X_LABEL

    def __len__(self) -> int:
        return len(self.cols["run"])

    @cached_property
    def _run_info(self) -> dict[str, tuple[int, int, int]]:
        """run -> (n_params, n_params_nonembed, budget), in order of first appearance."""
        c = self.cols
        names, first, inverse = np.unique(c["run"], return_index=True, return_inverse=True)
        budget = np.zeros(len(names), dtype=np.int64)
        np.maximum.at(budget, inverse, c["tokens"])
        order = np.argsort(first, kind="stable")
        return {str(names[k]): (int(c["n_params"][first[k]]), int(c["n_params_nonembed"][first[k]]), int(budget[k]))
                for k in order}

    @cached_property
    def _run_seed(self) -> dict[str, str]:
        """run -> its seed label."""
        c = self.cols
        seed = c.get(SEED_COLUMN, np.full(len(c["run"]), NO_SEED))
        names, first = np.unique(c["run"], return_index=True)
        return {str(r): str(seed[i]) for r, i in zip(names, first)}

    @cached_property
    def _pairs(self) -> dict[tuple[str, str], np.ndarray]:
        """(task, metric) -> its rows ordered by size, run and tokens; pairs in order of first appearance."""
        c = self.cols
        order = np.lexsort((c["tokens"], c["run"], c["n_params"], c["metric"], c["task"]))
        key_t, key_m = c["task"][order], c["metric"][order]
        starts = np.flatnonzero(np.r_[True, (key_t[1:] != key_t[:-1]) | (key_m[1:] != key_m[:-1])])
        groups = np.split(order, starts[1:])
        groups.sort(key=lambda idx: idx.min())
        return {(str(c["task"][idx[0]]), str(c["metric"][idx[0]])): idx for idx in groups}

    # --- the study's grid -------------------------------------------------------------
    def runs(self) -> list[str]:
        """Runs ordered by model size, then by data budget."""
        return sorted(self._run_info, key=lambda r: (self.run_size(r), self.run_budget(r), r))

    def run_size(self, run: str) -> int:
        return self._run_info[run][0]

    def run_nonembed(self, run: str) -> int:
        return self._run_info[run][1]

    def run_budget(self, run: str) -> int:
        """The data budget of a run: the most tokens any of its checkpoints has seen."""
        return self._run_info[run][2]

    def sizes(self) -> list[int]:
        """Distinct model sizes (``n_params``), ascending."""
        return sorted({size for size, _, _ in self._run_info.values()})

    def size_label(self, n_params: int) -> str:
        """'0.8M'-style label of a size, from its non-embedding parameter count."""
        ne = next(ne for size, ne, _ in self._run_info.values() if size == n_params)
        return count_label(float(ne))

    def run_seed(self, run: str) -> str:
        """The seed label of a run (``NO_SEED`` when the table has no seed column)."""
        return self._run_seed[run]

    def seeds(self) -> list[str]:
        """Distinct seed labels, sorted."""
        return sorted(set(self._run_seed.values()))

    def seeds_per_size(self) -> dict[int, int]:
        """How many seeds each size (``n_params``) was trained with."""
        seen: dict[int, set[str]] = {}
        for run, seed in self._run_seed.items():
            seen.setdefault(self.run_size(run), set()).add(seed)
        return {size: len(seen[size]) for size in sorted(seen)}

    def has_seeds(self) -> bool:
        """Was some size trained with more than one seed? Only then does analyze have a seed level."""
        return max(self.seeds_per_size().values(), default=1) > 1

    def budgets(self) -> list[int]:
        return sorted({budget for _, _, budget in self._run_info.values()})

    def tasks(self) -> list[str]:
        """Downstream tasks. The ``pretrain`` rows (validation loss, bpb) are the x-axis, not a task:
        they feed the training curves and the scaling law, never a threshold or a verdict."""
        return sorted({task for task, _ in self._pairs} - {PRETRAIN_TASK})

    def metrics(self, task: str) -> list[str]:
        """A task's metrics, discontinuous ones first, then in order of first appearance."""
        seen = [m for t, m in self._pairs if t == task]
        return sorted(seen, key=lambda m: (not metric_info(m).discontinuous, seen.index(m)))

    def checkpoints(self) -> dict[str, np.ndarray]:
        """One row per distinct (run, tokens): run, n_params, n_params_nonembed, tokens, step, flops, loss, seed."""
        c = self.cols
        _, first = np.unique(np.rec.fromarrays([c["run"], c["tokens"]]), return_index=True)
        # by size, then run, then tokens
        idx = first[np.lexsort((c["tokens"][first], c["run"][first], c["n_params"][first]))]
        names = ("run", "n_params", "n_params_nonembed", "tokens", "step", "flops", "loss")
        return {**{name: c[name][idx] for name in names}, "seed": self._seed_of_rows(idx)}

    def _seed_of_rows(self, idx: np.ndarray) -> np.ndarray:
        return self.cols[SEED_COLUMN][idx] if SEED_COLUMN in self.cols else np.full(len(idx), NO_SEED)

    def series(self, task: str, metric: str) -> Series:
        c = self.cols
        idx = self._pairs.get((task, metric), np.empty(0, dtype=int))
        chances = c["chance"][idx]
        chances = chances[np.isfinite(chances)]
        return Series(
            task=task, metric=metric, run=c["run"][idx], n_params=c["n_params"][idx],
            n_params_nonembed=c["n_params_nonembed"][idx], tokens=c["tokens"][idx], flops=c["flops"][idx],
            loss=c["loss"][idx], value=c["value"][idx], ci_low=c["ci_low"][idx], ci_high=c["ci_high"][idx],
            chance=float(np.median(chances)) if len(chances) else None, seed=self._seed_of_rows(idx),
        )


def _parse_column(texts: list[str], kind: str, optional: bool) -> np.ndarray | None:
    """A column's cells as an array, or None when some cell is wrong (the slow path then names it)."""
    if kind == _STR:
        return None if not optional and "" in texts else np.array(texts, dtype=str)
    empty = [t == "" or (optional and t.lower() == "nan") for t in texts]
    if not optional and any(empty):
        return None
    try:
        values = np.array(["nan" if e else t for t, e in zip(texts, empty)]).astype(float)
    except ValueError:
        return None
    if not np.isfinite(values[~np.array(empty, dtype=bool)]).all():
        return None
    if kind == _INT and (values[np.isfinite(values)] % 1 != 0).any():
        return None
    return values


def _parse_rows(path: Path, texts: dict[str, list[str]], lines: list[int]) -> dict[str, list]:
    """Cell by cell, in file order: raises at the first wrong cell, naming its line and column."""
    rows: dict[str, list] = {c: [] for c in RESULTS_COLUMNS}
    for i, line in enumerate(lines):
        for col, (kind, optional) in _SCHEMA.items():
            text = texts[col][i]
            where = f"{path}:{line}: column {col!r}"
            if text == "" and not optional:
                raise ResultsError(f"{where}: empty")
            if optional and text.lower() in ("", "nan"):
                rows[col].append(math.nan)
                continue
            rows[col].append(_parse(text, kind, where))
    return rows


def _first_repeat(keys: np.ndarray) -> tuple[int, int] | None:
    """(i, j): the first row i whose key already appeared, at row j; None when keys are distinct."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    repeats = np.flatnonzero(first[inverse] != np.arange(len(keys)))
    return (int(repeats[0]), int(first[inverse[repeats[0]]])) if len(repeats) else None


def read_results(path: str | Path) -> Table:
    """Parse and validate a results table (its x-axis: the ``loss`` column; see :func:`with_x_axis`).

    Checks: every column of ``RESULTS_COLUMNS`` present (extra columns are ignored, but an
    ``x_label`` column must hold one label for the whole table), every cell
    of the right type (only flops, ci_low, ci_high, n and chance may be empty), loss > 0,
    tokens >= 0, one size per run, no checkpoint x task x metric given twice, values inside their
    metric's bounds, chance in [0, 1], and one loss, step, size and flops per checkpoint.
    A missing ``flops`` cell is filled with the usual estimate 6 * N_nonembed * tokens. An optional
    ``tokenizer`` column names each run's tokenizer (kept as ``cols["tokenizer"]``). An optional
    ``seed`` column labels each run's replicate, one label per run (``cols["seed"]``; without the
    column every run is one seed, labelled ``NO_SEED``).
    """
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: results table not found")
    _check_is_text(path)
    with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark (spreadsheet export) is not a cell
        text = f.read()
    return parse_results(text, path)


def parse_results(text: str, path: str | Path) -> Table:
    """:func:`read_results` of a table's text (``path`` names it in messages): also how a writer checks a
    table before writing it (``losslens import-results`` writes nothing analyze would refuse)."""
    path = Path(path)
    texts, lines = _read_cells(text, path)
    x_label = _x_label(path, dict(reversed([(t, line) for t, line in zip(texts.get(X_LABEL_COLUMN, []), lines)])))
    cols = _typed_columns(path, texts, lines)
    _check_runs_and_keys(path, cols, lines)
    given_flops = cols["flops"].copy()
    no_flops = ~np.isfinite(cols["flops"])
    cols["flops"][no_flops] = 6.0 * cols["n_params_nonembed"][no_flops] * cols["tokens"][no_flops]
    _check_bounds(path, cols, lines)
    _check_one_checkpoint_one_row(path, cols, lines)
    _check_consistency(path, {**cols, "flops": given_flops}, lines)  # estimates do not count as falls
    cols["line"] = np.array(lines)
    if TOKENIZER_COLUMN in texts:
        cols[TOKENIZER_COLUMN] = np.array(texts[TOKENIZER_COLUMN], dtype=str)
    cols[SEED_COLUMN] = _seed_column(path, texts.get(SEED_COLUMN), cols["run"], lines)
    return Table(path=path, cols=cols, x_label=x_label)


def _read_cells(text: str, path: Path) -> tuple[dict[str, list[str]], list[int]]:
    """The stripped cells of every column we read ({name: cells}), and each row's line number.

    A row with fewer cells than the header, or a last line without its line break, is a table cut mid-line
    (a copy or a write that stopped): refused, since the rows after it are missing."""
    if text and not text.endswith(("\n", "\r")):
        raise ResultsError(f"{path}:{text.count(chr(10)) + 1}: the last line has no line break: the table was cut "
                           f"mid-line (truncated?); if that row is complete, end it with a newline")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in RESULTS_COLUMNS if c not in header]
        if missing:
            raise ResultsError(f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(header) or 'none'})")
        twice = next((c for i, c in enumerate(header) if c in header[:i]), None)
        if twice is not None:  # which of the two would be read is a guess
            raise ResultsError(f"{path}:1: column {twice!r} appears twice in the header")
        raw, lines = [], []
        for row in reader:
            if not row:
                continue  # a blank line, as csv.DictReader skips it
            if len(row) != len(header):
                raise ResultsError(f"{path}:{reader.line_num}: {len(row)} cells, but the header has {len(header)} "
                                   + ("(cut mid-line?)" if len(row) < len(header) else "columns"))
            raw.append(row)
            lines.append(reader.line_num)
    except csv.Error as e:  # e.g. a quoted cell left open by a cut
        raise ResultsError(f"{path}:{reader.line_num}: not a readable CSV row ({e})") from None
    if not lines:
        raise ResultsError(f"{path}: no rows")
    position = {name: header.index(name) for name in [*RESULTS_COLUMNS, X_LABEL_COLUMN, TOKENIZER_COLUMN, SEED_COLUMN]
                if name in header}
    return {name: [r[k].strip() if k < len(r) else "" for r in raw] for name, k in position.items()}, lines


def _typed_columns(path: Path, texts: dict[str, list[str]], lines: list[int]) -> dict[str, np.ndarray]:
    """The columns of ``RESULTS_COLUMNS`` as arrays, vectorized; cell by cell only to name a wrong cell."""
    cols = {c: _parse_column(texts[c], *_SCHEMA[c]) for c in RESULTS_COLUMNS}
    if any(v is None for v in cols.values()):  # some cell is wrong: find the first, in file order
        rows = _parse_rows(path, texts, lines)
        cols = {c: np.array(v, dtype=str if _SCHEMA[c][0] == _STR else float) for c, v in rows.items()}
    _check_ranges(path, cols, lines)
    for c in ("n_params", "n_params_nonembed", "tokens", "step"):
        cols[c] = cols[c].astype(np.int64)
    return cols


def _check_ranges(path: Path, cols: dict[str, np.ndarray], lines: list[int]) -> None:
    """Every cell inside its column's range (``contracts.RESULTS_SCHEMA``; empty cells are nan and pass), before
    integers are cast: 1e295 parameters are out of range, not a wrapped-around negative count."""
    firsts = []
    for name, column in RESULTS_SCHEMA.items():
        r = column.range
        if r is None:
            continue
        v = cols[name]
        ok = np.isnan(v) | np.isin(v, np.array(r.also, dtype=float)) | (r.above_low(v) & r.below_high(v))
        bad = np.flatnonzero(~ok)
        if len(bad):
            firsts.append((int(bad[0]), name))
    if firsts:
        i, name = min(firsts)
        value = cols[name][i]
        shown = int(value) if RESULTS_SCHEMA[name].kind is int and abs(value) < 2**63 else float(value)
        raise ResultsError(f"{path}:{lines[i]}: column {name!r}: {RESULTS_SCHEMA[name].range.problem(shown)}")


def _check_consistency(path: Path, cols: dict[str, np.ndarray], lines: list[int]) -> None:
    """What a row or a run must agree with: n_params_nonembed <= n_params, both ends of an interval or neither,
    ci_low <= value <= ci_high (rounding aside), and, within a run, step and flops that never fall while
    tokens rise."""
    value, low, high = cols["value"], cols["ci_low"], cols["ci_high"]
    slack = 1e-9 * np.maximum(np.abs(value), 1.0)
    checks = [
        (cols["n_params_nonembed"] > cols["n_params"], "n_params_nonembed",
         lambda i: f"{int(cols['n_params_nonembed'][i])} is more than n_params {int(cols['n_params'][i])}"),
        (np.isnan(low) != np.isnan(high), "ci_low",
         lambda i: f"{'empty' if np.isnan(low[i]) else f'{low[i]:g}'}, but ci_high is "
                   f"{'empty' if np.isnan(high[i]) else f'{high[i]:g}'}: give both ends of the interval or neither"),
        (low > high, "ci_low", lambda i: f"{low[i]:g} is above ci_high {high[i]:g}"),
        ((low > value + slack) | (high < value - slack), "value",
         lambda i: f"{value[i]:g} lies outside its interval [{low[i]:g}, {high[i]:g}]"),
    ]
    for column in ("step", "flops"):
        falls = _falls_within_run(cols, column)
        checks.append((falls, column, lambda i, c=column: f"{cols[c][i]:g} at {int(cols['tokens'][i])} tokens is "
                                                          f"less than at fewer tokens of run {str(cols['run'][i])!r}; "
                                                          f"it cannot fall while tokens rise"))
    firsts = [(int(np.flatnonzero(bad)[0]), column, why) for bad, column, why in checks if bad.any()]
    if firsts:
        i, column, why = min(firsts, key=lambda f: f[0])
        raise ResultsError(f"{path}:{lines[i]}: column {column!r}: {why(i)}")


def _falls_within_run(cols: dict[str, np.ndarray], column: str) -> np.ndarray:
    """Rows whose ``column`` is below that of the run's previous checkpoint (by tokens; empty cells skipped).
    Rows of one checkpoint that disagree are :func:`_check_one_checkpoint_one_row`'s to report."""
    v = cols[column].astype(float)
    given = np.flatnonzero(~np.isnan(v))
    order = given[np.lexsort((cols["tokens"][given], cols["run"][given]))]
    run, tokens, vals = cols["run"][order], cols["tokens"][order], v[order]
    fall = np.r_[False, (run[1:] == run[:-1]) & (tokens[1:] > tokens[:-1]) & (vals[1:] < vals[:-1])]
    out = np.zeros(len(v), dtype=bool)
    out[order] = fall
    return out


def _check_runs_and_keys(path: Path, cols: dict[str, np.ndarray], lines: list[int]) -> None:
    """One size per run, no checkpoint x task x metric twice; the first offending row is reported."""
    run = cols["run"]
    head = _first_row_of(run)
    two_sizes = np.flatnonzero((cols["n_params"] != cols["n_params"][head])
                               | (cols["n_params_nonembed"] != cols["n_params_nonembed"][head]))
    key = np.array(["\0".join(k) for k in zip(run.tolist(), cols["tokens"].astype(str).tolist(),
                                                 cols["task"].tolist(), cols["metric"].tolist())])
    repeat = _first_repeat(key)
    if len(two_sizes) and (repeat is None or two_sizes[0] <= repeat[0]):
        i = int(two_sizes[0])
        raise ResultsError(f"{path}:{lines[i]}: column 'n_params': run {str(run[i])!r} has two sizes: "
                           f"{cols['n_params'][head[i]]} and {cols['n_params'][i]}")
    if repeat is not None:
        i, j = repeat
        raise ResultsError(
            f"{path}:{lines[i]}: duplicate row for run {str(run[i])!r}, tokens {cols['tokens'][i]}, task "
            f"{str(cols['task'][i])!r}, metric {str(cols['metric'][i])!r} (first on line {lines[j]})")


def _first_row_of(keys: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row with its key."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def _seed_column(path: Path, cells: list[str] | None, run: np.ndarray, lines: list[int]) -> np.ndarray:
    """Each row's seed label: the ``seed`` column (one non-empty label per run), or ``NO_SEED`` without it."""
    if cells is None:
        return np.full(len(run), NO_SEED)
    seed = np.array(cells, dtype=str)
    empty = np.flatnonzero(seed == "")
    if len(empty):
        raise ResultsError(f"{path}:{lines[empty[0]]}: column {SEED_COLUMN!r}: empty (label every run's seed, "
                           f"or drop the column)")
    head = _first_row_of(run)
    two = np.flatnonzero(seed != seed[head])
    if len(two):
        i = int(two[0])
        raise ResultsError(f"{path}:{lines[i]}: column {SEED_COLUMN!r}: run {str(run[i])!r} has seed {str(seed[i])!r}, "
                           f"but line {lines[head[i]]} says {str(seed[head[i]])!r}; a run has one seed")
    return seed


def _check_bounds(path: Path, cols: dict[str, np.ndarray], lines: list[int]) -> None:
    """Values inside their metric's bounds (``Metric.bounds``: an accuracy of 33 is a percentage, not a
    fraction; chance levels are a column range); the first offending row is reported."""
    names, inverse = np.unique(cols["metric"], return_inverse=True)
    bounds = np.array([metric_info(str(m)).bounds for m in names], dtype=float).reshape(-1, 2)
    low, high = bounds[inverse, 0], bounds[inverse, 1]
    value = cols["value"]
    bad_value = np.flatnonzero((value < low) | (value > high))
    if len(bad_value):
        i = int(bad_value[0])
        raise ResultsError(f"{path}:{lines[i]}: column 'value': metric {str(cols['metric'][i])!r} lies in "
                           f"[{low[i]:g}, {high[i]:g}], got {value[i]:g}")


def _check_one_checkpoint_one_row(path: Path, cols: dict[str, np.ndarray], lines: list[int]) -> None:
    """The rows of one checkpoint (run, tokens) agree on what describes it: its loss, step, sizes and flops.
    Two losses for one checkpoint (two tables pasted together, an evaluation of other weights) would
    put its task results at the wrong place on the x-axis."""
    key = np.rec.fromarrays([cols["run"], cols["tokens"]])
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    head = first[inverse]  # each row's first row of its checkpoint
    conflicts = {c: np.flatnonzero(~np.isclose(cols[c], cols[c][head], rtol=1e-6, atol=0.0))
                 for c in ("loss", "step", "n_params", "n_params_nonembed", "flops")}
    firsts = [(int(rows[0]), c) for c, rows in conflicts.items() if len(rows)]
    if firsts:
        i, c = min(firsts)
        raise ResultsError(f"{path}:{lines[i]}: column {c!r}: {cols[c][i]:.10g} for run {str(cols['run'][i])!r} at "
                           f"{cols['tokens'][i]} tokens, but line {lines[head[i]]} says {cols[c][head[i]]:.10g}; "
                           f"one checkpoint has one {c}")


def with_x_axis(table: Table, x: str) -> Table:
    """The table against ``x``: ``loss`` (as read), or ``bpb``, each row's x (its ``loss`` cell) replaced
    by its checkpoint's validation bits per byte (the ``pretrain``/``bpb`` row). Every Series, the
    checkpoints and so everything fitted to them are then in bits per byte, which do not depend on
    the tokenizer as tokens do."""
    if x not in X_AXES:
        raise ResultsError(f"--x: expected one of {', '.join(X_AXES)}, got {x!r}")
    if x == "loss":
        return table
    c = table.cols
    ckpt = np.unique(np.rec.fromarrays([c["run"], c["tokens"]]), return_inverse=True)[1].ravel()
    is_bpb = (c["task"] == PRETRAIN_TASK) & (c["metric"] == BPB_METRIC)
    if not is_bpb.any():
        raise ResultsError(f"{table.path}: x-axis bpb needs each checkpoint's bits per byte (task {PRETRAIN_TASK!r}, "
                           f"metric {BPB_METRIC!r}) and the table has none; analyze against loss (--x loss)")
    bpb = np.full(int(ckpt.max()) + 1, np.nan)
    bpb[ckpt[is_bpb]] = c["value"][is_bpb]
    row_bpb = bpb[ckpt]
    bad = np.flatnonzero(~(row_bpb > 0))
    if len(bad):
        i = int(bad[0])
        why = "has no" if np.isnan(row_bpb[i]) else f"has a non-positive ({row_bpb[i]:g})"
        raise ResultsError(f"{table.path}:{int(c['line'][i])}: x-axis bpb: run {str(c['run'][i])!r} at "
                           f"{int(c['tokens'][i])} tokens {why} {PRETRAIN_TASK}/{BPB_METRIC} row")
    return dataclasses.replace(table, cols={**c, "loss": row_bpb}, x_label=BPB_X_LABEL)


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


def _check_is_text(path: Path) -> None:
    """Refuse a binary file by name (the csv module would fail on it with a decoding traceback)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResultsError(f"{path}: not a UTF-8 CSV file ({e.reason} at byte {e.start})") from None
    if b"\0" in data:
        raise ResultsError(f"{path}: not a CSV file (holds NUL bytes)")
