"""The two contracts between the stages, in one place.

1. A checkpoint is a directory ``RUN_DIR/<run>/ckpt-<tokens:012d>/`` holding a Hugging Face
   causal LM (``config.json``, ``model.safetensors``), its tokenizer, and ``meta.json``
   (keys in ``CHECKPOINT_META_KEYS``, optionally ``CHECKPOINT_SEED_KEYS``). Training state for exact
   resume sits inside it in ``train_state/``. A checkpoint exists once its directory has its final name: it is written
   under a ``.tmp-`` name and renamed, so listings never see a partial one.
   The study's resolved config is ``RUN_DIR/study.yaml``; its token shards and tokenizer are in
   ``RUN_DIR/data/`` (``train.bin``, ``val.bin``, ``data.json``, ``tokenizer/``).

2. The results table ``RUN_DIR/results.csv`` has the columns ``RESULTS_COLUMNS`` (each cell's type and range
   in ``RESULTS_SCHEMA``), one row per
   checkpoint x task x metric (the pretraining loss itself is task ``pretrain``, metrics ``loss`` and
   ``bpb``). It is rebuilt from the per-(checkpoint, task) JSON files under ``RUN_DIR/evals/``, which
   may hold per-example records. ``analyze`` reads nothing else, so tables made elsewhere work too.
   An optional ``X_LABEL_COLUMN`` says what the ``loss`` column holds when it is not the pretraining
   loss (a table imported from other labs' result files); an optional ``SEED_COLUMN`` labels the
   replicate of each run when a study trained several seeds.

How to read each metric (``METRICS``, :func:`metric_info`) comes from the metric registry in
:mod:`losslens.metrics`. This module imports nothing heavy (numpy at most): every stage may import it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from losslens.errors import CheckpointError
from losslens.metrics import FRACTION, METRICS, PRETRAIN, Metric
from losslens.schema import Range

STUDY_FILE = "study.yaml"
DATA_DIR = "data"
DATA_META_FILE = "data.json"
TOKENIZER_DIR = "tokenizer"
TRAIN_SHARD = "train.bin"
VAL_SHARD = "val.bin"

META_FILE = "meta.json"
TRAIN_STATE_DIR = "train_state"
CKPT_PREFIX = "ckpt-"
CKPT_RE = re.compile(r"^ckpt-(\d{12})$")

CHECKPOINT_META_KEYS = (
    "study",  # study name
    "run",  # run name, e.g. "s2_4M"
    "size",  # model size name
    "budget_tokens",  # the run's data budget
    "step",  # optimizer steps taken
    "tokens",  # training tokens seen
    "n_params",  # all parameters
    "n_params_nonembed",  # without the input embedding and the output (unembedding) matrix
    "flops",  # training FLOPs so far: tokens x losslens.counts.flops_per_token
    "train_loss",  # mean train loss over the last logging window
    "val_loss",  # validation loss (nats/token) measured at save time
    "val_loss_stderr",
    "val_tokens",  # number of validation tokens behind val_loss
    "config_hash",  # hash of the resolved study config
)
# Optional keys: the run's seeds (losslens.train.config.Seed). Checkpoints written before studies had
# seeds, or imported from elsewhere, lack them and read as seed 0 (:func:`checkpoint_seeds`).
CHECKPOINT_SEED_KEYS = (
    "seed_init",  # seed of the model's initialisation
    "seed_data",  # seed of the order of the training windows
)

RESULTS_FILE = "results.csv"
PRETRAIN_TASK = PRETRAIN  # rows of the pretraining loss itself (metrics loss, bpb): the x-axis, not a task
EVALS_DIR = "evals"  # RUN_DIR/evals/<run>/<ckpt>/<task>.json: one result per checkpoint x task
# Sanity limits: a number beyond them is a unit mistake or a corrupted cell, not a study. (Real tables reach
# perplexities near 1e9 at initialisation; 1e15 leaves room and keeps every sum of squares finite.)
MAX_PARAMS = 10**15
MAX_TOKENS = 10**17
MAX_STEPS = 10**12
MAX_FLOPS = 1e35
MAX_MAGNITUDE = 1e15  # of a loss, a value and its interval


@dataclass(frozen=True)
class Column:
    """A results column: its cells' type, whether a cell may be empty, and the range of its values."""

    kind: type  # str, int or float
    optional: bool = False
    range: Optional[Range] = None


