"""import-results: other labs' lm-evaluation-harness result files become a results.csv analyze reads.

Real data: the published Pythia (deduplicated) evaluations in shared/data, which sits beside the
repository (``../shared``; ``LOSSLENS_SHARED`` overrides). The 0.4 layout: a small fixture in tests/data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from losslens.analyze.table import read_results
from losslens.contracts import DEFAULT_X_LABEL, X_LABEL_COLUMN
from losslens.errors import DataError, LossLensError
from losslens.import_results import import_results, read_harness_file
from tests.conftest import ROOT, run_cli

SHARED = Path(os.environ.get("LOSSLENS_SHARED", ROOT.parent / "shared"))
PYTHIA = SHARED / "data" / "pythia-deduped-evals"
PYTHIA_MAPPING = ROOT / "configs" / "import" / "pythia-deduped.yaml"
FIXTURE = ROOT / "tests" / "data" / "lm_eval_04"
needs_pythia = pytest.mark.skipif(not PYTHIA.is_dir(), reason=f"shared data not at {PYTHIA} (set LOSSLENS_SHARED)")


def rows_of(table, run, tokens, task, metric):
    c = table.cols
    sel = (c["run"] == run) & (c["tokens"] == tokens) & (c["task"] == task) & (c["metric"] == metric)
    return {k: v[sel] for k, v in c.items()}


@pytest.fixture(scope="module")
def pythia_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("pythia") / "results.csv"
    summary = import_results(PYTHIA_MAPPING, out, root=PYTHIA)
    return summary, read_results(out)


@needs_pythia
def test_pythia_files_import_with_steps_from_model_args(pythia_table):
    summary, table = pythia_table
    assert summary.n_checkpoints == 8 * 27 and len(table.runs()) == 8 and len(table.sizes()) == 8
    assert table.x_label == "LAMBADA (OpenAI) ln perplexity"
    assert set(table.tasks()) == {"arc_easy", "arc_challenge", "piqa", "sciq", "winogrande", "lambada_openai",
                                  "logiqa", "wsc"}
    assert table.metrics("lambada_openai") == ["acc"]  # its perplexity is the x-axis, not a task row
    raw = json.loads((PYTHIA / "410m" / "410m-deduped_step33000.json").read_text())["results"]
    r = rows_of(table, "pythia-410m-deduped", 33000 * 2_097_152, "arc_easy", "acc")
    assert len(r["value"]) == 1 and r["step"][0] == 33000 and r["n_params_nonembed"][0] == 302_311_424
    assert r["value"][0] == raw["arc_easy"]["acc"]
    assert r["loss"][0] == pytest.approx(math.log(raw["lambada_openai"]["ppl"]), rel=1e-12)
    assert r["ci_high"][0] - r["value"][0] == pytest.approx(1.959964 * raw["arc_easy"]["acc_stderr"])  # 95 %
    assert r["chance"][0] == 0.25 and r["flops"][0] == 6.0 * 302_311_424 * 33000 * 2_097_152
    # every checkpoint has one x value shared by all its rows
    ck = table.checkpoints()
    assert len(ck["run"]) == 216


@needs_pythia
def test_pythia_import_analyzes_and_plots_say_the_x_axis(pythia_table, tmp_path):
    from losslens.analyze.analysis import run_analysis
    from losslens.analyze.config import AnalyzeConfig
    from losslens.analyze.plots import Styles, task_figure

    analysis = run_analysis(pythia_table[1].path, config=AnalyzeConfig(bootstrap=20), progress=False)
    assert analysis.table.x_label == analysis.settings["x_label"] == "LAMBADA (OpenAI) ln perplexity"
    fig = task_figure(analysis, "sciq", Styles(analysis.table))
    assert "LAMBADA (OpenAI) ln perplexity" in fig.axes[0].get_xlabel()
    # sciq accuracy climbs far above chance at the end of training: the table carries a real signal
    s = analysis.metrics[("sciq", "acc")].series
    assert s.value[s.x.argmin()] > 0.8


def test_lm_eval_04_layout_fixture(tmp_path):
    out = tmp_path / "results.csv"
    summary = import_results(FIXTURE / "mapping.yaml", out)
    table = read_results(out)
    assert summary.n_checkpoints == 4 and table.runs() == ["small", "large"]
    assert table.x_label == "ln lambada_openai perplexity"  # no label given: made from the mapping
    assert sorted(table.metrics("gsm8k")) == ["exact_match:flexible-extract", "exact_match:strict-match"]
    assert sorted(set(table.cols["tokens"][table.cols["run"] == "small"].tolist())) == [1_000_000, 2_000_000]
    final = rows_of(table, "large", 3_500_000, "arc_easy", "acc")
    assert final["step"][0] == 3000 and final["value"][0] == 0.47 and final["loss"][0] == pytest.approx(math.log(22.0))
    assert rows_of(table, "large", 1_000_000, "arc_easy", "acc_norm")["value"][0] == pytest.approx(0.31)
    flex = rows_of(table, "small", 1_000_000, "gsm8k", "exact_match:flexible-extract")
    assert math.isnan(flex["ci_low"][0]) and math.isnan(flex["chance"][0])  # stderr "N/A"; no chance given
    assert "alias" not in set(table.cols["metric"].tolist())


def test_older_layout_reads_like_the_04_one(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"results": {"piqa": {"acc": 0.6, "acc_stderr": 0.01, "acc_norm": 0.61}},
                               "config": {"model_args": "pretrained=x,revision=step512"}}))
    hf = read_harness_file(old)
    assert hf.results == {"piqa": {"acc": (0.6, 0.01), "acc_norm": (0.61, None)}} and hf.step() == 512
    new = read_harness_file(FIXTURE / "small_step2000.json")
    assert new.results["arc_easy"]["acc"] == (0.38, 0.01) and new.step() == 2000


def test_a_table_without_x_label_keeps_the_default_and_mixed_labels_are_refused(tmp_path):
    out = tmp_path / "results.csv"
    import_results(FIXTURE / "mapping.yaml", out)
    lines = out.read_text().splitlines()
    header = lines[0].split(",")
    assert header[-1] == X_LABEL_COLUMN
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    assert read_results(plain).x_label == DEFAULT_X_LABEL
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join(lines[:2] + [lines[2].rsplit(",", 1)[0] + ",other"] + lines[3:]) + "\n")
    with pytest.raises(LossLensError, match=r"mixed.csv:3: column 'x_label': 'other', but line 2 says"):
        read_results(mixed)


def _suite(tmp_path, mapping_text: str | None = None) -> Path:
    """A writable copy of the 0.4 fixture, optionally with another mapping."""
    suite = tmp_path / "suite"
    shutil.copytree(FIXTURE, suite)
    if mapping_text is not None:
        (suite / "mapping.yaml").write_text(mapping_text)
    return suite


BASE = (FIXTURE / "mapping.yaml").read_text()


def _drop_task(suite: Path) -> None:
    p = suite / "small_step2000.json"
    d = json.loads(p.read_text())
    del d["results"]["arc_easy"]
    p.write_text(json.dumps(d))


@pytest.mark.parametrize("change, mapping, message", [
    (_drop_task, BASE.replace("chance:", "tasks: [arc_easy, gsm8k]\nchance:"),
     "small_step2000.json: results.arc_easy: missing (the mapping's tasks name it)"),
    (None, BASE.replace("large_step1000.json,", "large_step9000.json,"),
     "mapping.yaml: runs.large.files[0]: {suite}/large_step9000.json not found"),
    (None, BASE.replace("small_*.json", "tiny_*.json"),
     "mapping.yaml: runs.small.files: pattern 'tiny_*.json' matches no file under {suite}"),
    (lambda s: (s / "small_step1000.json").write_text('{"results": {"arc_easy": '),
     BASE, "small_step1000.json: not valid JSON (line 1, column 26: Expecting value)"),
    (lambda s: (s / "small_step1000.json").write_text('{"config": {}}'),
     BASE, "small_step1000.json: results: missing or not a mapping"),
    (None, BASE.replace("{path: large_final.json, step: 3000, tokens: 3.5M}", "large_final.json"),
     "large_final.json: config.model_args: no revision=stepN in 'pretrained=org/model-large'"),
    (None, BASE.replace("metric: perplexity", "metric: word_perplexity"),
     "small_step1000.json: results.lambada_openai.word_perplexity: missing (the x-axis"),
    (None, BASE.replace("tokens_per_step: 1000\n", ""),
     "mapping.yaml: runs.small.files: tokens_per_step: required"),
    (None, BASE.replace("tokens: 3.5M", "tokens: 1M"),
     "large_final.json: run 'large' at 1000000 tokens (step 3000) is also {suite}/large_step1000.json"),
    (None, BASE.replace("n_params: 2M", "n_param: 2M"),
     "mapping.yaml: runs.small.n_param: unknown key (did you mean 'n_params'?)"),
])
def test_bad_input_is_one_line_naming_file_and_key_and_writes_nothing(tmp_path, change, mapping, message):
    suite = _suite(tmp_path, mapping)
    if change:
        change(suite)
    out = tmp_path / "results.csv"
    out.write_text("previous table\n")
    with pytest.raises(LossLensError) as e:
        import_results(suite / "mapping.yaml", out)
    assert message.format(suite=suite) in str(e.value) and "\n" not in str(e.value)
    assert out.read_text() == "previous table\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_cli_imports_and_bad_input_exits_2_with_one_line(tmp_path):
    out = tmp_path / "results.csv"
    ok = run_cli("import-results", str(FIXTURE / "mapping.yaml"), "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert "imported 4 checkpoints of 2 runs" in ok.stdout and "x-axis: ln lambada_openai perplexity" in ok.stdout
    suite = _suite(tmp_path, BASE.replace("small_*.json", "[small_step1000.json, missing.json]"))
    bad = run_cli("import-results", str(suite / "mapping.yaml"), "--out", str(tmp_path / "new.csv"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "runs.small.files[1]" in bad.stderr and "missing.json not found" in bad.stderr
    assert not (tmp_path / "new.csv").exists()


def test_an_unreadable_result_file_is_one_line(tmp_path):
    (tmp_path / "latin1.json").write_bytes('{"results": {"t": {"acc": 0.5, "note": "café"}}}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.json: not a UTF-8 text file$"):
        read_harness_file(tmp_path / "latin1.json")
    (tmp_path / "a_folder.json").mkdir()
    with pytest.raises(DataError, match=r"a_folder\.json: cannot read \(Is a directory\)$"):
        read_harness_file(tmp_path / "a_folder.json")
