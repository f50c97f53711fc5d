"""demo-quick on a shared CPU: each phase alone, then beside one busy process, in one run.

    python bench/shared_cpu.py [--config configs/demo-quick.yaml] [--repeats 1]

Runs ``losslens run CONFIG --out TMP --no-plots`` alone and then beside one CPU-bound process (a
Python spin loop that ends by itself), reads the train / evaluate / analyze wall times that
``losslens run`` prints, and prints each phase's slowdown. The last line is the worst ratio
(target: <= 2.2 with one core taken). Thread counts are left to losslens (no OMP_NUM_THREADS is set).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
TIMES_RE = re.compile(r"done in \d+ s \((.*)\)")


def run_phases(config: Path, busy_seconds: float = 0) -> dict[str, float]:
    """Wall seconds of each phase of one ``losslens run``, beside a spin loop when ``busy_seconds``."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=busy_seconds)]) if busy_seconds else None
    try:
        if spinner:
            time.sleep(1.0)  # let it take its core
        with tempfile.TemporaryDirectory(prefix="shared-cpu-") as out:
            result = subprocess.run(
                [sys.executable, "-m", "losslens", "run", str(config), "--out", out, "--no-plots"],
                env=env, capture_output=True, text=True, cwd=ROOT,
            )
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    if result.returncode != 0:
        sys.exit(f"losslens run failed:\n{result.stderr[-3000:]}")
    line = TIMES_RE.search(result.stdout)
    return {name: float(sec) for name, sec in re.findall(r"(\w+) (\d+(?:\.\d+)?) s", line.group(1))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo-quick.yaml")
    p.add_argument("--repeats", type=int, default=1, help="runs of each setting; the fastest counts")
    args = p.parse_args()
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average now: {os.getloadavg()[0]:.1f}")
    alone = [run_phases(args.config) for _ in range(args.repeats)]
    alone_best = {k: min(r[k] for r in alone) for k in alone[0]}
    budget = 3 * sum(alone_best.values()) + 60  # the spin loop outlives the run, then ends by itself
    busy = [run_phases(args.config, busy_seconds=budget) for _ in range(args.repeats)]
    busy_best = {k: min(r[k] for r in busy) for k in busy[0]}
    worst = 0.0
    for phase in alone_best:
        ratio = busy_best[phase] / alone_best[phase]
        worst = max(worst, ratio)
        print(f"{phase}: alone {alone_best[phase]:.0f} s, beside one busy process {busy_best[phase]:.0f} s, "
              f"ratio {ratio:.2f}")
    print(f"ratio busy/alone (worst phase): {worst:.2f}")


if __name__ == "__main__":
    main()
