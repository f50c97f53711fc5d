"""Studies of checkpoints trained elsewhere: a manifest of HF checkpoint directories becomes a study folder.

``losslens import MANIFEST.yaml --out RUN_DIR`` writes the same layout ``losslens train`` does, so
``losslens evaluate`` and ``losslens analyze`` treat the suite like one of ours:

- ``RUN_DIR/<run>/ckpt-<tokens>/`` holds links to the external checkpoint's files and a ``meta.json``
  with the run, tokens, step, parameter counts and FLOPs (counted from the safetensors header and the
  HF config when the manifest does not give them);
- ``RUN_DIR/data/val.bin`` is the validation shard: copied from a losslens data folder, or a text file
  tokenized with the checkpoints' own tokenizer (all checkpoints must share it, or their losses would
  not compare);
- ``RUN_DIR/study.yaml`` carries the context length, the validation size and the ``eval:`` section.

Manifest::

    name: pythia-subset
    context: 2048
    validation: {text: data/val.txt, tokens: 1M}     # or {data_dir: other_study/data, tokens: ...}
    eval: {tasks: [tasks/arith.yaml]}
    checkpoints:
      - {run: pythia-70m, path: /ckpts/pythia-70m/step143000, tokens: 300B, step: 143000}
      - {run: pythia-160m, path: /ckpts/pythia-160m/step143000, tokens: 300B, n_params_nonembed: 85M}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import yaml

from losslens import contracts
from losslens.config import study_from_dict
from losslens.counts import flops_per_token
from losslens.errors import CheckpointError, ConfigError, DataError
from losslens.paths import local_path
from losslens.records import build_dataclass, read_yaml_mapping
from losslens.evaluate.config import EvalConfig
from losslens.fsio import atomic_directory, atomic_write_json, atomic_write_text
from losslens.outputs import refuse_overwriting_inputs
from losslens.schema import PositiveInt
from losslens.shards import shard_dtype
from losslens.study_dir import IMPORTED, require_kind, require_own_data_folder, study_kind
from losslens.train.config import Context

_TOKENS = Annotated[int, contracts.RESULTS_SCHEMA["tokens"].range]
_PARAMS = Annotated[int, contracts.RESULTS_SCHEMA["n_params"].range]
_STEP = Annotated[int, contracts.RESULTS_SCHEMA["step"].range]
_FLOPS = Annotated[float, contracts.RESULTS_SCHEMA["flops"].range]


@dataclass
class ExternalCheckpoint:
    run: str
    path: str
    tokens: _TOKENS
    size: Optional[str] = None  # model size label; default: the run name
    step: Optional[_STEP] = None
    n_params: Optional[_PARAMS] = None
    n_params_nonembed: Optional[_PARAMS] = None  # and <= n_params
    flops: Optional[_FLOPS] = None


@dataclass
class Validation:
    tokens: PositiveInt = 65536
    text: Optional[str] = None  # a UTF-8 text file, tokenized with the checkpoints' tokenizer
    data_dir: Optional[str] = None  # or a losslens data folder (val.bin + data.json)


@dataclass
class Manifest:
    name: str
    context: Context
    checkpoints: list[ExternalCheckpoint]
    validation: Validation = field(default_factory=Validation)
    eval: EvalConfig = field(default_factory=EvalConfig)


_EMBEDDING_NAMES = ("embed_tokens", "embed_in", "wte", "word_embeddings", "lm_head", "embed_out")


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    raw = read_yaml_mapping(path, "manifest")
    manifest = build_dataclass(Manifest, raw, "", str(path))
    base = path.parent

    def resolve(p: str) -> str:
        return str(local_path(p, base))

    for c in manifest.checkpoints:
        c.path = resolve(c.path)
    for attr in ("text", "data_dir"):
        if getattr(manifest.validation, attr):
            setattr(manifest.validation, attr, resolve(getattr(manifest.validation, attr)))
    manifest.eval.tasks = [t if ":" in t and not Path(t).exists() else resolve(t) for t in manifest.eval.tasks]
    if manifest.eval.lm_eval_include:
        manifest.eval.lm_eval_include = resolve(manifest.eval.lm_eval_include)
    if not manifest.checkpoints:
        raise ConfigError(f"{path}: checkpoints: the manifest lists no checkpoints")
    if bool(manifest.validation.text) == bool(manifest.validation.data_dir):
        raise ConfigError(f"{path}: validation: give exactly one of 'text' or 'data_dir'")
    seen = set()
    for i, c in enumerate(manifest.checkpoints):
        if (c.run, c.tokens) in seen:
            raise ConfigError(f"{path}: checkpoints[{i}]: run {c.run} at {c.tokens} tokens is listed twice")
        seen.add((c.run, c.tokens))
        if c.n_params and c.n_params_nonembed and c.n_params_nonembed > c.n_params:
            raise ConfigError(f"{path}: checkpoints[{i}].n_params_nonembed: {c.n_params_nonembed} is more than "
                              f"n_params {c.n_params}")
    _check_context_fits_runs(manifest, path)
    return manifest


def _check_context_fits_runs(manifest: Manifest, path: Path) -> None:
    """Each run's last checkpoint saw at least one sequence of ``context`` tokens (its budget, in the study)."""
    last: dict[str, int] = {}
    for c in manifest.checkpoints:
        last[c.run] = max(last.get(c.run, 0), c.tokens)
    for run, tokens in last.items():
        if tokens < manifest.context:
            i = next(i for i, c in enumerate(manifest.checkpoints) if c.run == run and c.tokens == tokens)
            raise ConfigError(f"{path}: context: {manifest.context} tokens is more than run {run!r} saw by its last "
                              f"checkpoint (checkpoints[{i}].tokens: {tokens}); is context or tokens mistyped?")


