"""Multi-process training on CPU (gloo): DDP and DeepSpeed ZeRO-2 match the 1-process run.

Two processes with micro-batch 8 and no accumulation see exactly the samples of one process with
micro-batch 8 and 2 accumulation steps, so the loss curves agree to float32 reduction-order noise.
Tolerance: 1e-5 absolute on every logged train loss (measured: about 1e-7).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from losslens import contracts
from tests.conftest import ROOT, write_study

TOLERANCE = 1e-5


def _launch(config: str, study_cfg: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / config),
           "--main_process_port", "0", "-m", "losslens", "train", str(study_cfg), "--run", "xs_65536"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _curve(run_dir: Path) -> tuple[list[int], np.ndarray]:
    rows = [json.loads(l) for l in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows], np.array([r["loss"] for r in rows])


@pytest.mark.slow
@pytest.mark.parametrize("launch_config", ["configs/accelerate/cpu_ddp.yaml", "configs/accelerate/deepspeed_zero2.yaml"])
def test_two_processes_match_one(tmp_path: Path, trained_tiny: Path, launch_config: str):
    cfg = write_study(tmp_path)
    result = _launch(launch_config, cfg)
    assert result.returncode == 0, result.stderr[-4000:]
    run_dir = tmp_path / "study" / "xs_65536"
    final = run_dir / "ckpt-000000065536"
    assert contracts.read_meta(final)["world_size"] == 2
    if "deepspeed" in launch_config:  # DeepSpeed wrote its own (sharded) training state
        assert (final / contracts.TRAIN_STATE_DIR / "pytorch_model").is_dir()
    steps, losses = _curve(run_dir)
    ref_steps, ref_losses = _curve(trained_tiny / "xs_65536")
    assert steps == ref_steps
    np.testing.assert_allclose(losses, ref_losses, atol=TOLERANCE, rtol=0)
    ref_val = contracts.read_meta(trained_tiny / "xs_65536" / "ckpt-000000065536")["val_loss"]
    assert abs(contracts.read_meta(final)["val_loss"] - ref_val) < TOLERANCE
