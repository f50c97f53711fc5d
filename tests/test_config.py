"""Study config: typed parsing, overrides, and errors that name the file and the field."""

from __future__ import annotations

import pytest
import yaml

from losslens.config import load_study
from losslens.counts import format_count
from losslens.records import parse_count
from losslens.errors import ConfigError
from tests.conftest import TINY, write_study


def _write(tmp_path, text: str):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_tiny_config_loads_with_types():
    study = load_study(TINY)
    assert study.name == "tiny"
    assert study.budgets == [32768, 65536]
    assert study.train.optimizer.lr == pytest.approx(3e-3)
    assert list(study.model.resolved_sizes()) == ["xs", "s"]
    assert study.model.resolved_sizes()["s"].heads == 4


def test_counts_parse_and_format():
    assert parse_count("4M") == 4_000_000
    assert parse_count("1.5B") == 1_500_000_000
    assert parse_count("2e6") == 2_000_000
    assert format_count(2_500_000) == "2.5M"
    with pytest.raises(ValueError):
        parse_count("lots")


def test_overrides_apply_with_yaml_values():
    study = load_study(TINY, ["train.global_batch=32", "budgets=[64K, 128K]", "model.sizes.s.width=64"])
    assert study.train.global_batch == 32
    assert study.budgets == [64_000, 128_000]
    assert study.model.sizes["s"].width == 64


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.glbal_batch=3"], "train.glbal_batch: unknown key (did you mean 'global_batch'?)"),
        (["train.global_batch=abc"], "train.global_batch: expected an integer"),
        (["train.compile=maybe"], "train.compile: expected bool"),
        (["model.sizes.s.width=0"], "model.sizes.s.width: must be positive, got 0"),
        (["model.sizes.s.heads=5"], "model.sizes.s.heads: 5 heads do not divide width 48"),
        (["budgets=[100]"], "budgets[0]: 100 tokens is less than one global batch"),
        (["train.micro_batch=5"], "train.micro_batch: 5 does not divide global_batch 16"),
        (["train.schedule.kind=linear"], "train.schedule.kind: expected one of 'cosine', 'wsd'"),
        (["model.ladder=[huge]"], "model.ladder[0]: expected one of"),
    ],
)
def test_bad_fields_name_file_and_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_study(TINY, override)
    assert str(err.value).startswith(str(TINY))
    assert message in str(err.value)


def test_malformed_yaml_names_line(tmp_path):
    p = _write(tmp_path, "name: x\nmodel: {sizes: [\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: line \d+, column \d+: malformed YAML"):
        load_study(p)


def test_missing_required_key(tmp_path):
    p = _write(tmp_path, yaml.safe_dump({"name": "x", "model": {"sizes": {"a": {"width": 8, "depth": 1, "heads": 2}}},
                                         "data": {"paths": ["c.txt"]}}))
    with pytest.raises(ConfigError, match="budgets: required key is missing"):
        load_study(p)


def test_missing_file():
    with pytest.raises(ConfigError, match="study config not found"):
        load_study("nope.yaml")


def test_hash_ignores_output_folder_but_not_lr(tmp_path):
    a = load_study(write_study(tmp_path))
    b = load_study(TINY, ["out_dir=/elsewhere"])
    c = load_study(TINY, ["train.optimizer.lr=0.1"])
    a.data.paths = b.data.paths
    assert a.hash() == b.hash()
    assert b.hash() != c.hash()


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    from tests.conftest import call_cli

    result = call_cli("train", str(TINY), "train.glbal_batch=3")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "did you mean 'global_batch'" in result.stderr
