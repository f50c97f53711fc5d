"""Read ``results.csv`` into typed numpy columns, refusing any cell that breaks its column's rules.

The table is the only input of analyze (see ``losslens.contracts``), and ``losslens import-results`` checks
a table with this reader before writing it: one row per checkpoint x task x metric. Every problem is reported
as one line naming the file, the line number and the column, so that a table written by another tool can be
fixed by hand. The checks between cells and rows are :mod:`losslens.results_checks`'.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from losslens.contracts import (DEFAULT_X_LABEL, RESULTS_COLUMNS, RESULTS_SCHEMA, SEED_COLUMN, TOKENIZER_COLUMN,
                                X_LABEL_COLUMN)
from losslens.errors import ResultsError
from losslens.results_checks import check_columns, first_row_of

NO_SEED = ""  # the seed of every run of a table without a seed column


@dataclass
class ResultsColumns:
    """A checked table: ``cols[name]`` per column (plus ``line``, each row's line number, and ``seed``; ``tokenizer``
    when the table has one), and what its ``loss`` column holds (``x_label``)."""

    cols: dict[str, np.ndarray]
    x_label: str = DEFAULT_X_LABEL


def read_results_columns(path: str | Path) -> ResultsColumns:
    """Parse and validate a results table (the checks: :func:`parse_results_columns`)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: results table not found")
    _check_is_text(path)
    with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark (spreadsheet export) is not a cell
        text = f.read()
    return parse_results_columns(text, path)


def parse_results_columns(text: str, path: str | Path) -> ResultsColumns:
    """A table's text (``path`` names it in messages), parsed and validated.

    Checks: every column of ``RESULTS_COLUMNS`` present (extra columns are ignored, but an ``x_label`` column
    must hold one label for the whole table), every cell of the right type (only flops, ci_low, ci_high, n
    and chance may be empty) and inside its column's range, and what :func:`losslens.results_checks.check_columns`
    checks between cells and rows. A missing ``flops`` cell is filled with the usual estimate
    6 * N_nonembed * tokens. An optional ``tokenizer`` column names each run's tokenizer (kept as
    ``cols["tokenizer"]``). An optional ``seed`` column labels each run's replicate, one label per run
    (``cols["seed"]``; without the column every run is one seed, labelled ``NO_SEED``).
    """
    path = Path(path)
    texts, lines = _read_cells(text, path)
    x_label = _x_label(path, dict(reversed([(t, line) for t, line in zip(texts.get(X_LABEL_COLUMN, []), lines)])))
    cols = _typed_columns(path, texts, lines)
    check_columns(path, cols, lines)  # fills in missing flops
    cols["line"] = np.array(lines)
    if TOKENIZER_COLUMN in texts:
        cols[TOKENIZER_COLUMN] = np.array(texts[TOKENIZER_COLUMN], dtype=str)
    cols[SEED_COLUMN] = _seed_column(path, texts.get(SEED_COLUMN), cols["run"], lines)
    return ResultsColumns(cols=cols, x_label=x_label)


def _read_cells(text: str, path: Path) -> tuple[dict[str, list[str]], list[int]]:
    """The stripped cells of every column we read ({name: cells}), and each row's line number.

    A row with fewer cells than the header, or a last line without its line break, is a table cut mid-line
    (a copy or a write that stopped): refused, since the rows after it are missing."""
    if text and not text.endswith(("\n", "\r")):
        raise ResultsError.at(path, text.count(chr(10)) + 1,
                              "the last line has no line break: the table was cut mid-line (truncated?); "
                              "if that row is complete, end it with a newline")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in RESULTS_COLUMNS if c not in header]
        if missing:
            raise ResultsError(f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(header) or 'none'})")
        twice = next((c for i, c in enumerate(header) if c in header[:i]), None)
        if twice is not None:  # which of the two would be read is a guess
            raise ResultsError.at(path, 1, f"column {twice!r} appears twice in the header")
        raw, lines = [], []
        for row in reader:
            if not row:
                continue  # a blank line, as csv.DictReader skips it
            if len(row) != len(header):
                raise ResultsError.at(path, reader.line_num,
                                      f"{len(row)} cells, but the header has {len(header)} "
                                      + ("(cut mid-line?)" if len(row) < len(header) else "columns"))
            raw.append(row)
            lines.append(reader.line_num)
    except csv.Error as e:  # e.g. a quoted cell left open by a cut
        raise ResultsError.at(path, reader.line_num, f"not a readable CSV row ({e})") from None
    if not lines:
        raise ResultsError(f"{path}: no rows")
    position = {name: header.index(name) for name in [*RESULTS_COLUMNS, X_LABEL_COLUMN, TOKENIZER_COLUMN, SEED_COLUMN]
                if name in header}
    return {name: [r[k].strip() if k < len(r) else "" for r in raw] for name, k in position.items()}, lines


# ---------------------------------------------------------------- cells


