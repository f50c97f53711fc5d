"""Issue 21: nothing overwritten that the user did not ask to replace, every input of a result in its
fingerprint, locks that a crash cannot wedge, faults in one line. Each case is in docs/errors.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from losslens import contracts
from losslens.evaluate import sweep
from losslens.evaluate.claims import HOST, Claim
from tests.conftest import call_cli, write_study
from tests.eval_fixtures import MC_ROWS, make_study, save_checkpoint, write_jsonl


def _one_line_exit_2(result: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert sum(l.startswith("error: ") for l in lines) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def _sweep(study_dir: Path) -> dict[str, int]:
    """Evaluate; which units were computed (by name) and how many were up to date."""
    logs: list[str] = []
    summary = sweep.evaluate_study(study_dir, progress=False, log=logs.append)
    computed = [p.stem for p in summary.results]
    return {"computed": sorted(computed), "up_to_date": summary.up_to_date}


# ---------------------------------------------------------------- §2 every input in the fingerprint


def _edit_study(study_dir: Path, edit) -> None:
    path = study_dir / contracts.STUDY_FILE
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _ckpt(study_dir: Path) -> Path:
    return study_dir / "xs_64K" / contracts.checkpoint_dirname(1024)


def _other_weights(study_dir: Path) -> None:
    save_checkpoint(study_dir, "xs_64K", 1024, seed=99)


def _tokenizer_file(study_dir: Path) -> None:
    f = _ckpt(study_dir) / "tokenizer_config.json"
    cfg = json.loads(f.read_text())
    cfg["model_max_length"] = 77
    f.write_text(json.dumps(cfg))


def _model_config(study_dir: Path) -> None:
    f = _ckpt(study_dir) / "config.json"
    cfg = json.loads(f.read_text())
    cfg["rms_norm_eps"] = 1e-2  # changes every logit
    f.write_text(json.dumps(cfg))


def _same_length_tokens(study_dir: Path) -> None:
    val = study_dir / contracts.DATA_DIR / contracts.VAL_SHARD
    tokens = np.fromfile(val, dtype=np.uint16)
    np.random.default_rng(1).permutation(tokens).tofile(val)


def _task_file(study_dir: Path) -> None:
    write_jsonl(study_dir.parent / "tasks" / "mc.jsonl", MC_ROWS[::-1])


def _setting(section: str, key: str, value):
    return lambda study_dir: _edit_study(study_dir, lambda raw: raw.setdefault(section, {}).__setitem__(key, value))


ALL = ["gen", "mc", "pretrain"]
# (what changes, how, the units that must be computed again)
CHANGES = [  # applied one after the other to the same study
    ("weights", _other_weights, ALL),
    ("tokenizer file", _tokenizer_file, ALL),
    ("model config.json", _model_config, ALL),
    ("val.bin, same length", _same_length_tokens, ["pretrain"]),
    ("task file", _task_file, ["mc"]),
    ("eval.dtype", _setting("eval", "dtype", "bfloat16"), ALL),
    ("eval.val_tokens", _setting("eval", "val_tokens", 256), ["pretrain"]),
    ("eval.confidence", _setting("eval", "confidence", 0.9), ALL),
    ("eval.seed", _setting("eval", "seed", 7), ["gen", "mc"]),
    ("eval.bootstrap", _setting("eval", "bootstrap", 100), ["gen", "mc"]),
    ("eval.max_examples", _setting("eval", "max_examples", 3), ["gen", "mc"]),
    ("eval.max_new_tokens (one setting of all tasks)", _setting("eval", "max_new_tokens", 3), ["gen", "mc"]),
    ("eval.batch_size (results do not depend on it)", _setting("eval", "batch_size", 3), []),
]


def test_each_input_of_a_result_invalidates_it(tmp_path: Path):
    """Change the inputs one at a time: each time exactly the units that depend on it are computed again."""
    tasks = tmp_path / "tasks"
    write_jsonl(tasks / "mc.jsonl", MC_ROWS)
    write_jsonl(tasks / "gen.jsonl", [{"prompt": "2+2=", "reference": "4"}, {"prompt": "abc", "reference": "d"}])
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[str(tasks / "mc.jsonl"), str(tasks / "gen.jsonl")])
    assert _sweep(study_dir)["computed"] == ALL
    assert _sweep(study_dir)["computed"] == []
    for what, change, recomputed in CHANGES:
        change(study_dir)
        done = _sweep(study_dir)
        assert (done["computed"], done["up_to_date"]) == (recomputed, len(ALL) - len(recomputed)), what


def test_result_inputs_are_listed_in_one_place():
    """The fingerprint is made of result_inputs() and nothing else: what is listed there is what counts."""
    from losslens.evaluate.inputs import result_fingerprint, result_inputs
    from losslens.evaluate.units import RunOptions, fingerprint

    class U:
        fingerprint = "u1"

    inputs = result_inputs("c1", U(), RunOptions(dtype="bfloat16", batch_size=3, device="cpu"))
    assert inputs == {"checkpoint": "c1", "unit": "u1", "dtype": "bfloat16"}
    assert result_fingerprint("c1", U(), RunOptions(dtype="bfloat16", batch_size=64)) == fingerprint(inputs)


def test_context_edited_after_training_is_refused(trained_tiny_copy: Path, capsys):
    study_yaml = trained_tiny_copy / contracts.STUDY_FILE
    _edit_study(trained_tiny_copy, lambda raw: raw["model"].__setitem__("context", 16))
    before = study_yaml.read_bytes()
    result = call_cli("evaluate", str(trained_tiny_copy))
    _one_line_exit_2(result, str(study_yaml), "model.context: 32 -> 16", "refused")
    assert not (trained_tiny_copy / contracts.EVALS_DIR).exists()  # nothing computed at the new context
    assert study_yaml.read_bytes() == before


# ---------------------------------------------------------------- §2 locks


def test_a_lock_records_its_owner_and_appears_complete(tmp_path: Path):
    lock = tmp_path / "u.lock"
    claim = Claim(lock)
    assert claim.acquire()
    owner = json.loads(lock.read_text())
    assert owner["host"] == HOST and owner["pid"] == os.getpid() and owner["token"] == claim.token
    assert [p.name for p in tmp_path.iterdir()] == ["u.lock"]  # no temporary file left beside it
    claim.release()
    assert not lock.exists()


@pytest.mark.parametrize("leftover", ["", "{", "[1, 2]", '{"host": "%s", "pid": "x"}'])
def test_an_empty_or_corrupt_lock_left_by_a_crash_is_taken_over_at_once(tmp_path: Path, leftover: str):
    lock = tmp_path / "u.lock"
    lock.write_text(leftover.replace("%s", HOST))
    claim = Claim(lock)
    assert claim.acquire()
    assert json.loads(lock.read_text())["token"] == claim.token


def test_a_dead_owners_lock_is_taken_over_at_once(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "u.lock"
    lock.write_text(json.dumps({"host": HOST, "pid": dead.pid, "token": "x", "time": 0}))
    assert Claim(lock, timeout=1e9).acquire()


def test_an_empty_lock_does_not_drop_the_unit_from_results(tmp_path: Path):
    study_dir = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[])
    folder = study_dir / contracts.EVALS_DIR / "xs_64K" / contracts.checkpoint_dirname(1024)
    folder.mkdir(parents=True)
    (folder / f".{contracts.PRETRAIN_TASK}.lock").write_text("")
    summary = sweep.evaluate_study(study_dir, progress=False, log=lambda m: None)
    assert summary.busy == 0 and summary.evaluated == 1 and summary.rows == 2
