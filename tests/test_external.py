"""Studies of checkpoints trained elsewhere: a manifest becomes a study folder that evaluate and analyze
treat like one of ours, with the same results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from losslens import contracts
from losslens.errors import ConfigError
from losslens.external import import_manifest, load_manifest
from tests.conftest import call_cli


def _manifest(trained: Path, tmp_path: Path, **extra) -> Path:
    study = yaml.safe_load((trained / contracts.STUDY_FILE).read_text())
    entries = []
    for run in contracts.list_runs(trained):
        for ckpt in contracts.list_checkpoints(run):
            meta = contracts.read_meta(ckpt)
            entries.append({"run": meta["run"], "size": meta["size"], "path": str(ckpt), "tokens": meta["tokens"],
                            "step": meta["step"]})
    manifest = {
        "name": "external-tiny", "context": study["model"]["context"],
        "validation": {"data_dir": str(trained / "data"), "tokens": study["checkpoints"]["val_tokens"]},
        "eval": study["eval"], "checkpoints": entries, **extra,
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return sorted(csv.DictReader(f), key=lambda r: (r["run"], int(r["tokens"]), r["task"], r["metric"]))


def test_manifest_errors_name_the_field(tmp_path: Path):
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump({"name": "x", "context": 8, "checkpoints": [{"run": "a", "path": "p", "tokns": 1}]}))
    with pytest.raises(ConfigError, match=r"checkpoints\[0\]\.tokns: unknown key \(did you mean 'tokens'\?\)"):
        load_manifest(p)


def test_import_links_checkpoints_and_counts_parameters(trained_tiny: Path, tmp_path: Path):
    out = import_manifest(_manifest(trained_tiny, tmp_path), tmp_path / "ext")
    src = contracts.list_checkpoints(trained_tiny / "s_65536")[-1]
    dst = out / "s_65536" / src.name
    assert (dst / "model.safetensors").is_symlink()
    ours, theirs = contracts.read_meta(src), contracts.read_meta(dst)
    for key in ("tokens", "step", "n_params", "n_params_nonembed", "flops", "size"):
        assert ours[key] == pytest.approx(theirs[key]), key
    assert theirs["budget_tokens"] == 65536 and theirs["external"]


@pytest.mark.slow
def test_external_study_gives_the_same_results_and_report(trained_tiny_copy: Path, tmp_path: Path):
    trained_tiny = trained_tiny_copy
    ext = tmp_path / "ext"
    assert call_cli("import", str(_manifest(trained_tiny, tmp_path)), "--out", str(ext)).returncode == 0
    for study_dir in (trained_tiny, ext):
        result = call_cli("evaluate", str(study_dir))
        assert result.returncode == 0, result.stderr[-3000:]
        result = call_cli("analyze", str(study_dir), "--bootstrap", "100", "--no-plots")
        assert result.returncode == 0, result.stderr[-3000:]
    ours, theirs = _rows(trained_tiny / contracts.RESULTS_FILE), _rows(ext / contracts.RESULTS_FILE)
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        for col in contracts.RESULTS_COLUMNS:
            if col in ("value", "ci_low", "ci_high", "loss", "flops", "chance"):
                assert (a[col] == b[col]) or float(a[col]) == pytest.approx(float(b[col]), rel=1e-9, abs=1e-12), col
            else:
                assert a[col] == b[col], col
    # The reports agree in everything but the paths they name.
    reports = []
    for study_dir in (trained_tiny, ext):
        report = json.loads((study_dir / "report.json").read_text())
        report.pop("settings")
        report["study"].pop("results")
        reports.append(report)
    assert reports[0] == reports[1]
    assert reports[0]["metrics"]  # not vacuous
