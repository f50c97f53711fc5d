"""The sweep: every checkpoint of a study x (pretraining loss + every task), incremental and shardable.

Layout of the results, beside the checkpoints (which stay read-only)::

    RUN_DIR/evals/<run>/ckpt-<tokens>/pretrain.json    loss and bits per byte
    RUN_DIR/evals/<run>/ckpt-<tokens>/<task>.json      aggregates (+ per-example records on request)
    RUN_DIR/results.csv                                one tidy table, rebuilt from all the JSON files

A (checkpoint, task) *unit* is done when its JSON exists with the expected fingerprint: a hash of
the checkpoint's ``meta.json`` and weights, the task's data and settings, and the evaluation settings that
change numbers (not the batch size or device: results do not depend on them). Re-running a
finished sweep therefore loads no model. Before working on a unit an evaluator claims it with a
lock file (:mod:`losslens.evaluate.claims`), so evaluators started together (``--shard i/n`` job
arrays, ``accelerate launch``, or plain duplicates) never repeat work; each one, when it ends,
rebuilds ``results.csv`` from every JSON file under an exclusive lock, so the last to finish
writes the complete table.

lm-evaluation-harness tasks (``lm_eval=[...]``, :mod:`losslens.evaluate.harness`) are units too, with
their own fingerprints; a checkpoint's pending harness units run together in one harness call,
after its native units (the pretraining loss always comes from the native path).
"""

from __future__ import annotations

import csv
import fcntl
import gc
import hashlib
import io
import json
import math
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from tqdm.auto import tqdm

from losslens import contracts
from losslens.config import load_study
from losslens.errors import CheckpointError, DataError, LossLensError
from losslens.evaluate.claims import Claim
from losslens.evaluate.harness import Harness, HarnessTask, parse_names
from losslens.evaluate.runner import TaskSettings, evaluate_pretrain, evaluate_task, read_validation
from losslens.evaluate.tasks import PRETRAIN, Task, resolve_tasks
from losslens.evaluate.weights import check_study_checkpoints, checkpoint_fingerprint
from losslens.fsio import atomic_write_json, atomic_write_text

EVAL_DIR = "evals"  # where losslens.analyze.table.load_examples looks for per-example records
TABLE_LOCK = ".results.lock"
_META_COLUMNS = ("run", "n_params", "n_params_nonembed", "tokens", "step", "flops")


