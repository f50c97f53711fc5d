"""The ``Table`` index of a results table: its runs, sizes, seeds, tasks and each task x metric's ``Series``,
and the table against another x-axis (:func:`with_x_axis`). Reading and checking the file is Core's
(:mod:`losslens.results_reader`), since ``losslens import-results`` checks what it writes with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from losslens.analyze.config import X_AXES
from losslens.contracts import DEFAULT_X_LABEL, PRETRAIN_TASK, SEED_COLUMN, metric_info
from losslens.counts import count_label
from losslens.errors import ResultsError
from losslens.results_reader import NO_SEED, read_results_columns

X_COLUMN = "x"  # the x-axis of every Series and of the scaling law: a copy of ``loss``, or bpb (:func:`with_x_axis`)
BPB_METRIC = "bpb"
BPB_X_LABEL = "validation bits per byte"


def read_results(path: str | Path) -> Table:
    """Parse and validate a results table (the checks: :func:`losslens.results_reader.parse_results_columns`);
    its x-axis (``cols["x"]``) is the ``loss`` column (see :func:`with_x_axis`)."""
    read = read_results_columns(path)
    return Table(path=Path(path), cols={**read.cols, X_COLUMN: read.cols["loss"]}, x_label=read.x_label)


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
    x: np.ndarray  # the table's x column: its loss, or bits per byte after :func:`with_x_axis`
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
    the x-axis column ``x`` holds (``x_label``: the pretraining loss, its bits per byte after
    :func:`with_x_axis`, or a stand-in named by the table); ``loss`` always holds the table's loss column.

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
        """One row per distinct (run, tokens): run, n_params, n_params_nonembed, tokens, step, flops, x, seed."""
        c = self.cols
        _, first = np.unique(np.rec.fromarrays([c["run"], c["tokens"]]), return_index=True)
        # by size, then run, then tokens
        idx = first[np.lexsort((c["tokens"][first], c["run"][first], c["n_params"][first]))]
        names = ("run", "n_params", "n_params_nonembed", "tokens", "step", "flops", X_COLUMN)
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
            x=c[X_COLUMN][idx], value=c["value"][idx], ci_low=c["ci_low"][idx], ci_high=c["ci_high"][idx],
            chance=float(np.median(chances)) if len(chances) else None, seed=self._seed_of_rows(idx),
        )


def with_x_axis(table: Table, x: str) -> Table:
    """The table against ``x``: ``loss`` (as read), or ``bpb``, each row's x (``cols["x"]``) replaced
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
    return dataclasses.replace(table, cols={**c, X_COLUMN: row_bpb}, x_label=BPB_X_LABEL)
