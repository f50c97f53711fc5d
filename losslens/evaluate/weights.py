"""What a checkpoint's results depend on, read without loading the model.

A result is current only while the checkpoint's ``meta.json`` *and* its weights are what they were
when it was computed, so the fingerprint covers both (and the config and tokenizer files beside them): each ``*.safetensors`` file's size, its header
(names, shapes, dtypes, offsets) and its bytes (all of them up to ``FULL_HASH_BYTES``, else sampled
blocks at the start, middle and end). Weights that were replaced, truncated or are not safetensors
at all are reported before any work, and no checkpoint that is present but unreadable may silently
take its rows out of ``results.csv``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from pathlib import Path

from losslens import contracts
from losslens.errors import CheckpointError

FULL_HASH_BYTES = 64 * 2**20  # hashing all of a small file costs little; larger ones are sampled
SAMPLE_BYTES = 4 * 2**20
_MAX_HEADER = 100 * 2**20  # the safetensors format's own limit on the JSON header
# Files of a checkpoint folder that no model or tokenizer is loaded from (meta.json is hashed first).
_NOT_INPUTS = {contracts.META_FILE, contracts.STUDY_FILE}


def safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file, after checking that the file holds every tensor it lists."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        n = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        if not 0 < n <= min(_MAX_HEADER, size - 8):
            raise _broken(path, "not a safetensors file")
        header = f.read(n)
    try:
        tensors = json.loads(header)
        end = max((t["data_offsets"][1] for k, t in tensors.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise _broken(path, "not a safetensors file: unreadable header") from None
    if size != 8 + n + end:
        raise _broken(path, f"{size:,} bytes, but its header lists {8 + n + end:,}: truncated or damaged")
    return header


def _broken(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path.parent}: cannot load model or tokenizer ({path.name}: {why})")


def _content_digest(path: Path, size: int) -> str:
    stat = path.stat()
    return _digest(str(path.resolve()), size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=4096)  # a sweep asks for each checkpoint's identity more than once
def _digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        else:
            for start in (0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES):
                f.seek(start)
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def read_checked_meta(ckpt: Path) -> bytes:
    """The bytes of a checkpoint's meta.json, refused by name when it is absent, not a JSON object, or
    holds seeds that are not seeds."""
    path = ckpt / contracts.META_FILE
    try:
        raw = path.read_bytes()
        meta = json.loads(raw)
        ok = isinstance(meta, dict)
    except FileNotFoundError:
        raise CheckpointError(
            f"{ckpt}: no {contracts.META_FILE}, so its results cannot be placed; results.csv is left as it is "
            f"(restore {contracts.META_FILE}, or delete the folder to drop the checkpoint and its results)") from None
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); results.csv is left as it is") from None
    if not ok:
        raise CheckpointError(f"{path}: expected a JSON object; results.csv is left as it is")
    contracts.checkpoint_seeds(meta, ckpt)
    return raw


def checkpoint_fingerprint(ckpt: Path) -> str:
    """Identity of a checkpoint as evaluated: its meta.json, its weights, and every other file a model or
    tokenizer is loaded from (config.json, tokenizer.json, ...): a new tokenizer is a new checkpoint."""
    h = hashlib.sha256(read_checked_meta(ckpt))
    for path in sorted(ckpt.glob("*.safetensors")):
        size = path.stat().st_size
        h.update(f"\0{path.name}\0{size}\0".encode())
        h.update(safetensors_header(path))
        h.update(_content_digest(path, size).encode())
    for path in sorted(p for p in ckpt.iterdir() if p.suffix != ".safetensors" and p.name not in _NOT_INPUTS):
        if path.is_file():
            size = path.stat().st_size
            h.update(f"\0{path.name}\0{size}\0{_content_digest(path, size)}".encode())
    return h.hexdigest()[:16]


def check_study_checkpoints(study_dir: Path) -> None:
    """Refuse, before any work, a study folder holding a checkpoint whose meta.json or weights are broken.

    Every ``<run>/ckpt-*`` folder counts, also one without meta.json (which the listings skip):
    evaluating around it would rebuild results.csv without its rows.
    """
    for run in sorted(p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for ckpt in sorted(p for p in run.iterdir() if contracts.CKPT_RE.match(p.name) and p.is_dir()):
            checkpoint_fingerprint(ckpt)