_VALUE = Range(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)  # and its metric's bounds (losslens.metrics)
# One row per checkpoint x task x metric; the ranges are checked cell by cell by every reader and writer.
RESULTS_SCHEMA = {
    "run": Column(str),
    "n_params": Column(int, range=Range(gt=0, le=MAX_PARAMS)),
    "n_params_nonembed": Column(int, range=Range(gt=0, le=MAX_PARAMS)),  # and <= n_params
    "tokens": Column(int, range=Range(ge=0, le=MAX_TOKENS)),
    "step": Column(int, range=Range(ge=0, le=MAX_STEPS)),  # and step, flops grow with tokens within a run
    "flops": Column(float, optional=True, range=Range(ge=0, le=MAX_FLOPS)),
    "loss": Column(float, range=Range(gt=0, le=MAX_MAGNITUDE, what="a loss (nats/token)")),
    "task": Column(str),
    "metric": Column(str),
    "value": Column(float, range=_VALUE),
    "ci_low": Column(float, optional=True, range=_VALUE),  # ci_low <= value <= ci_high
    "ci_high": Column(float, optional=True, range=_VALUE),
    "n": Column(int, optional=True, range=Range(gt=0, le=MAX_TOKENS)),  # examples (tokens) behind the value
    "chance": Column(float, optional=True, range=Range(ge=0, le=1, what="a chance level")),
}
RESULTS_COLUMNS = tuple(RESULTS_SCHEMA)
# Optional column: what the ``loss`` column holds, one value for the whole table. Absent, it is the
# pretraining loss; a table imported from result files without one (``losslens import-results``)
# names the task metric standing in for it, e.g. "LAMBADA (OpenAI) ln perplexity". Reports and plots
# label the x-axis with it.
X_LABEL_COLUMN = "x_label"
DEFAULT_X_LABEL = "validation loss (nats/token)"
# Optional column: the run's tokenizer (a name or hash), for tables made elsewhere. Per-token losses of
# runs with different tokenizers do not compare; analyze then warns and points to bits per byte.
TOKENIZER_COLUMN = "tokenizer"
# Optional column: a label of the run's replicate, ``str(seed)`` when its init and data seeds are equal,
# else ``init{I}-data{D}`` (:func:`seed_label`). Written only when the table holds more than one label;
# absent, every run is one seed. Runs of one size that differ only by seed share n_params,
# n_params_nonembed and budget.
SEED_COLUMN = "seed"


# lm-evaluation-harness metrics that are better when lower (its registry's higher_is_better=False).
_LOWER_IS_BETTER_EXTERNAL = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "brier_score", "ter"}


def metric_info(name: str) -> Metric:
    """How to read a metric named in a results table, ours or one made elsewhere.

    Known names as declared in the registry (``losslens.metrics.METRICS``). ``metric:filter`` (an
    lm-eval metric after one of its filters, e.g. ``exact_match:strict-match``) reads as its metric. Other names, e.g. lm-eval's: accuracies and
    exact matches (``acc*``, ``exact_match*``, ``em``) are discontinuous; lm-eval's perplexities,
    bits per byte, Brier score and TER are better when lower; the rest are continuous, higher-better.
    Accuracies and exact matches are fractions in [0, 1]; other external metrics are not bounded.
    """
    if name in METRICS:
        return METRICS[name]
    base, _, filt = name.partition(":")
    if base in METRICS:
        known = METRICS[base]
        return Metric(name, f"{known.description}, filter {filt}", known.discontinuous, known.higher_is_better,
                      bounds=known.bounds)
    discontinuous = base.startswith(("acc", "exact_match")) or base == "em"
    return Metric(name, "external metric", discontinuous, base not in _LOWER_IS_BETTER_EXTERNAL,
                  bounds=FRACTION if discontinuous else Metric.bounds)


def seed_label(init: int, data: int) -> str:
    """The ``seed`` column's label of a run: ``"2"``, or ``"init1-data0"`` when the seeds differ."""
    return str(init) if init == data else f"init{init}-data{data}"


def checkpoint_seeds(meta: dict, ckpt: str | Path) -> tuple[int, int]:
    """(seed_init, seed_data) of checkpoint ``ckpt``'s meta.json; 0 where it does not record them."""
    seeds = tuple(meta.get(key, 0) for key in CHECKPOINT_SEED_KEYS)
    for key, value in zip(CHECKPOINT_SEED_KEYS, seeds):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"{Path(ckpt) / META_FILE}: {key}: expected a seed (an integer >= 0), got {value!r}")
    return seeds


def checkpoint_dirname(tokens: int) -> str:
    return f"{CKPT_PREFIX}{tokens:012d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of one run, by token count. Temporary (``.tmp-``) directories are skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if CKPT_RE.match(p.name) and (p / META_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def list_runs(study_dir: str | Path) -> list[Path]:
    """Run directories of a study: every subdirectory holding at least one complete checkpoint."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        return []
    return sorted(p for p in study_dir.iterdir() if p.is_dir() and list_checkpoints(p))


def read_meta(ckpt_dir: str | Path) -> dict:
    with open(Path(ckpt_dir) / META_FILE, encoding="utf-8") as f:
        return json.load(f)
