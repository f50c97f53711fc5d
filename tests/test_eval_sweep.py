"""The sweep: results.csv per checkpoint x task x metric, incremental re-runs, shards, claims, concurrent evaluators."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from losslens import contracts, metrics
from losslens.errors import LossLensError
from losslens.evaluate import sweep
from losslens.evaluate.claims import Claim
from losslens.evaluate.config import EvaluateOptions
from losslens.metrics import GENERATIVE, MULTIPLE_CHOICE, kind_metrics
from losslens.valloss import validation_loss
from tests.conftest import ROOT, call_cli, run_cli
from tests.eval_fixtures import MC_ROWS, make_study, save_checkpoint, write_jsonl

torch.set_num_threads(1)
MC_METRICS, GEN_METRICS = kind_metrics(MULTIPLE_CHOICE), kind_metrics(GENERATIVE)
N_METRICS = 2 + len(MC_METRICS) * 2 + len(GEN_METRICS)  # pretrain (loss, bpb), mc, mc3, gen


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _quiet(study_dir, **kw):
    logs: list[str] = []
    summary = sweep.evaluate_study(study_dir, EvaluateOptions(progress=False, **kw), log=logs.append)
    return summary, logs


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny study (2 runs x 2 checkpoints, 3 tasks) evaluated once."""
    root = tmp_path_factory.mktemp("sweep")
    study_dir = make_study(root)
    summary, logs = _quiet(study_dir, per_example=True)
    return study_dir, summary, logs


def test_sweep_writes_one_row_per_checkpoint_task_metric(swept):
    study_dir, summary, _ = swept
    assert summary.checkpoints == 4 and summary.evaluated == 4 * 4 and summary.models_loaded == 4
    with open(study_dir / contracts.RESULTS_FILE) as f:
        assert tuple(next(csv.reader(f))) == contracts.RESULTS_COLUMNS
    rows = _read_csv(study_dir / contracts.RESULTS_FILE)
    assert len(rows) == summary.rows == 4 * N_METRICS
    keys = Counter((r["run"], r["tokens"], r["task"], r["metric"]) for r in rows)
    assert max(keys.values()) == 1
    assert {r["task"] for r in rows} == {"pretrain", "mc", "mc3", "gen"}
    for r in rows:
        assert float(r["loss"]) > 0 and r["n_params"] and r["step"]
        if r["metric"] in ("acc", "acc_norm", "prob_correct"):
            assert 0 < float(r["chance"]) < 1
            assert float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"])
        if r["metric"] == "exact_match":
            assert float(r["chance"]) == 0.0
    # analyze reads the table as it is
    from losslens.analyze.table import read_results

    table = read_results(study_dir / contracts.RESULTS_FILE)
    assert set(table.tasks()) >= {"mc", "gen"}


def test_loss_column_is_the_validation_loss_of_each_checkpoint(swept):
    study_dir, _, _ = swept
    from transformers import AutoModelForCausalLM

    rows = _read_csv(study_dir / contracts.RESULTS_FILE)
    ckpt = study_dir / "s_64K" / contracts.checkpoint_dirname(4096)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    tokens = np.fromfile(study_dir / "data" / "val.bin", dtype=np.uint16)
    expected = validation_loss(model, tokens, seq_len=32, max_tokens=512).mean
    losses = {float(r["loss"]) for r in rows if r["run"] == "s_64K" and r["tokens"] == "4096"}
    assert len(losses) == 1 and losses.pop() == pytest.approx(expected, rel=1e-6)
    bpb = next(r for r in rows if r["run"] == "s_64K" and r["tokens"] == "4096" and r["metric"] == "bpb")
    meta = json.loads((study_dir / "data" / "data.json").read_text())
    assert float(bpb["value"]) == pytest.approx(expected * meta["val_tokens"] / meta["val_bytes"] / np.log(2))


def test_per_example_records(swept):
    study_dir, _, _ = swept
    result = json.loads((study_dir / "evals" / "xs_64K" / contracts.checkpoint_dirname(1024) / "mc.json").read_text())
    assert result["n_examples"] == 8 and len(result["examples"]) == 8
    ex = result["examples"][3]
    assert ex["choices"] == ["é", "e", "a"] and len(ex["logliks"]) == 3 and ex["prediction"] == int(np.argmax(ex["logliks"]))
    assert np.mean([e["acc"] for e in result["examples"]]) == result["metrics"]["acc"]["value"]
    gen = json.loads((study_dir / "evals" / "xs_64K" / contracts.checkpoint_dirname(1024) / "gen.json").read_text())
    assert {"prediction", "reference", "token_logprobs", "edit_distance"} <= set(gen["examples"][0])


