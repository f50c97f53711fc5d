"""Independent pieces of analyze's work (task x metric pairs, figures) in forked worker processes.

Workers are forked, not spawned: spawned ones would run the caller's main script again (a script
that calls ``analyze()`` without an ``if __name__ == "__main__"`` guard). Where fork is missing,
everything runs in this process. ``LOSSLENS_ANALYZE_WORKERS`` caps the workers (default: the cores
this process may use); 1 runs everything here.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator

from losslens.errors import LossLensError

WORKERS_ENV = "LOSSLENS_ANALYZE_WORKERS"


def max_workers() -> int:
    """The cap on worker processes: ``LOSSLENS_ANALYZE_WORKERS``, else the cores we may use."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if not text:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cap = int(text)
    except ValueError:
        raise LossLensError(f"{WORKERS_ENV}={text!r}: expected a whole number of workers") from None
    if cap < 1:
        raise LossLensError(f"{WORKERS_ENV}={text!r}: expected at least 1 worker")
    return cap


def _one_blas_thread() -> None:
    """Each worker is one core's worth of work; a threaded BLAS inside it only adds contention."""
    global _LIMITS  # kept alive for the worker's lifetime
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _LIMITS = threadpool_limits(limits=1, user_api="blas")


def fork_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)`` in order, over ``workers`` forked processes when there are several.

    ``fn`` and the items are pickled to the workers, the results back; state the workers only read
    may be left in module globals before the call, since forked workers inherit it.
    """
    items = list(items)
    workers = min(workers, len(items)) if "fork" in multiprocessing.get_all_start_methods() else 1
    if workers <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_one_blas_thread) as pool:
        yield from pool.map(fn, items)
