"""Bad input at the command line: exit code 2, one clear line naming what and where, nothing lost.

Each case here is listed, with its message, in docs/errors.md. The first two run the command in a fresh
process (what a user sees on the terminal); the rest call it in this one (``call_cli``), which reports the
same exit code and lines without importing torch again, and train 8-step runs of 4096 tokens.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from losslens import contracts
from tests.conftest import call_cli, run_cli, write_study

SHORT = "budgets=[4096]"  # one 8-step run per size: xs_4096, s_4096


def _one_line_error(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-2000:]  # progress lines may precede it
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_malformed_yaml(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [unclosed\n")
    _one_line_error(run_cli("train", str(bad)), "bad.yaml: line 3, column 1: malformed YAML")


def test_debug_flag_shows_the_traceback(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [unclosed\n")
    result = run_cli("--debug", "train", str(bad))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_missing_corpus(tmp_path: Path):
    cfg = write_study(tmp_path, data__paths=[str(tmp_path / "nowhere.txt")])
    _one_line_error(call_cli("train", str(cfg)), "data.paths[0]: corpus file", "nowhere.txt not found")


def test_empty_corpus(tmp_path: Path):
    (tmp_path / "empty.txt").write_text("")
    cfg = write_study(tmp_path, data__paths=[str(tmp_path / "empty.txt")])
    _one_line_error(call_cli("train", str(cfg)), "empty.txt: corpus file is empty")


def test_missing_pretrained_tokenizer(tmp_path: Path):
    cfg = write_study(tmp_path, data__tokenizer={"kind": "pretrained", "path": str(tmp_path / "tok")})
    _one_line_error(call_cli("train", str(cfg)), "data.tokenizer.path: tokenizer directory", "not found")


def test_token_ids_that_do_not_fit_the_shard(tmp_path: Path, monkeypatch):
    from losslens.errors import DataError
    from losslens.train import data
    from losslens.train.config import DataConfig, TokenizerConfig

    monkeypatch.setattr(data, "shard_dtype", lambda vocab: __import__("numpy").dtype("uint8"))
    (tmp_path / "c.txt").write_text("".join(chr(0x400 + i) for i in range(300)))  # 300 distinct characters
    cfg = DataConfig(paths=[str(tmp_path / "c.txt")], tokenizer=TokenizerConfig(kind="char"), val_every=1000)
    with pytest.raises(DataError, match=r"token id \d+ does not fit the uint8 shard"):
        data.prepare_data(cfg, 0, tmp_path / "data")
    assert not (tmp_path / "data").exists()  # nothing half-written


def _train_keeping_all_states(tmp_path: Path) -> tuple[Path, Path]:
    """Train xs_4096 with every checkpoint's training state kept, then delete the final checkpoint, so
    that the next `losslens train` must resume from the one before it. Returns (config, that checkpoint)."""
    cfg = write_study(tmp_path, checkpoints={"count": 2, "log_spaced": False, "val_tokens": 1024,
                                             "keep_train_state": "all"})
    assert call_cli("train", str(cfg), "--run", "xs_4096", SHORT).returncode == 0
    ckpts = contracts.list_checkpoints(tmp_path / "study" / "xs_4096")
    shutil.rmtree(ckpts[-1])
    return cfg, ckpts[-2]


def test_truncated_training_state(tmp_path: Path):
    cfg, resume_point = _train_keeping_all_states(tmp_path)
    state = resume_point / contracts.TRAIN_STATE_DIR / "optimizer.bin"
    state.write_bytes(state.read_bytes()[:100])
    line = _one_line_error(call_cli("train", str(cfg), "--run", "xs_4096", SHORT), "cannot resume from this training state")
    assert str(resume_point) in line
    assert contracts.list_checkpoints(resume_point.parent) == [resume_point]  # nothing else written or lost


def test_config_changed_since_the_checkpoint(tmp_path: Path):
    cfg, resume_point = _train_keeping_all_states(tmp_path)
    result = call_cli("train", str(cfg), "--run", "xs_4096", SHORT, "train.optimizer.lr=0.001")
    _one_line_error(result, str(cfg), "train.optimizer.lr: 0.003 -> 0.001", "a change to what training produced is refused")
    assert contracts.list_checkpoints(resume_point.parent) == [resume_point]


def test_truncated_token_shard(tmp_path: Path):
    cfg = write_study(tmp_path)
    assert call_cli("train", str(cfg), "--run", "xs_4096", SHORT, "checkpoints.count=1").returncode == 0
    shard = tmp_path / "study" / "data" / contracts.TRAIN_SHARD
    shard.write_bytes(shard.read_bytes()[:-64])
    _one_line_error(call_cli("train", str(cfg), "--run", "s_4096", SHORT), "train.bin: has", "truncated?")


# ---------------------------------------------------------------- evaluate


def make_eval_study(tmp_path: Path, runs: dict[str, list[int]]) -> Path:
    from tests.eval_fixtures import make_study, write_tasks

    tmp_path.mkdir(parents=True, exist_ok=True)
    return make_study(tmp_path, runs=runs, tasks=write_tasks(tmp_path)[:1])


def _eval_study(tmp_path: Path) -> Path:
    return make_eval_study(tmp_path, runs={"xs_64K": [1024]})


def test_missing_checkpoint_weights(tmp_path: Path):
    study = _eval_study(tmp_path)
    ckpt = contracts.list_checkpoints(study / "xs_64K")[0]
    (ckpt / "model.safetensors").unlink()
    _one_line_error(call_cli("evaluate", str(study), "--no-progress"), str(ckpt), "cannot load model or tokenizer")
    assert not (study / contracts.RESULTS_FILE).exists() or "xs_64K" not in (study / contracts.RESULTS_FILE).read_text()


def test_truncated_checkpoint_weights(tmp_path: Path):
    study = _eval_study(tmp_path)
    weights = contracts.list_checkpoints(study / "xs_64K")[0] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _one_line_error(call_cli("evaluate", str(study), "--no-progress"), "cannot load model or tokenizer")


def test_tokenizer_larger_than_the_model_vocabulary(tmp_path: Path):
    import json

    study = _eval_study(tmp_path)
    ckpt = contracts.list_checkpoints(study / "xs_64K")[0]
    config = json.loads((ckpt / "config.json").read_text())
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    for i in range(config["vocab_size"] + 5 - len(vocab)):  # grow the tokenizer past the embedding
        vocab[f"<extra{i}>"] = len(vocab)
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    _one_line_error(call_cli("evaluate", str(study), "--no-progress"), "more than the model's vocabulary")


def test_duplicate_task_names(tmp_path: Path):
    from tests.eval_fixtures import make_study, write_tasks

    first = write_tasks(tmp_path)[0]
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(first, other / Path(first).name)  # same file name -> same task name
    study = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[first, str(other / Path(first).name)])
    _one_line_error(call_cli("evaluate", str(study), "--no-progress"), "task name", "is also used by")


# ---------------------------------------------------------------- analyze


def test_results_table_from_another_study(tmp_path: Path):
    mine = make_eval_study(tmp_path / "a", runs={"xs_64K": [1024, 4096]})
    assert call_cli("evaluate", str(mine), "--no-progress").returncode == 0
    theirs = make_eval_study(tmp_path / "b", runs={"s_64K": [1024, 4096]})
    shutil.copy(mine / contracts.RESULTS_FILE, theirs / contracts.RESULTS_FILE)
    before = (theirs / contracts.RESULTS_FILE).read_bytes()
    _one_line_error(call_cli("analyze", str(theirs), "--bootstrap", "10", "--no-plots"),
                    "run 'xs_64K' is not a run of the study", "another study")
    assert (theirs / contracts.RESULTS_FILE).read_bytes() == before and not (theirs / "report.json").exists()
