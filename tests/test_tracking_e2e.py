"""A tiny study trained, evaluated and analyzed with ``trackers: [tensorboard, mlflow]``: what each tracker
holds, read back through its own reader, equals train_log.jsonl, the checkpoints' meta.json, results.csv
and report.json; and a tracker that fails mid-run costs a warning, never the run or the results."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from losslens.tracking import TrackerRun, Where
from tests.conftest import call_cli, write_results_csv, write_study
from tests.tracker_readers import mlflow_client, mlflow_history, mlflow_runs, need, tensorboard_scalars, tensorboard_tags

pytestmark = need("tensorboard", "mlflow", "sqlalchemy")


def _close(pairs, expected, rel):
    assert [s for s, _ in pairs] == [s for s, _ in expected]
    np.testing.assert_allclose([v for _, v in pairs], [v for _, v in expected], rtol=rel)


def _check_training(study: Path, ml: dict) -> None:
    for log in sorted(study.glob("*/train_log.jsonl")):
        run = log.parent.name
        lines = [json.loads(l) for l in log.read_text().splitlines()]
        tb = tensorboard_scalars(study / "tensorboard" / run)
        for key in ("loss", "lr", "tokens_per_s", "grad_norm"):
            expected = [(r["tokens"], r[key]) for r in lines]
            _close(tb[f"train/{key}"], expected, 1e-6)  # TensorBoard keeps float32
            _close(mlflow_history(study, ml[run], f"train/{key}"), expected, 1e-12)
        metas = [json.loads(p.read_text()) for p in sorted(log.parent.glob("ckpt-*/meta.json"))]
        val = [(m["tokens"], m["val_loss"]) for m in metas]
        _close(tb["val/loss"], val, 1e-6)
        _close(mlflow_history(study, ml[run], "val/loss"), val, 1e-12)
        params = ml[run].data.params
        assert (params["size"], params["budget_tokens"], params["seed_init"], params["schedule"]) == \
            (metas[0]["size"], str(metas[0]["budget_tokens"]), "0", "cosine")


def _check_evaluation(study: Path, ml: dict) -> None:
    rows = list(csv.DictReader(open(study / "results.csv")))
    assert rows
    for run in {r["run"] for r in rows}:
        tb = tensorboard_scalars(study / "tensorboard" / run)
        mine = [r for r in rows if r["run"] == run]
        for task, metric in {(r["task"], r["metric"]) for r in mine}:
            these = sorted((int(r["tokens"]), r) for r in mine if (r["task"], r["metric"]) == (task, metric))
            key = f"eval/{task}/{metric}"
            for suffix, column in (("", "value"), ("/ci_low", "ci_low"), ("/ci_high", "ci_high")):
                expected = [(t, float(r[column])) for t, r in these if r[column] != ""]
                _close(mlflow_history(study, ml[run], key + suffix), expected, 1e-12)
                _close(tb[key + suffix], expected, 1e-6)
        # Training's val/bpb is the bpb evaluation measures, on the same validation tokens.
        bpb = sorted((int(r["tokens"]), float(r["value"])) for r in mine if (r["task"], r["metric"]) == ("pretrain", "bpb"))
        _close(tb["val/bpb"], bpb, 1e-4)


def _check_analysis(study: Path, ml: dict) -> None:
    report = json.loads((study / "report.json").read_text())
    run = ml["analysis"]
    client = mlflow_client(study)
    verdicts = list(csv.reader(open(client.download_artifacts(run.info.run_id, "tables/verdicts.csv", str(study)))))
    assert [(v[0], v[1], v[3]) for v in verdicts[1:]] == [(m["task"], m["metric"], m["verdict"]) for m in report["metrics"]]
    backtest = list(csv.reader(open(client.download_artifacts(run.info.run_id, "tables/backtest.csv", str(study)))))
    assert len(backtest) - 1 == len(report["backtest"]["metrics"])
    assert [float(b[3]) for b in backtest[1:]] == [m["actual"] for m in report["backtest"]["metrics"]]
    pngs = sorted(Path(p).name for paths in report["plots"].values() for p in paths if p.endswith(".png"))
    assert sorted(a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "plots")) == pngs
    thresholds = {f"threshold/{m['task']}/{m['metric']}{s}": m["threshold"][k] for m in report["metrics"]
                  for s, k in (("", "loss"), ("/ci_low", "ci_low"), ("/ci_high", "ci_high")) if m["threshold"][k] is not None}
    assert run.data.metrics == pytest.approx(thresholds)
    tags = tensorboard_tags(study / "tensorboard" / "analysis")
    assert sorted(tags["images"]) == sorted(f"plots/{name}" for name in report["plots"])
    assert {"verdicts/text_summary", "backtest/text_summary"} <= set(tags["tensors"])


@pytest.mark.slow
def test_a_study_trained_evaluated_and_analyzed_reaches_tensorboard_and_mlflow(tmp_path):
    cfg = write_study(tmp_path, train__trackers=["tensorboard", "mlflow"])
    study = tmp_path / "study"
    for args in (("train", str(cfg)), ("evaluate", str(study)),
                 ("analyze", str(study), "--bootstrap", "50", "--backtest", "largest-budget")):
        r = call_cli(*args)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "warning: tracker" not in r.stderr
    ml = mlflow_runs(study, "tiny")
    assert sorted(ml) == sorted([p.parent.name for p in study.glob("*/train_log.jsonl")] + ["analysis"])
    _check_training(study, ml)
    _check_evaluation(study, ml)
    _check_analysis(study, ml)


@pytest.mark.slow
def test_mlflow_failing_mid_training_costs_a_warning_not_the_run(tmp_path):
    cfg = write_study(tmp_path, train__trackers=["tensorboard", "mlflow"])
    study = tmp_path / "study"
    study.mkdir()
    with TrackerRun.open(["mlflow"], Where(study, "tiny", "setup")) as setup:  # the store exists
        assert setup
    with sqlite3.connect(study / "mlflow.db") as db:  # from the first checkpoint on, it refuses writes
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON metrics WHEN NEW.key = 'val/loss' "
                   "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    r = call_cli("train", str(cfg), "--run", "xs_32768")
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [l for l in r.stderr.splitlines() if l.startswith("warning: tracker")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: tracker mlflow, run xs_32768"), warnings
    lines = [json.loads(l) for l in (study / "xs_32768" / "train_log.jsonl").read_text().splitlines()]
    assert lines[-1]["tokens"] == 32768 and (study / "xs_32768" / "ckpt-000000032768" / "meta.json").is_file()
    first_ckpt = min(int(p.name.split("-")[1]) for p in (study / "xs_32768").glob("ckpt-*"))
    ml = mlflow_runs(study, "tiny")["xs_32768"]
    assert mlflow_history(study, ml, "train/loss") == [(l["tokens"], l["loss"]) for l in lines if l["tokens"] <= first_ckpt]
    assert [s for s, _ in tensorboard_scalars(study / "tensorboard" / "xs_32768")["train/loss"]] == [l["tokens"] for l in lines]
    r = call_cli("evaluate", str(study))  # evaluation, into the same (now writable for eval/*) store
    assert r.returncode == 0, r.stderr[-3000:]
    assert {row["run"] for row in csv.DictReader(open(study / "results.csv"))} == {"xs_32768"}


def _emergent_table(path: Path) -> Path:
    """3 sizes x 2 budgets whose accuracy leaves chance (0.25) below a loss of 4.2 (a hinge), and a smooth score."""
    rng, rows = np.random.default_rng(0), []
    for n in (1e5, 3e5, 1e6):
        for budget in (4e6, 1.6e7):
            for tokens in np.geomspace(budget / 16, budget, 6).astype(int):
                loss = 1.8 + 80 / n ** 0.3 + 120 / tokens ** 0.3
                meta = {"run": f"n{int(n)}_d{int(budget)}", "n_params": int(n) + 1000, "n_params_nonembed": int(n),
                        "tokens": int(tokens), "step": int(tokens // 1000), "flops": 6 * n * tokens, "loss": loss}
                acc = 0.25 + 0.6 * max(0.0, 4.2 - loss) + rng.normal(0, 0.005)
                rows.append({**meta, "task": "t", "metric": "acc", "value": acc, "chance": 0.25})
                rows.append({**meta, "task": "t", "metric": "score", "value": 2.0 - 0.3 * loss + rng.normal(0, 0.01)})
    return write_results_csv(path, rows)


@pytest.mark.slow
def test_analysis_logs_thresholds_with_intervals_verdicts_backtest_and_plots(tmp_path):
    run_dir = tmp_path / "study"
    _emergent_table(run_dir / "results.csv")
    (run_dir / "study.yaml").write_text("name: synth\ntrain: {trackers: [tensorboard, mlflow]}\n")
    r = call_cli("analyze", str(run_dir), "--bootstrap", "100")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    acc = next(m for m in report["metrics"] if m["metric"] == "acc")
    assert acc["verdict"] == "emergent" and acc["threshold"]["ci_low"] is not None  # a threshold to log
    ml = mlflow_runs(run_dir, "synth")
    assert list(ml) == ["analysis"]
    _check_analysis(run_dir, ml)
    tb = tensorboard_scalars(run_dir / "tensorboard" / "analysis")
    assert tb["threshold/t/acc"] == [(int(1.6e7), pytest.approx(acc["threshold"]["loss"], rel=1e-6))]
