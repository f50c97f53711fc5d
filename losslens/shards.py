"""Token shards: flat files of token ids beside ``data.json``, read by training, evaluation and imports alike.

A shard is ``uint16`` while every id of the vocabulary fits, else ``uint32`` (:func:`shard_dtype`);
``data.json`` records the dtype and each shard's length, so :func:`open_shard` maps a shard read-only
and refuses one that was cut short.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from losslens import contracts
from losslens.errors import DataError

# data.json's length of each shard
_LENGTH_KEYS = {contracts.TRAIN_SHARD: "train_tokens", contracts.VAL_SHARD: "val_tokens"}


def shard_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65536), else uint32."""
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise DataError(f"vocabulary of {vocab_size} tokens does not fit a uint32 shard")


def read_data_meta(data_dir: str | Path) -> dict:
    """A data folder's ``data.json``; errors name the file."""
    path = Path(data_dir) / contracts.DATA_META_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing (the study's data description)")
    try:
        meta = json.loads(path.read_text())
        np.dtype(meta["dtype"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    return meta


def open_shard(data_dir: str | Path, name: str) -> np.memmap:
    """A shard as a read-only memory map, with the dtype ``data.json`` gives and the length it says."""
    data_dir = Path(data_dir)
    meta = read_data_meta(data_dir)
    path = data_dir / name
    if not path.is_file():
        raise DataError(f"{path}: token shard missing")
    tokens = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
    expected = meta.get(_LENGTH_KEYS.get(name, ""))
    if expected is not None and len(tokens) != expected:
        raise DataError(f"{path}: has {len(tokens)} tokens, {contracts.DATA_META_FILE} says {expected} (truncated?)")
    return tokens
