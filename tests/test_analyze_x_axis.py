"""Bits per byte as the x-axis (``--x bpb``, ``analyze.x``) and the mixed-tokenizer warning, on synthetic tables."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from losslens.analyze.analysis import run_analysis
from losslens.analyze.config import AnalyzeConfig
from losslens.analyze.table import BPB_X_LABEL, ResultsError, read_results, with_x_axis
from losslens.config import load_study
from losslens.contracts import DEFAULT_X_LABEL, RESULTS_COLUMNS, TOKENIZER_COLUMN, checkpoint_dirname
from losslens.errors import ConfigError
from tests.conftest import ROOT, call_cli, write_results_csv

SIZES = (200_000, 800_000, 3_200_000)
BUDGETS = (4_000_000, 16_000_000)
LAW = dict(E=1.6, A=60.0, B=60.0, alpha=0.3, beta=0.32)
ETA = 3.5  # the task's threshold, in nats per token
BYTES_PER_TOKEN = 3.6  # of the synthetic tokenizer: bpb = loss / (ln 2 * bytes per token)


def _rows(rng, run: str, N: int, tokens: int) -> list[dict]:
    loss = (LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / tokens ** LAW["beta"]) * (1 + rng.normal(0, 0.004))
    base = {"run": run, "n_params": N + 50_000, "n_params_nonembed": N, "tokens": tokens, "step": tokens // 4096,
            "flops": 6.0 * N * tokens, "loss": loss, "ci_low": "", "ci_high": "", "n": "", "chance": ""}
    em = 0.02 + 0.6 * max(0.0, ETA - loss) + rng.normal(0, 0.005)  # flat, then rising below ETA
    return [{**base, "task": "pretrain", "metric": "loss", "value": loss},
            {**base, "task": "pretrain", "metric": "bpb", "value": loss / (math.log(2) * BYTES_PER_TOKEN)},
            {**base, "task": "arith", "metric": "exact_match", "value": em, "chance": 0.0}]


def make_table(path: Path, bpb: bool = True, tokenizer=None) -> Path:
    """results.csv of 3 sizes x 2 budgets x 8 checkpoints, loss from LAW, one task emergent at ETA;
    ``tokenizer``: run -> its cell in a ``tokenizer`` column (none without it)."""
    rng = np.random.default_rng(0)
    rows = []
    for N in SIZES:
        for budget in BUDGETS:
            run = f"n{N // 1000}K_{budget // 1_000_000}M"
            for tokens in np.geomspace(budget / 64, budget, 8).astype(int):
                rows += [r for r in _rows(rng, run, N, int(tokens)) if bpb or r["metric"] != "bpb"]
    columns = RESULTS_COLUMNS
    if tokenizer is not None:
        columns = (*RESULTS_COLUMNS, TOKENIZER_COLUMN)
        rows = [{**r, TOKENIZER_COLUMN: tokenizer(r["run"])} for r in rows]
    return write_results_csv(path, rows, columns)


def test_bpb_replaces_each_rows_x_by_its_checkpoints_bpb(tmp_path):
    path = make_table(tmp_path / "results.csv")
    by_loss = read_results(path)
    by_bpb = with_x_axis(by_loss, "bpb")
    assert by_loss.x_label == DEFAULT_X_LABEL and by_bpb.x_label == BPB_X_LABEL
    s_loss, s_bpb = by_loss.series("arith", "exact_match"), by_bpb.series("arith", "exact_match")
    np.testing.assert_array_equal(s_loss.value, s_bpb.value)
    np.testing.assert_allclose(s_bpb.x, s_loss.x / (math.log(2) * BYTES_PER_TOKEN), rtol=1e-9)
    np.testing.assert_allclose(by_bpb.checkpoints()["x"] * math.log(2) * BYTES_PER_TOKEN,
                               by_loss.checkpoints()["x"], rtol=1e-9)
    np.testing.assert_array_equal(by_bpb.cols["loss"], by_loss.cols["loss"])  # the loss column still holds the loss


def test_bpb_moves_eta_by_the_tokenizers_bytes_per_token(tmp_path):
    path = make_table(tmp_path / "results.csv")
    # Every checkpoint in the law: its 48 points identify E, which 6 final ones do not (then the fit's
    # optimum along E's flat profile depends on where its search starts, in either unit). Both analyses
    # draw the same 20 bootstrap resamples: enough to see that the intervals move with the unit.
    config = AnalyzeConfig(bootstrap=20, seed=0, backtest="largest-size", scaling_points="all")
    in_loss = run_analysis(path, config=config, progress=False)
    in_bpb = run_analysis(path, config=dataclasses.replace(config, x="bpb"), progress=False)
    scale = math.log(2) * BYTES_PER_TOKEN  # nats per token over bits per byte
    th_loss = in_loss.metrics["arith", "exact_match"].threshold
    th_bpb = in_bpb.metrics["arith", "exact_match"].threshold
    assert th_loss.verdict == th_bpb.verdict == "emergent"
    assert th_loss.eta == pytest.approx(ETA, rel=0.03)
    assert th_bpb.eta == pytest.approx(th_loss.eta / scale, rel=1e-3)
    assert th_bpb.ci_low == pytest.approx(th_loss.ci_low / scale, rel=1e-2)
    assert th_bpb.ci_high == pytest.approx(th_loss.ci_high / scale, rel=1e-2)
    # The law L(N, D) is fitted in the chosen unit: E, A and B scale, the exponents do not.
    assert not in_loss.scaling.not_identified and not in_bpb.scaling.not_identified
    for p in ("E", "A", "B"):
        assert getattr(in_bpb.scaling, p) == pytest.approx(getattr(in_loss.scaling, p) / scale, rel=1e-3)
    for p in ("alpha", "beta"):
        assert getattr(in_bpb.scaling, p) == pytest.approx(getattr(in_loss.scaling, p), rel=1e-3)
    # Forecasts cross the same threshold in either unit: the tokens to reach it do not move.
    (fc_loss,), (fc_bpb,) = in_loss.forecasts, in_bpb.forecasts
    assert fc_bpb["eta"] == pytest.approx(fc_loss["eta"] / scale, rel=1e-3)
    assert [r["reachable"] for r in fc_bpb["sizes"]] == [r["reachable"] for r in fc_loss["sizes"]]
    assert any(r["reachable"] for r in fc_bpb["sizes"])
    for a, b in zip(fc_loss["sizes"], fc_bpb["sizes"]):
        if a["reachable"]:
            assert b["tokens"] == pytest.approx(a["tokens"], rel=1e-2)
    held = [r for r in in_bpb.backtest["loss"]["rows"] if r["decayed"]]
    assert held and all(r["actual"] < 2.0 for r in held)  # bits per byte, not nats per token
    assert in_bpb.backtest["x_label"] == BPB_X_LABEL and in_bpb.settings["x"] == "bpb"


def test_report_names_the_unit(tmp_path):
    path = make_table(tmp_path / "study" / "results.csv")
    r = call_cli("analyze", "--results", str(path), "--x", "bpb", "--bootstrap", "20", "--no-plots")
    assert r.returncode == 0, r.stderr[-2000:]
    md = (path.parent / "report.md").read_text()
    assert f"x-axis ('loss' below): {BPB_X_LABEL}" in md
    assert f"L is the x-axis, {BPB_X_LABEL}" in md
    assert json.loads((path.parent / "report.json").read_text())["study"]["x_label"] == BPB_X_LABEL


def test_bpb_without_pretrain_bpb_is_one_line_exit_2(tmp_path):
    path = make_table(tmp_path / "results.csv", bpb=False)
    r = call_cli("analyze", "--results", str(path), "--x", "bpb", "--bootstrap", "0", "--no-plots")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert str(path) in r.stderr and "bpb" in r.stderr and "--x loss" in r.stderr
    path = make_table(tmp_path / "results.csv")  # one checkpoint without its bpb row: named by line
    lines = path.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if ",pretrain,bpb," in line)
    path.write_text("\n".join([*lines[:cut], *lines[cut + 1:]]) + "\n")
    with pytest.raises(ResultsError, match=r"results\.csv:\d+: x-axis bpb: run 'n200K_4M' at \d+ tokens has no"):
        with_x_axis(read_results(path), "bpb")
    assert with_x_axis(read_results(path), "loss").x_label == DEFAULT_X_LABEL  # the loss axis does not need it
    with pytest.raises(ResultsError, match="--x: expected one of loss, bpb, got 'nats'"):
        with_x_axis(read_results(path), "nats")


def _study_dir(tmp_path: Path, tokenizer_of) -> Path:
    """A study folder: results.csv plus one checkpoint per run holding meta.json and tokenizer.json."""
    run_dir = tmp_path / "study"
    path = make_table(run_dir / "results.csv")
    table = read_results(path)
    for run in table.runs():
        ckpt = run_dir / run / checkpoint_dirname(table.run_budget(run))
        ckpt.mkdir(parents=True)
        (ckpt / "meta.json").write_text(json.dumps({"run": run, "n_params": table.run_size(run)}))
        (ckpt / "tokenizer.json").write_text(json.dumps({"model": {"vocab": tokenizer_of(run)}}))
    return run_dir


def test_runs_with_different_tokenizers_warn_naming_bpb(tmp_path):
    run_dir = _study_dir(tmp_path, lambda run: "bpe-4k" if run.startswith("n200K") else "bpe-8k")
    r = call_cli("analyze", str(run_dir), "--bootstrap", "0", "--no-plots")
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [line for line in r.stderr.splitlines() if "tokenizers" in line]
    assert len(warnings) == 1 and "2 different tokenizers" in warnings[0] and "--x bpb" in warnings[0]
    assert "--x bpb" in (run_dir / "report.md").read_text()
    r = call_cli("analyze", str(run_dir), "--x", "bpb", "--bootstrap", "0", "--no-plots")
    assert r.returncode == 0 and "tokenizers" not in r.stderr


def test_one_tokenizer_gives_no_warning(tmp_path):
    run_dir = _study_dir(tmp_path, lambda run: "bpe-4k")
    analysis = run_analysis(run_dir / "results.csv", run_dir, overrides={"bootstrap": 0}, progress=False)
    assert analysis.settings["x_warning"] is None


def test_a_tables_tokenizer_column_tells_them_apart(tmp_path):
    path = make_table(tmp_path / "results.csv", tokenizer=lambda run: "gpt2" if "3200K" in run else "llama")
    analysis = run_analysis(path, config=AnalyzeConfig(bootstrap=0), progress=False)
    assert "2 different tokenizers" in analysis.settings["x_warning"] and "bpb" in analysis.settings["x_warning"]


def test_the_study_config_chooses_the_axis(tmp_path):
    from losslens.analyze import analyze

    tiny = ROOT / "configs" / "tiny.yaml"
    assert load_study(tiny).analyze.x == "loss"
    assert load_study(tiny, ["analyze.x=bpb"]).analyze.x == "bpb"
    with pytest.raises(ConfigError, match=r"analyze\.x: expected one of 'loss', 'bpb'"):
        load_study(tiny, ["analyze.x=bits"])
    run_dir = make_table(tmp_path / "study" / "results.csv").parent
    (run_dir / "study.yaml").write_text("name: s\nanalyze:\n  x: bpb\n")
    options = {"bootstrap": 0, "plots": False}
    assert analyze(run_dir, overrides=options, progress=False).table.x_label == BPB_X_LABEL
    assert analyze(run_dir, overrides=options | {"x": "loss"}, progress=False).table.x_label == DEFAULT_X_LABEL
    (run_dir / "study.yaml").write_text("name: s\nanalyze:\n  x: nats\n")
    r = call_cli("analyze", str(run_dir), "--bootstrap", "0", "--no-plots")
    assert r.returncode == 2 and "study.yaml: analyze.x" in r.stderr and r.stderr.strip().count("\n") == 0
