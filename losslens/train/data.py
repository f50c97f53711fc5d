"""Token shards and the deterministic order in which every run of a study reads them.

``prepare_data`` streams the corpus once through the tokenizer (batched; the Rust tokenizer encodes a
batch in parallel) into flat memory-mapped shards: ``train.bin`` and a held-out ``val.bin``. Documents
are separated by the end-of-text token (id 0 for the built-in tokenizers).

``TokenStream`` cuts ``train.bin`` into windows of ``seq_len + 1`` tokens and visits them in a seeded
permutation per epoch. Sample ``p`` of the stream (``p = step * global_batch + j``) is the same window
for every run with the same context and data seed: runs differ only in model size and how far they read
(as in Pythia). The order depends on nothing but (data seed, seq_len, shard): not on process count or
batch split. The shards themselves are shared by all seeds of a study (``StudyConfig.corpus_seed``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from losslens import contracts
from losslens.errors import DataError
from losslens.fsio import atomic_directory, atomic_write_json
from losslens.shards import shard_dtype
from losslens.train.config import DataConfig
from losslens.train.corpus import iter_documents
from losslens.train.tokenizer import build_tokenizer


def data_fingerprint(cfg: DataConfig, seed: int) -> str:
    blob = json.dumps({"data": asdict(cfg), "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def existing_data(cfg: DataConfig, seed: int, data_dir: Path) -> Optional[dict]:
    """The metadata of token shards already in ``data_dir`` for this data config (None: none there yet);
    shards of another data config are refused, before anything is written."""
    meta_path = Path(data_dir) / contracts.DATA_META_FILE
    if not meta_path.is_file():
        return None
    fingerprint = data_fingerprint(cfg, seed)
    meta = json.loads(meta_path.read_text())
    if meta.get("fingerprint") != fingerprint:
        raise DataError(
            f"{data_dir}: holds token shards of a different data config (fingerprint "
            f"{meta.get('fingerprint')} != {fingerprint}); use another out_dir or delete {data_dir}"
        )
    return meta


def prepare_data(cfg: DataConfig, seed: int, data_dir: Path) -> dict:
    """Tokenize the corpus into ``data_dir`` once; later calls with the same config reuse it.

    Returns the data metadata (also written to ``data.json``).
    """
    data_dir = Path(data_dir)
    fingerprint = data_fingerprint(cfg, seed)
    meta = existing_data(cfg, seed, data_dir)
    if meta is not None:
        return meta

    tokenizer = build_tokenizer(cfg.tokenizer, iter_documents(cfg, seed))
    dtype = shard_dtype(len(tokenizer))
    with atomic_directory(data_dir) as tmp:
        tokenizer.save_pretrained(tmp / contracts.TOKENIZER_DIR)
        counts = _write_shards(cfg, seed, tokenizer, dtype, tmp)
        if counts["train_tokens"] == 0:
            raise DataError(f"corpus is empty: {', '.join(cfg.paths) or cfg.source} gave no text")
        if counts["val_tokens"] == 0:
            raise DataError("no validation tokens: lower data.val_every or give a larger corpus")
        if counts["val_tokens"] < cfg.val_tokens:  # the corpus ran out before the validation shard filled
            val, train = counts["val_tokens"], counts["train_tokens"]
            print(f"data: the validation shard holds {val:,} tokens, fewer than data.val_tokens "
                  f"{cfg.val_tokens:,}: every {cfg.val_every}th document of the corpus, {val / (val + train):.0%} "
                  "of its tokens", file=sys.stderr, flush=True)
        meta = {"fingerprint": fingerprint, "dtype": dtype.name, "vocab_size": len(tokenizer),
                "eos_id": tokenizer.eos_token_id, **counts, "tokenizer": cfg.tokenizer.kind}
        atomic_write_json(tmp / contracts.DATA_META_FILE, meta)
    return meta


def _write_shards(cfg: DataConfig, seed: int, tokenizer: PreTrainedTokenizerBase, dtype: np.dtype, out: Path) -> dict:
    """Encode the documents in batches and append each, with its end-of-text token, to a shard.

    Returns the token, byte and document counts of ``data.json``.
    """
    eos, backend = tokenizer.eos_token_id, tokenizer.backend_tokenizer
    counts, n_bytes, index = {"train": 0, "val": 0}, {"train": 0, "val": 0}, 0
    with open(out / contracts.TRAIN_SHARD, "wb") as f_train, open(out / contracts.VAL_SHARD, "wb") as f_val:
        files = {"train": f_train, "val": f_val}
        docs = iter_documents(cfg, seed)
        progress = tqdm(desc="tokenizing", unit=" tok", unit_scale=True, dynamic_ncols=True)
        while True:
            batch = [d for _, d in zip(range(cfg.encode_batch), docs)]
            if not batch:
                break
            for doc, enc in zip(batch, backend.encode_batch(batch, add_special_tokens=False)):
                # Every val_every-th document is held out until the validation shard is full.
                split = "val" if index % cfg.val_every == 0 and counts["val"] < cfg.val_tokens else "train"
                ids = np.asarray(enc.ids + [eos], dtype=np.int64)
                if ids.max(initial=0) >= np.iinfo(dtype).max or ids.min(initial=0) < 0:
                    raise DataError(f"token id {ids.max()} does not fit the {dtype} shard (vocab {len(tokenizer)})")
                ids.astype(dtype).tofile(files[split])
                counts[split] += len(ids)
                n_bytes[split] += len(doc.encode("utf-8")) + 1  # +1: the separator
                index += 1
            progress.update(counts["train"] + counts["val"] - progress.n)
        progress.close()
    return {"train_tokens": counts["train"], "val_tokens": counts["val"], "train_bytes": n_bytes["train"],
            "val_bytes": n_bytes["val"], "documents": index}


def load_tokenizer(data_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(Path(data_dir) / contracts.TOKENIZER_DIR, local_files_only=True)


class TokenStream:
    """Training windows in a fixed, seeded order shared by all runs of a study with the same data seed."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens = tokens
        self.seq_len = seq_len
        self.seed = seed
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise DataError(f"training shard has {len(tokens)} tokens, fewer than one window of {seq_len + 1}")
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._epoch = epoch
        return self._perm  # type: ignore[return-value]

    def windows(self, first_sample: int, count: int) -> np.ndarray:
        """Samples ``first_sample .. first_sample + count - 1`` of the stream, shape (count, seq_len + 1)."""
        out = np.empty((count, self.seq_len + 1), dtype=np.int64)
        for i in range(count):
            epoch, pos = divmod(first_sample + i, self.n_windows)
            start = int(self._permutation(epoch)[pos]) * self.seq_len
            out[i] = self.tokens[start : start + self.seq_len + 1]
        return out

    def micro_batch(self, step: int, global_batch: int, micro_batch: int, micro: int, rank: int, world: int) -> torch.Tensor:
        """The ``micro``-th micro-batch of process ``rank`` at optimizer step ``step``.

        The global batch of step ``s`` is samples ``[s * global_batch, (s + 1) * global_batch)``; it is
        split into ``world * accumulation`` micro-batches, so its content does not depend on ``world``.
        """
        first = step * global_batch + (micro * world + rank) * micro_batch
        return torch.from_numpy(self.windows(first, micro_batch))
