"""Harness tasks on losslens' scorer agree with lm-evaluation-harness' own run of the same tasks.

On the same checkpoints and tasks (the recipes of docs/lm-eval.md, and a few-shot multiple-choice
task with acc_mutual_info): ``acc``, ``acc_norm`` and ``acc_mutual_info`` equal simple_evaluate's
exactly, per-choice log-likelihoods agree within 1e-4, and the generative task's exact matches equal.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import yaml

from losslens.evaluate.harness import Harness
from losslens.evaluate.units import CheckpointContext, RunOptions, load_checkpoint
from tests.eval_fixtures import MC_ROWS, make_study, save_checkpoint, write_jsonl
from tests.lm_eval_recipes import write_recipes

pytestmark = pytest.mark.lm_eval
torch.set_num_threads(1)
SETTINGS = {"dtype": "float32", "limit": None, "bootstrap": 100, "confidence": 0.95}
MC_TASK = {
    "task": "agree_mc", "dataset_path": "json", "output_type": "multiple_choice",
    "training_split": "train", "test_split": "test", "num_fewshot": 2,  # shots drawn with lm-eval's seeded sampler
    "description": "Pick the right ending.\n\n", "doc_to_text": "{{context}}", "doc_to_choice": "{{choices}}",
    "doc_to_target": "{{answer}}", "target_delimiter": " ",
    "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                    for m in ("acc", "acc_norm", "acc_mutual_info")],
}


def _write_mc_task(folder: Path, data: Path, name: str = "agree_mc", **extra) -> None:
    rows = [dict(r, choices=[c.strip() for c in r["choices"]]) for r in MC_ROWS]
    spec = dict(MC_TASK, task=name, dataset_kwargs={"data_files": {
        "train": str(write_jsonl(data / "train.jsonl", rows[:4])), "test": str(write_jsonl(data / "test.jsonl", rows))}},
        **extra)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("lm_eval")
    root = tmp_path_factory.mktemp("native")
    include = write_recipes(root)
    _write_mc_task(include, root / "data" / "mc")
    study = make_study(root, runs={"xs_64K": [1024, 4096]}, tasks=[])
    ckpts = [save_checkpoint(study, "xs_64K", t, seed=s, context=512) for t, s in ((1024, 0), (4096, 1))]
    return include, ckpts


def _theirs(ckpt: Path, include: Path, names: list[str]) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tok = load_checkpoint(ckpt, "float32", "cpu")
    with contextlib.redirect_stderr(io.StringIO()):
        return lm_eval.simple_evaluate(
            model=HFLM(pretrained=model, tokenizer=tok, batch_size=4), tasks=names,
            task_manager=TaskManager(include_path=str(include), include_defaults=False),
            bootstrap_iters=SETTINGS["bootstrap"], log_samples=True)


def _ours(ckpt: Path, harness: Harness) -> dict:
    context = CheckpointContext(ckpt, RunOptions(batch_size=4, per_example=True))
    try:
        return {unit.name: unit.run(context) for unit in harness.tasks}
    finally:
        context.close()


# Slow: lm-eval's own simple_evaluate on 4 tasks x 2 checkpoints. The quick agreement check with lm-eval
# is test_eval_lm_eval.py::test_accuracy_and_logliks_match_lm_eval.
@pytest.mark.slow
def test_native_metrics_equal_simple_evaluate(setup):
    include, ckpts = setup
    names = ["mmlu_local", "hellaswag_local", "gsm8k_local", "agree_mc"]
    logs: list[str] = []
    harness = Harness(names, include, SETTINGS, log=logs.append)
    compared = {"acc": 0, "acc_norm": 0, "acc_mutual_info": 0, "exact_match": 0, "generated": 0}
    worst = 0.0
    for ckpt in ckpts:
        ours, theirs = _ours(ckpt, harness), _theirs(ckpt, include, names)
        for name in names:
            assert ours[name]["scorer"] == "losslens"
            for key, value in theirs["results"][name].items():
                metric, _, filt = key.partition(",")
                if metric.partition("_stderr")[1] or not isinstance(value, float):
                    continue
                got = ours[name]["metrics"][metric if filt == "none" else f"{metric}:{filt}"]["value"]
                assert got == value, (ckpt.name, name, key)  # exactly: the same documents, the same argmaxes
                compared[metric] += 1
            worst = max(worst, _worst_loglik_gap(ours[name]["examples"], theirs["samples"]))
            generated = _predictions(ours[name]["examples"])
            assert generated == _predictions(
                [dict(s, task=leaf, prediction=s["filtered_resps"][0]) for leaf, rows in theirs["samples"].items()
                 for s in rows if leaf in ours[name]["lm_eval"]["tasks"]])
            compared["generated"] += len(generated)
    print(f"compared {compared} over {len(ckpts)} checkpoints; max |Δ loglik| = {worst:.2e}")
    assert all(compared.values()) and worst < 1e-4
    assert not logs  # every task ran natively: no fallback line


def _predictions(records: list[dict]) -> dict:
    """Generated outputs after each filter, by (task, document, filter)."""
    return {(r["task"], r["doc_id"], r["filter"]): r["prediction"] for r in records
            if isinstance(r.get("prediction"), str)}


def _worst_loglik_gap(records: list[dict], samples: dict) -> float:
    theirs = {(leaf, s["doc_id"]): [float(r[0]) for r in s["filtered_resps"]]
              for leaf, rows in samples.items() for s in rows if not isinstance(s["filtered_resps"][0], str)}
    gaps = [abs(a - b) for r in records if "logliks" in r for a, b in zip(r["logliks"], theirs[r["task"], r["doc_id"]],
                                                                         strict=True)]
    return max(gaps, default=0.0)


def test_continuous_metrics_for_every_harness_task(setup):
    include, ckpts = setup
    result = _ours(ckpts[0], Harness(["agree_mc", "gsm8k_local"], include, SETTINGS, log=print))
    mc, gen = result["agree_mc"], result["gsm8k_local"]
    for name in ("prob_correct", "brier", "loglik_token", "loglik_byte"):
        assert mc["metrics"][name]["n"] == len(MC_ROWS) and not mc["metrics"][name]["discontinuous"]
    assert 0 < mc["metrics"]["prob_correct"]["value"] < 1 and mc["metrics"]["loglik_token"]["value"] < 0
    for rec in mc["examples"]:  # the answer's softmax probability over the conditional choices only
        probs = torch.tensor(rec["logliks"][: len(rec["logliks"]) // 2]).softmax(0)
        assert rec["prob_correct"] == pytest.approx(float(probs[rec["target"]]))
    assert {"token_prob", "loglik_token", "loglik_byte", "edit_distance", "edit_distance_norm"} <= set(gen["metrics"])
    assert 0 < gen["metrics"]["token_prob"]["value"] < 1 and gen["metrics"]["edit_distance"]["value"] > 0


def test_requests_are_built_once_per_task_version_and_harness_prefix_in_eval_tasks(setup, tmp_path, monkeypatch):
    from lm_eval.api.task import ConfigurableTask

    from losslens import contracts
    from tests.test_eval_lm_eval import _cli, _table

    include, _ = setup
    builds = []
    original = ConfigurableTask.build_all_requests
    monkeypatch.setattr(ConfigurableTask, "build_all_requests",
                        lambda self, **kw: (builds.append(self.config.task), original(self, **kw))[1])
    study = make_study(tmp_path, runs={"xs_64K": [1024, 4096]}, tasks=["harness:agree_mc"])
    args = ("evaluate", str(study), "--lm-eval-include", str(include), "--no-progress")
    code, err = _cli(*args)
    assert code == 0, err
    assert builds == ["agree_mc"]  # two checkpoints, one build
    rows = [r for r in _table(study) if r["task"] == "agree_mc"]
    assert {r["metric"] for r in rows} >= {"acc", "acc_norm", "acc_mutual_info", "prob_correct", "brier"}
    assert len({r["tokens"] for r in rows}) == 2

    # A later sweep (a new checkpoint) reads the requests from the cache: no build, the same numbers as a build.
    new = save_checkpoint(study, "xs_64K", 8192, seed=3)
    code, err = _cli(*args)
    assert code == 0 and "2 evaluated" in err and builds == ["agree_mc"], err  # its loss and agree_mc
    from_cache = [r for r in _table(study) if r["task"] == "agree_mc" and r["tokens"] == "8192"]
    (cache,) = (study / contracts.EVALS_DIR / ".harness-requests").glob("*.json")
    cache.unlink()
    (study / contracts.EVALS_DIR / "xs_64K" / new.name / "agree_mc.json").unlink()
    code, err = _cli(*args)
    assert code == 0 and builds == ["agree_mc"] * 2, err
    assert [r for r in _table(study) if r["task"] == "agree_mc" and r["tokens"] == "8192"] == from_cache


def test_unsupported_feature_falls_back_to_simple_evaluate_with_one_line(setup, tmp_path):
    include, ckpts = setup
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "utils.py").write_text("def process_results(doc, results):\n"
                                     "    return {'acc': float(max(r[0] for r in results) == results[0][0])}\n")
    _write_mc_task(folder, tmp_path / "data", name="custom_mc", process_results="!function utils.process_results",
                   metric_list=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True}])
    text = (folder / "custom_mc.yaml").read_text().replace("'!function utils.process_results'",
                                                           "!function utils.process_results")
    (folder / "custom_mc.yaml").write_text(text)
    logs: list[str] = []
    result = _ours(ckpts[0], Harness(["custom_mc"], folder, SETTINGS, log=logs.append))["custom_mc"]
    assert len(logs) == 1 and "custom_mc" in logs[0] and "simple_evaluate" in logs[0] and "process_results" in logs[0]
    assert result["scorer"] == "lm_eval.simple_evaluate" and "prob_correct" not in result["metrics"]
    assert 0 <= result["metrics"]["acc"]["value"] <= 1


def test_a_template_the_documents_cannot_fill_is_one_line(setup, tmp_path):
    from tests.test_eval_lm_eval import _cli

    folder = tmp_path / "bad"
    folder.mkdir()
    # The last document asks for a field that no document has (lm-eval checks only the first when loading).
    _write_mc_task(folder, tmp_path / "data", name="bad_mc", doc_to_text="{{context}}{{nope.x if answer == 2}}")
    study = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=["harness:bad_mc"])
    code, err = _cli("evaluate", str(study), "--lm-eval-include", str(folder), "--no-progress")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert "lm-eval: bad_mc: cannot build its requests: UndefinedError" in lines[0]
