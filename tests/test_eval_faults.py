"""Evaluation under faults: killed mid-sweep, the re-run completes with every result present once."""

from __future__ import annotations

import collections
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.eval_fixtures import make_study, write_tasks


@pytest.mark.slow
def test_kill_9_mid_sweep_then_rerun_completes_once(tmp_path: Path):
    runs = {"xs_64K": [1024, 2048, 4096], "s_64K": [1024, 2048, 4096]}
    tasks = write_tasks(tmp_path)
    study = make_study(tmp_path, runs=runs, tasks=tasks)
    proc = subprocess.Popen([sys.executable, "-m", "losslens", "evaluate", str(study), "--no-progress"], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((study / "evals").rglob("*.json"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list((study / "evals").rglob("*.json")))
    units = 6 * (1 + len(tasks))  # checkpoints x (pretrain + tasks)
    assert 3 <= partial < units, partial  # killed part-way (its claim on the unit in hand is left behind)
    result = run_cli("evaluate", str(study), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(study / "results.csv")))
    keys = collections.Counter((r["run"], r["tokens"], r["task"], r["metric"]) for r in rows)
    assert max(keys.values()) == 1  # nothing twice
    assert {(r, t) for r, t, _, _ in keys} == {(run, str(t)) for run, ts in runs.items() for t in ts}
    assert len({(r, t, task) for r, t, task, _ in keys}) == units  # nothing lost
    assert not list((study / "evals").rglob(".tmp-*"))