def _typed_columns(path: Path, texts: dict[str, list[str]], lines: list[int]) -> dict[str, np.ndarray]:
    """The columns of ``RESULTS_COLUMNS`` as arrays; the first wrong cell in file order (by row, then by
    column) is reported."""
    cols, wrong = {}, []
    for position, name in enumerate(RESULTS_COLUMNS):
        cols[name], problem = _parse_column(texts[name], RESULTS_SCHEMA[name].kind, RESULTS_SCHEMA[name].optional)
        if problem is not None:
            wrong.append((problem[0], position, name, problem[1]))
    if wrong:
        i, _, name, problem = min(wrong)
        raise ResultsError.at(path, lines[i], f"column {name!r}: {problem}")
    _check_ranges(path, cols, lines)
    for c in ("n_params", "n_params_nonembed", "tokens", "step"):
        cols[c] = cols[c].astype(np.int64)
    return cols


def _parse_column(cells: list[str], kind: type, optional: bool) -> tuple[np.ndarray, tuple[int, str] | None]:
    """The one cell parser: a column's cells as an array (an optional column's empty or ``nan`` cells are nan),
    and its first wrong cell as (row, problem), or None."""
    text = np.array(cells, dtype=str)
    if kind is str:
        empty = np.flatnonzero(text == "") if not optional else []
        return text, (int(empty[0]), "empty") if len(empty) else None
    blank = (text == "") | (np.char.lower(text) == "nan") if optional else np.zeros(len(text), dtype=bool)
    values, not_number = _floats(np.where(blank, "nan", text))
    finite = np.isfinite(values)
    rules = [  # a wrong cell is told the first rule it breaks
        ((text == "") & ~blank, "empty"),
        (not_number, "expected a number, got {!r}"),
        (~finite & ~blank & ~not_number, "expected a finite number, got {!r}"),
        (_fractional(values, finite) if kind is int else np.zeros(len(text), dtype=bool),
         "expected an integer, got {!r}"),
    ]
    wrong = np.flatnonzero(np.logical_or.reduce([broken for broken, _ in rules]))
    if not len(wrong):
        return values, None
    i = int(wrong[0])
    return values, (i, next(why for broken, why in rules if broken[i]).format(cells[i]))


def _fractional(values: np.ndarray, finite: np.ndarray) -> np.ndarray:
    out = np.zeros(len(values), dtype=bool)
    out[finite] = values[finite] % 1 != 0
    return out


def _floats(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells as floats (numpy reads a number as Python's ``float`` does), and which cells are no number (nan)."""
    try:
        return text.astype(float), np.zeros(len(text), dtype=bool)
    except ValueError:  # some cell is no number: find which, one by one
        values = np.full(len(text), np.nan)
        not_number = np.zeros(len(text), dtype=bool)
        for i, t in enumerate(text.tolist()):
            try:
                values[i] = float(t)
            except ValueError:
                not_number[i] = True
        return values, not_number


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
        raise ResultsError.at(path, lines[i], f"column {name!r}: {RESULTS_SCHEMA[name].range.problem(shown)}")


# ---------------------------------------------------------------- what holds for the whole table or a run


def _x_label(path: Path, labels: dict[str, int]) -> str:
    """The table's one ``x_label`` (``losslens.contracts.X_LABEL_COLUMN``; label -> first line), or the default."""
    if not labels:
        return DEFAULT_X_LABEL
    if "" in labels:
        raise ResultsError.at(path, labels[''], f"column {X_LABEL_COLUMN!r}: empty (label every row, or drop the column)")
    if len(labels) > 1:
        (a, la), (b, lb) = sorted(labels.items(), key=lambda kv: kv[1])[:2]
        raise ResultsError.at(path, lb, f"column {X_LABEL_COLUMN!r}: {b!r}, but line {la} says {a!r}; "
                                        f"a table has one x-axis")
    return next(iter(labels))


def _seed_column(path: Path, cells: list[str] | None, run: np.ndarray, lines: list[int]) -> np.ndarray:
    """Each row's seed label: the ``seed`` column (one non-empty label per run), or ``NO_SEED`` without it."""
    if cells is None:
        return np.full(len(run), NO_SEED)
    seed = np.array(cells, dtype=str)
    empty = np.flatnonzero(seed == "")
    if len(empty):
        raise ResultsError.at(path, lines[empty[0]], f"column {SEED_COLUMN!r}: empty (label every run's seed, "
                                                     f"or drop the column)")
    head = first_row_of(run)
    two = np.flatnonzero(seed != seed[head])
    if len(two):
        i = int(two[0])
        raise ResultsError.at(path, lines[i], f"column {SEED_COLUMN!r}: run {str(run[i])!r} has seed "
                                              f"{str(seed[i])!r}, but line {lines[head[i]]} says "
                                              f"{str(seed[head[i]])!r}; a run has one seed")
    return seed


def _check_is_text(path: Path) -> None:
    """Refuse a binary file by name (the csv module would fail on it with a decoding traceback)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResultsError(f"{path}: not a UTF-8 CSV file ({e.reason} at byte {e.start})") from None
    if b"\0" in data:
        raise ResultsError(f"{path}: not a CSV file (holds NUL bytes)")
