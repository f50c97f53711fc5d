"""Task files: kinds, YAML settings, few-shot sampling, chance levels, registry, and errors naming file:line."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest
import yaml

from losslens.errors import ConfigError, DataError
from losslens.evaluate import tasks as T
from losslens.evaluate.kinds import MCExample
from losslens.metrics import GENERATIVE, MULTIPLE_CHOICE, kind_metrics
from tests.eval_fixtures import GEN_ROWS, MC_ROWS, write_jsonl


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_kind_is_told_by_fields(tmp_path):
    mc = T.load_task(write_jsonl(tmp_path / "arith.jsonl", MC_ROWS))
    assert (mc.name, mc.kind, len(mc.examples)) == ("arith", MULTIPLE_CHOICE, len(MC_ROWS))
    assert mc.examples[3] == MCExample("Caf", ("é", "e", "a"), 0)
    assert mc.metrics == kind_metrics(MULTIPLE_CHOICE)
    gen = T.load_task(write_jsonl(tmp_path / "g.jsonl", GEN_ROWS))
    assert gen.kind == GENERATIVE and gen.examples[1].stop == ("\n",) and gen.examples[0].stop is None
    assert gen.metrics == kind_metrics(GENERATIVE)


@pytest.mark.parametrize("row, message", [
    ({"context": "a", "choices": ["b"]}, "missing field 'answer'"),
    ({"context": "a", "choices": ["b", "c"], "answer": 2}, "answer index 2 is out of range for 2 choices"),
    ({"context": "a", "choices": ["b"], "answer": -1}, "out of range"),
    ({"context": "a", "choices": [], "answer": 0}, "'choices' must be a non-empty list"),
    ({"context": "a", "choices": ["b", ""], "answer": 0}, "choice 1 must be a non-empty string"),
    ({"context": "a", "choices": ["b"], "answer": True}, "'answer' must be an integer"),
    ({"context": 3, "choices": ["b"], "answer": 0}, "'context' must be a string"),
])
def test_bad_multiple_choice_lines_name_file_and_line(tmp_path, row, message):
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps(MC_ROWS[0]), "", json.dumps(row)])
    with pytest.raises(DataError) as err:
        T.load_task(path)
    assert str(err.value).startswith(f"{path}:3: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_generative_and_malformed_lines(tmp_path):
    path = _write_lines(tmp_path / "g.jsonl", [json.dumps(GEN_ROWS[0]), json.dumps({"prompt": "x"})])
    with pytest.raises(DataError, match=r"g\.jsonl:2: missing field 'reference'"):
        T.load_task(path)
    path = _write_lines(tmp_path / "g2.jsonl", [json.dumps({"prompt": "x", "reference": "y", "stop": "\n"})])
    with pytest.raises(DataError, match=r"g2\.jsonl:1: 'stop' must be a list"):
        T.load_task(path)
    path = _write_lines(tmp_path / "j.jsonl", [json.dumps(MC_ROWS[0]), "{not json"])
    with pytest.raises(DataError, match=r"j\.jsonl:2: not valid JSON"):
        T.load_task(path)
    path = _write_lines(tmp_path / "k.jsonl", [json.dumps({"question": "x"})])
    with pytest.raises(DataError, match=r"k\.jsonl:1: cannot tell the task kind"):
        T.load_task(path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no examples"):
        T.load_task(tmp_path / "empty.jsonl")


def _yaml_task(tmp_path: Path, **raw) -> Path:
    write_jsonl(tmp_path / "data.jsonl", MC_ROWS)
    write_jsonl(tmp_path / "shots.jsonl", MC_ROWS[:5])
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "data": "data.jsonl", **raw}))
    return path


def test_yaml_task_settings(tmp_path):
    task = T.load_task(_yaml_task(tmp_path, num_fewshot=2, fewshot_file="shots.jsonl", chance=0.3,
                                  metrics=["acc", "brier"], separator=" ", fewshot_separator="\n"))
    o = task.options
    assert (task.name, task.kind, o.num_fewshot, o.chance, task.metrics) == ("t", "multiple_choice", 2, 0.3, ("acc", "brier"))
    assert len(task.fewshot_examples) == 5 and o.separator == " "
    levels = task.chance_levels()
    assert levels == {"acc": 0.3, "brier": pytest.approx(sum(1 - 1 / len(r["choices"]) for r in MC_ROWS) / len(MC_ROWS))}


@pytest.mark.parametrize("raw, message", [
    ({"kind": "cloze"}, "kind: expected one of multiple_choice, generative, got 'cloze'"),
    ({"colour": 1}, "colour: unknown key"),
    ({"num_fewshots": 2}, "num_fewshots: unknown key (did you mean 'num_fewshot'?)"),
    ({"num_fewshot": -1}, "num_fewshot: must not be negative, got -1"),
    ({"max_new_tokens": 0}, "max_new_tokens: must be positive, got 0"),
    ({"stop": "\n"}, "stop: expected list of str"),
    ({"num_fewshot": 2}, "fewshot_file: num_fewshot is 2"),
    ({"num_fewshot": 2, "fewshot_file": "data.jsonl"}, "must be a separate split"),
    ({"num_fewshot": 9, "fewshot_file": "shots.jsonl"}, "has only 5 examples"),
    ({"metrics": ["exact_match"]}, "'exact_match' is not a multiple_choice metric"),
    ({"chance": 2}, "chance: must be a chance level in [0, 1], got 2"),
    ({"name": "pretrain"}, "reserved"),
    ({"name": "a/b"}, "must be letters"),
])
def test_bad_yaml_tasks(tmp_path, raw, message):
    path = _yaml_task(tmp_path, **raw)
    with pytest.raises(ConfigError) as err:
        T.load_task(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_yaml_kind_overrides_detection_and_missing_data(tmp_path):
    path = _yaml_task(tmp_path, kind="generative")
    with pytest.raises(DataError, match=r"data\.jsonl:1: missing field 'prompt'"):
        T.load_task(path)
    (tmp_path / "x.yaml").write_text("name: x\n")
    with pytest.raises(ConfigError, match="data: required key is missing"):
        T.load_task(tmp_path / "x.yaml")


def test_fewshot_is_seeded_per_example_and_from_the_other_split(tmp_path):
    task = T.load_task(_yaml_task(tmp_path, num_fewshot=2, fewshot_file="shots.jsonl", fewshot_separator="\n"))
    a = [task.fewshot_prefix(i, seed=7) for i in range(len(task.examples))]
    assert a == [task.fewshot_prefix(i, seed=7) for i in range(len(task.examples))]  # reproducible
    assert a[0] != task.fewshot_prefix(0, seed=8) or a[1] != task.fewshot_prefix(1, seed=8)
    solved = {r["context"] + r["choices"][r["answer"]] for r in MC_ROWS[:5]}
    for prefix in a:
        shots = prefix.split("\n")[:-1]
        assert len(shots) == 2 and len(set(shots)) == 2 and set(shots) <= solved and prefix.endswith("\n")
    assert T.load_task(_yaml_task(tmp_path)).fewshot_prefix(0, 7) == ""


def test_chance_defaults(tmp_path):
    mc = T.load_task(write_jsonl(tmp_path / "m.jsonl", [{"context": "a", "choices": ["x", "y"], "answer": 0},
                                                       {"context": "b", "choices": ["x", "y", "z", "w"], "answer": 1}]))
    levels = mc.chance_levels()
    assert levels["acc"] == levels["acc_norm"] == levels["prob_correct"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert levels["brier"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert levels["loglik_token"] is None
    gen = T.load_task(write_jsonl(tmp_path / "g.jsonl", GEN_ROWS))
    assert gen.chance_levels()["exact_match"] == 0.0 and gen.chance_levels()["edit_distance"] is None


def test_fingerprint_follows_content(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", MC_ROWS)
    before = T.load_task(path).fingerprint
    assert T.load_task(path).fingerprint == before
    write_jsonl(path, MC_ROWS[:-1])
    assert T.load_task(path).fingerprint != before


def test_every_yaml_option_is_in_the_fingerprint(tmp_path):
    """A new TaskOptions field changes the fingerprint without being listed anywhere: stale results cannot be reused."""
    base = dict(num_fewshot=1, fewshot_file="shots.jsonl")
    first = T.load_task(_yaml_task(tmp_path, **base)).fingerprint
    assert T.load_task(_yaml_task(tmp_path, **base)).fingerprint == first
    changed = {"name": "t2", "kind": "multiple_choice", "num_fewshot": 2, "chance": 0.5, "metrics": ["acc"],
               "separator": " ", "fewshot_separator": "\n", "stop": ["."], "max_new_tokens": 3}
    options = {f.name for f in dataclasses.fields(T.TaskOptions)} - {"data", "fewshot_file"}
    assert set(changed) == options  # every option is exercised here
    for key, value in changed.items():
        assert T.load_task(_yaml_task(tmp_path, **{**base, key: value})).fingerprint != first, key


def test_registry_and_resolution(tmp_path, monkeypatch):
    target = write_jsonl(tmp_path / "made" / "arith.jsonl", MC_ROWS)
    calls = []

    def materialize(name, study_dir, study):
        calls.append((name, study_dir, study))
        return target

    module = types.ModuleType("losslens.demo.tasks")
    module.materialize = materialize
    monkeypatch.setitem(sys.modules, "losslens.demo.tasks", module)
    task = T.resolve_task("demo:arith", tmp_path, study="S")
    assert task.name == "arith" and calls == [("arith", tmp_path, "S")]

    monkeypatch.setitem(T.TASK_SOURCES, "mine", lambda name, d, s: write_jsonl(tmp_path / f"{name}.jsonl", GEN_ROWS))
    assert T.resolve_task("mine:echo", tmp_path).kind == GENERATIVE

    write_jsonl(tmp_path / "rel.jsonl", MC_ROWS)  # relative to the study folder
    assert T.resolve_task("rel.jsonl", tmp_path).name == "rel"
    with pytest.raises(DataError, match="nope.jsonl: no such task file"):
        T.resolve_task("nope.jsonl", tmp_path)
    with pytest.raises(DataError, match="task name 'rel' is also used"):
        T.resolve_tasks(["rel.jsonl", str(tmp_path / "rel.jsonl")], tmp_path)
