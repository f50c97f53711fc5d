"""Which tokenizer each run of a table used: per-token losses of runs with different tokenizers do
not compare (a token is a different amount of text), bits per byte do."""

from __future__ import annotations

import hashlib
from pathlib import Path

from losslens.analyze.table import Table
from losslens.contracts import TOKENIZER_COLUMN, list_checkpoints

TOKENIZER_FILE = "tokenizer.json"  # a fast tokenizer's whole definition, saved in every checkpoint


def run_tokenizers(table: Table, run_dir: str | Path | None) -> dict[str, str]:
    """run -> its tokenizer: the table's ``tokenizer`` cell where it has one, else the hash of the
    ``tokenizer.json`` in the run's first checkpoint under ``run_dir``. Runs with neither are left out."""
    out: dict[str, str] = {}
    if TOKENIZER_COLUMN in table.cols:
        for run, name in zip(table.cols["run"].tolist(), table.cols[TOKENIZER_COLUMN].tolist()):
            if name:
                out.setdefault(run, name)
    for run in table.runs() if run_dir is not None else []:
        ckpts = [] if run in out else list_checkpoints(Path(run_dir) / run)
        if ckpts and (ckpts[0] / TOKENIZER_FILE).is_file():
            out[run] = "sha256:" + hashlib.sha256((ckpts[0] / TOKENIZER_FILE).read_bytes()).hexdigest()[:12]
    return out


def mixed_tokenizers_warning(table: Table, run_dir: str | Path | None) -> str | None:
    """One line when the table's runs used more than one tokenizer (naming a run of each), else None."""
    first_run: dict[str, str] = {}
    for run, name in run_tokenizers(table, run_dir).items():
        first_run.setdefault(name, run)
    if len(first_run) < 2:
        return None
    which = ", ".join(f"{run}: {name}" for name, run in first_run.items())
    return (f"warning: the runs use {len(first_run)} different tokenizers ({which}); losses per token do not "
            "compare across tokenizers: analyze against bits per byte (--x bpb, or analyze.x: bpb in the study "
            "config)")
