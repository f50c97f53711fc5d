"""Issue 21 §3-4: ranges declared once beside each field, enforced where a file or flag is read; one YAML
loader that refuses duplicate keys; results tables checked cell by cell and row against row.

Each case ends in exit code 2 (or a LossLensError) and one line naming the file, field, flag or line; each is
listed in docs/errors.md. The mechanism itself (losslens/schema.py) is tested first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Optional

import pytest
import yaml

from losslens.analyze.table import read_results
from losslens.cli import main
from losslens.config import load_study
from losslens.records import build_dataclass
from losslens.errors import ConfigError, ResultsError
from losslens.schema import Length, Range, load_yaml, value_problem
from tests.cli_checks import exit_2
from tests.conftest import ROOT, write_results_csv, write_study

FIXTURE = ROOT / "tests" / "data" / "lm_eval_04"


# ---------------------------------------------------------------- the mechanism


def test_range_says_the_side_crossed_and_refuses_non_finite_numbers():
    assert Range(gt=0).problem(0) == "must be positive, got 0"
    assert Range(ge=0).problem(-1) == "must not be negative, got -1"
    assert Range(ge=0, lt=1).problem(1.5) == "must be in [0, 1), got 1.5"
    assert Range(gt=0, le=2**20).problem(0) == "must be positive, got 0"  # a large bound is a sanity limit
    assert Range(ge=1, le=1024).problem(5000) == "must be at most 1024, got 5000"
    assert Range(ge=10, also=(0,)).problem(0) is None and "0 or at least 10" in Range(ge=10, also=(0,)).problem(1)
    assert Range(gt=0).problem(float("nan")) == "must be a number, got nan"
    assert Range(gt=0).problem(float("inf")) == "must be a finite number, got inf"
    assert Range(gt=0).problem(3) is None and Length(2).problem([1]) == "expected 2 items, got 1"


def test_plain_numbers_are_finite_and_fit_64_bits():
    assert value_problem(float, float("inf"))[1] == "must be a finite number, got inf"
    assert "2^63" in value_problem(int, 2**70)[1]
    assert value_problem(Optional[Annotated[int, Range(gt=0)]], None) is None
    assert value_problem(list[Annotated[float, Range(gt=0)]], [1.0, -2.0]) == ("[1]", "must be positive, got -2")


def test_build_dataclass_checks_the_declared_range_inside_optional_and_lists():
    from dataclasses import dataclass, field

    @dataclass
    class Opts:
        k: Optional[Annotated[int, Range(gt=0)]] = None
        xs: list[Annotated[float, Range(ge=0, le=1)]] = field(default_factory=list)

    with pytest.raises(ConfigError, match=r"^f.yaml: k: must be positive, got 0$"):
        build_dataclass(Opts, {"k": 0}, "", "f.yaml")  # said as is, not "expected int | None"
    with pytest.raises(ConfigError, match=r"^f.yaml: xs\[1\]: must be in \[0, 1\], got 2$"):
        build_dataclass(Opts, {"xs": [0.5, 2]}, "", "f.yaml")
    assert build_dataclass(Opts, {"k": "4K"}, "", "f.yaml").k == 4000


@pytest.mark.parametrize("text, line, first", [
    ("a: 1\nb: 2\na: 3\n", 3, 1),
    ("top:\n  x: 1\n  x: 2\n", 3, 2),
    ("l: [{k: 1, k: 2}]\n", 1, 1),  # on one line, in flow style
])
def test_the_yaml_loader_refuses_a_key_given_twice(text, line, first):
    with pytest.raises(ConfigError, match=rf"^f.yaml: line {line}: key '\w+' given twice \(first on line {first}"):
        load_yaml(text, "f.yaml")
    assert load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n", "f.yaml")["other"] == {"x": 1, "y": 2}


def test_the_yaml_loader_refuses_an_alias_bomb():
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]  # 10^8 values
    with pytest.raises(ConfigError, match=r"^f.yaml: holds more than 1,000,000 values once its aliases are expanded"):
        load_yaml("\n".join(levels) + "\n", "f.yaml")


# ---------------------------------------------------------------- study configs


@pytest.mark.parametrize("override, message", [
    ("train.optimizer.lr=.nan", "train.optimizer.lr: must be a finite number, got nan"),
    ("train.optimizer.betas=[0.9, 1.5]", "train.optimizer.betas[1]: must be an AdamW beta in [0, 1), got 1.5"),
    ("train.optimizer.betas=[0.9]", "train.optimizer.betas: expected 2 items, got 1"),
    ("train.threads=-1", "train.threads: must be at least 1, got -1"),
    ("train.threads=100000", "train.threads: must be at most 1024, got 100000"),
    ("train.schedule.min_lr_ratio=5", "train.schedule.min_lr_ratio: must be final LR / peak LR in [0, 1], got 5"),
    ("train.optimizer.weight_decay=-1", "train.optimizer.weight_decay: must not be negative, got -1"),
    ("train.optimizer.grad_clip=-1", "train.optimizer.grad_clip: must not be negative, got -1"),
    (f"seed={2**70}", "seed: must be at most 4,294,967,295, got 1,180,591,620,717,411,303,424"),
    ("seeds=[{init: 0, data: 5000000000}]", "seeds[0].data: must be at most 4,294,967,295"),
    ("budgets=[1e300]", "budgets[0]: too large: at most 9,223,372,036,854,775,807"),
    ("train.peak_flops=.inf", "train.peak_flops: must be a finite number"),
    ("model.context=0", "model.context: must be positive, got 0"),
    ("eval.bootstrap=1", "eval.bootstrap: must be 0 or at least 10, got 1"),
    ("eval.adaptive.coarse=1", "eval.adaptive.coarse: must be at least 2, got 1"),
    ("checkpoints.count=1e9", "checkpoints.count: must be at most 100000, got 1,000,000,000"),
])
def test_config_fields_out_of_their_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_study(ROOT / "configs" / "tiny.yaml", [override])
    assert message in str(err.value) and str(err.value).startswith(str(ROOT / "configs" / "tiny.yaml"))


def test_too_many_checkpoints_a_run(tmp_path: Path, capsys):
    cfg = write_study(tmp_path)
    exit_2(capsys, ["train", str(cfg), "--list", "budgets=[1e12]", "checkpoints.every=512"],
            "checkpoints.every: 512 tokens gives 1,953,125,000 checkpoints in a run of 1,953,125,000 steps; "
            "at most 100,000")


def test_a_study_config_with_a_key_twice_is_refused_before_anything_is_written(tmp_path: Path, capsys):
    cfg = write_study(tmp_path)
    cfg.write_text(cfg.read_text() + "name: twice\n")
    exit_2(capsys, ["train", str(cfg)], "study.yaml: line", "key 'name' given twice")
    assert not (tmp_path / "study").exists()


def test_a_task_file_and_a_mapping_with_a_key_twice(tmp_path: Path):
    from losslens.evaluate.tasks import load_task
    from losslens.import_results import load_mapping

    (tmp_path / "t.jsonl").write_text('{"context": "1+1=", "choices": ["2", "3"], "answer": 0}\n')
    (tmp_path / "t.yaml").write_text("data: t.jsonl\nchance: 0.5\nchance: 0.25\n")
    with pytest.raises(ConfigError, match=r"t.yaml: line 3: key 'chance' given twice"):
        load_task(str(tmp_path / "t.yaml"))
    mapping = (FIXTURE / "mapping.yaml").read_text() + "tokens_per_step: 7\n"
    (tmp_path / "m.yaml").write_text(mapping)
    with pytest.raises(ConfigError, match=r"m.yaml: line \d+: key 'tokens_per_step' given twice"):
        load_mapping(tmp_path / "m.yaml")


# ---------------------------------------------------------------- command-line flags


@pytest.mark.parametrize("flags, message", [
    (["--forecast-sizes", "0,-5"], "argument --forecast-sizes: item 1: must be positive"),
    (["--forecast-sizes", "1e400"], "argument --forecast-sizes: item 1: must be a finite number"),
    (["--forecast-sizes", "nan"], "argument --forecast-sizes: item 1: must be a number, got nan"),
    (["--seed", "-1"], "argument --seed: must not be negative, got -1"),
    (["--bootstrap", "1"], "argument --bootstrap: must be 0 or at least 10, got 1"),
    (["--ci-level", "1"], "argument --ci-level: must be in (0, 1), got 1"),
])
def test_analyze_flags_out_of_range(tmp_path: Path, capsys, flags, message):
    exit_2(capsys, ["analyze", str(tmp_path), *flags], message)


def test_evaluate_flags_share_their_config_fields_ranges(tmp_path: Path, capsys):
    exit_2(capsys, ["evaluate", str(tmp_path), "--threads", "100000"], "argument --threads: must be at most 1024")
    exit_2(capsys, ["evaluate", str(tmp_path), "--batch-size", "1e3"], "argument --batch-size: expected an integer")
    exit_2(capsys, ["evaluate", str(tmp_path), "--eta-width", "inf"], "argument --eta-width: must be a finite number")


def test_the_python_api_checks_the_same_ranges(tmp_path: Path):
    from losslens.analyze.analysis import run_analysis
    from losslens.analyze.config import AnalyzeConfig

    with pytest.raises(ConfigError, match=r"^--ci-level: must be in \(0, 1\), got 1.5$"):
        run_analysis(tmp_path / "results.csv", config=AnalyzeConfig(ci_level=1.5))
    with pytest.raises(ConfigError, match=r"^--forecast-sizes\[1\]: must be positive"):
        run_analysis(tmp_path / "results.csv", config=AnalyzeConfig(forecast_sizes=[1e9, -5]))


def test_backtest_naming_a_run_twice(tmp_path: Path, capsys):
    rows = [{**_ROW, "run": f"r{k}", "n_params": 10**6 * (k + 1), "n_params_nonembed": 10**5 * (k + 1),
             "tokens": t, "step": t // 100, "loss": 4 - k * 0.1 - t / 10**5} for k in range(4) for t in (1000, 5000)]
    table = write_results_csv(tmp_path / "results.csv", rows)
    exit_2(capsys, ["analyze", "--results", str(table), "--out", str(tmp_path / "out"), "--bootstrap", "0",
                     "--no-plots", "--backtest", "r3,r3"], "--backtest r3,r3: run 'r3' is named twice")


def test_an_adaptive_budget_below_the_coarse_ends_is_refused(tmp_path: Path):
    from types import SimpleNamespace

    from losslens.evaluate.adaptive import run_adaptive
    from losslens.evaluate.config import AdaptiveConfig

    runs = {"a": [tmp_path / f"a{i}" for i in range(6)], "b": [tmp_path / f"b{i}" for i in range(6)]}
    units = [SimpleNamespace(name="pretrain"), SimpleNamespace(name="t")]  # no evaluator: refused before any work
    for budget in (1, 1e-300):
        with pytest.raises(ConfigError, match=r"budget .*cannot hold the first and last checkpoint .*\(4 of"):
            run_adaptive(runs, units, evaluator=None, settings=AdaptiveConfig(budget=budget), log=print,
                         judge=None)


# ---------------------------------------------------------------- results tables

_ROW = {"run": "s_1M", "n_params": 900000, "n_params_nonembed": 800000, "tokens": 1000, "step": 1, "flops": "",
        "loss": 3.5, "task": "t", "metric": "acc", "value": 0.3, "ci_low": "", "ci_high": "", "n": 100,
        "chance": 0.25}
_LATER = {**_ROW, "tokens": 2000, "step": 2, "loss": 3.2}


@pytest.mark.parametrize("rows, message", [
    ([{**_ROW, "ci_low": 0.4, "ci_high": 0.35}], ":2: column 'ci_low': 0.4 is above ci_high 0.35"),
    ([{**_ROW, "ci_low": 0.2}], ":2: column 'ci_low': 0.2, but ci_high is empty: give both ends of the interval"),
    ([{**_ROW, "n": 0}], ":2: column 'n': must be positive, got 0"),
    ([{**_ROW, "ci_low": 0.4, "ci_high": 0.5}], ":2: column 'value': 0.3 lies outside its interval [0.4, 0.5]"),
    ([{**_ROW, "n_params_nonembed": 10**7}], ":2: column 'n_params_nonembed': 10000000 is more than n_params 900000"),
    ([_ROW, {**_LATER, "step": 0}], ":3: column 'step': 0 at 2000 tokens is less than at fewer tokens"),
    ([{**_ROW, "flops": 5e9}, {**_LATER, "flops": 1e9}], ":3: column 'flops': 1e+09 at 2000 tokens"),
    ([{**_ROW, "loss": 1e308}], ":2: column 'loss': must be a loss (nats/token) at most 1e+15, got 1e+308"),
    ([{**_ROW, "n_params": 1e295}], ":2: column 'n_params': must be at most 1,000,000,000,000,000, got 1e+295"),
    ([{**_ROW, "value": "NaN"}], ":2: column 'value': expected a finite number, got 'NaN'"),
    ([{**_ROW, "value": "Infinity"}], ":2: column 'value': expected a finite number, got 'Infinity'"),
    ([{**_ROW, "value": "N/A"}], ":2: column 'value': expected a number, got 'N/A'"),
    ([{**_ROW, "loss": "true"}], ":2: column 'loss': expected a number, got 'true'"),
    ([{**_ROW, "value": 1.5}], ":2: column 'value': metric 'acc' lies in [0, 1], got 1.5"),
    ([{**_ROW, "tokens": -5}], ":2: column 'tokens': must not be negative, got -5"),
    ([{**_ROW, "chance": 2.0}], ":2: column 'chance': must be a chance level in [0, 1], got 2"),
])
def test_results_tables_that_cannot_be_right(tmp_path: Path, rows, message):
    with pytest.raises(ResultsError) as err:
        read_results(write_results_csv(tmp_path / "results.csv", rows))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_table_cut_mid_line_is_refused_naming_the_line(tmp_path: Path):
    path = write_results_csv(tmp_path / "results.csv", [_ROW, _LATER, {**_LATER, "tokens": 3000, "step": 3}])
    text = path.read_text()
    path.write_text(text[:-9])  # the last row loses its end: no line break
    with pytest.raises(ResultsError, match=r"results.csv:4: the last line has no line break: .*truncated"):
        read_results(path)
    path.write_text(text[:text.rindex("\n", 0, -1) - 30] + "\n")  # cut, then a line break (a copy that stopped)
    with pytest.raises(ResultsError, match=r"results.csv:3: \d+ cells, but the header has 14 \(cut mid-line\?\)"):
        read_results(path)


def test_a_column_named_twice_is_refused(tmp_path: Path):
    path = write_results_csv(tmp_path / "results.csv", [_ROW])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",loss", lines[1] + ",9.5"]) + "\n")
    with pytest.raises(ResultsError, match=r"results.csv:1: column 'loss' appears twice in the header"):
        read_results(path)


def test_a_table_with_a_byte_order_mark_is_read(tmp_path: Path):
    path = write_results_csv(tmp_path / "results.csv", [_ROW, _LATER])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    table = read_results(path)
    assert table.runs() == ["s_1M"] and len(table) == 2


def _one_series(path: Path, n: int) -> Path:
    from losslens.contracts import RESULTS_COLUMNS

    lines = [",".join(RESULTS_COLUMNS)]
    lines += [f"r,900000,800000,{t},{t // 10},,{4 - t * 1e-8:.9f},t,acc,0.5,,,,0.25" for t in range(10, 10 * n + 1, 10)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_a_million_points_in_one_series_end_in_a_clear_error(tmp_path: Path):
    """Read in about 40 s (2-core CPU, shared), then refused before any bootstrap array is made."""
    from losslens.analyze.analysis import run_analysis
    from losslens.analyze.config import AnalyzeConfig

    with pytest.raises(ResultsError, match=r"task 't' metric 'acc' has 1,000,000 points; analyze takes at most"):
        run_analysis(_one_series(tmp_path / "results.csv", 1_000_000), config=AnalyzeConfig(bootstrap=0),
                     progress=False)


def test_points_beyond_the_memory_limits_are_refused_before_any_fit(tmp_path: Path, monkeypatch):
    from losslens.analyze import analysis
    from losslens.analyze.config import AnalyzeConfig

    table = _one_series(tmp_path / "results.csv", 300)
    monkeypatch.setattr(analysis, "MAX_POINTS", 200)
    with pytest.raises(ResultsError, match=r"has 300 points; analyze takes at most 200 per task x metric"):
        analysis.run_analysis(table, config=AnalyzeConfig(bootstrap=0), progress=False)
    monkeypatch.setattr(analysis, "MAX_POINTS", 1000)
    with pytest.raises(ResultsError, match=r"points x --bootstrap at most 25,000,000 \(here 30,000,000\)"):
        analysis.run_analysis(table, config=AnalyzeConfig(bootstrap=100_000), progress=False)


# ---------------------------------------------------------------- import-results and manifests


def _mapping(tmp_path: Path, edit) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "m")
    raw = yaml.safe_load((tmp_path / "m" / "mapping.yaml").read_text())
    edit(raw)
    (tmp_path / "m" / "mapping.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "m" / "mapping.yaml"


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(tokens_per_step=0), "mapping.yaml: tokens_per_step: must be positive, got 0"),
    (lambda m: m["chance"].update(arc_easy=2.0), "mapping.yaml: chance.arc_easy: must be a chance level in [0, 1]"),
    (lambda m: m["runs"]["small"].update(n_params=1e295), "runs.small.n_params: must be at most 1,000,000,000,000,000"),
    (lambda m: m["runs"]["small"].update(n_params_nonembed="9M"), "runs.small.n_params_nonembed: 9000000 is more than"),
])
def test_import_mappings_out_of_range_write_nothing(tmp_path: Path, capsys, edit, message):
    mapping = _mapping(tmp_path, edit)
    exit_2(capsys, ["import-results", str(mapping), "--out", str(tmp_path / "out.csv")], message)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("value, message", [
    ("Infinity", "results.lambada_openai.perplexity: inf is not a finite number (the x-axis"),
    ('"N/A"', "results.lambada_openai.perplexity: 'N/A' is not a finite number (the x-axis"),
])
def test_an_x_axis_that_is_not_a_number_is_named_as_such(tmp_path: Path, capsys, value, message):
    mapping = _mapping(tmp_path, lambda m: None)
    f = mapping.parent / "small_step1000.json"
    f.write_text(f.read_text().replace('"perplexity,none": 400.0', f'"perplexity,none": {value}'))
    exit_2(capsys, ["import-results", str(mapping), "--out", str(tmp_path / "out.csv")], "small_step1000.json", message)


def test_results_that_are_not_numbers_are_counted_aloud(tmp_path: Path, capsys):
    mapping = _mapping(tmp_path, lambda m: None)
    f = mapping.parent / "small_step1000.json"
    f.write_text(f.read_text().replace('"acc_norm,none": 0.27999999999999997', '"acc_norm,none": NaN'))
    assert main(["import-results", str(mapping), "--out", str(tmp_path / "out.csv")]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 results are not numbers and were not imported" in err and "arc_easy.acc_norm" in err


def test_import_results_validates_what_it_would_write(tmp_path: Path, capsys):
    mapping = _mapping(tmp_path, lambda m: None)
    f = mapping.parent / "small_step1000.json"  # an accuracy of 30 (a percentage): analyze would refuse it
    f.write_text(f.read_text().replace('"acc,none": 0.3,', '"acc,none": 30,'))
    exit_2(capsys, ["import-results", str(mapping), "--out", str(tmp_path / "out.csv")],
            "mapping.yaml: not written, analyze would refuse the table", "metric 'acc' lies in [0, 1], got 30")
    assert not (tmp_path / "out.csv").exists()


def _manifest(tmp_path: Path, **changes) -> Path:
    raw = {"name": "ext", "context": 8, "validation": {"text": "v.txt"},
           "checkpoints": [{"run": "a", "path": "ck", "tokens": 4096}]}
    raw.update(changes)
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "manifest.yaml"


@pytest.mark.parametrize("changes, message", [
    ({"checkpoints": [{"run": "a", "path": "ck", "tokens": -5}]}, "checkpoints[0].tokens: must not be negative, got -5"),
    ({"context": 100000, "checkpoints": [{"run": "a", "path": "ck", "tokens": 4096}]},
     "context: 100000 tokens is more than run 'a' saw by its last checkpoint (checkpoints[0].tokens: 4096)"),
    ({"context": 0}, "manifest.yaml: context: must be positive, got 0"),
    ({"checkpoints": [{"run": "a", "path": "ck", "tokens": 4096, "n_params": 5, "n_params_nonembed": 6}]},
     "checkpoints[0].n_params_nonembed: 6 is more than n_params 5"),
])
def test_manifests_out_of_range(tmp_path: Path, capsys, changes, message):
    exit_2(capsys, ["import", str(_manifest(tmp_path, **changes)), "--out", str(tmp_path / "out")], message)
    assert not (tmp_path / "out").exists()


def test_a_manifest_context_beyond_the_models_positions(tmp_path: Path, capsys):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    (tmp_path / "v.txt").write_text("some text\n")
    manifest = _manifest(tmp_path, context=4096, checkpoints=[{"run": "a", "path": "ck", "tokens": 10**6}])
    exit_2(capsys, ["import", str(manifest), "--out", str(tmp_path / "out")],
            "context: 4096 tokens is more than", "max_position_embeddings 2048")
    assert not (tmp_path / "out").exists()


def test_the_errors_are_listed_in_docs():
    text = (ROOT / "docs" / "errors.md").read_text()
    assert "tests/test_schema.py" in text and "tests/test_fuzz.py" in text


def test_adaptive_budget_too_small_through_the_command_line(trained_tiny_copy: Path, capsys):
    before = sorted(p.relative_to(trained_tiny_copy) for p in trained_tiny_copy.rglob("*"))
    for budget in ("1", "1e-300"):
        exit_2(capsys, ["evaluate", str(trained_tiny_copy), "--adaptive", "--budget", budget],
                f"--budget / eval.adaptive.budget {budget if budget == '1' else '1e-300'}:",
                "cannot hold the first and last checkpoint of every run for each task")
    assert sorted(p.relative_to(trained_tiny_copy) for p in trained_tiny_copy.rglob("*")) == before
