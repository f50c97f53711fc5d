"""lm-evaluation-harness: agreement with our evaluator, and harness tasks in the sweep (``--lm-eval``).

Runs when the ``lm-eval`` extra is installed (``pip install losslens[lm-eval]``; CI installs it).
Both tools tokenize ``context`` and ``context + choice`` and score the tokens after the context,
moving trailing context whitespace into the choice; both score in float32 here.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from losslens import contracts
from losslens.evaluate.claims import HOST
from losslens.evaluate.harness import harness_task_yaml, parse_names
from losslens.metrics import metric_name
from losslens.evaluate.runner import TaskSettings, evaluate_task
from losslens.evaluate.scoring import Scorer
from losslens.evaluate.tasks import load_task
from losslens.evaluate.units import load_checkpoint
from tests.eval_fixtures import ALPHABET, MC_ROWS, make_study, save_checkpoint, write_jsonl
from tests.lm_eval_recipes import write_recipes

pytestmark = pytest.mark.lm_eval
torch.set_num_threads(1)


def _rows(n: int, seed: int = 0) -> list[dict]:
    """MC_ROWS plus random ones: varied lengths, choices with and without a leading space, contexts ending in one."""
    rng = np.random.default_rng(seed)
    letters = list(ALPHABET[2:40])

    def word(k):
        return "".join(rng.choice(letters, size=k))

    rows = list(MC_ROWS)
    while len(rows) < n:
        k = int(rng.integers(2, 6))
        context = word(int(rng.integers(1, 30))) + (" " if rng.random() < 0.3 else "")
        choices = [(" " if rng.random() < 0.5 else "") + word(int(rng.integers(1, 8))) for _ in range(k)]
        rows.append({"context": context, "choices": choices, "answer": int(rng.integers(0, k))})
    return rows


def test_accuracy_and_logliks_match_lm_eval(tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    ckpt = save_checkpoint(tmp_path / "study", "xs_1", 1024, seed=1, context=128)
    rows = _rows(60)
    data = write_jsonl(tmp_path / "agree.jsonl", rows)
    harness_task_yaml(data, tmp_path / "harness", "losslens_agree")

    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={ckpt},dtype=float32", tasks=["losslens_agree"],
        task_manager=TaskManager(include_path=str(tmp_path / "harness"), include_defaults=False),  # no built-ins: fast
        device="cpu", batch_size=4, log_samples=True, bootstrap_iters=0,
    )
    theirs = out["results"]["losslens_agree"]
    samples = sorted(out["samples"]["losslens_agree"], key=lambda s: s["doc_id"])
    their_ll = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]

    model, tok = load_checkpoint(ckpt, "float32", "cpu")
    ours = evaluate_task(Scorer(model, tok, batch_size=8), load_task(data), TaskSettings(bootstrap=0), per_example=True)
    our_ll = [ex["logliks"] for ex in ours["examples"]]

    worst = max(abs(a - b) for xs, ys in zip(our_ll, their_ll) for a, b in zip(xs, ys))
    print(f"lm-eval acc {theirs['acc,none']:.4f}, losslens acc {ours['metrics']['acc']['value']:.4f}, "
          f"max |Δ loglik| = {worst:.2e} over {sum(map(len, our_ll))} choices")
    assert [len(x) for x in our_ll] == [len(r["choices"]) for r in rows]
    assert worst < 1e-4
    assert ours["metrics"]["acc"]["value"] == pytest.approx(theirs["acc,none"])
    # lm-eval's acc_norm divides by characters, ours by UTF-8 bytes: equal once lengths are counted alike
    by_chars = np.mean([float(np.argmax(np.array(ll) / [len(c) for c in r["choices"]]) == r["answer"])
                        for ll, r in zip(our_ll, rows)])
    assert by_chars == pytest.approx(theirs["acc_norm,none"])


# ---------------------------------------------------------------- `losslens evaluate --lm-eval`


def _cli(*args: str) -> tuple[int, str]:
    """``losslens ARGS`` in this process (lm-eval is imported once per session): exit code and stderr."""
    from losslens.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def _table(study: Path) -> list[dict]:
    with open(study / contracts.RESULTS_FILE, newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(study: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (study / contracts.EVALS_DIR).rglob("*.json")}


@pytest.fixture(scope="module")
def harness_sweep(tmp_path_factory):
    """Two checkpoints, one local multiple-choice JSONL as a native task (mc) and as a harness task (mc_lm)."""
    pytest.importorskip("lm_eval")
    root = tmp_path_factory.mktemp("lm_eval_sweep")
    data = write_jsonl(root / "tasks" / "mc.jsonl", _rows(20))
    study = make_study(root, runs={"xs_64K": [1024, 4096]}, tasks=[str(data)])
    harness_task_yaml(data, root / "harness", "mc_lm")
    code, err = _cli("evaluate", str(study), "--lm-eval", "mc_lm", "--lm-eval-include", str(root / "harness"),
                     "--no-progress", "--threads", "1")
    assert code == 0, err
    return root, study


def test_lm_eval_rows_equal_the_native_rows_of_the_same_task(harness_sweep):
    _, study = harness_sweep
    rows = _table(study)
    native = {(r["run"], r["tokens"]): r for r in rows if r["task"] == "mc" and r["metric"] == "acc"}
    harness = {(r["run"], r["tokens"]): r for r in rows if r["task"] == "mc_lm" and r["metric"] == "acc"}
    assert len(native) == 2 and native.keys() == harness.keys()
    for key, ours in native.items():
        theirs = harness[key]
        for column in ("loss", "n_params", "step", "flops", "n"):
            assert theirs[column] == ours[column], column
        for column in ("value", "chance"):
            assert float(theirs[column]) == pytest.approx(float(ours[column])), column
        assert float(theirs["ci_low"]) < float(theirs["value"]) < float(theirs["ci_high"])
    continuous = {"prob_correct", "brier", "loglik_token", "loglik_byte"}
    assert {r["metric"] for r in rows if r["task"] == "mc_lm"} == {"acc", "acc_norm"} | continuous
    # The harness task is the native one phrased as a harness YAML: its continuous metrics are the native ones.
    for r in rows:
        if r["task"] == "mc_lm" and r["metric"] in continuous:
            (ours,) = [o for o in rows if (o["task"], o["run"], o["tokens"], o["metric"]) == ("mc", r["run"], r["tokens"], r["metric"])]
            assert float(r["value"]) == pytest.approx(float(ours["value"]), abs=1e-6), r["metric"]
            assert r["chance"] == ours["chance"] or float(r["chance"]) == pytest.approx(float(ours["chance"]))


def test_lm_eval_rerun_does_no_model_work_and_recovers_from_a_crash(harness_sweep, tmp_path):
    root, original = harness_sweep
    study, harness = tmp_path / "study", tmp_path / "harness"
    shutil.copytree(original, study)
    shutil.copytree(root / "harness", harness)
    args = ("evaluate", str(study), "--lm-eval", "mc_lm", "--lm-eval-include", str(harness), "--no-progress")
    before, table = _mtimes(study), (study / contracts.RESULTS_FILE).read_text()

    code, err = _cli(*args)
    assert code == 0 and "nothing to evaluate" in err, err
    assert _mtimes(study) == before and (study / contracts.RESULTS_FILE).read_text() == table

    # Killed mid-sweep: one harness result missing, its claim left by a process that is gone.
    lost = study / contracts.EVALS_DIR / "xs_64K" / contracts.checkpoint_dirname(4096) / "mc_lm.json"
    lost.unlink()
    (lost.parent / ".mc_lm.lock").write_text(json.dumps({"host": HOST, "pid": 2**22 + 12345, "token": "x", "time": 0}))
    code, err = _cli(*args)
    assert code == 0 and "1 evaluated" in err, err
    assert (study / contracts.RESULTS_FILE).read_text() == table

    # A changed harness task is evaluated again, and only it.
    yaml_path = harness / "mc_lm.yaml"
    spec = yaml.safe_load(yaml_path.read_text())
    spec["metric_list"][1] = {"metric": "acc_mutual_info", "aggregation": "mean", "higher_is_better": True}
    yaml_path.write_text(yaml.safe_dump(spec))
    code, err = _cli(*args)
    assert code == 0 and "2 evaluated" in err, err
    rows = _table(study)
    assert {r["metric"] for r in rows if r["task"] == "mc_lm"} == {"acc", "acc_mutual_info", "prob_correct", "brier",
                                                                   "loglik_token", "loglik_byte"}
    (chance,) = {float(r["chance"]) for r in rows if r["task"] == "mc" and r["metric"] == "acc"}
    for r in rows:  # of choices, not of requests (acc_mutual_info asks two per choice)
        if r["task"] == "mc_lm" and r["metric"] in ("acc", "acc_mutual_info", "prob_correct"):
            assert float(r["chance"]) == pytest.approx(chance)
    assert Counter((r["run"], r["tokens"], r["task"], r["metric"]) for r in rows).most_common(1)[0][1] == 1


def test_lm_eval_unknown_task_is_one_line_before_any_model_work(tmp_path):
    pytest.importorskip("lm_eval")
    study = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[])
    harness_task_yaml(write_jsonl(tmp_path / "mc.jsonl", MC_ROWS), tmp_path / "harness", "mc_lm")
    code, err = _cli("evaluate", str(study), "--lm-eval", "mc_lm,no_such_task",
                     "--lm-eval-include", str(tmp_path / "harness"), "--no-progress")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert "'no_such_task'" in lines[0] and str(tmp_path / "harness") in lines[0]
    assert not (study / contracts.EVALS_DIR).exists()


def test_lm_eval_name_clash_with_a_native_task_is_refused(tmp_path):
    pytest.importorskip("lm_eval")
    data = write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    study = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[str(data)])
    harness_task_yaml(data, tmp_path / "harness", "mc")
    code, err = _cli("evaluate", str(study), "--lm-eval", "mc", "--lm-eval-include", str(tmp_path / "harness"))
    assert code == 2 and "task name 'mc' is also used by" in err, err
    assert not (study / contracts.EVALS_DIR).exists()


def test_lm_eval_without_the_extra_says_how_to_install_it(tmp_path, monkeypatch):
    study = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[])
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    code, err = _cli("evaluate", str(study), "--lm-eval", "hellaswag")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error:"), err
    assert "pip install 'losslens[lm-eval]'" in err


def test_lm_eval_metric_names_and_how_analyze_reads_them():
    assert metric_name("acc", "none") == "acc"
    assert metric_name("exact_match", "strict-match") == "exact_match:strict-match"
    assert contracts.metric_info("exact_match:strict-match").discontinuous
    assert contracts.metric_info("acc_mutual_info").discontinuous
    assert not contracts.metric_info("word_perplexity").higher_is_better
    assert not contracts.metric_info("brier:x").higher_is_better
    f1 = contracts.metric_info("f1")
    assert f1.higher_is_better and not f1.discontinuous
    assert parse_names(["a,b", " c ,a", ""]) == ["a", "b", "c"]


def test_docs_recipes_run_offline(tmp_path):
    """The MMLU-, GSM8K- and HellaSwag-style task files of docs/lm-eval.md, as written there, on a checkpoint."""
    pytest.importorskip("lm_eval")
    write_recipes(tmp_path)
    study = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[])
    save_checkpoint(study, "xs_64K", 1024, seed=0, context=512)  # room for GSM8K's 256 new tokens

    code, err = _cli("evaluate", str(study), "--lm-eval", "mmlu_local,gsm8k_local,hellaswag_local",
                     "--lm-eval-include", str(tmp_path / "tasks/harness"), "--max-examples", "3", "--no-progress")
    assert code == 0, err
    got = {(r["task"], r["metric"]): r for r in _table(study) if r["task"] != "pretrain"}
    choice = {"prob_correct", "brier", "loglik_token", "loglik_byte"}
    generation = {"token_prob", "loglik_token", "loglik_byte", "edit_distance", "edit_distance_norm"}
    assert set(got) == ({("mmlu_local", "acc"), ("gsm8k_local", "exact_match:strict-match"),
                         ("gsm8k_local", "exact_match:flexible-extract"), ("hellaswag_local", "acc"),
                         ("hellaswag_local", "acc_norm")}
                        | {(t, m) for t in ("mmlu_local", "hellaswag_local") for m in choice}
                        | {("gsm8k_local", m) for m in generation})
    assert got["mmlu_local", "prob_correct"]["n"] == "6" and float(got["mmlu_local", "prob_correct"]["chance"]) == 0.25
    assert got["mmlu_local", "acc"]["n"] == "6" and float(got["mmlu_local", "acc"]["chance"]) == 0.25
    assert float(got["hellaswag_local", "acc_norm"]["chance"]) == 0.25
    assert got["gsm8k_local", "exact_match:strict-match"]["chance"] == ""


@pytest.mark.parametrize("case", ["missing include", "task and its group", "multi-process", "missing data"])
def test_lm_eval_bad_requests_are_one_line(tmp_path, monkeypatch, case):
    pytest.importorskip("lm_eval")
    study = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[])
    include = tmp_path / "harness"
    harness_task_yaml(write_jsonl(tmp_path / "mc.jsonl", MC_ROWS), include, "mc_lm")
    (include / "grp.yaml").write_text(yaml.safe_dump({"group": "grp", "task": ["mc_lm"],
                                                       "aggregate_metric_list": [{"metric": "acc"}]}))
    names, expected = "mc_lm", None
    if case == "missing include":
        include, expected = tmp_path / "nowhere", "--lm-eval-include"
    elif case == "task and its group":
        names, expected = "mc_lm,grp", "task 'mc_lm' is in both 'mc_lm' and 'grp'"
    elif case == "multi-process":
        monkeypatch.setenv("WORLD_SIZE", "2")
        expected = "not under accelerate launch or torchrun"
    else:
        (tmp_path / "mc.jsonl").unlink()
        expected = "lm-eval: cannot load mc_lm"
    code, err = _cli("evaluate", str(study), "--lm-eval", names, "--lm-eval-include", str(include), "--no-progress")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
