"""import-results on wide CSV exports (one row per checkpoint, one column per metric).

Real data: the OLMo ladder's published W&B exports in shared/data (``../shared``; ``LOSSLENS_SHARED``
overrides), read through configs/import/olmo-ladder.yaml. Bad input: a small fixture in tests/data.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from losslens.analyze.table import read_results
from losslens.errors import LossLensError
from losslens.import_results import import_results
from tests.conftest import ROOT, run_cli
from tests.test_import_results import SHARED, rows_of

LADDER = SHARED / "data" / "olmo-ladder"
LADDER_MAPPING = ROOT / "configs" / "import" / "olmo-ladder.yaml"
FIXTURE = ROOT / "tests" / "data" / "wide_csv"
BASE = (FIXTURE / "mapping.yaml").read_text()
needs_ladder = pytest.mark.skipif(not LADDER.is_dir(), reason=f"shared data not at {LADDER} (set LOSSLENS_SHARED)")
PAPER_TASKS = {"mmlu", "hellaswag", "arc_challenge", "arc_easy", "piqa", "csqa", "socialiqa", "openbookqa"}


def _raw_rows(name: str) -> list[dict]:
    with open(LADDER / name, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ladder") / "results.csv"
    summary = import_results(LADDER_MAPPING, out, root=LADDER)
    return summary, read_results(out)


@needs_ladder
def test_the_ladder_imports_every_checkpoint_of_its_16_runs(ladder):
    summary, table = ladder
    files = json.loads((LADDER / "ladder.json").read_text())
    n_rows = sum(len(_raw_rows(p)) for size in files.values() for p in size["paths"])
    assert summary.n_checkpoints == n_rows == 1566
    assert len(table.runs()) == 16 and len(table.sizes()) == 4
    assert sorted(table.sizes()) == sorted(size["n"] for size in files.values())
    assert set(table.tasks()) == PAPER_TASKS and len(table.cols["run"]) == 1566 * 8 * 2
    assert table.x_label == "C4 validation loss (nats/token)"
    assert table.metrics("arc_easy") == ["acc_len_norm", "bpb"]  # accuracy (discontinuous) first


@needs_ladder
def test_ladder_values_tokens_and_directions_are_the_files_own(ladder):
    _, table = ladder
    raw = _raw_rows("1B-5xC.csv")[40]
    tokens = int(float(raw["throughput/total_tokens"]))
    assert tokens == int(raw["_step"]) * int(raw["batch_size_in_tokens"])  # the two ways agree here
    acc = rows_of(table, "1.3B-5xC", tokens, "arc_challenge", "acc_len_norm")
    assert acc["value"][0] == float(raw["eval/downstream/arc_challenge_test_rc_5shot_len_norm"])
    assert acc["loss"][0] == float(raw["eval/c4_en-validation/CrossEntropyLoss"]) and acc["chance"][0] == 0.25
    mmlu = rows_of(table, "1.3B-5xC", tokens, "mmlu", "bpb")
    cats = [float(raw[f"eval/downstream_bpb/mmlu_{c}_test_rc_5shot_bpb"])
            for c in ("stem", "humanities", "social_sciences", "other")]
    assert mmlu["value"][0] == pytest.approx(sum(cats) / 4, rel=1e-15)
    assert mmlu["n_params_nonembed"][0] == mmlu["n_params"][0] == 1279395840
    assert rows_of(table, "1.3B-5xC", tokens, "csqa", "acc_len_norm")["chance"][0] == 0.2
    bpb = table.series("arc_easy", "bpb")
    assert not bpb.higher_is_better and not bpb.discontinuous
    # a real signal: task loss falls as C4 loss falls, across all 16 runs
    assert bpb.value[bpb.x.argmin()] < bpb.value[bpb.x.argmax()] - 0.5


def _suite(tmp_path, mapping_text: str = BASE) -> Path:
    suite = tmp_path / "suite"
    shutil.copytree(FIXTURE, suite)
    (suite / "mapping.yaml").write_text(mapping_text)
    return suite


def test_wide_fixture_tokens_from_column_else_step_times_batch_and_empty_cells_skipped(tmp_path):
    out = tmp_path / "results.csv"
    summary = import_results(FIXTURE / "mapping.yaml", out)
    table = read_results(out)
    assert summary.n_checkpoints == 6 and table.runs() == ["small", "large"]  # the loss-less row is skipped
    assert table.x_label == "eval/val/CrossEntropyLoss"  # no x_label given: the column's name
    small = sorted(set(table.cols["tokens"][table.cols["run"] == "small"].tolist()))
    assert small == [100_000, 200_000, 300_000]  # 200: empty tokens cell -> step x batch size
    large = sorted(set(table.cols["tokens"][table.cols["run"] == "large"].tolist()))
    assert large == [200_000, 400_000, 600_000]  # no tokens column in the file
    assert rows_of(table, "small", 100_000, "mmlu", "acc_len_norm")["value"][0] == pytest.approx(0.25)
    assert len(rows_of(table, "small", 300_000, "mmlu", "acc_len_norm")["value"]) == 0  # one key empty
    assert rows_of(table, "small", 300_000, "mmlu", "bpb")["value"][0] == pytest.approx(2.0)
    assert rows_of(table, "large", 200_000, "arc", "bpb")["n_params_nonembed"][0] == 8_000_000  # default
    assert rows_of(table, "small", 200_000, "arc", "acc_len_norm")["n_params_nonembed"][0] == 1_000_000


def _edit(name: str, old: str, new: str):
    def change(suite):
        p = suite / name
        p.write_text(p.read_text().replace(old, new, 1))
    return change


@pytest.mark.parametrize("change, mapping, message", [
    (None, BASE.replace("loss: eval/val/CrossEntropyLoss", "loss: eval/val/Loss"),
     "small.csv: column 'eval/val/Loss': not in the file (named by wide.loss)"),
    (_edit("large.csv", "mmlu_b_bpb", "mmlu_c_bpb"), BASE,
     "large.csv: column 'eval/downstream_bpb/mmlu_b_bpb': not in the file (named by wide.metrics[1].column "
     "for task mmlu)"),
    (_edit("small.csv", "4.0,0.34", "4.0,n/a"), BASE,
     "small.csv:4: column 'eval/downstream/arc_easy_len_norm': 'n/a' is not a number"),
    (_edit("small.csv", "4.0,0.34", "4.0,34"), BASE,
     "small.csv:4: column 'eval/downstream/arc_easy_len_norm': 34 is outside [0, 1], the range of metric "
     "'acc_len_norm'"),
    (_edit("large.csv", "200,2000,3.7", "100,2000,3.7"), BASE,
     "large.csv:3: run 'large' at 200000 tokens (step 100) is also {suite}/large.csv:2"),
    (_edit("small.csv", "300,3.8", "300.5,3.8"), BASE,
     "small.csv:5: column '_step': expected a whole number >= 0, got 300.5"),
    (_edit("large.csv", "300,2000,3.4,0.47", "300,2000,3.4"), BASE, "large.csv:4: 8 cells, but the header has 9"),
    (None, BASE.replace("metric: bpb,", "metric: bpb_score,"),
     "mapping.yaml: wide.metrics[1].lower_is_better: true, but the metric registry reads 'bpb_score' as "
     "higher-is-better"),
    (None, BASE.replace("{task}_len_norm", "arc_easy_len_norm"),
     "mapping.yaml: wide.metrics[0].column: 'eval/downstream/arc_easy_len_norm' has no {{task}}"),
    (None, BASE.replace("wide:", "x_axis: {task: arc, metric: acc}\nwide:"),
     "mapping.yaml: x_axis: give x_axis (harness result files) or wide (CSV exports), not both"),
    (None, BASE.replace("  batch_size: batch_size_in_tokens\n", ""),
     "small.csv:4: no tokens count (empty tokens and batch-size cells, no tokens_per_step)"),
    (None, BASE.replace("  batch_size: batch_size_in_tokens\n", "").replace("  tokens: throughput/total_tokens\n", ""),
     "small.csv: no tokens column; give wide.batch_size or tokens_per_step to count tokens as step x it"),
    (None, BASE.replace("files: [large.csv]", "files: [{path: large.csv, step: 3}]"),
     "mapping.yaml: runs.large.files[0]: step/tokens are for harness files"),
    (None, BASE.replace("  step: _step", "  stepp: _step"),
     "mapping.yaml: wide.stepp: unknown key (did you mean 'step'?)"),
])
def test_bad_wide_input_is_one_line_naming_file_and_column_or_field_and_writes_nothing(tmp_path, change, mapping,
                                                                                       message):
    suite = _suite(tmp_path, mapping)
    if change:
        change(suite)
    out = tmp_path / "results.csv"
    out.write_text("previous table\n")
    with pytest.raises(LossLensError) as e:
        import_results(suite / "mapping.yaml", out)
    assert message.format(suite=suite) in str(e.value) and "\n" not in str(e.value)
    assert out.read_text() == "previous table\n"


def test_cli_imports_wide_files_and_a_bad_column_exits_2_with_one_line(tmp_path):
    ok = run_cli("import-results", str(FIXTURE / "mapping.yaml"), "--out", str(tmp_path / "results.csv"))
    assert ok.returncode == 0, ok.stderr
    assert "imported 6 checkpoints of 2 runs, 2 tasks: 23 rows" in ok.stdout
    suite = _suite(tmp_path, BASE.replace("tasks:\n    arc: arc_easy", "tasks:\n    arc: arc_hard"))
    bad = run_cli("import-results", str(suite / "mapping.yaml"), "--out", str(tmp_path / "new.csv"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "column 'eval/downstream/arc_hard_len_norm': not in the file" in bad.stderr
    assert not (tmp_path / "new.csv").exists()
