"""CPU threads on a shared machine: use the cores that are free now, and never spin-wait on a taken one.

A laptop with a browser open, or a node shared with another job, is the common case. Using every core
then makes each parallel step wait for the thread that shares a core with the other program, and
OpenMP threads that spin while they wait burn that core's share too. So, before torch or numpy start
their thread pools, the default thread count becomes the number of free cores (the cores this process
may run on, less those busy right now), and OpenMP waits passively. A core busy with a *niced* job
counts as free: the scheduler gives such a job only what nobody else wants, so it yields to us (unless
we are niced ourselves). ``losslens run`` decides again at the start of each phase (:func:`use_free_cores`),
so a short command running during the first moment does not set the threads of the whole study.
``OMP_NUM_THREADS`` (and the other variables below) set by the user, ``train.threads`` and
``--threads`` still decide when given.
"""

from __future__ import annotations

import os
import sys
import time

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")
SAMPLE_SECONDS = 0.2  # long enough to see a busy core, short beside any command
_chosen_here: set[str] = set()  # the thread variables configure_for_shared_cpu set (the user set the others)


def allowed_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _we_are_niced() -> bool:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0) > 0
    except (AttributeError, OSError):
        return False


def cpu_times(stat_lines: list[str], nice_is_free: bool) -> dict[str, tuple[int, int]]:
    """Per-CPU (free, total) jiffies from the lines of /proc/stat: free is idle and I/O wait, and the
    time of niced processes when ``nice_is_free`` (columns: user nice system idle iowait irq softirq steal)."""
    times = {}
    for line in stat_lines:
        f = line.split()
        if f and f[0].startswith("cpu") and f[0][3:].isdigit():
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f[1:9])
            free = idle + iowait + (nice if nice_is_free else 0)
            times[f[0]] = (free, user + nice + system + idle + iowait + irq + softirq + steal)
    return times


def _sample(nice_is_free: bool) -> dict[str, tuple[int, int]] | None:
    try:
        with open("/proc/stat") as f:
            return cpu_times(f.readlines(), nice_is_free)
    except OSError:  # not Linux
        return None


def busy_cores(cpus: list[int]) -> float:
    """How many of ``cpus`` other programs keep busy: measured over a moment, else the 1-minute load."""
    nice_is_free = not _we_are_niced()
    before = _sample(nice_is_free)
    if before is not None:
        time.sleep(SAMPLE_SECONDS)
        after = _sample(nice_is_free) or {}
        busy = 0.0
        for cpu in (f"cpu{i}" for i in cpus):
            if cpu in before and cpu in after:
                free, total = (a - b for a, b in zip(after[cpu], before[cpu]))
                busy += 1 - free / total if total > 0 else 0.0
        return busy
    try:
        return os.getloadavg()[0]
    except OSError:  # the platform does not tell
        return 0.0


def free_cores() -> int:
    """Cores this process may use that nothing else is using (at least 1)."""
    cpus = allowed_cpus()
    return max(1, len(cpus) - round(min(busy_cores(cpus), len(cpus))))


def configure_for_shared_cpu() -> int:
    """Set the thread defaults before any thread pool starts; returns the default thread count."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep instead of spinning
    given = os.environ.get("OMP_NUM_THREADS", "")
    n = int(given) if given.isdigit() and int(given) > 0 else free_cores()
    for v in THREAD_VARIABLES:
        if v not in os.environ:
            os.environ[v] = str(n)
            _chosen_here.add(v)
    return n


def use_free_cores() -> int | None:
    """Measure again and resize the running thread pools (torch, BLAS) to the cores free now, where the
    thread count was losslens' choice; returns the new count, or None when the user's settings stand."""
    if "OMP_NUM_THREADS" not in _chosen_here:
        return None
    n = free_cores()
    for v in _chosen_here:
        os.environ[v] = str(n)  # for processes started from here on
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "numpy" in sys.modules and {"MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"} <= _chosen_here:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
    return n
