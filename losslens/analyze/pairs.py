"""The per-(task, metric) work of analyze: threshold, verdict and alignment, pair by pair in parallel.

Pairs are independent, and on a real sweep they are most of analyze's time (the bootstrap of every
emergent pair), so they run in worker processes when there is enough work to pay for starting them
(:data:`PARALLEL_MIN_WORK`; see :mod:`losslens.analyze.parallel`). Each pair keeps its own seed,
so the results do not depend on the number of workers.
"""

from __future__ import annotations


import numpy as np
from tqdm import tqdm

from losslens.analyze.alignment import alignment_r2
from losslens.analyze.parallel import fork_map, max_workers
from losslens.analyze.table import Series, load_examples
from losslens.analyze.threshold import ThresholdResult, find_threshold

# points x bootstrap resamples, summed over pairs, below which a worker pool costs more than it saves
PARALLEL_MIN_WORK = 2_000_000


def analyze_pair(series: Series, run_dir, n_bootstrap: int, seed: int, ci_level: float = 0.95,
                 min_side: int = 3) -> tuple[ThresholdResult, dict]:
    """Threshold and verdict of one task x metric, and how well loss and compute align its sizes.
    Per-example records, if ``run_dir`` has them, are read here: one pair's at a time in memory."""
    res = find_threshold(series.loss, series.value, series.chance, higher_is_better=series.higher_is_better,
                         n_bootstrap=n_bootstrap, seed=seed, examples=load_examples(run_dir, series),
                         ci_level=ci_level, min_side=min_side)
    align = {"loss": alignment_r2(series.loss, series.value, series.n_params),
             "compute": alignment_r2(np.log10(np.maximum(series.flops, 1.0)), series.value, series.n_params)}
    return res, align


def _job(args):
    return analyze_pair(*args)


def analyze_pairs(jobs: list[tuple], progress: bool | None) -> list[tuple]:
    """:func:`analyze_pair` on every ``(series, run_dir, n_bootstrap, seed, ci_level, min_side)``, results in
    job order."""
    work = sum(len(s) * max(n_boot, 1) for s, _, n_boot, *_ in jobs)
    workers = max_workers() if work >= PARALLEL_MIN_WORK else 1
    # disable=None: a bar only on a terminal.
    return list(tqdm(fork_map(_job, jobs, workers), total=len(jobs), desc="thresholds", leave=False,
                     disable=None if progress is None else not progress))
