"""Issue 21: nothing overwritten that the user did not ask to replace, every input of a result in its
fingerprint, locks that a crash cannot wedge, faults in one line. Each case is in docs/errors.md.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from losslens import contracts
from losslens.evaluate import sweep
from losslens.evaluate.claims import HOST, Claim
from losslens.evaluate.config import EvaluateOptions
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


def _several_tasks(tmp_path: Path, n_tasks: int = 4) -> Path:
    """A folder with a small valid results table: three sizes, a loss sweep, ``n_tasks`` tasks."""
    run_dir = tmp_path / "analyzed"
    run_dir.mkdir()
    with open(run_dir / contracts.RESULTS_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(contracts.RESULTS_COLUMNS)
        for i, (size, n) in enumerate((("s", 10**6), ("m", 3 * 10**6), ("l", 9 * 10**6))):
            for k in range(8):
                tokens, loss = 10**6 * (k + 1), 4.0 - 0.3 * k - 0.2 * i
                base = [f"{size}_8M", n, n // 2, tokens, 10 * (k + 1), 6.0 * n * tokens, loss]
                w.writerow(base + ["pretrain", "loss", loss, "", "", 1000, ""])
                for t in range(n_tasks):
                    acc = min(1.0, 0.25 + max(0.0, 2.5 + 0.1 * t - loss))
                    w.writerow(base + [f"task{t}", "acc", acc, "", "", 100, 0.25])
    return run_dir


def _sweep(study_dir: Path) -> dict[str, int]:
    """Evaluate; which units were computed (by name) and how many were up to date."""
    logs: list[str] = []
    summary = sweep.evaluate_study(study_dir, EvaluateOptions(progress=False), log=logs.append)
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
    summary = sweep.evaluate_study(study_dir, EvaluateOptions(progress=False), log=lambda m: None)
    assert summary.busy == 0 and summary.evaluated == 1 and summary.rows == 2


# ---------------------------------------------------------------- §4 a full disk


@contextlib.contextmanager
def _full_disk():
    """Every write that grows a file fails (EFBIG, as a full disk fails with ENOSPC): a file-size limit of
    0 bytes on this process and the workers it forks, lifted afterwards. No root, no mount needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` and its bytes, but those in temporary (``.tmp-``) folders, which every
    listing skips (the tests check separately that none are left)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).parts[0].startswith(".tmp-")}


@contextlib.contextmanager
def _small_disk(where: Path, size: str = "4m"):
    """A real file system of ``size`` at ``where`` (a tmpfs: needs root), unmounted afterwards."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _fill(disk: Path) -> None:
    with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 65536)


@pytest.mark.parametrize("how", ["file-size limit", "full tmpfs"])
def test_a_full_disk_during_evaluate_is_one_line_and_loses_nothing(tmp_path: Path, how: str):
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(_small_disk(tmp_path / "disk", "16m")) if how == "full tmpfs" else tmp_path
        study_dir = make_study(root, runs={"xs_64K": [1024, 4096]}, tasks=[])
        assert call_cli("evaluate", str(study_dir)).returncode == 0
        before = _tree(study_dir)
        if how == "full tmpfs":
            _fill(root)
            result = call_cli("evaluate", str(study_dir), "--force")
        else:
            with _full_disk():
                result = call_cli("evaluate", str(study_dir), "--force")
        _one_line_exit_2(result, str(study_dir / contracts.EVALS_DIR), ".lock", "cannot claim")
        assert _tree(study_dir) == before


@pytest.mark.parametrize("how", ["file-size limit", "full tmpfs"])
def test_a_full_disk_during_analyze_is_one_line_and_keeps_the_old_report(tmp_path: Path, monkeypatch, how: str):
    monkeypatch.setenv("LOSSLENS_ANALYZE_WORKERS", "2")  # on a full tmpfs the error comes from a plot worker
    with contextlib.ExitStack() as stack:
        if how == "full tmpfs":
            run_dir = shutil.copytree(_several_tasks(tmp_path, 2), stack.enter_context(_small_disk(tmp_path / "disk")) / "r")
        else:
            run_dir = _several_tasks(tmp_path, 2)
        assert call_cli("analyze", str(run_dir), "--bootstrap", "0").returncode == 0
        before = _tree(run_dir)
        if how == "full tmpfs":
            _fill(run_dir.parent)
            result = call_cli("analyze", str(run_dir), "--bootstrap", "0")
        else:
            with _full_disk():
                result = call_cli("analyze", str(run_dir), "--bootstrap", "0")
        _one_line_exit_2(result, str(run_dir / "plots"))
        assert _tree(run_dir) == before
        assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]


# ---------------------------------------------------------------- §1 nothing overwritten


LM_EVAL_SUITE = Path(__file__).resolve().parent / "data" / "lm_eval_04"


@pytest.mark.parametrize("target", ["mapping.yaml", "small_step1000.json", "."])
def test_import_results_out_naming_an_input_is_refused(tmp_path: Path, target: str):
    suite = shutil.copytree(LM_EVAL_SUITE, tmp_path / "suite")
    before = _tree(suite)
    out = suite / target
    result = call_cli("import-results", str(suite / "mapping.yaml"), "--out", str(out))
    _one_line_exit_2(result, "--out", "would be overwritten")
    assert _tree(suite) == before


def test_import_results_out_through_a_link_to_an_input_is_refused(tmp_path: Path):
    suite = shutil.copytree(LM_EVAL_SUITE, tmp_path / "suite")
    (tmp_path / "table.csv").symlink_to(suite / "mapping.yaml")
    before = _tree(suite)
    _one_line_exit_2(call_cli("import-results", str(suite / "mapping.yaml"), "--out", str(tmp_path / "table.csv")),
                     "--out", "mapping.yaml")
    assert _tree(suite) == before


def _manifest_of(study: Path, path: Path, name: str = "external") -> Path:
    entries = [{"run": f"ext-{run.name}", "path": str(ckpt), "tokens": contracts.read_meta(ckpt)["tokens"]}
               for run in contracts.list_runs(study) for ckpt in contracts.list_checkpoints(run)[-1:]]
    path.write_text(yaml.safe_dump({"name": name, "context": 32, "checkpoints": entries,
                                    "validation": {"data_dir": str(study / "data"), "tokens": 1024}}))
    return path


def test_import_into_a_trained_study_is_refused(trained_tiny_copy: Path, tmp_path: Path):
    before = _tree(trained_tiny_copy)
    manifest = _manifest_of(trained_tiny_copy, tmp_path / "manifest.yaml")
    result = call_cli("import", str(manifest), "--out", str(trained_tiny_copy))
    _one_line_exit_2(result, str(trained_tiny_copy), "holds a trained study")
    assert _tree(trained_tiny_copy) == before


def test_import_over_another_suite_or_its_own_checkpoints_is_refused(trained_tiny: Path, tmp_path: Path):
    out = tmp_path / "ext"
    assert call_cli("import", str(_manifest_of(trained_tiny, tmp_path / "a.yaml", "suite-a")), "--out", str(out)).returncode == 0
    assert call_cli("import", str(_manifest_of(trained_tiny, tmp_path / "a.yaml", "suite-a")), "--out", str(out)).returncode == 0
    before = _tree(out)
    _one_line_exit_2(call_cli("import", str(_manifest_of(trained_tiny, tmp_path / "b.yaml", "suite-b")), "--out", str(out)),
                     "suite-a", "mix")
    _one_line_exit_2(call_cli("import", str(_manifest_of(out, tmp_path / "c.yaml", "suite-a")), "--out", str(out)),
                     "--out", "would be overwritten")
    assert _tree(out) == before


def test_train_into_an_imported_study_is_refused(trained_tiny: Path, tmp_path: Path):
    out = tmp_path / "ext"
    assert call_cli("import", str(_manifest_of(trained_tiny, tmp_path / "a.yaml")), "--out", str(out)).returncode == 0
    before = _tree(out)
    cfg = write_study(tmp_path, out_dir=str(out))
    _one_line_exit_2(call_cli("train", str(cfg)), str(out), "imported study")
    assert _tree(out) == before


@pytest.mark.parametrize("command", ["train", "run"])
def test_a_refused_config_is_not_saved(trained_tiny_copy: Path, tmp_path: Path, command: str):
    """A finished study and a changed lr: refused, and study.yaml (which a later evaluate reads) unchanged."""
    cfg = write_study(tmp_path, out_dir=str(trained_tiny_copy), train__optimizer={"lr": 0.01},
                      eval__tasks=[str(Path(__file__).parent / "data" / "tasks" / "sums_mc.jsonl")])
    before = _tree(trained_tiny_copy)
    _one_line_exit_2(call_cli(command, str(cfg)), str(cfg), "train.optimizer.lr: 0.003 -> 0.01", "refused")
    assert _tree(trained_tiny_copy) == before


def test_train_on_a_finished_study_says_up_to_date(trained_tiny_copy: Path, tmp_path: Path):
    cfg = write_study(tmp_path, out_dir=str(trained_tiny_copy))
    result = call_cli("train", str(cfg))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"train: all 4 runs up to date in {trained_tiny_copy}" in result.stdout
    assert result.stdout.count(": up to date, ") == 4


def test_an_unknown_run_is_refused_before_tokenizing(tmp_path: Path):
    cfg = write_study(tmp_path)
    _one_line_exit_2(call_cli("train", str(cfg), "--run", "nosuchrun"), "--run nosuchrun: no such run", "xs_32768")
    assert not (tmp_path / "study").exists()  # no study.yaml, no token shards


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGKILL"])
def test_a_signal_to_analyze_stops_its_workers_and_keeps_the_old_report(tmp_path: Path, sig: int):
    run_dir = _several_tasks(tmp_path, n_tasks=3)
    assert call_cli("analyze", str(run_dir), "--bootstrap", "0").returncode == 0
    before = _tree(run_dir)
    proc = subprocess.Popen([sys.executable, "-m", "losslens", "analyze", str(run_dir), "--bootstrap", "0"],
                            env={**os.environ, "LOSSLENS_ANALYZE_WORKERS": "2"}, stderr=subprocess.PIPE, text=True)
    workers, deadline = [], time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # until the workers have drawn a first figure
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if workers and list(run_dir.glob(".tmp-*/plots/*.png")):
            break
        time.sleep(0.02)
    assert workers and proc.poll() is None, "analyze ended before its plot workers were seen"
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == (143 if sig == signal.SIGTERM else -sig), proc.stderr.read()[-2000:]
    time.sleep(2)  # a surviving worker would go on writing figures now
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]
    assert _tree(run_dir) == before  # the old report, with its own plots, as it was
    if sig == signal.SIGKILL:  # no clean-up was possible: the next analyze removes the leftovers
        assert call_cli("analyze", str(run_dir), "--bootstrap", "0", "--no-plots").returncode == 0
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]


def test_a_new_report_replaces_all_of_the_old_one(tmp_path: Path):
    run_dir = _several_tasks(tmp_path, n_tasks=2)
    assert call_cli("analyze", str(run_dir), "--bootstrap", "0").returncode == 0
    assert list((run_dir / "plots").glob("*.png"))
    (run_dir / "results.csv").write_text((run_dir / "results.csv").read_text().replace("task1", "other"))
    assert call_cli("analyze", str(run_dir), "--bootstrap", "0", "--no-plots").returncode == 0
    assert not (run_dir / "plots").exists()  # no plots of an older report beside the new one
    assert "other" in (run_dir / "report.md").read_text()


# ---------------------------------------------------------------- §5 shared machines


def test_time_of_niced_jobs_counts_as_free():
    from losslens.threads import cpu_times

    before = ["cpu  0 0 0 0 0 0 0 0 0 0\n", "cpu0 100 50 10 1000 5 0 0 0 0 0\n", "cpu1 100 0 10 1000 5 0 0 0 0 0\n"]
    # 100 jiffies later: cpu0 spent them all in a niced process, cpu1 in an ordinary one
    after = ["cpu  0 0 0 0 0 0 0 0 0 0\n", "cpu0 100 150 10 1000 5 0 0 0 0 0\n", "cpu1 200 0 10 1000 5 0 0 0 0 0\n"]
    for nice_is_free, expected in ((True, {"cpu0": 0.0, "cpu1": 1.0}), (False, {"cpu0": 1.0, "cpu1": 1.0})):
        a, b = cpu_times(before, nice_is_free), cpu_times(after, nice_is_free)
        assert set(a) == {"cpu0", "cpu1"}  # the all-CPU line is not a core
        busy = {cpu: 1 - (b[cpu][0] - a[cpu][0]) / (b[cpu][1] - a[cpu][1]) for cpu in a}
        assert busy == expected


def test_threads_are_decided_again_when_losslens_chose_them(monkeypatch):
    import torch

    from losslens import threads

    for v in (*threads.THREAD_VARIABLES, "OMP_WAIT_POLICY"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(threads, "_chosen_here", set())
    previous = torch.get_num_threads()
    try:
        n = threads.configure_for_shared_cpu()
        assert 1 <= n <= len(threads.allowed_cpus())
        again = threads.use_free_cores()
        assert again is not None and torch.get_num_threads() == again == int(os.environ["OMP_NUM_THREADS"])
        for v in threads.THREAD_VARIABLES:
            monkeypatch.delenv(v, raising=False)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setattr(threads, "_chosen_here", set())
        assert threads.configure_for_shared_cpu() == 1 and threads.use_free_cores() is None  # the user's setting stands
    finally:
        torch.set_num_threads(previous)


def test_analyze_out_that_would_replace_its_results_table_is_refused(tmp_path: Path):
    run_dir = _several_tasks(tmp_path)
    plots = run_dir / "plots"
    plots.mkdir()
    table = shutil.copy(run_dir / contracts.RESULTS_FILE, plots / "results.csv")  # the report replaces plots/
    _one_line_exit_2(call_cli("analyze", "--results", str(table), "--out", str(run_dir), "--bootstrap", "0"),
                     "--out", "holds the input", "would be overwritten")
    assert Path(table).is_file() and not (run_dir / "report.md").exists()


def test_a_study_folder_that_would_replace_its_own_corpus_is_refused(tmp_path: Path):
    """Token shards go to OUT/data, a folder replaced as a whole: a corpus kept there would be deleted."""
    corpus = tmp_path / "study" / "data" / "corpus.txt"
    corpus.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "data" / "tiny_corpus.txt", corpus)
    cfg = write_study(tmp_path, data__paths=[str(corpus)])
    _one_line_exit_2(call_cli("train", str(cfg)), "out_dir", "holds the input", str(corpus))
    assert corpus.is_file() and [p.name for p in (tmp_path / "study").iterdir()] == ["data"]


@pytest.mark.parametrize("command", ["train", "import"])
def test_a_data_folder_losslens_did_not_write_is_not_replaced(trained_tiny: Path, tmp_path: Path, command: str):
    out = tmp_path / "project"
    (out / "data").mkdir(parents=True)
    (out / "data" / "notes.txt").write_text("mine")
    if command == "train":
        result = call_cli("train", str(write_study(tmp_path, out_dir=str(out))))
    else:
        result = call_cli("import", str(_manifest_of(trained_tiny, tmp_path / "m.yaml")), "--out", str(out))
    _one_line_exit_2(result, str(out / "data"), "not a losslens data folder")
    assert _tree(out) == {"data/notes.txt": b"mine"}


def test_run_checks_its_task_files_before_training(tmp_path: Path):
    cfg = write_study(tmp_path, eval__tasks=[str(tmp_path / "nowhere.jsonl")])
    _one_line_exit_2(call_cli("run", str(cfg)), "eval.tasks", "nowhere.jsonl", "no such task file")
    assert not (tmp_path / "study").exists()
