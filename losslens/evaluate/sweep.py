"""The sweep: every checkpoint of a study x (pretraining loss + every task), incremental and shardable.

Layout of the results, beside the checkpoints (which stay read-only)::

    RUN_DIR/evals/<run>/ckpt-<tokens>/pretrain.json    loss and bits per byte
    RUN_DIR/evals/<run>/ckpt-<tokens>/<task>.json      aggregates (+ per-example records on request)
    RUN_DIR/results.csv                                one tidy table, rebuilt from all the JSON files

The work is a list of *units* (:mod:`losslens.evaluate.units`): the pretraining loss, each task,
each lm-evaluation-harness task. For every checkpoint and unit the sweep does the same three
things, whatever the unit: **claim** it (unless its JSON exists with the expected fingerprint: a
hash of every input of the result, listed in :mod:`losslens.evaluate.inputs`: the checkpoint's files,
the unit's data and the settings that change numbers, not the batch size or device), **run** it on the checkpoint's
context, **write** its JSON. Re-running a finished sweep therefore loads no model. Claims are lock
files (:mod:`losslens.evaluate.claims`), so evaluators started together (``--shard i/n`` job
arrays, ``accelerate launch``, or plain duplicates) never repeat work; each one, when it ends,
rebuilds ``results.csv`` from every JSON file under an exclusive lock, so the last to finish
writes the complete table.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from tqdm.auto import tqdm

from losslens import contracts
from losslens.config import StudyConfig, load_study
from losslens.errors import DataError, LossLensError, ResultsError
from losslens.evaluate.adaptive import AdaptiveReport, Judge, run_adaptive
from losslens.evaluate.claims import Claim
from losslens.evaluate.config import EvaluateOptions
from losslens.evaluate.harness import PREFIX as HARNESS_PREFIX, Harness, parse_names
from losslens.evaluate.order import visiting_order
from losslens.evaluate.runner import TaskSettings
from losslens.evaluate.tracking import EvalTracking
from losslens.evaluate.tasks import local_path, resolve_tasks
from losslens.evaluate.inputs import result_fingerprint
from losslens.evaluate.units import CheckpointContext, PretrainUnit, RunOptions, TaskUnit, Unit
from losslens.evaluate.weights import check_study_checkpoints, checkpoint_fingerprint
from losslens.fsio import atomic_write_json, atomic_write_text
from losslens.results_reader import parse_results_columns
from losslens.study_dir import check_unchanged_since_training

REQUESTS_DIR = ".harness-requests"  # under RUN_DIR/evals: harness tasks' built requests, by fingerprint
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
    adaptive: Optional[AdaptiveReport] = None  # what an adaptive sweep chose and skipped


def in_shard(ckpt: Path, shard: tuple[int, int]) -> bool:
    """A checkpoint's shard is a hash of its run and name: stable when checkpoints are added or removed."""
    i, n = shard
    return zlib.crc32(f"{ckpt.parent.name}/{ckpt.name}".encode()) % n == i


def result_path(study_dir: Path, ckpt: Path, task: str) -> Path:
    return study_dir / contracts.EVALS_DIR / ckpt.parent.name / ckpt.name / f"{task}.json"


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


# ---------------------------------------------------------------- what to evaluate


def plan_units(study: StudyConfig, study_dir: Path, options: Optional[EvaluateOptions] = None,
               log: Callable[[str], None] = print) -> list[Unit]:
    """The units of a sweep, every one checked before any model work: pretraining loss, tasks, harness tasks.

    ``options.tasks`` and ``options.lm_eval`` replace the study's ``eval.tasks`` and ``eval.lm_eval``.
    """
    options = EvaluateOptions() if options is None else options
    cfg = study.eval
    settings = TaskSettings(seed=cfg.seed, bootstrap=cfg.bootstrap, confidence=cfg.confidence,
                            max_examples=_given(options.max_examples, cfg.max_examples),
                            max_new_tokens=cfg.max_new_tokens)
    specs = _given(options.tasks, cfg.tasks)
    task_list = resolve_tasks([t for t in specs if not t.startswith(HARNESS_PREFIX)], study_dir, study)
    units: list[Unit] = [PretrainUnit(study_dir, study.model.context, cfg.val_tokens or study.checkpoints.val_tokens,
                                      cfg.confidence)]
    units += [TaskUnit(t, settings, log) for t in task_list]
    names = parse_names(_given(options.lm_eval, cfg.lm_eval)
                        + [t[len(HARNESS_PREFIX):] for t in specs if t.startswith(HARNESS_PREFIX)])
    if names:
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # lm-eval would split each checkpoint's requests
            raise LossLensError("--lm-eval runs in one process per evaluator, not under accelerate launch or "
                                "torchrun: use --shard i/n job arrays")
        harness_settings = {"dtype": cfg.dtype, "limit": settings.max_examples, "bootstrap": cfg.bootstrap,
                            "confidence": cfg.confidence}
        include = local_path(options.lm_eval_include or cfg.lm_eval_include, study_dir)
        harness = Harness(names, include, harness_settings, log=log,
                          cache_dir=study_dir / contracts.EVALS_DIR / REQUESTS_DIR)
        native = {contracts.PRETRAIN_TASK: "the pretraining loss"} | {t.name: str(t.source) for t in task_list}
        for t in harness.tasks:
            if t.name in native:
                raise DataError(f"--lm-eval: task name {t.name!r} is also used by {native[t.name]}: "
                                f"rename one (results are stored by task name)")
        units += harness.tasks
    return units


