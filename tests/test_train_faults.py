"""Training under faults: pre-emption (SIGTERM), a diverging loss, and a full disk while saving."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from losslens import contracts
from losslens.config import load_study
from tests.conftest import ROOT, call_cli, run_cli, write_study


def _start(cfg: Path, *args: str, preexec=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "losslens", "train", str(cfg), *args], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_saves_then_resume_matches_uninterrupted(tmp_path: Path, trained_tiny: Path):
    cfg = write_study(tmp_path)
    run_dir = tmp_path / "study" / "xs_65536"
    proc = _start(cfg, "--run", "xs_65536")
    _wait_for(run_dir / contracts.checkpoint_dirname(16 * 512))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "pre-empted" in out
    saved = contracts.list_checkpoints(run_dir)[-1]
    meta = contracts.read_meta(saved)
    if not meta["scheduled"]:  # the usual case: a save at the step the signal arrived
        assert (saved / contracts.TRAIN_STATE_DIR).is_dir()
    result = run_cli("train", str(cfg), "--run", "xs_65536")
    assert result.returncode == 0, result.stderr[-2000:]
    # the pre-emption checkpoint was superseded by the next scheduled one
    assert all(contracts.read_meta(c)["scheduled"] for c in contracts.list_checkpoints(run_dir))
    a = load_file(run_dir / "ckpt-000000065536" / "model.safetensors")
    b = load_file(trained_tiny / "xs_65536" / "ckpt-000000065536" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_diverging_loss_stops_with_step_and_last_checkpoint(tmp_path: Path):
    cfg = write_study(tmp_path, train__optimizer={"lr": 1.0e6, "grad_clip": 0.0})
    result = call_cli("train", str(cfg), "--run", "xs_32768")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), line
    assert re.search(r"run xs_32768: (validation )?loss is (nan|inf) at step \d+", line), line
    assert "last good checkpoint" in line
    for ckpt in contracts.list_checkpoints(tmp_path / "study" / "xs_32768"):
        assert np.isfinite(contracts.read_meta(ckpt)["val_loss"])
        weights = load_file(ckpt / "model.safetensors")
        assert all(torch.isfinite(w).all() for w in weights.values())


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_while_saving_is_a_clear_error_and_keeps_earlier_checkpoints(tmp_path: Path, trained_tiny: Path):
    cfg = write_study(tmp_path)
    study_dir = tmp_path / "study"
    # The study so far: the shards and size xs's runs, as trained_tiny left them (study.yaml names its out_dir).
    shutil.copytree(trained_tiny, study_dir, ignore=lambda d, names: [n for n in names if n.startswith("s_")])
    (study_dir / contracts.STUDY_FILE).write_text(load_study(cfg).to_yaml())
    before = {p: p.stat().st_mtime_ns for p in study_dir.rglob("*") if p.is_file()}
    limit = 300_000  # size xs writes files of < 150 kB; size s's optimizer state is ~480 kB
    assert max(p.stat().st_size for p in before) < limit  # so it is s's first save that fails
    full = _start(cfg, "--run", "s_32768", preexec=_file_size_limit(limit))
    _, err = full.communicate(timeout=300)
    assert full.returncode == 2, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "cannot write checkpoint" in line and "earlier checkpoints are intact" in line, line
    assert contracts.list_checkpoints(study_dir / "s_32768") == []
    assert not [p for p in (study_dir / "s_32768").iterdir() if p.name.startswith(".tmp-")]
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # the earlier runs' checkpoints and the shards are untouched


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_random_moments_never_leaves_a_partial_checkpoint(tmp_path: Path, trained_tiny: Path, seed: int):
    """Frequent checkpoints (16 per run) make it likely the kill lands inside a write."""
    cfg = write_study(tmp_path, checkpoints={"count": 16, "log_spaced": True, "val_tokens": 2048})
    run_dir = tmp_path / "study" / "xs_65536"
    rng = np.random.default_rng(seed)
    for _ in range(2):  # two kills per seed, the second during the resumed run
        proc = _start(cfg, "--run", "xs_65536")
        _wait_for(run_dir / contracts.checkpoint_dirname(512))
        time.sleep(float(rng.uniform(0.0, 2.0)))
        proc.kill()
        proc.communicate()
        for ckpt in contracts.list_checkpoints(run_dir):  # everything listed is complete and loadable
            meta = contracts.read_meta(ckpt)
            assert load_file(ckpt / "model.safetensors") and meta["tokens"] == int(ckpt.name.split("-")[1])
    result = run_cli("train", str(cfg), "--run", "xs_65536")
    assert result.returncode == 0, result.stderr[-2000:]
    a = load_file(run_dir / "ckpt-000000065536" / "model.safetensors")
    b = load_file(trained_tiny / "xs_65536" / "ckpt-000000065536" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_nonfinite_batches_are_skipped_when_asked(tmp_path: Path, monkeypatch):
    """Inject a NaN loss into 3 micro-batches; with on_nonfinite: skip the run finishes with finite weights."""
    import types

    import torch.nn.functional as F

    from losslens.config import load_study
    from losslens.train import loop
    from losslens.train.runtime import make_accelerator
    from losslens.train.plan import find_run, plan_runs
    from losslens.train.study import prepare_study_dir

    calls = {"n": 0}

    def poisoned(logits, targets, **kw):
        calls["n"] += 1
        loss = F.cross_entropy(logits, targets, **kw)
        return loss * float("nan") if calls["n"] in (5, 6, 20) else loss

    monkeypatch.setattr(loop, "F", types.SimpleNamespace(cross_entropy=poisoned))
    study = load_study(write_study(tmp_path, train__on_nonfinite="skip"))
    accelerator = make_accelerator(study)
    data_dir = prepare_study_dir(study, accelerator)
    summary = loop.train_run(study, find_run(plan_runs(study), "xs_32768"), accelerator, data_dir)
    assert summary.steps == 64
    log = [json.loads(l) for l in (tmp_path / "study" / "xs_32768" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped_steps"] >= 2 and all(np.isfinite(r["loss"]) for r in log)
    weights = load_file(summary.final_checkpoint / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_skipped_micro_batches_do_not_bias_the_logged_loss(tmp_path: Path, monkeypatch):
    """Each logged train loss is the mean of its window's finite micro-batch losses: a NaN micro-batch
    (skipped with on_nonfinite: skip) counts in neither the sum nor the count, not as a zero."""
    import types

    import torch.nn.functional as F

    from losslens.config import load_study
    from losslens.train import loop
    from losslens.train.plan import find_run, plan_runs
    from losslens.train.study import make_accelerator, prepare_study_dir

    measured: list[float] = []  # every micro-batch loss the loop saw, in order (NaN where poisoned)

    def poisoned(logits, targets, **kw):
        loss = F.cross_entropy(logits, targets, **kw)
        if len(measured) in (4, 5, 19, 40, 41):
            loss = loss * float("nan")
        measured.append(loss.item())
        return loss

    monkeypatch.setattr(loop, "F", types.SimpleNamespace(cross_entropy=poisoned))
    study = load_study(write_study(tmp_path, train__on_nonfinite="skip"))
    accelerator = make_accelerator(study)
    plan = find_run(plan_runs(study), "xs_32768")
    loop.train_run(study, plan, accelerator, prepare_study_dir(study, accelerator))
    log = [json.loads(l) for l in (tmp_path / "study" / plan.name / "train_log.jsonl").read_text().splitlines()]
    accum = study.train.global_batch // study.train.micro_batch
    assert len(measured) == plan.total_steps * accum
    previous, expected = 0, []
    for record in log:  # a log line covers the micro-batches of steps (previous, step]
        window = np.array(measured[previous * accum : record["step"] * accum])
        expected.append(window[np.isfinite(window)].mean())
        previous = record["step"]
    assert sum(not np.isfinite(m) for m in measured) == 5
    np.testing.assert_allclose([r["loss"] for r in log], expected, rtol=1e-6)
