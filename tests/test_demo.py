"""The embedded demo: a seeded corpus, held-out tasks that never occur in training, and the quick demo
run end to end."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from losslens.config import load_study
from losslens.demo.corpus import demo_documents, parse_options
from losslens.demo.tasks import TASK_NAMES, materialize
from losslens.errors import ConfigError
from tests.conftest import ROOT, run_cli

QUICK = ROOT / "configs" / "demo-quick.yaml"
SMALL = {"n_documents": 300}


def test_corpus_is_deterministic_in_the_seed():
    a, b, c = (list(demo_documents(SMALL, s)) for s in (0, 0, 1))
    assert a == b and a != c
    assert len(a) == 300 and all(doc.strip() for doc in a)


def test_mixture_weights_are_respected():
    lines = "\n".join(demo_documents({"n_documents": 400, "mixture": {"prose": 0.2, "addition": 0.6, "copy": 0.2}}, 0)).splitlines()
    sums = sum(bool(re.fullmatch(r"\d+\+\d+=\d+", l)) for l in lines) / len(lines)
    copies = sum(l.startswith("copy ") for l in lines) / len(lines)
    assert abs(sums - 0.6) < 0.03 and abs(copies - 0.2) < 0.03


def test_unknown_option_names_the_key():
    with pytest.raises(ConfigError, match=r"data.generator.n_document: unknown option .*did you mean 'n_documents'"):
        parse_options({"n_document": 5})
    with pytest.raises(ConfigError, match="data.generator.mixture: unknown component 'poetry'"):
        parse_options({"mixture": {"poetry": 1.0}})


@pytest.mark.parametrize("config", ["demo.yaml", "demo-quick.yaml"])
def test_demo_configs_load(config):
    study = load_study(ROOT / "configs" / config)
    assert study.data.source == "demo" and study.eval.tasks
    if config == "demo.yaml":
        assert len(study.model.resolved_sizes()) >= 3 and len(study.budgets) >= 2


def test_no_test_item_occurs_in_the_training_stream(tmp_path: Path):
    study = load_study(QUICK)
    text = "\n".join(demo_documents(study.data.generator, study.corpus_seed))
    lines = set(text.splitlines())
    questions = {l[: max(l.find("="), l.find(":")) + 1] for l in lines}  # "12+34=" or "copy abcd:"
    for name in TASK_NAMES:
        path = materialize(name, tmp_path, study)
        items = [json.loads(l) for l in path.with_suffix(".jsonl").read_text().splitlines()]  # proofread: beside its YAML
        assert len(items) >= 100
        for item in items:
            if "prompt" in item:  # generative: the whole line never occurs
                assert item["prompt"] + item["reference"] not in lines, item
                assert item["prompt"] not in questions, item  # nor its question
            else:
                correct = item["context"] + item["choices"][item["answer"]]
                assert correct not in text, item
    # materializing again leaves the file untouched (evaluations stay up to date)
    before = (tmp_path / "tasks" / "copy.jsonl").stat().st_mtime_ns
    materialize("copy", tmp_path, study)
    assert (tmp_path / "tasks" / "copy.jsonl").stat().st_mtime_ns == before


@pytest.mark.slow
def test_quick_demo_runs_the_whole_pipeline(tmp_path: Path):
    out = tmp_path / "demo"
    result = run_cli("run", str(QUICK), "--out", str(out), "--bootstrap", "100")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {out / 'report.md'}" in result.stdout
    rows = list(csv.DictReader(open(out / "results.csv")))
    tasks = {r["task"] for r in rows}
    assert tasks == {"pretrain", "next_word", "copy", "addition"}
    runs = {r["run"] for r in rows}
    assert runs == {"xs_48K", "xs_96K", "s_48K", "s_96K"}
    # The background language is being learned: along the larger run the loss falls and next-word
    # choice climbs from chance (0.25; about 0.26 -> 0.43 length-normalized in 96K tokens, measured).
    def along_run(metric, task="next_word"):
        mine = [r for r in rows if r["task"] == task and r["metric"] == metric and r["run"] == "s_96K"]
        return [float(r["value"]) for r in sorted(mine, key=lambda r: int(r["tokens"]))]

    assert along_run("loss", "pretrain")[-1] < along_run("loss", "pretrain")[0] - 0.3
    assert along_run("acc_norm")[-1] > along_run("acc_norm")[0] + 0.1
    assert along_run("loglik_token")[-1] > along_run("loglik_token")[0] + 0.2
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] and report["scaling"]
    for name in ("overview", "training", "task_copy", "task_next_word", "task_addition"):
        assert (out / "plots" / f"{name}.png").is_file() and (out / "plots" / f"{name}.pdf").is_file()
