"""The per-(task, metric) work of analyze: threshold, verdict and alignment, pair by pair in parallel.

Pairs are independent, and on a real sweep they are most of analyze's time (the bootstrap of every
emergent pair), so they run in worker processes when there is enough work to pay for starting them
(:data:`PARALLEL_MIN_WORK`). Each pair keeps its own seed, so the results do not depend on the
number of workers. ``LOSSLENS_ANALYZE_WORKERS`` caps the workers (default: the cores this process
may use); 1 runs everything in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext

import numpy as np
from tqdm import tqdm

from losslens.analyze.alignment import alignment_r2
from losslens.analyze.table import Series
from losslens.analyze.threshold import ThresholdResult, find_threshold
from losslens.errors import LossLensError

# points x bootstrap resamples, summed over pairs, below which a worker pool costs more than it saves
PARALLEL_MIN_WORK = 2_000_000
WORKERS_ENV = "LOSSLENS_ANALYZE_WORKERS"


def analyze_pair(series: Series, examples, n_bootstrap: int, seed: int) -> tuple[ThresholdResult, dict]:
    """Threshold and verdict of one task x metric, and how well loss and compute align its sizes."""
    res = find_threshold(series.loss, series.value, series.chance, higher_is_better=series.higher_is_better,
                         n_bootstrap=n_bootstrap, seed=seed, examples=examples)
    align = {"loss": alignment_r2(series.loss, series.value, series.n_params),
             "compute": alignment_r2(np.log10(np.maximum(series.flops, 1.0)), series.value, series.n_params)}
    return res, align


def _job(args):
    return analyze_pair(*args)


def _one_blas_thread_in_worker() -> None:
    """Each worker is one core's worth of work; a threaded BLAS inside it only adds contention."""
    global _LIMITS  # kept alive for the worker's lifetime
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _LIMITS = threadpool_limits(limits=1, user_api="blas")


def worker_count(work: int) -> int:
    """How many processes to use for ``work`` (points x resamples over all pairs)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        try:
            cap = int(text)
        except ValueError:
            raise LossLensError(f"{WORKERS_ENV}={text!r}: expected a whole number of workers") from None
        if cap < 1:
            raise LossLensError(f"{WORKERS_ENV}={text!r}: expected at least 1 worker")
    else:
        cap = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if work < PARALLEL_MIN_WORK else cap


def analyze_pairs(jobs: list[tuple[Series, list | None, int, int]], progress: bool | None) -> list[tuple]:
    """:func:`analyze_pair` on every ``(series, examples, n_bootstrap, seed)``, results in job order."""
    work = sum(len(s) * max(n_boot, 1) for s, _, n_boot, _ in jobs)
    # Forked workers: spawned ones would run the caller's main script again (a script calling analyze()
    # without an ``if __name__ == "__main__"`` guard). Where fork is missing, everything runs here.
    fork = "fork" in multiprocessing.get_all_start_methods()
    workers = min(worker_count(work), len(jobs)) if fork else 1
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                initializer=_one_blas_thread_in_worker) if workers > 1 else nullcontext())
    with pool:
        results = pool.map(_job, jobs) if workers > 1 else map(_job, jobs)
        # disable=None: a bar only on a terminal.
        return list(tqdm(results, total=len(jobs), desc="thresholds", leave=False,
                         disable=None if progress is None else not progress))
