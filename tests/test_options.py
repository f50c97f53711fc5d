"""One options record per stage: ``AnalyzeConfig`` (the study's ``analyze:`` section, flags over it) and
``EvaluateOptions`` (one sweep's options beside ``eval:``); flags, YAML and the Python API meet in them."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from losslens.analyze import cli as analyze_cli
from losslens.analyze.config import AnalyzeConfig, analyze_config
from losslens.cli import main
from losslens.errors import ConfigError
from losslens.evaluate import cli as evaluate_cli
from losslens.evaluate.config import EvaluateOptions
from tests.cli_checks import exit_2
from tests.test_analyze_x_axis import make_table

STUDY_SECTION = """name: s
analyze:
  bootstrap: 0
  seed: 7
  scaling_points: all
  backtest: none
  plots: false
  forecast: {intermediate: loss, smooth_window: 3}
"""


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    make_table(tmp_path / "study" / "results.csv")
    (tmp_path / "study" / "study.yaml").write_text(STUDY_SECTION)
    return tmp_path / "study"


def _settings(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())["settings"]


def test_the_study_section_is_the_base_and_a_flag_overrides_one_field(run_dir: Path, capsys):
    assert main(["analyze", str(run_dir), "--seed", "3"]) == 0
    settings = _settings(run_dir)
    assert settings["seed"] == 3  # the flag
    assert (settings["n_bootstrap"], settings["scaling_points"], settings["backtest"]) == (0, "all", "none")
    assert settings["forecast"]["intermediate"] == "loss" and settings["forecast"]["smooth_window"] == 3
    assert not (run_dir / "plots").exists() and "plots:" not in capsys.readouterr().out  # analyze.plots: false
    assert analyze_config(run_dir).seed == 7 and analyze_config(run_dir, {"seed": 3}).seed == 3


def test_the_cli_and_the_python_api_write_the_same_report(run_dir: Path):
    from losslens.analyze.analysis import analyze

    flags = ["--seed", "5", "--ci-level", "0.9", "--backtest", "largest-size", "--intermediate", "direct",
             "--forecast-sizes", "1e9,1e10", "--scaling-points", "decayed"]
    assert main(["analyze", str(run_dir), *flags]) == 0
    by_cli = (run_dir / "report.json").read_bytes()
    config = dataclasses.replace(AnalyzeConfig(bootstrap=0, seed=5, ci_level=0.9, backtest="largest-size",
                                               forecast_sizes=[1e9, 1e10], plots=False),
                                 forecast=dataclasses.replace(analyze_config(run_dir).forecast, intermediate="direct"))
    analyze(run_dir, config, progress=False)
    assert (run_dir / "report.json").read_bytes() == by_cli


@pytest.mark.parametrize("line, message", [
    ("  bootstrap: 1", "study.yaml: analyze.bootstrap: must be 0 or at least 10, got 1"),
    ("  ci_level: 1.5", "study.yaml: analyze.ci_level: must be in (0, 1), got 1.5"),
    ("  scaling_points: some", "study.yaml: analyze.scaling_points: expected one of 'decayed', 'all'"),
    ("  forecast_sizes: [1e9, -5]", "study.yaml: analyze.forecast_sizes[1]: must be positive"),
    ("  plot: false", "study.yaml: analyze.plot: unknown key (did you mean 'plots'?)"),
])
def test_a_bad_option_in_the_study_section_names_file_and_field(tmp_path: Path, capsys, line, message):
    make_table(tmp_path / "results.csv")
    (tmp_path / "study.yaml").write_text(f"name: s\nanalyze:\n{line}\n")
    exit_2(capsys, ["analyze", str(tmp_path), "--bootstrap", "0", "--no-plots"], message)
    assert not (tmp_path / "report.json").exists()


def _dests(add_arguments) -> set[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {a.dest for a in parser._actions} - {"help"}


def test_every_analyze_option_has_its_flag():
    fields = {f.name for f in dataclasses.fields(AnalyzeConfig)} - {"forecast"} | {"forecast.intermediate"}
    assert set(analyze_cli.OPTION_FLAGS) == fields
    assert fields <= _dests(analyze_cli.add_arguments)


def test_every_evaluate_flag_sets_an_options_field():
    fields = {f.name for f in dataclasses.fields(EvaluateOptions)}
    assert _dests(evaluate_cli.add_arguments) - {"run_dir", "no_progress"} == fields - {"progress"}


@pytest.mark.parametrize("options, message", [
    (EvaluateOptions(batch_size=0), r"^--batch-size: must be positive, got 0$"),
    (EvaluateOptions(threads=100_000), r"^--threads: must be at most 1024"),
    (EvaluateOptions(order="random"), r"^--order: expected one of tokens, coarse-to-fine, got 'random'$"),
    (EvaluateOptions(shard=(3, 2)), r"^--shard: need 0 <= I < N"),
    (EvaluateOptions(budget=2.5), r"^--budget: a count of units must be whole"),
])
def test_the_evaluate_python_api_checks_its_options_first(tmp_path: Path, options, message):
    from losslens.evaluate.sweep import evaluate_study

    with pytest.raises(ConfigError, match=message):  # before the (missing) study.yaml is read
        evaluate_study(tmp_path, options, log=lambda msg: None)


def test_an_analyze_record_made_in_python_is_checked():
    with pytest.raises(ConfigError, match=r"^analyze option 'n_bootstrap': unknown \(did you mean 'bootstrap'\?\)$"):
        analyze_config(None, {"n_bootstrap": 100})
    with pytest.raises(ConfigError, match=r"^--scaling-points: expected one of decayed, all, got 'some'$"):
        AnalyzeConfig(scaling_points="some").check()
    with pytest.raises(ConfigError, match=r"^--intermediate: expected auto, loss, direct or a metric name"):
        analyze_config(None, {"forecast.intermediate": " "})
