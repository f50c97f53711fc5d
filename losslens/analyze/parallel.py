"""Independent pieces of analyze's work (task x metric pairs, figures) in forked worker processes.

Workers are forked, not spawned: spawned ones would run the caller's main script again (a script
that calls ``analyze()`` without an ``if __name__ == "__main__"`` guard). Where fork is missing,
everything runs in this process. ``LOSSLENS_ANALYZE_WORKERS`` caps the workers (default: the cores
this process may use); 1 runs everything here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator

from threadpoolctl import threadpool_limits

from losslens.errors import LossLensError

WORKERS_ENV = "LOSSLENS_ANALYZE_WORKERS"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def call(job: Callable):
    """``job()``: for :func:`fork_map` over prepared calls (``functools.partial``s of module functions)."""
    return job()


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


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when its parent dies (kill -9 included), and drop the parent's
    signal handlers: a worker is stopped by its parent, never left drawing after the command ended."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent still kills its workers when it stops
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _start_worker(parent: int) -> None:
    global _LIMITS  # kept alive for the worker's lifetime
    _die_with_parent(parent)
    # Each worker is one core's worth of work; a threaded BLAS inside it only adds contention.
    _LIMITS = threadpool_limits(limits=1, user_api="blas")


def fork_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)`` in order, over ``workers`` forked processes when there are several.

    ``fn`` and the items are pickled to the workers, the results back; state the workers only read
    may be left in module globals before the call, since forked workers inherit it. If anything stops
    the caller (an error, Ctrl-C, SIGTERM), the workers are killed before the exception goes on.
    """
    items = list(items)
    workers = min(workers, len(items)) if "fork" in multiprocessing.get_all_start_methods() else 1
    if workers <= 1:
        yield from map(fn, items)
        return
    try:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker,
                                   initargs=(os.getpid(),))
    except OSError:  # no semaphores (a full or missing /dev/shm): the work still gets done, here
        yield from map(fn, items)
        return
    previous = _exit_on_sigterm()
    try:
        yield from pool.map(fn, items)
    except BaseException:
        # ProcessPoolExecutor has no public way to stop running workers before Python 3.14
        # (terminate_workers); shutdown() would wait for them to finish their figures first.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    pool.shutdown()


def _exit_on_sigterm():
    """While workers run, SIGTERM becomes an exception in the caller (exit status 143, as the default
    action gives), so that the workers are killed and temporary output removed on the way out.
    Returns the previous handler (None off the main thread, where handlers cannot be set)."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:
        return None
