"""What the typed columns of a results table must agree on, between cells and rows (the cells themselves are
:mod:`losslens.results_reader`'s). Each check reports the first offending row, as one line naming the file,
the line and the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from losslens.contracts import metric_info
from losslens.errors import ResultsError


def check_columns(path: Path, cols: dict[str, np.ndarray], lines: list[int]) -> None:
    """One size per run, no checkpoint x task x metric twice, values inside their metric's bounds, one loss, step,
    size and flops per checkpoint, consistent intervals, and step and flops that never fall while tokens rise.
    Fills the empty ``flops`` cells with the usual estimate 6 * N_nonembed * tokens (in place)."""
    _check_runs_and_keys(path, cols, lines)
    given_flops = cols["flops"].copy()
    no_flops = ~np.isfinite(cols["flops"])
    cols["flops"][no_flops] = 6.0 * cols["n_params_nonembed"][no_flops] * cols["tokens"][no_flops]
    _check_bounds(path, cols, lines)
    _check_one_checkpoint_one_row(path, cols, lines)
    _check_consistency(path, {**cols, "flops": given_flops}, lines)  # estimates do not count as falls


def first_row_of(keys: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row with its key."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def _first_repeat(keys: np.ndarray) -> tuple[int, int] | None:
    """(i, j): the first row i whose key already appeared, at row j; None when keys are distinct."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    repeats = np.flatnonzero(first[inverse] != np.arange(len(keys)))
    return (int(repeats[0]), int(first[inverse[repeats[0]]])) if len(repeats) else None


def _check_runs_and_keys(path: Path, cols: dict[str, np.ndarray], lines: list[int]) -> None:
    """One size per run, no checkpoint x task x metric twice; the first offending row is reported."""
    run = cols["run"]
    head = first_row_of(run)
    two_sizes = np.flatnonzero((cols["n_params"] != cols["n_params"][head])
                               | (cols["n_params_nonembed"] != cols["n_params_nonembed"][head]))
    key = np.array(["\0".join(k) for k in zip(run.tolist(), cols["tokens"].astype(str).tolist(),
                                                 cols["task"].tolist(), cols["metric"].tolist())])
    repeat = _first_repeat(key)
    if len(two_sizes) and (repeat is None or two_sizes[0] <= repeat[0]):
        i = int(two_sizes[0])
        raise ResultsError.at(path, lines[i], f"column 'n_params': run {str(run[i])!r} has two sizes: "
                                              f"{cols['n_params'][head[i]]} and {cols['n_params'][i]}")
    if repeat is not None:
        i, j = repeat
        raise ResultsError.at(
            path, lines[i], f"duplicate row for run {str(run[i])!r}, tokens {cols['tokens'][i]}, task "
            f"{str(cols['task'][i])!r}, metric {str(cols['metric'][i])!r} (first on line {lines[j]})")


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
        raise ResultsError.at(path, lines[i], f"column 'value': metric {str(cols['metric'][i])!r} lies in "
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
        raise ResultsError.at(path, lines[i], f"column {c!r}: {cols[c][i]:.10g} for run {str(cols['run'][i])!r} at "
                                              f"{cols['tokens'][i]} tokens, but line {lines[head[i]]} says "
                                              f"{cols[c][head[i]]:.10g}; one checkpoint has one {c}")


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
        raise ResultsError.at(path, lines[i], f"column {column!r}: {why(i)}")


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
