"""End-to-end training on CPU: checkpoints, offline loading, recorded losses, resume, WSD, golden curve."""

from __future__ import annotations

import dataclasses
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
    branch_step_1 = 49 * 512  # one step after the branch point (48), where branch and trunk share the LR
    cfg = write_study(tmp_path, train__schedule={"kind": "wsd", "cooldown": 0.25, "warmup": 0.1},
                      checkpoints__at=[branch_step_1])
    early = run_cli("train", str(cfg), "--run", "xs_32768")
    assert early.returncode == 2 and "train xs_65536 first" in early.stderr
    result = run_cli("train", str(cfg), "--run", "xs_65536", "--run", "xs_32768")
    assert result.returncode == 0, result.stderr[-2000:]
    study_dir = tmp_path / "study"
    branch_ckpts = contracts.list_checkpoints(study_dir / "xs_32768")
    assert [contracts.read_meta(c)["step"] for c in branch_ckpts] == [49, 64]  # count=4 -> 16,32,48,64; only >48 kept
    trunk_at_branch = study_dir / "xs_65536" / "ckpt-000000024576"
    assert (trunk_at_branch / contracts.TRAIN_STATE_DIR).is_dir()  # kept for the branch
    # The first branch step runs at the trunk's LR, so it continues the trunk exactly: equal weights after
    # it prove that weights, Adam moments and step count, data position and LR all carried over.
    trunk_49, branch_49 = (_weights(study_dir / run / contracts.checkpoint_dirname(branch_step_1))
                           for run in ("xs_65536", "xs_32768"))
    assert all(torch.equal(trunk_49[k], branch_49[k]) for k in trunk_49)

    def log(run):
        return {r["step"]: r for r in map(json.loads, (study_dir / run / "train_log.jsonl").read_text().splitlines())}

    trunk_log, branch_log = log("xs_65536"), log("xs_32768")
    assert min(branch_log) == 49
    assert branch_log[49]["loss"] == trunk_log[49]["loss"]
    assert branch_log[64]["lr"] == pytest.approx(3e-3 * 0.1) and trunk_log[64]["lr"] == pytest.approx(3e-3)


def test_wsd_branch_starts_from_the_trunk_state_at_its_branch_point(tmp_path: Path):
    """The branch's state after resuming equals the trunk's at the branch point: weights, Adam state
    and step count, the step (so the data position) and the LR of its first step."""
    from losslens.train import loop
    from losslens.train.schedule import learning_rate
    from losslens.train.study import make_accelerator, prepare_study_dir

    cfg = write_study(tmp_path, train__schedule={"kind": "wsd", "cooldown": 0.25, "warmup": 0.1})
    study = load_study(cfg, ["checkpoints.count=0", "checkpoints.log_spaced=false"])
    accelerator = make_accelerator(study)
    data_dir = prepare_study_dir(study, accelerator)
    trunk_plan, branch_plan = plan_runs(study)[:2]
    point = branch_plan.branch.step
    # the trunk, only as far as the branch point (its LR there does not depend on where it stops)
    short_trunk = dataclasses.replace(trunk_plan, total_steps=point, checkpoint_steps=(point,))
    trunk = loop.set_up(study, short_trunk, accelerator, data_dir)
    trunk.model.train()
    window = loop.LossWindow(accelerator.device, skip_nonfinite=False)
    while trunk.step < point:
        loop.train_step(trunk, window)
    loop._checkpoint(trunk, train_loss=0.0, scheduled=True)
    accelerator.free_memory()  # forget the trunk's prepared model, as train_study does between runs

    branch = loop.set_up(study, branch_plan, accelerator, data_dir)
    start = loop.resume(branch)
    assert start == study.output_dir / trunk_plan.name / contracts.checkpoint_dirname(trunk_plan.tokens_at(point))
    assert branch.step == trunk.step == point == branch_plan.decay_start
    for name, w in trunk.model.state_dict().items():
        assert torch.equal(branch.model.state_dict()[name], w), name
    trunk_opt, branch_opt = trunk.base_optimizer.state_dict(), branch.base_optimizer.state_dict()
    assert trunk_opt["state"].keys() == branch_opt["state"].keys() and trunk_opt["state"]
    for i, state in trunk_opt["state"].items():
        assert float(state["step"]) == point
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(branch_opt["state"][i][key], state[key]), (i, key)
    sched = study.train.schedule
    assert learning_rate(point, 3e-3, sched, branch_plan) == learning_rate(point, 3e-3, sched, trunk_plan) == 3e-3
    # the next batch is the trunk's: sample point * global_batch of the shared stream
    t = study.train
    first = branch.stream.micro_batch(branch.step, t.global_batch, t.micro_batch, 0, 0, 1)
    assert torch.equal(first, torch.from_numpy(trunk.stream.windows(point * t.global_batch, t.micro_batch)))
