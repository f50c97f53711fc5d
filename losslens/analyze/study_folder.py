"""The table against the study folder it came from: its runs are the folder's, and the per-example
records behind a Series (``RUN_DIR/evals/<run>/<checkpoint>/<task>.json``, as evaluate writes them)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from losslens.contracts import EVALS_DIR, META_FILE, checkpoint_dirname, list_runs, read_meta
from losslens.errors import ResultsError

if TYPE_CHECKING:
    from losslens.analyze.table import Series, Table


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
        path = Path(run_dir) / EVALS_DIR / str(run) / checkpoint_dirname(int(tokens)) / f"{series.task}.json"
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