# ---------------------------------------------------------------- the sweep


def evaluate_study(study_dir: str | Path, options: Optional[EvaluateOptions] = None, *, judge: Optional[Judge] = None,
                   log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)) -> SweepSummary:
    """Evaluate what is not yet evaluated in a study folder, then rebuild ``results.csv``.

    ``options`` (:class:`losslens.evaluate.config.EvaluateOptions`; None: the defaults) are this sweep's
    settings beside the study's ``eval:``, and override it where given: tasks, shard, device, order, force,
    adaptive, ... An adaptive sweep places thresholds with ``judge`` (the face passes
    :func:`losslens.adaptive_judge.provisional_eta`).
    """
    options = EvaluateOptions() if options is None else options
    options.check()
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    study_dir = Path(study_dir)
    study = load_study(study_dir / contracts.STUDY_FILE)
    check_unchanged_since_training(study, study_dir, strict=False)  # e.g. model.context edited after training
    world = int(os.environ.get("WORLD_SIZE", 1))
    settings = _adaptive_settings(study, options, world, judge)
    shard = options.shard or ((int(os.environ.get("RANK", 0)), world) if world > 1 else (0, 1))
    units = plan_units(study, study_dir, options, log=log)
    check_study_checkpoints(study_dir)  # a broken checkpoint stops us before results.csv is rebuilt
    ckpts = visiting_order([contracts.list_checkpoints(run) for run in contracts.list_runs(study_dir)], options.order)
    mine = [c for c in ckpts if in_shard(c, shard)]
    summary = SweepSummary(checkpoints=len(mine))
    log(f"evaluate: {study_dir}: {len(mine)} of {len(ckpts)} checkpoints (shard {shard[0]}/{shard[1]}), "
        f"units: {', '.join(u.name for u in units)}")
    run_options = RunOptions(dtype=study.eval.dtype, device=_default_device(options.device) if mine else "cpu",
                             batch_size=options.batch_size or study.eval.batch_size, progress=options.progress,
                             per_example=_given(options.per_example, study.eval.per_example))
    evaluator = Evaluator(study_dir, run_options, options.force, options.lock_timeout, summary, log,
                          EvalTracking(study, study_dir))
    if settings is not None:
        runs = {run.name: contracts.list_checkpoints(run) for run in contracts.list_runs(study_dir)}
        summary.adaptive = run_adaptive(runs, units, evaluator, settings, log, judge)
    else:
        _sweep_all(mine, units, evaluator, options.progress)
    summary.table, summary.rows = write_results_table(study_dir)
    _log_summary(summary, log)
    return summary


def _given(value, default):
    """An option's value, or the study's setting where the option is None."""
    return default if value is None else value


def _sweep_all(ckpts: list[Path], units: list[Unit], evaluator: Evaluator, progress: bool) -> None:
    """Every unit on every checkpoint of the shard, in the visiting order (the sweep without --adaptive)."""
    bar = tqdm(ckpts, desc="checkpoints", unit=" ckpt", disable=not progress or None)
    for ckpt in bar:
        bar.set_postfix_str(f"{ckpt.parent.name}/{ckpt.name}")
        evaluator.run(ckpt, units)
    bar.close()


def _log_summary(summary: SweepSummary, log: Callable[[str], None]) -> None:
    if summary.adaptive is not None:
        log(f"evaluate: adaptive: {summary.adaptive.units} of {summary.adaptive.total} task units chosen, "
            f"{summary.adaptive.total - summary.adaptive.units} skipped (a full sweep fills them in)")
    if summary.evaluated == 0 and summary.busy == 0:
        log(f"evaluate: nothing to evaluate: all {summary.up_to_date} results up to date")
    else:
        log(f"evaluate: {summary.evaluated} evaluated, {summary.up_to_date} up to date, "
            f"{summary.busy} claimed by other evaluators")
    log(f"evaluate: {summary.rows} rows in {summary.table}")