def test_second_run_does_no_model_work(swept):
    study_dir, first, _ = swept
    before = (study_dir / contracts.RESULTS_FILE).read_text()
    summary, logs = _quiet(study_dir, per_example=True)
    assert summary.evaluated == 0 and summary.models_loaded == 0 and summary.up_to_date == first.evaluated
    assert any("nothing to evaluate" in line for line in logs)
    assert (study_dir / contracts.RESULTS_FILE).read_text() == before


def test_only_what_changed_is_evaluated_again(tmp_path):
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024]})
    first, _ = _quiet(study_dir)
    assert first.evaluated == 4
    write_jsonl(tmp_path / "tasks" / "gen.jsonl", [{"prompt": "1+1=", "reference": "2"}])  # the gen task changes
    save_checkpoint(study_dir, "xs_64K", 2048, seed=5)  # and a checkpoint appears
    second, logs = _quiet(study_dir)
    done = sorted(line.split(" ")[1] + " " + line.split(" ")[2].rstrip(":") for line in logs if line.startswith("evaluated "))
    assert done == ["xs_64K/ckpt-000000001024 gen", "xs_64K/ckpt-000000002048 gen", "xs_64K/ckpt-000000002048 mc",
                    "xs_64K/ckpt-000000002048 mc3", "xs_64K/ckpt-000000002048 pretrain"]
    assert second.rows == 2 * N_METRICS
    gen_n = {r["n"] for r in _read_csv(study_dir / contracts.RESULTS_FILE) if r["task"] == "gen"}
    assert gen_n == {"1"}


def test_a_table_analyze_would_refuse_is_not_written(tmp_path):
    """The sweep checks its table as analyze will read it before writing: the table as it was stays, and
    the error names the result file of the offending row."""
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024]})
    _quiet(study_dir)
    table = study_dir / contracts.RESULTS_FILE
    before = table.read_text()
    result = next((study_dir / contracts.EVALS_DIR).rglob("mc.json"))
    data = json.loads(result.read_text())
    data["metrics"]["acc"]["value"] = 1.5  # an accuracy no evaluation can give
    result.write_text(json.dumps(data))
    with pytest.raises(LossLensError) as refused:
        sweep.write_results_table(study_dir)
    assert "not rewritten" in str(refused.value) and "'acc'" in str(refused.value)
    assert str(result) in str(refused.value)
    assert table.read_text() == before
    done = call_cli("evaluate", str(study_dir))  # the command: one line, exit 2, the table kept
    assert done.returncode == 2 and str(result) in done.stderr and table.read_text() == before


@pytest.fixture
def margin_metric():
    """A metric declared in one place (a registry entry), removed again after the test."""
    def margin(o: metrics.ChoiceOutcome) -> float:  # the answer's log-likelihood minus the best other choice's
        return float(o.logliks[o.answer] - np.delete(o.logliks, o.answer).max())

    metric = metrics.register(metrics.Metric("loglik_margin", "answer minus best other choice, nats", False, True,
                                             (metrics.MULTIPLE_CHOICE,), margin))
    yield metric
    del metrics.METRICS[metric.name]


def test_a_metric_declared_once_reaches_results_csv(tmp_path, margin_metric):
    task = write_jsonl(tmp_path / "t.jsonl", MC_ROWS)
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[str(task)])
    _quiet(study_dir, per_example=True)
    rows = [r for r in _read_csv(study_dir / contracts.RESULTS_FILE) if r["metric"] == "loglik_margin"]
    result = json.loads(next((study_dir / contracts.EVALS_DIR).rglob("t.json")).read_text())
    expected = [ll[r["answer"]] - max(x for i, x in enumerate(ll) if i != r["answer"])
                for ll, r in ((ex["logliks"], row) for ex, row in zip(result["examples"], MC_ROWS))]
    assert len(rows) == 1 and rows[0]["task"] == "t" and rows[0]["chance"] == ""
    assert float(rows[0]["value"]) == pytest.approx(np.mean(expected))
    assert [ex["loglik_margin"] for ex in result["examples"]] == pytest.approx(expected)
    assert contracts.metric_info("loglik_margin") is margin_metric  # analyze reads its direction from the registry