@dataclass
class SweepSummary:
    checkpoints: int = 0  # checkpoints in this evaluator's shard
    evaluated: int = 0  # units computed by this process
    up_to_date: int = 0  # units already done
    busy: int = 0  # units claimed by another evaluator at the time
    models_loaded: int = 0
    rows: int = 0  # rows in results.csv
    table: Optional[Path] = None
    results: list[Path] = field(default_factory=list)  # JSON files this process wrote


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise LossLensError(f"--shard {text}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise LossLensError(f"--shard {text}: need 0 <= i < n")
    return i, n


def in_shard(ckpt: Path, shard: tuple[int, int]) -> bool:
    """A checkpoint's shard is a hash of its run and name: stable when checkpoints are added or removed."""
    i, n = shard
    return zlib.crc32(f"{ckpt.parent.name}/{ckpt.name}".encode()) % n == i


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_hash(ckpt: Path) -> str:
    """Identity of a checkpoint: its meta.json and its weights (:mod:`losslens.evaluate.weights`)."""
    return checkpoint_fingerprint(ckpt)


def result_path(study_dir: Path, ckpt: Path, task: str) -> Path:
    return study_dir / EVAL_DIR / ckpt.parent.name / ckpt.name / f"{task}.json"


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _default_device(device: Optional[str]) -> str:
    if device:
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def load_checkpoint(ckpt: Path, dtype: str, device: str):
    """Model and tokenizer of a checkpoint, from local files only (safetensors, no remote code)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            ckpt, dtype=getattr(torch, dtype), attn_implementation="sdpa", local_files_only=True,
            trust_remote_code=False, use_safetensors=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(ckpt, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises many types for a broken directory
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{ckpt}: cannot load model or tokenizer ({type(e).__name__}: {first})") from None
    if len(tokenizer) > model.config.vocab_size:  # ids past the embedding would crash or read garbage
        raise CheckpointError(
            f"{ckpt}: the tokenizer has {len(tokenizer)} tokens, more than the model's vocabulary of "
            f"{model.config.vocab_size}"
        )
    return model.to(device).eval(), tokenizer


class _Unit:
    """One (checkpoint, task) pair: where its result goes and what fingerprint marks it done."""

    def __init__(self, study_dir: Path, ckpt: Path, task: Union[Task, HarnessTask, None], ckpt_hash: str,
                 settings: dict):
        self.ckpt, self.task = ckpt, task
        self.name = task.name if task else PRETRAIN
        self.path = result_path(study_dir, ckpt, self.name)
        self.ckpt_hash = ckpt_hash
        self.fingerprint = _hash({"checkpoint": ckpt_hash, "task": task.fingerprint if task else PRETRAIN,
                                  "settings": settings})

    def done(self, per_example: bool) -> bool:
        old = _read_json(self.path)
        if old is None or old.get("fingerprint") != self.fingerprint:
            return False
        return not per_example or self.task is None or "examples" in old


def _claim(unit: _Unit, force: bool, per_example: bool, lock_timeout: float, summary: SweepSummary) -> Optional[Claim]:
    """The unit's claim when this process is to compute it; None when another evaluator has it or did it."""
    claim = Claim(unit.path.parent / f".{unit.name}.lock", timeout=lock_timeout)
    unit.path.parent.mkdir(parents=True, exist_ok=True)
    if not claim.acquire():
        summary.busy += 1
        return None
    if not force and unit.done(per_example):  # finished by another evaluator since we looked
        summary.up_to_date += 1
        claim.release()
        return None
    return claim


def _save(unit: _Unit, result: dict, elapsed: float, summary: SweepSummary, log: Callable[[str], None]) -> None:
    ckpt = unit.ckpt
    result.update({
        "fingerprint": unit.fingerprint, "checkpoint_hash": unit.ckpt_hash,
        "checkpoint": {k: contracts.read_meta(ckpt).get(k) for k in _META_COLUMNS} | {"path": str(ckpt)},
        "elapsed_s": round(elapsed, 3),
    })
    atomic_write_json(unit.path, result)
    summary.evaluated += 1
    summary.results.append(unit.path)
    shown = ", ".join(f"{m}={v['value']:.4g}" for m, v in list(result["metrics"].items())[:3])
    log(f"evaluated {ckpt.parent.name}/{ckpt.name} {unit.name}: {shown} ({elapsed:.1f} s)")


def _local_dir(path: Optional[str | Path], study_dir: Path) -> Optional[Path]:
    """A folder given on the command line or in study.yaml: as given, else inside the study folder."""
    if not path:
        return None
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (study_dir / path).exists():
        return study_dir / path
    return path


def evaluate_study(
    study_dir: str | Path,
    *,
    tasks: Optional[list[str]] = None,
    shard: Optional[tuple[int, int]] = None,
    batch_size: Optional[int] = None,
    device: Optional[str] = None,
    per_example: Optional[bool] = None,
    max_examples: Optional[int] = None,
    lm_eval: Optional[list[str]] = None,
    lm_eval_include: Optional[str | Path] = None,
    force: bool = False,
    progress: bool = True,
    lock_timeout: float = 6 * 3600,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> SweepSummary:
    """Evaluate what is not yet evaluated in a study folder, then rebuild ``results.csv``.

    ``tasks`` replaces the study's ``eval.tasks``, ``lm_eval`` (harness task, group or tag names)
    its ``eval.lm_eval``; ``shard`` = (i, n) takes the i-th of n disjoint parts of the checkpoints
    (by default the process's rank under ``accelerate launch``, else all); ``force`` recomputes
    done units. Other arguments override the study's ``eval:``.
    """
    study_dir = Path(study_dir)
    study = load_study(study_dir / contracts.STUDY_FILE)
    cfg = study.eval
    world = int(os.environ.get("WORLD_SIZE", 1))
    if shard is None:
        shard = (int(os.environ.get("RANK", 0)), world) if world > 1 else (0, 1)
    batch_size = batch_size or cfg.batch_size
    per_example = cfg.per_example if per_example is None else per_example
    task_list = resolve_tasks(cfg.tasks if tasks is None else tasks, study_dir, study)
    settings = TaskSettings(seed=cfg.seed, bootstrap=cfg.bootstrap, confidence=cfg.confidence,
                            max_examples=max_examples if max_examples is not None else cfg.max_examples,
                            max_new_tokens=cfg.max_new_tokens)
    val_max_tokens = cfg.val_tokens or study.checkpoints.val_tokens
    seq_len = study.model.context
    data_json = study_dir / contracts.DATA_DIR / contracts.DATA_META_FILE
    pretrain_settings = {"val_tokens": val_max_tokens, "seq_len": seq_len, "confidence": cfg.confidence,
                         "data": hashlib.sha256(data_json.read_bytes()).hexdigest()[:16] if data_json.is_file() else None}
    harness_names = parse_names(cfg.lm_eval if lm_eval is None else lm_eval)
    harness = harness_tasks = None
    if harness_names:
        if world > 1:  # lm-eval would split each checkpoint's requests across the processes
            raise LossLensError("--lm-eval runs in one process per evaluator, not under accelerate launch or "
                                "torchrun: use --shard i/n job arrays")
        harness_settings = {"dtype": cfg.dtype, "limit": settings.max_examples, "bootstrap": cfg.bootstrap,
                            "confidence": cfg.confidence}
        harness = Harness(harness_names, _local_dir(lm_eval_include or cfg.lm_eval_include, study_dir),
                          harness_settings, log=log)
        harness_tasks = harness.tasks
        native = {PRETRAIN: "the pretraining loss"} | {t.name: str(t.source) for t in task_list}
        for t in harness_tasks:
            if t.name in native:
                raise DataError(f"--lm-eval: task name {t.name!r} is also used by {native[t.name]}: "
                                f"rename one (results are stored by task name)")

    check_study_checkpoints(study_dir)  # a broken checkpoint stops us before results.csv is rebuilt
    ckpts = [c for run in contracts.list_runs(study_dir) for c in contracts.list_checkpoints(run)]
    mine = [c for c in ckpts if in_shard(c, shard)]
    summary = SweepSummary(checkpoints=len(mine))
    log(f"evaluate: {study_dir}: {len(mine)} of {len(ckpts)} checkpoints (shard {shard[0]}/{shard[1]}), "
        f"tasks: {', '.join([PRETRAIN] + [t.name for t in task_list])}"
        + (f"; lm-eval: {', '.join(t.name for t in harness_tasks)}" if harness_tasks else ""))
    device = None if not mine else _default_device(device)
    validation = None

    bar = tqdm(mine, desc="checkpoints", unit=" ckpt", disable=not progress or None)
    for ckpt in bar:
        bar.set_postfix_str(f"{ckpt.parent.name}/{ckpt.name}")
        ckpt_hash = checkpoint_hash(ckpt)
        units = [_Unit(study_dir, ckpt, None, ckpt_hash, pretrain_settings)]
        units += [_Unit(study_dir, ckpt, t, ckpt_hash, asdict(settings)) for t in task_list]
        units += [_Unit(study_dir, ckpt, t, ckpt_hash, {}) for t in harness_tasks or []]  # settings: in t.fingerprint
        pending = [u for u in units if force or not u.done(per_example)]
        summary.up_to_date += len(units) - len(pending)
        model = scorer = None
        for unit in pending:
            if isinstance(unit.task, HarnessTask):
                continue  # below, all at once
            claim = _claim(unit, force, per_example, lock_timeout, summary)
            if claim is None:
                continue
            try:
                if model is None:
                    model, tokenizer = load_checkpoint(ckpt, cfg.dtype, device)
                    summary.models_loaded += 1
                    from losslens.evaluate.scoring import Scorer  # torch: only when there is work

                    scorer = Scorer(model, tokenizer, batch_size=batch_size, device=device)
                start = time.perf_counter()
                if unit.task is None:
                    if validation is None:
                        validation = read_validation(study_dir)
                    result = evaluate_pretrain(model, validation[0], validation[1], seq_len, val_max_tokens,
                                               batch_size, cfg.confidence, device)
                else:
                    result = evaluate_task(scorer, unit.task, settings, per_example=per_example, progress=progress)
                _save(unit, result, time.perf_counter() - start, summary, log)
            finally:
                claim.release()
        if model is not None:
            del model, scorer
            gc.collect()
        harness_units = [u for u in pending if isinstance(u.task, HarnessTask)]
        if harness_units:
            _run_harness(harness, harness_units, force=force, per_example=per_example, lock_timeout=lock_timeout,
                         summary=summary, log=log, dtype=cfg.dtype, device=device, batch_size=batch_size,
                         limit=settings.max_examples, bootstrap=cfg.bootstrap, confidence=cfg.confidence,
                         progress=progress)
    bar.close()

    summary.table, summary.rows = write_results_table(study_dir)
    if summary.evaluated == 0 and summary.busy == 0:
        log(f"evaluate: nothing to evaluate: all {summary.up_to_date} results up to date")
    else:
        log(f"evaluate: {summary.evaluated} evaluated, {summary.up_to_date} up to date, "
            f"{summary.busy} claimed by other evaluators")
    log(f"evaluate: {summary.rows} rows in {summary.table}")
    return summary


def _run_harness(harness: Harness, units: list[_Unit], *, force: bool, per_example: bool, lock_timeout: float,
                 summary: SweepSummary, log: Callable[[str], None], **run) -> None:
    """A checkpoint's pending harness units: claim them, run them in one harness call, save each result."""
    claims = {}
    try:
        for unit in units:
            claim = _claim(unit, force, per_example, lock_timeout, summary)
            if claim is not None:
                claims[unit.name] = (unit, claim)
        if not claims:
            return
        start = time.perf_counter()
        ckpt = units[0].ckpt
        results = harness.evaluate(ckpt, [u.task for u, _ in claims.values()], per_example=per_example, **run)
        summary.models_loaded += 1
        elapsed = time.perf_counter() - start  # of the whole call, shared by its tasks
        for unit, _ in claims.values():
            _save(unit, results[unit.name], elapsed, summary, log)
    finally:
        for _, claim in claims.values():
            claim.release()
        gc.collect()


# ---------------------------------------------------------------- the table


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return str(value)


def _metric_order(name: str) -> tuple:
    known = list(contracts.METRICS)  # the pretraining loss first, then the task metrics
    return (known.index(name), name) if name in known else (len(known), name)


def collect_rows(study_dir: Path) -> list[dict]:
    """Rows of results.csv from the JSON files of the study's current checkpoints.

    A result counts only if it was computed on the checkpoint as it is now (same meta.json hash).
    Every row's ``loss`` is the validation loss this stage measured for the checkpoint; a
    checkpoint whose pretraining loss is not measured yet contributes no rows.
    """
    rows = []
    for run in contracts.list_runs(study_dir):
        for ckpt in contracts.list_checkpoints(run):
            current = checkpoint_hash(ckpt)
            folder = study_dir / EVAL_DIR / run.name / ckpt.name
            results = [r for r in (_read_json(p) for p in sorted(folder.glob("*.json")))
                       if r is not None and r.get("checkpoint_hash") == current]
            pretrain = next((r for r in results if r.get("task") == PRETRAIN), None)
            if pretrain is None:
                continue
            meta = contracts.read_meta(ckpt)
            loss = pretrain["metrics"]["loss"]["value"]
            results.sort(key=lambda r: (r["task"] != PRETRAIN, r["task"]))
            for r in results:
                for metric in sorted(r["metrics"], key=_metric_order):
                    agg = r["metrics"][metric]
                    rows.append({
                        **{k: meta.get(k) for k in _META_COLUMNS}, "loss": loss, "task": r["task"],
                        "metric": metric, "value": agg["value"], "ci_low": agg.get("ci_low"),
                        "ci_high": agg.get("ci_high"), "n": agg.get("n"), "chance": agg.get("chance"),
                    })
    rows.sort(key=lambda r: (r["run"], r["tokens"]))  # stable: keeps task and metric order within
    return rows


def write_results_table(study_dir: str | Path) -> tuple[Path, int]:
    """Rebuild ``RUN_DIR/results.csv`` atomically, under an exclusive lock (see the module docstring)."""
    study_dir = Path(study_dir)
    (study_dir / EVAL_DIR).mkdir(exist_ok=True)
    table = study_dir / contracts.RESULTS_FILE
    with open(study_dir / EVAL_DIR / TABLE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        rows = collect_rows(study_dir)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(contracts.RESULTS_COLUMNS)
        for r in rows:
            writer.writerow([_cell(r[c]) for c in contracts.RESULTS_COLUMNS])
        atomic_write_text(table, buf.getvalue())
    return table, len(rows)
