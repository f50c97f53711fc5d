"""End-to-end training on CPU: checkpoints, offline loading, recorded losses, resume, WSD, golden curve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from losslens import contracts
from losslens.config import load_study
from losslens.train.plan import plan_runs
from losslens.valloss import validation_loss
from tests.conftest import ROOT, call_cli, run_cli, write_study

GOLDEN = Path(__file__).parent / "golden" / "tiny_xs_65536_loss.json"


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(ckpt / "model.safetensors")


def test_every_checkpoint_lands_where_planned(trained_tiny: Path):
    study = load_study(trained_tiny / contracts.STUDY_FILE)
    plans = plan_runs(study)
    assert sorted(p.name for p in contracts.list_runs(trained_tiny)) == sorted(p.name for p in plans)
    for plan in plans:
        ckpts = contracts.list_checkpoints(trained_tiny / plan.name)
        assert [contracts.read_meta(c)["tokens"] for c in ckpts] == [plan.tokens_at(s) for s in plan.checkpoint_steps]
        for c in ckpts:
            meta = contracts.read_meta(c)
            assert set(contracts.CHECKPOINT_META_KEYS) <= set(meta)
            assert meta["run"] == plan.name and np.isfinite(meta["val_loss"])
        # only the newest keeps its optimizer state
        assert [(c / contracts.TRAIN_STATE_DIR).exists() for c in ckpts] == [False] * (len(ckpts) - 1) + [True]
    # training lowers the validation loss
    losses = [contracts.read_meta(c)["val_loss"] for c in contracts.list_checkpoints(trained_tiny / "s_65536")]
    assert losses[-1] < losses[0] - 1.0


def test_checkpoints_load_offline_and_reproduce_their_val_loss(trained_tiny: Path):
    study = load_study(trained_tiny / contracts.STUDY_FILE)
    data_meta = json.loads((trained_tiny / "data" / contracts.DATA_META_FILE).read_text())
    val = np.fromfile(trained_tiny / "data" / contracts.VAL_SHARD, dtype=data_meta["dtype"])
    for run in ("xs_32768", "s_65536"):
        for ckpt in contracts.list_checkpoints(trained_tiny / run)[::3]:
            model = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True)
            tok = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
            assert tok.decode(tok("12+34=46").input_ids) == "12+34=46"
            recomputed = validation_loss(model, val, study.model.context, study.checkpoints.val_tokens, batch_size=5)
            recorded = contracts.read_meta(ckpt)["val_loss"]
            assert abs(recomputed.mean - recorded) < 1e-4, (ckpt, recomputed.mean, recorded)


def test_golden_loss_curve(trained_tiny: Path):
    golden = json.loads(GOLDEN.read_text())["curve"]
    log = [json.loads(l) for l in (trained_tiny / "xs_65536" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [s for s, _ in golden]
    np.testing.assert_allclose([r["loss"] for r in log], [l for _, l in golden], atol=2e-3)


def test_rerunning_a_finished_study_trains_nothing(trained_tiny: Path):
    before = {c: c.stat().st_mtime_ns for c in trained_tiny.glob("*/ckpt-*")}
    result = call_cli("train", str(trained_tiny.parent / "study.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert {c: c.stat().st_mtime_ns for c in trained_tiny.glob("*/ckpt-*")} == before


@pytest.mark.slow
def test_kill_9_then_resume_gives_bitwise_identical_weights(tmp_path: Path, trained_tiny: Path):
    cfg = write_study(tmp_path)
    run_dir = tmp_path / "study" / "xs_65536"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "losslens", "train", str(cfg), "--run", "xs_65536"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / contracts.checkpoint_dirname(32 * 512)).exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [contracts.read_meta(c)["step"] for c in contracts.list_checkpoints(run_dir)]
    assert 32 <= max(done) < 128, done  # killed mid-run
    result = run_cli("train", str(cfg), "--run", "xs_65536")
    assert result.returncode == 0, result.stderr[-2000:]
    resumed, reference = _weights(run_dir / "ckpt-000000065536"), _weights(trained_tiny / "xs_65536" / "ckpt-000000065536")
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    log_steps = [json.loads(l)["step"] for l in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert log_steps == sorted(set(log_steps))  # no duplicated log lines after the resume


@pytest.mark.slow
def test_wsd_branches_train_from_the_trunk(tmp_path: Path):
    cfg = write_study(tmp_path, train__schedule={"kind": "wsd", "cooldown": 0.25, "warmup": 0.1})
    early = run_cli("train", str(cfg), "--run", "xs_32768")
    assert early.returncode == 2 and "train xs_65536 first" in early.stderr
    result = run_cli("train", str(cfg), "--run", "xs_65536", "--run", "xs_32768")
    assert result.returncode == 0, result.stderr[-2000:]
    study_dir = tmp_path / "study"
    branch_ckpts = contracts.list_checkpoints(study_dir / "xs_32768")
    assert [contracts.read_meta(c)["step"] for c in branch_ckpts] == [64]  # count=4 -> 16,32,48,64; only >48 kept
    trunk_at_branch = study_dir / "xs_65536" / "ckpt-000000024576"
    assert (trunk_at_branch / contracts.TRAIN_STATE_DIR).is_dir()  # kept for the branch
    # The branch continues the trunk (same weights, optimizer state and data at step 48), then decays.
    def log(run):
        return {r["step"]: r for r in map(json.loads, (study_dir / run / "train_log.jsonl").read_text().splitlines())}

    trunk_log, branch_log = log("xs_65536"), log("xs_32768")
    assert min(branch_log) == 52
    assert abs(branch_log[52]["loss"] - trunk_log[52]["loss"]) < 0.01
    assert branch_log[64]["lr"] == pytest.approx(3e-3 * 0.1) and trunk_log[64]["lr"] == pytest.approx(3e-3)
