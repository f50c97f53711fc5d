"""Experiment trackers (losslens.tracking): the config, a missing package, and a tracker that fails.

The end-to-end study (train, evaluate, analyze, read back through each tracker) is in
tests/test_tracking_e2e.py.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import time
from pathlib import Path

import pytest

from losslens.config import load_study
from losslens.tracking import TRACKERS, TrackerRun, Where
from losslens.tracking.kinds import EXTRAS, install_hint
from tests.conftest import ROOT, call_cli, write_study
from tests.tracker_readers import mlflow_history, mlflow_runs, need, tensorboard_scalars, wandb_history


def test_an_unknown_tracker_is_one_line_naming_the_field(tmp_path):
    cfg = write_study(tmp_path, train__trackers=["tensorbaord"])
    r = call_cli("train", str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.trackers[0]" in lines[0] and "'tensorboard'" in lines[0], r.stderr
    assert not (tmp_path / "study").exists()


def test_a_tracker_not_installed_stops_before_any_training(tmp_path):
    missing = next((name for name in TRACKERS if importlib.util.find_spec(name) is None), None)
    if missing is None:
        pytest.skip("every tracker accelerate knows is installed here")
    cfg = write_study(tmp_path, train__trackers=["tensorboard", missing])
    r = call_cli("train", str(cfg))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {cfg}: train.trackers: {missing} is not installed: "
                                            f"{install_hint(missing)}"]
    assert not (tmp_path / "study" / "data").exists()  # no tokenizing, no training


def test_every_tracker_extra_exists_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert EXTRAS <= set(extras)
    assert install_hint("mlflow") == "pip install 'losslens[mlflow]'"


def test_tensorboard_true_reads_as_trackers_and_trackers_stay_out_of_the_hash(tmp_path):
    cfg = write_study(tmp_path)
    plain = load_study(cfg)
    old = load_study(cfg, ["train.tensorboard=true"])
    both = load_study(cfg, ["train.tensorboard=true", "train.trackers=[mlflow, tensorboard]"])
    assert plain.train.tracker_names() == []
    assert old.train.tracker_names() == ["tensorboard"]
    assert both.train.tracker_names() == ["mlflow", "tensorboard"]
    # Switching trackers on must not make the study's checkpoints look like another config's.
    assert load_study(cfg, ["train.trackers=[mlflow]"]).hash() == plain.hash()
    assert both.hash() == old.hash()


@need("tensorboard", "mlflow", "sqlalchemy")
def test_a_tracker_that_fails_mid_run_costs_one_warning_and_the_others_go_on(tmp_path, capsys):
    where = Where(tmp_path, "st", "r1")
    run = TrackerRun.open(["tensorboard", "mlflow"], where, {"size": "xs", "budget_tokens": 32768})
    assert [k.name for k, _ in run.live] == ["tensorboard", "mlflow"]
    run.log({"train/loss": 3.0}, 100)
    run.flush()
    # The store starts refusing writes, as a full or read-only disk would (a trigger: root ignores chmod).
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON metrics BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    run.log({"train/loss": 2.0}, 200)
    run.log({"train/loss": 1.0}, 300)
    run.finish()
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and "tracker mlflow, run r1: MlflowException" in warnings[0], warnings
    assert tensorboard_scalars(tmp_path / "tensorboard" / "r1")["train/loss"] == [(100, 3.0), (200, 2.0), (300, 1.0)]
    ml = mlflow_runs(tmp_path, "st")["r1"]
    assert mlflow_history(tmp_path, ml, "train/loss") == [(100, 3.0)]
    assert ml.data.params["budget_tokens"] == "32768"


def _history(run_file: Path, rows: int = 1) -> list[dict]:
    """W&B's service may write the last records after ``finish`` returns: wait for them (up to a minute)."""
    for _ in range(600):
        found = wandb_history(run_file)
        if len(found) >= rows:
            return found
        time.sleep(0.1)
    return found


@pytest.mark.slow
@need("wandb")
def test_wandb_offline_resumes_by_name_against_tokens_and_survives_its_process_killed(tmp_path, capsys):
    import psutil

    where = Where(tmp_path, "st", "xs_32K")
    with TrackerRun.open(["wandb"], where, {"size": "xs"}) as run:
        run.log({"train/loss": 3.25}, 512)
        run.log({"train/loss": 2.5}, 1024)
    with TrackerRun.open(["wandb"], where) as run:  # evaluation: the same run, found by its id
        run.log({"eval/t/acc": 0.375}, 512)
    files = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and len({f.name for f in files}) == 1  # one run id, twice
    train, evaluation = [[{k: v for k, v in row.items() if not k.startswith("_")} for row in _history(f, n)]
                         for f, n in zip(files, (2, 1))]
    assert train == [{"train/loss": 3.25, "tokens": 512}, {"train/loss": 2.5, "tokens": 1024}]
    assert evaluation == [{"eval/t/acc": 0.375, "tokens": 512}]

    run = TrackerRun.open(["wandb"], Where(tmp_path, "st", "s_32K"))
    for child in psutil.Process().children(recursive=True):
        if child.name().startswith("wandb"):
            child.kill()
    run.log({"train/loss": 1.0}, 512)  # W&B's process is gone: a warning, not an exception
    run.log({"train/loss": 0.5}, 1024)
    run.finish()
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and "tracker wandb, run s_32K" in warnings[0]

    again = TrackerRun.open(["wandb"], Where(tmp_path, "st", "m_32K"))  # the next run gets a new W&B service
    again.log({"train/loss": 0.25}, 512)
    again.finish()
    assert not [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
    [file] = (tmp_path / "wandb").glob("offline-run-*-m_32K-*/run-*.wandb")
    assert [row["train/loss"] for row in _history(file, 1)] == [0.25]