def _adaptive_settings(study: StudyConfig, options: EvaluateOptions, world: int, judge: Optional[Judge]):
    """``eval.adaptive`` with the options over it, or None for a full sweep."""
    over = {k: getattr(options, k) for k in ("eta_width", "budget") if getattr(options, k) is not None}
    settings = replace(study.eval.adaptive, **over)
    if not _given(options.adaptive, settings.enabled):
        if over:
            raise LossLensError(f"--{next(iter(over)).replace('_', '-')}: only with --adaptive "
                                f"(or eval.adaptive.enabled: true)")
        return None
    if (options.shard is not None and options.shard[1] > 1) or world > 1:
        raise LossLensError("--adaptive: one evaluator chooses the checkpoints from the results so far; "
                            "run it without --shard and without accelerate launch")
    if judge is None:
        raise LossLensError("an adaptive sweep needs a threshold judge: pass judge= (losslens.adaptive_judge)")
    return settings


class Evaluator:
    """Evaluates units on checkpoints for a sweep, counting into its summary (claim -> run -> write)."""

    def __init__(self, study_dir: Path, options: RunOptions, force: bool, lock_timeout: float,
                 summary: SweepSummary, log: Callable[[str], None], tracking: Optional[EvalTracking] = None):
        self.study_dir, self.options, self.force, self.lock_timeout = study_dir, options, force, lock_timeout
        self.summary, self.log, self.tracking = summary, log, tracking
        # result() is asked for each point every round; a result up to date stays so for the sweep
        self._hashes: dict[Path, str] = {}
        self._results: dict[tuple[Path, str], dict] = {}

    def run(self, ckpt: Path, units: list[Unit]) -> None:
        written = len(self.summary.results)
        _evaluate_checkpoint(self.study_dir, ckpt, units, self.options, self.force, self.lock_timeout,
                             self.summary, self.log)
        if self.tracking is not None:
            self.tracking.log(self.summary.results[written:])

    def result(self, ckpt: Path, unit: Unit) -> Optional[dict]:
        """The unit's result on the checkpoint as it is now, or None when there is none up to date."""
        key = (ckpt, unit.name)
        if key not in self._results:
            if ckpt not in self._hashes:
                self._hashes[ckpt] = checkpoint_fingerprint(ckpt)
            found = _job(self.study_dir, ckpt, unit, self._hashes[ckpt], self.options).current(per_example=False)
            if found is None:
                return None
            self._results[key] = found
        return self._results[key]


@dataclass
class _Job:
    """One unit on one checkpoint: where its result goes and the fingerprint that marks it done."""

    unit: Unit
    ckpt: Path
    path: Path
    ckpt_hash: str
    fingerprint: str

    def current(self, per_example: bool) -> Optional[dict]:
        """The result on disk if it is up to date (with per-example records, when asked for), else None."""
        old = _read_json(self.path)
        if old is None or old.get("fingerprint") != self.fingerprint:
            return None
        return old if not per_example or not self.unit.has_examples or "examples" in old else None

    def done(self, per_example: bool) -> bool:
        return self.current(per_example) is not None


def _job(study_dir: Path, ckpt: Path, unit: Unit, ckpt_hash: str, options: RunOptions) -> _Job:
    return _Job(unit, ckpt, result_path(study_dir, ckpt, unit.name), ckpt_hash,
                result_fingerprint(ckpt_hash, unit, options))


def _evaluate_checkpoint(study_dir: Path, ckpt: Path, units: list[Unit], options: RunOptions, force: bool,
                         lock_timeout: float, summary: SweepSummary, log: Callable[[str], None]) -> None:
    """Claim -> run -> write, for each unit of one checkpoint that is not done yet."""
    ckpt_hash = checkpoint_fingerprint(ckpt)
    context = CheckpointContext(ckpt, options)
    try:
        for unit in units:
            job = _job(study_dir, ckpt, unit, ckpt_hash, options)
            if not force and job.done(options.per_example):
                summary.up_to_date += 1
                continue
            claim = _claim(job, force, options.per_example, lock_timeout, summary)
            if claim is None:
                continue
            try:
                start = time.perf_counter()
                result = unit.run(context)
                _save(job, result, time.perf_counter() - start, summary, log)
            finally:
                claim.release()
    finally:
        summary.models_loaded += context.loads
        context.close()


def _claim(job: _Job, force: bool, per_example: bool, lock_timeout: float, summary: SweepSummary) -> Optional[Claim]:
    """The job's claim when this process is to compute it; None when another evaluator has it or did it."""
    claim = Claim(job.path.parent / f".{job.unit.name}.lock", timeout=lock_timeout)
    job.path.parent.mkdir(parents=True, exist_ok=True)
    if not claim.acquire():
        summary.busy += 1
        return None
    if not force and job.done(per_example):  # finished by another evaluator since we looked
        summary.up_to_date += 1
        claim.release()
        return None
    return claim


