"""report.json, field by field, against one written before issue 22's renames and splits (at 0f8a1d1), on a
small synthetic table (tests/data/report_golden/results.csv, from test_analyze_x_axis.make_table): every key
the same, every string the same, every number within rounding. Bootstrap seed fixed; no plots.

To accept a deliberate change, regenerate: ``python -m tests.test_report_golden`` (say why in the commit)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, call_cli

DATA = ROOT / "tests" / "data" / "report_golden"
RUNS = {"loss": [], "bpb": ["--x", "bpb"]}
FLAGS = ["--bootstrap", "50", "--seed", "0", "--no-plots", "--backtest", "largest-size"]


def analyze_report(x: str, work: Path) -> dict:
    """report.json of the golden table analyzed against ``x``, with its paths written as placeholders."""
    table, out = work / "results.csv", work / f"out_{x}"
    shutil.copy(DATA / "results.csv", table)
    done = call_cli("analyze", "--results", str(table), "--out", str(out), *FLAGS, *RUNS[x])
    assert done.returncode == 0, done.stderr
    text = (out / "report.json").read_text(encoding="utf-8")
    return json.loads(text.replace(str(out), "<out>").replace(str(table), "<results>"))


def differences(want, got, where: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        if want.keys() != got.keys():
            return [f"{where}: keys {sorted(set(want) ^ set(got))} differ"]
        return [d for k in want for d in differences(want[k], got[k], f"{where}/{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where}: {len(got)} items, was {len(want)}"]
        return [d for i, (a, b) in enumerate(zip(want, got)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        same = (math.isnan(want) and math.isnan(got)) or math.isclose(want, got, rel_tol=1e-6, abs_tol=1e-9)
        return [] if same else [f"{where}: {got!r}, was {want!r}"]
    return [] if want == got and type(want) is type(got) else [f"{where}: {got!r}, was {want!r}"]


@pytest.mark.parametrize("x", list(RUNS))
def test_report_json_is_unchanged(tmp_path, x):
    want = json.loads((DATA / f"report_{x}.json").read_text(encoding="utf-8"))
    assert differences(want, analyze_report(x, tmp_path)) == []


def test_a_changed_field_is_found():
    report = json.loads((DATA / "report_bpb.json").read_text(encoding="utf-8"))
    changed = json.loads(json.dumps(report))
    changed["metrics"][0]["threshold"]["eta"] = changed["metrics"][0]["threshold"].pop("loss")
    assert differences(report, changed) == ["/metrics[0]/threshold: keys ['eta', 'loss'] differ"]


if __name__ == "__main__":  # regenerate the golden reports
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        for x in RUNS:
            (DATA / f"report_{x}.json").write_text(json.dumps(analyze_report(x, Path(work)), indent=1) + "\n")
    sys.exit(0)
