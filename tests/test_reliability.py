"""Issue 16: inputs that used to crash, lose results or pass silently. Each ends with exit code 2 and
one line naming the file, field or flag (or a correct result), and nothing already written changes.

Each case is listed, with its message, in docs/errors.md. The command line runs in-process.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from losslens import contracts
from losslens.cli import main
from losslens.errors import ConfigError, DataError
from tests.cli_checks import exit_2
from tests.conftest import write_study


# ---------------------------------------------------------------- corpus and tokenizer (1-4)


def test_huge_bpe_vocabulary_is_refused_up_front(tmp_path: Path, capsys):
    cfg = write_study(tmp_path, data__tokenizer={"kind": "bpe", "vocab_size": 1_000_000_000})
    exit_2(capsys, ["train", str(cfg)], "data.tokenizer.vocab_size", "1,000,000,000")
    assert not (tmp_path / "study").exists()
    from losslens.train.tokenizer import train_bpe

    with pytest.raises(DataError, match="vocab_size"):  # the Python API checks too, before the Rust trainer
        train_bpe(iter(["some text"]), 10**9)


def _train_on(tmp_path: Path, corpus: Path, capsys, *fragments: str) -> None:
    cfg = write_study(tmp_path, data__paths=[str(corpus)])
    exit_2(capsys, ["train", str(cfg)], str(corpus), *fragments)
    assert not (tmp_path / "study" / contracts.DATA_DIR).exists()  # no shards half-written


def test_jsonl_corpus_with_a_non_utf8_byte(tmp_path: Path, capsys):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    _train_on(tmp_path, corpus, capsys, "bad.jsonl:2: not UTF-8")


def test_parquet_corpus_of_random_bytes(tmp_path: Path, capsys):
    corpus = tmp_path / "noise.parquet"
    corpus.write_bytes(os.urandom(4096))
    _train_on(tmp_path, corpus, capsys, "not a readable parquet file")


def test_parquet_text_column_of_integers(tmp_path: Path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), corpus)
    _train_on(tmp_path, corpus, capsys, "column 'text' holds int64, not text")


# ---------------------------------------------------------------- output folders and tables (5, 7, 8)


def test_binary_results_table(tmp_path: Path, capsys):
    table = tmp_path / "binary.csv"
    table.write_bytes(bytes(range(256)) * 4)
    exit_2(capsys, ["analyze", "--results", str(table)], "binary.csv: not a UTF-8 CSV file")
    table.write_bytes(b"run,task\n\0\0\0\n")
    exit_2(capsys, ["analyze", "--results", str(table)], "binary.csv: not a CSV file (holds NUL bytes)")


def test_analyze_a_folder_of_garbage(tmp_path: Path, capsys):
    for name in (contracts.RESULTS_FILE, contracts.STUDY_FILE, "notes.bin"):
        (tmp_path / name).write_bytes(os.urandom(2048))
    exit_2(capsys, ["analyze", str(tmp_path)], contracts.RESULTS_FILE)


@pytest.mark.parametrize("command", ["train", "run", "analyze"])
def test_out_that_is_a_regular_file(tmp_path: Path, capsys, command: str):
    cfg = write_study(tmp_path)
    out = tmp_path / "a-file"
    out.write_text("keep me\n")
    first = str(cfg) if command != "analyze" else str(tmp_path)
    exit_2(capsys, [command, first, "--out", str(out)], "argument --out", "a-file is a file, not a folder")
    assert out.read_text() == "keep me\n"


def test_out_dir_in_the_config_that_is_a_regular_file(tmp_path: Path, capsys):
    out = tmp_path / "a-file"
    out.write_text("keep me\n")
    cfg = write_study(tmp_path, out_dir=str(out))
    exit_2(capsys, ["train", str(cfg)], "out_dir", "is a file, not a folder")
    assert out.read_text() == "keep me\n"


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in: a read-only one, or (as root) one on a read-only file system."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if os.access("/sys", os.F_OK) and not _can_create_in(Path("/sys")):
        return Path("/sys")
    pytest.skip("no unwritable folder available to root here")


def _can_create_in(folder: Path) -> bool:
    import tempfile

    try:
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def test_analyze_out_that_is_not_writable(tmp_path: Path, capsys):
    table = _analyzable_folder(tmp_path) / contracts.RESULTS_FILE
    out = _unwritable_folder(tmp_path) / "report"
    exit_2(capsys, ["analyze", "--results", str(table), "--out", str(out)], "argument --out", "cannot write in")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_analyze_a_study_folder_that_is_not_writable(tmp_path: Path, capsys):
    run_dir = _analyzable_folder(tmp_path)
    run_dir.chmod(0o555)
    try:
        exit_2(capsys, ["analyze", str(run_dir)], str(run_dir), "cannot write in", "give --out DIR")
    finally:
        run_dir.chmod(0o755)


def test_a_file_that_cannot_be_written_is_one_line(tmp_path: Path, capsys):
    """The safety net for write failures past the flags: a report path taken by a folder."""
    run_dir = _analyzable_folder(tmp_path)
    (run_dir / "report.json").mkdir()  # the report cannot replace a folder
    exit_2(capsys, ["analyze", str(run_dir), "--bootstrap", "0", "--no-plots"], "report.json")


def _analyzable_folder(tmp_path: Path) -> Path:
    """A folder with a small valid results table (two sizes, a loss sweep, one task)."""
    import csv

    run_dir = tmp_path / "analyzed"
    run_dir.mkdir()
    with open(run_dir / contracts.RESULTS_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(contracts.RESULTS_COLUMNS)
        for size, n in (("s", 1_000_000), ("m", 3_000_000)):
            for k in range(8):
                tokens, loss = 10**6 * (k + 1), 4.0 - 0.3 * k - (0.2 if size == "m" else 0.0)
                base = [f"{size}_8M", n, n // 2, tokens, 10 * (k + 1), 6.0 * n * tokens, loss]
                w.writerow(base + ["pretrain", "loss", loss, "", "", 1000, ""])
                w.writerow(base + ["task", "acc", min(1.0, 0.25 + max(0.0, 2.5 - loss)), "", "", 100, 0.25])
    return run_dir


# ---------------------------------------------------------------- flags (9, 10, 16) and eval config


@pytest.mark.parametrize("flags, fragment", [
    (["--batch-size", "-4"], "argument --batch-size: must be positive, got -4"),
    (["--batch-size", "0"], "argument --batch-size: must be positive, got 0"),
    (["--max-examples", "0"], "argument --max-examples: must be positive, got 0"),
    (["--threads", "0"], "argument --threads: must be at least 1, got 0"),
    (["--lock-timeout", "-1"], "argument --lock-timeout: must be a positive number, got -1"),
    (["--device", "tpu"], "argument --device: unknown device 'tpu'"),
])
def test_bad_evaluate_flags(tmp_path: Path, capsys, flags: list[str], fragment: str):
    exit_2(capsys, ["evaluate", str(tmp_path), *flags], fragment)


def test_cuda_device_without_cuda(tmp_path: Path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    exit_2(capsys, ["evaluate", str(tmp_path), "--device", "cuda"], "argument --device: cuda: no CUDA device")


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("max_examples", 0), ("max_new_tokens", -1), ("bootstrap", -5), ("confidence", 1.5),
])
def test_bad_eval_config_fields(tmp_path: Path, field: str, value):
    from losslens.config import load_study

    cfg = write_study(tmp_path, **{f"eval__{field}": value})
    with pytest.raises(ConfigError, match=rf"study.yaml: eval.{field}: "):
        load_study(cfg)


# ---------------------------------------------------------------- checkpoints and their results (6, 11, 12)


@pytest.fixture(scope="module")
def _evaluated(tmp_path_factory) -> Path:
    from tests.eval_fixtures import make_study, write_tasks

    root = tmp_path_factory.mktemp("evaluated")
    study = make_study(root, runs={"xs_64K": [1024, 4096]}, tasks=write_tasks(root)[:1])
    assert main(["evaluate", str(study), "--no-progress"]) == 0
    return study


@pytest.fixture
def evaluated(_evaluated: Path, tmp_path: Path) -> Path:
    """A copy of a small evaluated study (one run, two checkpoints, one task)."""
    return Path(shutil.copytree(_evaluated, tmp_path / "study", symlinks=True))


def _ckpts(study: Path) -> list[Path]:
    return contracts.list_checkpoints(study / "xs_64K")


def _refused_and_table_kept(study: Path, capsys, *fragments: str) -> None:
    table = study / contracts.RESULTS_FILE
    before = table.read_bytes()
    exit_2(capsys, ["evaluate", str(study), "--no-progress"], *fragments)
    assert table.read_bytes() == before


def test_meta_json_cut_mid_object(evaluated: Path, capsys):
    meta = _ckpts(evaluated)[0] / contracts.META_FILE
    meta.write_text(meta.read_text()[:40])
    _refused_and_table_kept(evaluated, capsys, str(meta), "not valid JSON", "results.csv is left as it is")


def test_a_checkpoint_without_meta_json_keeps_its_results(evaluated: Path, capsys):
    ckpt = _ckpts(evaluated)[0]
    assert any(",1024," in l for l in (evaluated / contracts.RESULTS_FILE).read_text().splitlines())  # its rows
    (ckpt / contracts.META_FILE).unlink()
    _refused_and_table_kept(evaluated, capsys, str(ckpt), "no meta.json", "results.csv is left as it is")


@pytest.mark.parametrize("damage", ["truncated", "pickle"])
def test_broken_weights_are_reported_not_up_to_date(evaluated: Path, capsys, damage: str):
    weights = _ckpts(evaluated)[0] / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
        why = "truncated or damaged"
    else:
        import pickle

        weights.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
        why = "not a safetensors file"
    _refused_and_table_kept(evaluated, capsys, str(weights.parent), "model.safetensors", why)


def test_changed_weights_are_evaluated_again(evaluated: Path, capsys):
    from losslens.evaluate import evaluate_study
    from losslens.evaluate.config import EvaluateOptions
    from tests.eval_fixtures import save_checkpoint

    first, second = _ckpts(evaluated)
    before = (evaluated / contracts.RESULTS_FILE).read_text()
    meta = (first / contracts.META_FILE).read_bytes()
    shutil.rmtree(first)
    save_checkpoint(evaluated, "xs_64K", 1024, seed=99)  # other weights, same shapes
    (first / contracts.META_FILE).write_bytes(meta)  # and the very same meta.json
    summary = evaluate_study(evaluated, EvaluateOptions(progress=False), log=lambda _: None)
    assert summary.evaluated == 2 and summary.up_to_date == 2  # pretrain + task of the changed one only
    after = (evaluated / contracts.RESULTS_FILE).read_text()
    old_rows = {l for l in before.splitlines() if l.startswith("xs_64K,") and ",1024," in l}
    new_rows = {l for l in after.splitlines() if l.startswith("xs_64K,") and ",1024," in l}
    assert old_rows and new_rows and old_rows != new_rows


# ---------------------------------------------------------------- a study folder that travels (18-21)


def test_a_moved_study_folder_evaluates_from_another_directory(tmp_path: Path, monkeypatch, capsys):
    """Relative task paths in the config are stored so that the study folder can move."""
    import yaml

    from losslens.config import load_study
    from tests.eval_fixtures import make_study, write_tasks

    project = tmp_path / "project"
    write_tasks(project)
    study_dir = make_study(tmp_path / "made", runs={"xs_64K": [1024]}, tasks=[])
    raw = yaml.safe_load((study_dir / contracts.STUDY_FILE).read_text())
    raw["eval"]["tasks"] = ["tasks/mc.jsonl"]  # relative to the working directory, as a user would write it
    (project / "study.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(project)
    (study_dir / contracts.STUDY_FILE).write_text(load_study("study.yaml").to_yaml())  # what train writes

    moved = Path(shutil.move(str(study_dir), tmp_path / "elsewhere" / "study"))
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(moved), "--no-progress"]) == 0, capsys.readouterr().err[-2000:]
    rows = (moved / contracts.RESULTS_FILE).read_text().splitlines()
    assert any(",mc,acc," in r for r in rows)


def test_task_files_inside_the_study_folder_are_stored_relative_to_it(tmp_path: Path):
    from losslens.config import load_study

    inside = tmp_path / "study" / "tasks" / "mine.jsonl"
    inside.parent.mkdir(parents=True)
    inside.write_text('{"context": "a", "choices": ["b", "c"], "answer": 0}\n')
    cfg = write_study(tmp_path, eval__tasks=[str(inside)])
    assert load_study(cfg).eval.tasks == [os.path.join("tasks", "mine.jsonl")]


@pytest.mark.slow  # a training launch in a fresh process
def test_train_output_is_readable_by_others_and_quiet_about_deepspeed(tmp_path: Path):
    """Checkpoint weights follow the umask like every other file (not 0600); no DeepSpeed notice without
    DeepSpeed; a validation shard smaller than data.val_tokens is said."""
    from tests.conftest import run_cli

    out = tmp_path / "study"  # a fresh process: the notice would come while torch and accelerate are imported
    result = run_cli("train", str(write_study(tmp_path)), "--run", "xs_32768", "data.val_tokens=1B",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Setting accelerator to CPU" not in result.stderr + result.stdout
    assert "fewer than data.val_tokens 1,000,000,000" in result.stderr
    umask = os.umask(0)
    os.umask(umask)
    weights = sorted(out.glob("xs_32768/ckpt-*/model.safetensors"))
    assert weights
    for path in weights + sorted(out.glob("xs_32768/ckpt-*/train_state/*")):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, (0, 4)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, (3, 4)),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "2"}, (0, 2)),
])
def test_shard_from_a_slurm_array(monkeypatch, env: dict, expected: tuple):
    from losslens.argtypes import shard

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert shard("slurm") == expected


@pytest.mark.parametrize("argv, fragment", [
    (["--shard", "slurm"], "argument --shard: slurm: SLURM_ARRAY_TASK_ID"),
    (["--shard", "4/4"], "argument --shard: 4/4: need 0 <= I < N (parts count from 0"),
    (["--shard", "1of4"], "argument --shard: expected I/N counting from 0"),
])
def test_bad_shards(tmp_path: Path, monkeypatch, capsys, argv: list[str], fragment: str):
    for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(k, raising=False)
    exit_2(capsys, ["evaluate", str(tmp_path), *argv], fragment)


def test_strided_slurm_array_is_refused(monkeypatch, capsys, tmp_path: Path):
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4",
           "SLURM_ARRAY_TASK_MAX": "12"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    exit_2(capsys, ["evaluate", str(tmp_path), "--shard", "slurm"], "not a contiguous range")


# ---------------------------------------------------------------- a shared CPU (22)


def test_a_busy_core_is_not_counted_as_free():
    import subprocess
    import sys

    from losslens.threads import busy_cores

    cpu = sorted(os.sched_getaffinity(0))[0]
    spinner = subprocess.Popen([sys.executable, "-c", "import os, time\nos.sched_setaffinity(0, {%d})\n"
                                "print('spinning', flush=True)\n"
                                "end = time.time() + 20\nwhile time.time() < end: pass\n" % cpu],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert spinner.stdout.readline() == "spinning\n"
        assert busy_cores([cpu]) > 0.5  # the spinner holds it (other load only adds)
    finally:
        spinner.kill()
        spinner.wait()


def test_thread_defaults_respect_the_users_setting(monkeypatch):
    from losslens.threads import THREAD_VARIABLES, configure_for_shared_cpu, free_cores

    for v in (*THREAD_VARIABLES, "OMP_WAIT_POLICY"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert configure_for_shared_cpu() == 3
    assert all(os.environ[v] == "3" for v in THREAD_VARIABLES) and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert 1 <= free_cores() <= len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- results tables that make no sense (13)


def _edit_table(tmp_path: Path, edits: dict[tuple[int, str], str]) -> Path:
    """The small valid table of :func:`_analyzable_folder`, with cells changed: (file line, column) -> text."""
    import csv

    table = _analyzable_folder(tmp_path) / contracts.RESULTS_FILE
    rows = list(csv.reader(table.open(newline="")))
    for (line, column), value in edits.items():
        rows[line - 1][rows[0].index(column)] = value
    with table.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return table


@pytest.mark.parametrize("line, column, value, fragment", [
    (3, "value", "33", ":3: column 'value': metric 'acc' lies in [0, 1], got 33"),
    (2, "value", "-0.5", ":2: column 'value': metric 'loss' lies in [0, inf], got -0.5"),
    (5, "chance", "7", ":5: column 'chance': must be a chance level in [0, 1], got 7"),
    (3, "loss", "3.5", ":3: column 'loss': 3.5 for run 's_8M' at 1000000 tokens, but line 2 says 4"),
    (3, "flops", "1e15", ":3: column 'flops': 1e+15 for run 's_8M' at 1000000 tokens, but line 2 says 6e+12"),
])
def test_results_table_values_that_make_no_sense(tmp_path: Path, capsys, line, column, value, fragment):
    table = _edit_table(tmp_path, {(line, column): value})
    before = table.read_bytes()
    exit_2(capsys, ["analyze", str(table.parent), "--no-plots"], str(table) + fragment)
    assert table.read_bytes() == before and not (table.parent / "report.json").exists()


def test_unbounded_external_metrics_pass(tmp_path: Path):
    """A perplexity is not a fraction: only metrics declared bounded are checked."""
    from losslens.analyze.table import read_results

    table = _edit_table(tmp_path, {(3, "metric"): "word_perplexity", (3, "value"): "45.2", (3, "chance"): ""})
    assert read_results(table).cols["value"][1] == 45.2


# ---------------------------------------------------------------- task files that cannot mean what they say (17)


@pytest.mark.parametrize("line, fragment", [
    ('{"context": "2+2=", "choices": ["4", "5"], "answer": 0, "answer": 1}',
     "key 'answer' given twice (JSON would silently keep the last)"),
    ('{"context": "2+2=", "choices": ["4"], "answer": 0}',
     "'choices' has 1 choice; a multiple-choice example needs at least 2"),
    ('{"context": "2+2=", "choices": ["4", "5", "4"], "answer": 0}', "choices 0 and 2 are identical ('4')"),
    ('{"prompt": "2+2=", "reference": "4", "stop": ["\\n"], "prompt": "3+3="}', "key 'prompt' given twice"),
])
def test_task_files_that_cannot_mean_what_they_say(tmp_path: Path, capsys, line: str, fragment: str):
    from tests.eval_fixtures import make_study

    task = tmp_path / "bad.jsonl"
    good = '{"context": "1+1=", "choices": ["2", "3"], "answer": 0}' if "choices" in line else \
        '{"prompt": "1+1=", "reference": "2", "stop": ["\\n"]}'
    task.write_text(good + "\n" + line + "\n")
    study = make_study(tmp_path, runs={"xs_64K": [1024]}, tasks=[])
    exit_2(capsys, ["evaluate", str(study), "--tasks", str(task), "--no-progress"], f"{task}:2: {fragment}")
    assert not (study / contracts.RESULTS_FILE).exists()


# ---------------------------------------------------------------- characters the tokenizer cannot encode (15)


def test_characters_outside_the_vocabulary_are_counted_once_per_task(tmp_path: Path, capsys):
    from tests.eval_fixtures import ALPHABET, make_study

    assert "ß" not in ALPHABET and "→" not in ALPHABET  # outside the checkpoints' character vocabulary
    task = tmp_path / "odd.jsonl"
    task.write_text("".join(json.dumps(ex) + "\n" for ex in [
        {"context": "Straße →", "choices": [" a", " b"], "answer": 0},
        {"context": "1+1=", "choices": ["2", "ßß"], "answer": 0},
        {"context": "2+2=", "choices": ["4", "5"], "answer": 0},
    ]))
    study = make_study(tmp_path, runs={"xs_64K": [1024, 4096]}, tasks=[str(task)])
    assert main(["evaluate", str(study), "--no-progress"]) == 0
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
    assert warnings == [f"warning: task 'odd' ({task}): 4 characters map to the tokenizer's unknown token '<unk>', "
                        f"so they are scored as one another: 'ß', '→'"]
    rows = (study / contracts.RESULTS_FILE).read_text().splitlines()
    assert sum(",odd," in r for r in rows) > 0  # still scored: a warning, not a refusal


def test_a_task_the_tokenizer_encodes_is_not_warned_about(tmp_path: Path, capsys):
    from tests.eval_fixtures import make_study

    study = make_study(tmp_path, runs={"xs_64K": [1024]})
    assert main(["evaluate", str(study), "--no-progress"]) == 0
    assert "warning:" not in capsys.readouterr().err