def _check_context_fits_models(manifest: Manifest, ckpts: list[Path], path: str | Path) -> None:
    """``context`` within every checkpoint's position limit (config.json ``max_position_embeddings``)."""
    for ckpt in ckpts:
        limit = _hf_config(ckpt).get("max_position_embeddings")
        if isinstance(limit, int) and manifest.context > limit:
            raise ConfigError(f"{path}: context: {manifest.context} tokens is more than {ckpt} takes "
                              f"(max_position_embeddings {limit} in its config.json)")


def _safetensors_counts(ckpt: Path) -> tuple[int, int]:
    """(all, non-embedding) parameter counts read from the safetensors headers, without loading weights."""
    from safetensors import safe_open

    files = sorted(ckpt.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{ckpt}: no *.safetensors weights (losslens loads weights only through safetensors)")
    total = embedding = 0
    for f in files:
        with safe_open(f, framework="numpy") as st:
            for name in st.keys():
                n = int(np.prod(st.get_slice(name).get_shape()))
                total += n
                embedding += n if any(e in name for e in _EMBEDDING_NAMES) else 0
    return total, total - embedding


def _hf_config(ckpt: Path) -> dict:
    config = ckpt / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{ckpt}: no config.json (not a Hugging Face checkpoint directory)")
    return json.loads(config.read_text())


def _tokenizer_fingerprint(ckpt: Path) -> str:
    f = ckpt / "tokenizer.json"
    if not f.is_file():
        raise CheckpointError(f"{ckpt}: no tokenizer.json (a fast tokenizer is needed)")
    return hashlib.sha256(f.read_bytes()).hexdigest()


def _write_validation(manifest: Manifest, first_ckpt: Path, data_dir: Path) -> None:
    v = manifest.validation
    with atomic_directory(data_dir) as tmp:
        if v.data_dir:
            src = Path(v.data_dir)
            for name in (contracts.VAL_SHARD, contracts.DATA_META_FILE):
                if not (src / name).is_file():
                    raise DataError(f"{src}: not a losslens data folder (no {name})")
                shutil.copy2(src / name, tmp / name)
            return
        from transformers import AutoTokenizer

        text_path = Path(v.text)
        if not text_path.is_file():
            raise DataError(f"{text_path}: validation text not found")
        text = text_path.read_text(encoding="utf-8")
        if not text.strip():
            raise DataError(f"{text_path}: validation text is empty")
        tok = AutoTokenizer.from_pretrained(first_ckpt, local_files_only=True, trust_remote_code=False)
        ids = tok(text, add_special_tokens=False).input_ids
        dtype = shard_dtype(len(tok))
        np.asarray(ids, dtype=dtype).tofile(tmp / contracts.VAL_SHARD)
        atomic_write_json(tmp / contracts.DATA_META_FILE, {
            "dtype": dtype.name, "vocab_size": len(tok), "eos_id": tok.eos_token_id,
            "train_tokens": 0, "val_tokens": len(ids), "val_bytes": len(text.encode("utf-8")),
            "tokenizer": "pretrained", "fingerprint": "external:" + hashlib.sha256(text.encode()).hexdigest()[:16],
        })


def _checkpoint_meta(manifest: Manifest, entry: ExternalCheckpoint, src: Path, cfg: dict) -> dict:
    """``meta.json`` of an external checkpoint: the manifest's numbers, else counted from its files."""
    width, depth, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    counted = _safetensors_counts(src)
    nonembed = entry.n_params_nonembed or counted[1]
    flops = entry.flops or entry.tokens * flops_per_token(nonembed, width, depth, manifest.context, cfg["vocab_size"])
    return {
        "study": manifest.name, "run": entry.run, "size": entry.size or entry.run, "budget_tokens": None,
        "step": entry.step if entry.step is not None else 0, "tokens": entry.tokens,
        "n_params": entry.n_params or counted[0], "n_params_nonembed": nonembed, "flops": flops,
        "train_loss": None, "val_loss": None, "val_loss_stderr": None, "val_tokens": None,
        "config_hash": None, "external": True, "source": str(src.resolve()),
        "width": width, "depth": depth, "heads": heads, "context": manifest.context, "scheduled": True,
    }


def _study_dict(manifest: Manifest, sizes: dict, budgets: dict, tokenizer_dir: Path) -> dict:
    """The study.yaml of an imported suite: its context, sizes, budgets, validation size and eval section."""
    return {
        "name": manifest.name,
        "model": {"context": manifest.context, "sizes": {
            "".join(ch if ch.isalnum() or ch in ".-" else "-" for ch in run): s for run, s in sizes.items()}},
        "data": {"source": "files", "paths": [manifest.validation.text or manifest.validation.data_dir],
                 "tokenizer": {"kind": "pretrained", "path": str(tokenizer_dir.resolve())}},
        "budgets": sorted(set(budgets.values())),
        "train": {"global_batch": 1, "micro_batch": 1},
        "checkpoints": {"val_tokens": manifest.validation.tokens},
        "eval": asdict(manifest.eval),
    }


def _check_destination(manifest_path: Path, manifest: Manifest, out: Path, ckpts: list[Path]) -> None:
    """Refuse, before anything is written, a destination that is another kind of study or suite, or that
    would overwrite the import's own inputs."""
    require_kind(out, IMPORTED, "importing")
    require_own_data_folder(out)
    study_file = out / contracts.STUDY_FILE
    if study_kind(out) == IMPORTED and study_file.is_file():
        name = read_yaml_mapping(study_file, "study config").get("name")
        if name != manifest.name:
            raise ConfigError(f"{out}: holds the imported suite {name!r}, not {manifest.name!r}; importing "
                              f"would mix their runs (choose a new or empty folder)")
    outputs = [study_file, out / contracts.DATA_DIR] + [
        out / c.run / contracts.checkpoint_dirname(c.tokens) for c in manifest.checkpoints]
    v = manifest.validation
    inputs = [manifest_path, *ckpts, *(Path(p) for p in (v.text, v.data_dir) if p)]
    refuse_overwriting_inputs(outputs, inputs, "--out")


def import_manifest(manifest_path: str | Path, out_dir: str | Path) -> Path:
    """Write a study folder for the manifest's checkpoints; re-importing refreshes it in place.

    Everything is read and checked first (checkpoints, tokenizers, the study it makes, the destination);
    only then is anything written.
    """
    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)
    out = Path(out_dir)
    ckpts = [Path(c.path) for c in manifest.checkpoints]
    for c in ckpts:
        if not c.is_dir():
            raise CheckpointError(f"{c}: checkpoint directory not found")
    _check_context_fits_models(manifest, ckpts, manifest_path)
    fingerprints = {_tokenizer_fingerprint(c) for c in ckpts}
    if len(fingerprints) > 1:
        raise CheckpointError(f"{manifest_path}: the checkpoints use different tokenizers; their losses would not compare")
    metas = [_checkpoint_meta(manifest, entry, src, _hf_config(src)) for entry, src in zip(manifest.checkpoints, ckpts)]
    sizes: dict[str, dict] = {}
    budgets: dict[str, int] = {}
    for entry, meta in zip(manifest.checkpoints, metas):  # the budget of an external run is its last checkpoint
        sizes.setdefault(entry.run, {k: meta[k] for k in ("width", "depth", "heads")})
        budgets[entry.run] = max(budgets.get(entry.run, 0), entry.tokens)
    study = _study_dict(manifest, sizes, budgets, ckpts[0])
    study_from_dict(study, f"{manifest_path} (as a study)")  # validate before writing
    _check_destination(manifest_path, manifest, out, ckpts)

    out.mkdir(parents=True, exist_ok=True)
    _write_validation(manifest, ckpts[0], out / contracts.DATA_DIR)
    for entry, src, meta in zip(manifest.checkpoints, ckpts, metas):
        meta["budget_tokens"] = budgets[entry.run]
        with atomic_directory(out / entry.run / contracts.checkpoint_dirname(entry.tokens)) as tmp:
            for f in src.iterdir():  # link the files (weights, config, tokenizer): nothing is copied
                if f.is_file() and f.name != contracts.META_FILE:
                    os.symlink(f.resolve(), tmp / f.name)
            atomic_write_json(tmp / contracts.META_FILE, meta)
    _update_budgets(out, budgets)
    atomic_write_text(out / contracts.STUDY_FILE, yaml.safe_dump(study, sort_keys=False))
    print(f"imported {len(ckpts)} checkpoints of {len(budgets)} runs into {out}; "
          f"next: losslens evaluate {out}")
    return out


def _update_budgets(out: Path, budgets: dict[str, int]) -> None:
    """Checkpoints imported before, not in this manifest, take their run's budget from this import."""
    for run, budget in budgets.items():
        for ckpt in contracts.list_checkpoints(out / run):
            meta = contracts.read_meta(ckpt)
            if meta.get("external") and meta["budget_tokens"] != budget:
                meta["budget_tokens"] = budget
                atomic_write_json(ckpt / contracts.META_FILE, meta)


def add_arguments(p) -> None:
    p.add_argument("manifest", help="manifest YAML listing the external checkpoints")
    p.add_argument("--out", required=True, help="study folder to write (then: losslens evaluate OUT)")


def main(args) -> int:
    import_manifest(args.manifest, args.out)
    return 0