def _save(job: _Job, result: dict, elapsed: float, summary: SweepSummary, log: Callable[[str], None]) -> None:
    ckpt = job.ckpt
    result.update({
        "fingerprint": job.fingerprint, "checkpoint_hash": job.ckpt_hash,
        "checkpoint": {k: contracts.read_meta(ckpt).get(k) for k in _META_COLUMNS} | {"path": str(ckpt)},
        "elapsed_s": round(elapsed, 3),
    })
    atomic_write_json(job.path, result)
    summary.evaluated += 1
    summary.results.append(job.path)
    shown = ", ".join(f"{m}={v['value']:.4g}" for m, v in list(result["metrics"].items())[:3])
    log(f"evaluated {ckpt.parent.name}/{ckpt.name} {job.unit.name}: {shown} ({elapsed:.1f} s)")


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


SOURCE = "_source"  # each row's result file, for messages (not a column)


def collect_rows(study_dir: Path) -> list[dict]:
    """Rows of results.csv from the JSON files of the study's current checkpoints.

    A result counts only if it was computed on the checkpoint as it is now (same meta.json hash).
    Every row's ``loss`` is the validation loss this stage measured for the checkpoint; a
    checkpoint whose pretraining loss is not measured yet contributes no rows.
    """
    rows = []
    for run in contracts.list_runs(study_dir):
        for ckpt in contracts.list_checkpoints(run):
            current = checkpoint_fingerprint(ckpt)
            folder = study_dir / contracts.EVALS_DIR / run.name / ckpt.name
            results = [{**r, SOURCE: p} for p, r in ((p, _read_json(p)) for p in sorted(folder.glob("*.json")))
                       if r is not None and r.get("checkpoint_hash") == current]
            pretrain = next((r for r in results if r.get("task") == contracts.PRETRAIN_TASK), None)
            if pretrain is None:
                continue
            meta = contracts.read_meta(ckpt)
            seed = contracts.seed_label(*contracts.checkpoint_seeds(meta, ckpt))
            loss = pretrain["metrics"]["loss"]["value"]
            results.sort(key=lambda r: (r["task"] != contracts.PRETRAIN_TASK, r["task"]))
            for r in results:
                for metric in sorted(r["metrics"], key=_metric_order):
                    agg = r["metrics"][metric]
                    rows.append({
                        **{k: meta.get(k) for k in _META_COLUMNS}, contracts.SEED_COLUMN: seed, "loss": loss,
                        "task": r["task"], "metric": metric, "value": agg["value"], "ci_low": agg.get("ci_low"),
                        "ci_high": agg.get("ci_high"), "n": agg.get("n"), "chance": agg.get("chance"),
                        SOURCE: r[SOURCE],
                    })
    rows.sort(key=lambda r: (r["run"], r["tokens"]))  # stable: keeps task and metric order within
    return rows


def write_results_table(study_dir: str | Path) -> tuple[Path, int]:
    """Rebuild ``RUN_DIR/results.csv`` atomically, under an exclusive lock (see the module docstring).

    The ``seed`` column is written only when the checkpoints hold more than one seed: a one-seed study's
    table stays as it always was.
    """
    study_dir = Path(study_dir)
    (study_dir / contracts.EVALS_DIR).mkdir(exist_ok=True)
    table = study_dir / contracts.RESULTS_FILE
    with open(study_dir / contracts.EVALS_DIR / TABLE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        rows = collect_rows(study_dir)
        several_seeds = len({r[contracts.SEED_COLUMN] for r in rows}) > 1
        columns = (*contracts.RESULTS_COLUMNS, contracts.SEED_COLUMN) if several_seeds else contracts.RESULTS_COLUMNS
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_cell(r[c]) for c in columns])
        _check_analyzable(buf.getvalue(), table, rows)
        atomic_write_text(table, buf.getvalue())
    return table, len(rows)


def _check_analyzable(text: str, table: Path, rows: list[dict]) -> None:
    """Nothing analyze would refuse is written (the import checks its tables the same way): the table
    as it was stays, and the error names the result file the offending row came from."""
    if not rows:
        return  # a header alone: no checkpoint has its pretraining loss yet, which analyze says itself
    try:
        parse_results_columns(text, table)
    except ResultsError as e:
        row = rows[e.line - 2] if e.line is not None and 2 <= e.line < len(rows) + 2 else None  # line 2: rows[0]
        source = f" (that row comes from {row[SOURCE]})" if row else ""
        raise ResultsError(f"{table}: not rewritten, analyze would refuse the new table: {e}{source}") from None