def test_shards_split_the_work_without_overlap(tmp_path):
    study_dir = make_study(tmp_path, tasks=[str(write_jsonl(tmp_path / "t.jsonl", [{"context": "a", "choices": ["b", "c"], "answer": 0}]))],
                           runs={"a_1": [1024, 2048, 3072], "b_1": [1024, 2048]})
    parts = [_quiet(study_dir, shard=(i, 3))[0] for i in range(3)]
    assert sum(p.checkpoints for p in parts) == 5
    written = [p for s in parts for p in s.results]
    assert len(written) == len(set(written)) == 5 * 2
    assert parts[-1].rows == 5 * (2 + len(MC_METRICS))


def test_claims_skip_live_owners_and_break_stale_ones(tmp_path):
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[])
    folder = study_dir / "evals" / "xs_64K" / contracts.checkpoint_dirname(1024)
    folder.mkdir(parents=True)
    lock = folder / ".pretrain.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"host": os.uname().nodename, "pid": sleeper.pid, "token": "x", "time": time.time()}))
        summary, _ = _quiet(study_dir)
        assert summary.busy == 1 and summary.evaluated == 0 and summary.rows == 0  # no loss yet: no rows
    finally:
        sleeper.kill()
        sleeper.wait()
    summary, _ = _quiet(study_dir)  # the owner is dead now: its claim is stale
    assert summary.evaluated == 1 and summary.rows == 2 and not lock.exists()


def test_claim_from_another_host_expires(tmp_path):
    path = tmp_path / "u.lock"
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x", "time": time.time() - 100}))
    assert not Claim(path, timeout=1000).acquire()
    claim = Claim(path, timeout=10)
    assert claim.acquire() and json.loads(path.read_text())["token"] == claim.token
    assert not Claim(path).acquire()  # we hold it now
    claim.release()
    assert not path.exists()


def test_cli_errors_are_one_line(tmp_path):
    result = call_cli("evaluate", str(tmp_path / "missing"))
    assert result.returncode == 2 and "study.yaml" in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"context": "a", "choices": ["b"], "answer": 3}) + "\n")
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[str(bad)])
    result = call_cli("evaluate", str(study_dir))
    assert result.returncode == 2
    assert f"error: {bad}:1: answer index 3 is out of range for 1 choices" in result.stderr


@pytest.mark.slow
def test_two_evaluators_at_once_do_every_unit_once(tmp_path):
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024, 2048, 4096], "s_64K": [1024, 2048, 4096]})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "losslens", "evaluate", str(study_dir), "--threads", "1", "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    done = [line.split(":")[0] for _, err in outputs for line in err.splitlines() if line.startswith("evaluated ")]
    per_process = [sum(line.startswith("evaluated ") for line in err.splitlines()) for _, err in outputs]
    print("units evaluated per process:", per_process)
    assert len(done) == len(set(done)) == 6 * 4, per_process  # every unit evaluated once, by one of them
    rows = _read_csv(study_dir / contracts.RESULTS_FILE)
    keys = Counter((r["run"], r["tokens"], r["task"], r["metric"]) for r in rows)
    assert len(rows) == 6 * N_METRICS and max(keys.values()) == 1
    assert not list(study_dir.glob("evals/*/*/.*.lock"))
    assert len(list(study_dir.glob("evals/*/*/*.json"))) == 6 * 4


@pytest.mark.slow
def test_trained_study_end_to_end(trained_tiny_copy, tmp_path):
    """A study the train stage wrote: the loss column reproduces each checkpoint's meta.json val_loss."""
    trained_tiny = trained_tiny_copy
    task = write_jsonl(tmp_path / "words.jsonl", [{"context": "the", "choices": [" cat", " xqz"], "answer": 0},
                                                  {"context": "and", "choices": [" the", " zzz"], "answer": 0}])
    result = run_cli("evaluate", str(trained_tiny), "--tasks", str(task), "--shard", "0/1", "--threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _read_csv(trained_tiny / contracts.RESULTS_FILE)
    ckpts = [c for run in contracts.list_runs(trained_tiny) for c in contracts.list_checkpoints(run)]
    assert len(rows) == len(ckpts) * (2 + len(MC_METRICS))
    for ckpt in ckpts:
        meta = contracts.read_meta(ckpt)
        loss = {float(r["loss"]) for r in rows if r["run"] == meta["run"] and int(r["tokens"]) == meta["tokens"]}
        assert len(loss) == 1 and loss.pop() == pytest.approx(meta["val_loss"], abs=1e-6)
    again = run_cli("evaluate", str(trained_tiny), "--tasks", str(task))
    assert again.returncode == 0 and "nothing to evaluate" in again.stderr
