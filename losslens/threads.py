"""CPU threads on a shared machine: use the cores that are free now, and never spin-wait on a taken one.

A laptop with a browser open, or a node shared with another job, is the common case. Using every core
then makes each parallel step wait for the thread that shares a core with the other program, and
OpenMP threads that spin while they wait burn that core's share too. So, once per command and before
torch or numpy start their thread pools, the default thread count becomes the number of free cores
(the cores this process may run on, less those busy right now), and OpenMP waits passively.
``OMP_NUM_THREADS`` (and the other variables below) set by the user, ``train.threads`` and
``--threads`` still decide when given.
"""

from __future__ import annotations

import os
import time

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")
SAMPLE_SECONDS = 0.2  # long enough to see a busy core, short beside any command


def allowed_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_times() -> dict[str, tuple[int, int]] | None:
    """Per-CPU (idle, total) jiffies from /proc/stat (Linux), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            lines = [l.split() for l in f if l.startswith("cpu") and l[3].isdigit()]
    except OSError:
        return None
    return {l[0]: (int(l[4]) + int(l[5]), sum(int(v) for v in l[1:9])) for l in lines}


def busy_cores(cpus: list[int]) -> float:
    """How many of ``cpus`` other programs keep busy: measured over a moment, else the 1-minute load."""
    before = _cpu_times()
    if before is not None:
        time.sleep(SAMPLE_SECONDS)
        after = _cpu_times() or {}
        busy = 0.0
        for cpu in (f"cpu{i}" for i in cpus):
            if cpu in before and cpu in after:
                idle, total = (a - b for a, b in zip(after[cpu], before[cpu]))
                busy += 1 - idle / total if total > 0 else 0.0
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
        os.environ.setdefault(v, str(n))
    return n
