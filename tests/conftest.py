"""Shared fixtures: the tiny study config (configs/tiny.yaml) pointed at a temporary folder, and two ways
to run the ``losslens`` command: ``run_cli`` in a fresh process, ``call_cli`` in this one."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def write_results_csv(path: Path, rows: list[dict], columns=None) -> Path:
    """A results table in losslens' columns (``contracts.RESULTS_COLUMNS`` unless ``columns``)."""
    from losslens.contracts import RESULTS_COLUMNS

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns or RESULTS_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def write_study(tmp_path: Path, **changes) -> Path:
    """A copy of configs/tiny.yaml with absolute paths, out_dir in tmp_path, and top-level ``changes``."""
    raw = yaml.safe_load(TINY.read_text())
    raw["data"]["paths"] = [str(ROOT / "tests" / "data" / "tiny_corpus.txt")]
    raw["eval"]["tasks"] = [str((TINY.parent / t).resolve()) for t in raw["eval"]["tasks"]]
    raw["out_dir"] = str(tmp_path / "study")
    for dotted, value in changes.items():
        node = raw
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m losslens ARGS`` in a fresh process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "losslens", *args], cwd=cwd or ROOT, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


def call_cli(*args: str) -> subprocess.CompletedProcess:
    """Call ``losslens.cli.main(ARGS)`` in this process and return what ``run_cli`` would: the exit code
    (argparse's ``SystemExit`` included; an uncaught exception prints its traceback and gives 1, as the
    interpreter does) and what was written to ``sys.stdout`` and ``sys.stderr``.

    For bad input and other cases where a fresh process proves nothing more: each one costs seconds of
    importing torch and transformers again. Launches, kills and signals need ``run_cli``; so does an
    assertion about output that bypasses ``sys.stderr`` (C libraries, log handlers made at import).
    """
    from losslens.cli import main

    out, err, cwd = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(ROOT)  # as run_cli
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(["losslens", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    return write_study(tmp_path)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> Path:
    """configs/tiny.yaml trained once per test session (2 sizes x 2 budgets, ~10 s); returns the study dir.

    Trained in this process: tests of launching ``losslens train`` (and of its output matching this
    study's bitwise) start their own processes.
    """
    tmp = tmp_path_factory.mktemp("trained_tiny")
    cfg = write_study(tmp)
    result = call_cli("train", str(cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "study"


@pytest.fixture
def trained_tiny_copy(trained_tiny: Path, tmp_path: Path) -> Path:
    """A private copy of the trained tiny study, for tests that write into it (evals/, results.csv, report).

    ``trained_tiny`` is shared by the whole session and must stay as training left it.
    """
    copy = tmp_path / "trained_copy" / "study"
    shutil.copytree(trained_tiny, copy, symlinks=True)
    return copy
