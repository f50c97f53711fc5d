"""demo-quick on a shared CPU: each phase alone, beside one busy process, and beside niced ones, in one run.

    python bench/shared_cpu.py [--config configs/demo-quick.yaml] [--repeats 3] [--only-niced]

Runs ``losslens run CONFIG --out TMP --no-plots`` alone, then beside one CPU-bound process (a Python
spin loop that ends by itself), then beside one ``nice -n 19`` spin loop per core, reads the train /
evaluate / analyze wall times that ``losslens run`` prints, and prints each phase's slowdown.
Each case is measured in pairs (alone, then beside), interleaved, and medians are taken. Targets:
beside one busy process the worst phase at most 2.2x slower; beside niced spinners, which yield to
us, the whole run at least 0.9x as fast as alone (the last line, ``ratio niced_spinner``).
Thread counts are left to losslens (no OMP_NUM_THREADS is set).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIN = "import os, time\nos.nice({nice})\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
TIMES_RE = re.compile(r"done in \d+ s \((.*)\)")


def run_phases(config: Path, busy_seconds: float = 0, spinners: int = 1, nice: int = 0) -> dict[str, float]:
    """Wall seconds of each phase of one ``losslens run``, beside ``spinners`` spin loops (of niceness
    ``nice``) when ``busy_seconds``."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    code = SPIN.format(seconds=busy_seconds, nice=nice)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(spinners if busy_seconds else 0)]
    try:
        if procs:
            time.sleep(1.0)  # let them take their cores
            if nice:
                now, before = busy_both_ways()
                print(f"  beside the niced spinners, cores measured busy: {now:.2f} (niced time free), "
                      f"{before:.2f} (niced time busy, as before)", flush=True)
        with tempfile.TemporaryDirectory(prefix="shared-cpu-") as out:
            result = subprocess.run(
                [sys.executable, "-m", "losslens", "run", str(config), "--out", out, "--no-plots"],
                env=env, capture_output=True, text=True, cwd=ROOT,
            )
    finally:
        for spinner in procs:
            spinner.kill()
            spinner.wait()
    if result.returncode != 0:
        sys.exit(f"losslens run failed:\n{result.stderr[-3000:]}")
    line = TIMES_RE.search(result.stdout)
    return {name: float(sec) for name, sec in re.findall(r"(\w+) (\d+(?:\.\d+)?) s", line.group(1))}


def busy_both_ways(seconds: float = 2.0) -> tuple[float, float]:
    """Cores measured busy over ``seconds`` from the same two /proc/stat samples: (niced time counted as
    free, as losslens does now; counted as busy, as it did before)."""
    from losslens.threads import allowed_cpus, cpu_times

    with open("/proc/stat") as f:
        before = f.readlines()
    time.sleep(seconds)
    with open("/proc/stat") as f:
        after = f.readlines()
    result = []
    for nice_is_free in (True, False):
        a, b = cpu_times(before, nice_is_free), cpu_times(after, nice_is_free)
        cpus = [f"cpu{i}" for i in allowed_cpus()]
        result.append(sum(1 - (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in cpus))
    return result[0], result[1]


def _pairs(config: Path, repeats: int, **beside) -> list[tuple[dict[str, float], dict[str, float]]]:
    """``repeats`` pairs of runs, alone then beside the spin loops: interleaved, so that a change in the
    machine's other load while the benchmark runs falls on both settings alike."""
    pairs = []
    for _ in range(repeats):
        alone = run_phases(config)
        budget = 3 * sum(alone.values()) + 60  # the spin loops outlive the run, then end by themselves
        pairs.append((alone, run_phases(config, busy_seconds=budget, **beside)))
    return pairs


def _report(label: str, pairs: list[tuple[dict[str, float], dict[str, float]]]) -> tuple[float, float]:
    """Print each phase's median times; returns (worst phase's median slowdown, whole run's median speed ratio)."""
    worst = 0.0
    for phase in pairs[0][0]:
        alone = statistics.median(a[phase] for a, _ in pairs)
        other = statistics.median(b[phase] for _, b in pairs)
        ratio = statistics.median(b[phase] / a[phase] for a, b in pairs)
        worst = max(worst, ratio)
        print(f"{phase}: alone {alone:.1f} s, {label} {other:.1f} s, slowdown {ratio:.2f} (median of {len(pairs)})")
    whole = [sum(a.values()) / sum(b.values()) for a, b in pairs]
    print(f"whole run, alone / {label}: " + ", ".join(f"{r:.2f}" for r in whole))
    return worst, statistics.median(whole)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo-quick.yaml")
    p.add_argument("--repeats", type=int, default=1, help="pairs of runs (alone, beside) of each case; medians count")
    p.add_argument("--only-niced", action="store_true", help="skip the case beside one busy process")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"cores available: {cores}, load average now: {os.getloadavg()[0]:.1f}")
    if not args.only_niced:
        worst, _ = _report("beside one busy process", _pairs(args.config, args.repeats))
        print(f"ratio busy/alone (worst phase): {worst:.2f}")
    _, niced = _report(f"beside {cores} niced spinners", _pairs(args.config, args.repeats, spinners=cores, nice=19))
    print(f"load average now: {os.getloadavg()[0]:.1f}")
    print(f"ratio niced_spinner: {niced:.2f}")


if __name__ == "__main__":
    main()
