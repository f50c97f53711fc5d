"""Seeds as a grid axis: config, run names, per-seed WSD branches, init and data order from the run's
seeds, meta.json and the results table's ``seed`` column."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from losslens import contracts
from losslens.config import load_study
from losslens.errors import CheckpointError, ConfigError
from losslens.evaluate import sweep
from losslens.evaluate.config import EvaluateOptions
from losslens.train.config import Seed
from losslens.train.loop import set_up
from losslens.train.plan import find_run, plan_runs
from losslens.train.runtime import make_accelerator
from tests.conftest import TINY, call_cli, write_study
from tests.eval_fixtures import make_study

SPLIT = {"init": 1, "data": 0}  # the initialisation of seed 1, the data order of seed 0
GRID_RUNS = {f"xs_{budget}_{seed}" for budget in ("4096", "8192") for seed in ("seed0", "init1-data0")}


@pytest.fixture(scope="module")
def seed_grid(tmp_path_factory) -> Path:
    """2 seeds (the second differs in init only) x 2 WSD budgets of the tiny config's smallest size, trained
    and evaluated (loss only). One size: the seeds are the grid axis under test."""
    tmp = tmp_path_factory.mktemp("seed_grid")
    xs = yaml.safe_load(TINY.read_text())["model"]["sizes"]["xs"]
    cfg = write_study(tmp, budgets=[4096, 8192], train__schedule={"kind": "wsd", "cooldown": 0.25},
                      checkpoints__count=2, checkpoints__log_spaced=False, model__sizes={"xs": xs})
    result = call_cli("train", str(cfg), "seeds=[0, {init: 1, data: 0}]")
    assert result.returncode == 0, result.stderr[-3000:]
    study_dir = tmp / "study"
    sweep.evaluate_study(study_dir, EvaluateOptions(tasks=[], progress=False), log=lambda msg: None)
    return study_dir


def _final_weights(study_dir: Path, run: str) -> dict[str, torch.Tensor]:
    return load_file(contracts.list_checkpoints(study_dir / run)[-1] / "model.safetensors")


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _set_seeds(ckpt: Path, **seeds) -> None:
    meta = contracts.read_meta(ckpt) | seeds
    (ckpt / contracts.META_FILE).write_text(json.dumps(meta))


# ---------------------------------------------------------------- config


def test_seeds_read_as_ints_or_init_data_pairs():
    study = load_study(TINY, ["seeds=[0, 2, {init: 1, data: 0}]"])
    assert study.seeds == [Seed(0, 0), Seed(2, 2), Seed(1, 0)]
    assert [s.label for s in study.seeds] == ["0", "2", "init1-data0"]
    assert study.corpus_seed == 0  # the token stream is the first seed's, shared by all
    assert load_study(TINY, ["seed=3"]).seeds == [Seed(3, 3)]  # the one-seed spelling


def test_one_seed_study_writes_and_hashes_as_before(tmp_path):
    study = load_study(TINY)  # `seed: 0`
    assert study.to_dict()["seed"] == 0 and "seeds" not in study.to_dict()
    assert study.hash() == load_study(TINY, ["seeds=[0]"]).hash() == load_study(TINY, ["seeds=[0, 1]"]).hash()
    assert study.hash() != load_study(TINY, ["seed=1"]).hash()  # another corpus seed: another stream
    several = load_study(TINY, ["seeds=[0, {init: 1, data: 0}]"])
    assert several.to_dict()["seeds"] == [0, SPLIT] and "seed" not in several.to_dict()
    path = tmp_path / "study.yaml"
    path.write_text(several.to_yaml())  # what training writes to RUN_DIR/study.yaml reads back the same
    assert load_study(path).seeds == several.seeds


@pytest.mark.parametrize("override, message", [
    ("seeds=[0, -1]", "seeds[1]: must not be negative, got -1"),
    ("seeds=[{init: 0, data: -2}]", "seeds[0].data: must not be negative, got -2"),
    ("seed=-1", "seed: must not be negative, got -1"),
    ("seeds=[0, 1, 1]", "seeds[2]: repeats seeds[1] (init 1, data 1)"),
    ("seeds=[2, {init: 2, data: 2}]", "seeds[1]: repeats seeds[0]"),
    ("seeds=[0, one]", "seeds[1]: expected int | mapping, got 'one'"),
    ("seeds=[1.5]", "seeds[0]: expected int | mapping, got 1.5"),
    ("seeds=3", "seeds: expected list of int | mapping, got 3"),
    ("seeds=[]", "seeds: give at least one seed"),
    ("seeds=[{init: 1, dat: 0}]", "seeds[0].dat: unknown key (did you mean 'data'?)"),
    ("seeds=[{init: 1}]", "seeds[0].data: required key is missing"),
    ("seed=[0, 1]", "seed: one seed is an integer; write several as seeds: [0, 1]"),
    ("seed=zero", "seed: expected an integer"),
])
def test_bad_seeds_name_the_field(override, message):
    with pytest.raises(ConfigError) as e:
        load_study(TINY, [override])
    assert str(e.value).startswith(f"{TINY}: ") and message in str(e.value)


def test_seed_and_seeds_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"seed: give seed \(one seed\) or seeds \(a list\), not both"):
        load_study(write_study(tmp_path, seeds=[0, 1]))  # tiny.yaml also has `seed: 0`
    assert load_study(TINY, ["seeds=[0, 1]"]).seeds == [Seed(0, 0), Seed(1, 1)]  # an override replaces seed


# ---------------------------------------------------------------- plan


def test_one_seed_study_keeps_its_run_names():
    assert [p.name for p in plan_runs(load_study(TINY))] == ["xs_65536", "xs_32768", "s_65536", "s_32768"]
    assert [p.name for p in plan_runs(load_study(TINY, ["seed=4"]))][0] == "xs_65536"
    assert {p.seed for p in plan_runs(load_study(TINY, ["seed=4"]))} == {Seed(4, 4)}


def test_several_seeds_name_every_run_and_branch_from_their_own_trunk():
    study = load_study(TINY, ["seeds=[0, {init: 1, data: 0}]", "train.schedule.kind=wsd"])
    plans = plan_runs(study)
    assert [p.name for p in plans] == [
        "xs_65536_seed0", "xs_32768_seed0", "s_65536_seed0", "s_32768_seed0",
        "xs_65536_init1-data0", "xs_32768_init1-data0", "s_65536_init1-data0", "s_32768_init1-data0",
    ]
    for plan in plans:
        if plan.branch is not None:
            trunk = find_run(plans, plan.branch.trunk)
            assert (trunk.size_name, trunk.seed, trunk.branch) == (plan.size_name, plan.seed, None)
    assert find_run(plans, "s_32768_init1-data0").seed == Seed(1, 0)


def test_list_and_run_name_the_seeded_runs(tmp_path):
    cfg = write_study(tmp_path)
    listed = call_cli("train", str(cfg), "seeds=[0, 1]", "--list")
    assert listed.returncode == 0
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == [
        "xs_65536_seed0", "xs_32768_seed0", "s_65536_seed0", "s_32768_seed0",
        "xs_65536_seed1", "xs_32768_seed1", "s_65536_seed1", "s_32768_seed1",
    ]
    unknown = call_cli("train", str(cfg), "seeds=[0, 1]", "--run", "xs_65536")
    assert unknown.returncode == 2 and "--run xs_65536: no such run (runs: xs_65536_seed0," in unknown.stderr


# ---------------------------------------------------------------- training


def test_seed_grid_trains_every_run_and_records_its_seeds(seed_grid: Path):
    assert {p.name for p in contracts.list_runs(seed_grid)} == GRID_RUNS
    for run in contracts.list_runs(seed_grid):
        expected = (1, 0) if run.name.endswith("init1-data0") else (0, 0)
        for ckpt in contracts.list_checkpoints(run):
            meta = contracts.read_meta(ckpt)
            assert (meta["seed_init"], meta["seed_data"]) == expected
            assert contracts.checkpoint_seeds(meta, ckpt) == expected
            if meta["branch_of"]:
                assert meta["branch_of"] == run.name.replace("_4096_", "_8192_")  # this seed's trunk


def test_runs_that_differ_in_init_only_read_the_same_windows_and_end_apart(seed_grid: Path):
    study = load_study(seed_grid / contracts.STUDY_FILE)
    plans, accelerator, data_dir = plan_runs(study), make_accelerator(study), seed_grid / contracts.DATA_DIR
    seed0, split = (set_up(study, find_run(plans, name), accelerator, data_dir)
                    for name in ("xs_8192_seed0", "xs_8192_init1-data0"))
    other_data = set_up(study, dataclasses.replace(find_run(plans, "xs_8192_seed0"), seed=Seed(0, 1)),
                        accelerator, data_dir)
    n = max(study.budgets) // study.model.context  # every window the runs read
    assert (seed0.stream.windows(0, n) == split.stream.windows(0, n)).all()
    assert (seed0.stream.windows(0, n) != other_data.stream.windows(0, n)).any(axis=1).mean() > 0.9
    first = {k: v.detach().clone() for k, v in seed0.model.state_dict().items()}
    assert all(torch.equal(first[k], v) for k, v in other_data.model.state_dict().items())  # same init seed
    assert not torch.equal(first["model.embed_tokens.weight"], split.model.state_dict()["model.embed_tokens.weight"])
    a, b = (_final_weights(seed_grid, f"xs_8192_{s}") for s in ("seed0", "init1-data0"))
    assert all(not torch.equal(a[k], b[k]) for k in a)


def test_seeds_added_later_keep_the_runs_trained_and_a_changed_seed_is_refused(seed_grid: Path, tmp_path: Path):
    study_dir = tmp_path / "study"
    shutil.copytree(seed_grid, study_dir)
    cfg = tmp_path / "extended.yaml"
    cfg.write_text((seed_grid / contracts.STUDY_FILE).read_text())
    before = contracts.list_checkpoints(study_dir / "xs_8192_seed0")
    done = call_cli("train", str(cfg), "seeds=[0, {init: 1, data: 0}, 2]", "--run", "xs_8192_seed0", "--out", str(study_dir))
    assert done.returncode == 0, done.stderr[-2000:]  # nothing to train: the run is complete
    assert contracts.list_checkpoints(study_dir / "xs_8192_seed0") == before
    last = before[-1]
    _set_seeds(last, seed_init=3)
    refused = call_cli("train", str(cfg), "--run", "xs_8192_seed0", "--out", str(study_dir))
    assert refused.returncode == 2
    assert f"{last}: was trained with seeds init 3, data 0, not run xs_8192_seed0's init 0, data 0" in refused.stderr


# ---------------------------------------------------------------- results.csv


def test_results_table_labels_each_run_with_its_seed(seed_grid: Path):
    columns, rows = _read_csv(seed_grid / contracts.RESULTS_FILE)
    assert tuple(columns) == (*contracts.RESULTS_COLUMNS, contracts.SEED_COLUMN)
    assert {r["run"]: r["seed"] for r in rows} == {run: "init1-data0" if run.endswith("init1-data0") else "0"
                                                   for run in GRID_RUNS}
    sizes = {(r["run"].replace("init1-data0", "seed0"), r["n_params"], r["n_params_nonembed"]) for r in rows}
    assert len(sizes) == len(GRID_RUNS) // 2  # the seeds of one size and budget share their parameter counts
    from losslens.analyze.table import read_results

    assert len(read_results(seed_grid / contracts.RESULTS_FILE).cols["run"]) == len(rows)  # read as before


def test_checkpoints_without_seeds_read_as_seed_zero(tmp_path):
    # meta.json as written before seeds: no seed keys. One checkpoint a run: the seed is per run.
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024], "s_64K": [1024]}, tasks=[])
    sweep.evaluate_study(study_dir, EvaluateOptions(progress=False), log=lambda msg: None)
    columns, _ = _read_csv(study_dir / contracts.RESULTS_FILE)
    assert tuple(columns) == contracts.RESULTS_COLUMNS  # one seed: the table is as it always was
    for ckpt in contracts.list_checkpoints(study_dir / "s_64K"):
        _set_seeds(ckpt, seed_init=2, seed_data=2)
    sweep.evaluate_study(study_dir, EvaluateOptions(progress=False), log=lambda msg: None)
    columns, rows = _read_csv(study_dir / contracts.RESULTS_FILE)
    assert columns[-1] == contracts.SEED_COLUMN
    assert {r["run"]: r["seed"] for r in rows} == {"s_64K": "2", "xs_64K": "0"}


def test_a_bad_seed_in_meta_json_is_named_and_leaves_the_table(tmp_path):
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024], "s_64K": [1024]}, tasks=[])
    sweep.evaluate_study(study_dir, EvaluateOptions(progress=False), log=lambda msg: None)
    before = (study_dir / contracts.RESULTS_FILE).read_text()
    ckpt = contracts.list_checkpoints(study_dir / "xs_64K")[0]
    _set_seeds(ckpt, seed_init="one")
    with pytest.raises(CheckpointError, match=r"meta\.json: seed_init: expected a seed \(an integer >= 0\), got 'one'"):
        sweep.evaluate_study(study_dir, EvaluateOptions(progress=False), log=lambda msg: None)
    assert (study_dir / contracts.RESULTS_FILE).read_text() == before


@pytest.mark.slow
def test_two_seeds_by_two_sizes_train_with_one_data_order_per_data_seed(tmp_path: Path):
    """The issue's grid: 2 seeds x 2 tiny sizes. Seeds 0 and {init: 1, data: 0} share the data order, so
    each size's two runs see the same windows and still end with different weights; sizes differ."""
    cfg = write_study(tmp_path, budgets=[4096], checkpoints__count=1, checkpoints__log_spaced=False)
    result = call_cli("train", str(cfg), "seeds=[0, {init: 1, data: 0}]")
    assert result.returncode == 0, result.stderr[-3000:]
    study_dir = tmp_path / "study"
    runs = {f"{size}_4096_{seed}" for size in ("xs", "s") for seed in ("seed0", "init1-data0")}
    assert {p.name for p in contracts.list_runs(study_dir)} == runs
    for size in ("xs", "s"):
        a, b = (_final_weights(study_dir, f"{size}_4096_{s}") for s in ("seed0", "init1-data0"))
        assert a.keys() == b.keys() and all(not torch.equal(a[k], b[k]) for k in a)
        metas = [contracts.read_meta(contracts.list_checkpoints(study_dir / f"{size}_4096_{s}")[-1])
                 for s in ("seed0", "init1-data0")]
        assert [(m["seed_init"], m["seed_data"]) for m in metas] == [(0, 0), (1, 0)]
        assert metas[0]["tokens"] == metas[1]["tokens"]
