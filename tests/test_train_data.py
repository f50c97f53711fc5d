"""Corpus reading, tokenizers, token shards and the deterministic token stream."""

from __future__ import annotations

import json
import random
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from losslens import contracts
from losslens.errors import DataError
from losslens.shards import open_shard, shard_dtype
from losslens.train.config import DataConfig, TokenizerConfig
from losslens.train import corpus
from losslens.train.corpus import iter_documents
from losslens.train.data import TokenStream, prepare_data
from losslens.train.tokenizer import byte_tokenizer, char_tokenizer, train_bpe

DOCS = ["the cat sat on the mat", "12+34=46", "héllo wörld ✓", "the dog ran to the park"] * 50


def _files_cfg(paths, **kw) -> DataConfig:
    return DataConfig(paths=[str(p) for p in paths], tokenizer=TokenizerConfig(kind=kw.pop("kind", "char")),
                      val_tokens=kw.pop("val_tokens", 200), val_every=kw.pop("val_every", 10), **kw)


def test_txt_jsonl_parquet_give_the_same_documents(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(DOCS) + "\n")
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    pq.write_table(pa.table({"text": DOCS}), tmp_path / "a.parquet")
    for name in ("a.txt", "a.jsonl", "a.parquet"):
        assert list(iter_documents(_files_cfg([tmp_path / name]), 0)) == DOCS, name


def test_bad_corpus_files_get_clear_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty.txt: corpus file is empty"):
        list(iter_documents(_files_cfg([tmp_path / "empty.txt"]), 0))
    with pytest.raises(DataError, match="not found"):
        list(iter_documents(_files_cfg([tmp_path / "missing.txt"]), 0))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected a string field 'text'"):
        list(iter_documents(_files_cfg([tmp_path / "bad.jsonl"]), 0))


def test_char_and_byte_tokenizers_round_trip():
    char = char_tokenizer(DOCS)
    ids = char("héllo wörld ✓").input_ids
    assert len(ids) == len("héllo wörld ✓")
    assert char.decode(ids) == "héllo wörld ✓"
    assert char.eos_token_id == 0
    byte = byte_tokenizer()
    text = "any text, even 日本語"
    assert byte.decode(byte(text).input_ids) == text
    assert len(byte(text).input_ids) == len(text.encode("utf-8"))


def test_bpe_trains_from_a_stream():
    tok = train_bpe(iter(DOCS), vocab_size=300)
    assert len(tok) <= 300
    ids = tok("the cat sat on the mat").input_ids
    assert len(ids) < len("the cat sat on the mat")  # merges happened
    assert tok.decode(ids) == "the cat sat on the mat"


def test_shard_dtype_widens_for_large_vocabularies():
    assert shard_dtype(50_000) == np.uint16
    assert shard_dtype(65_536) == np.uint16
    assert shard_dtype(100_000) == np.uint32


def test_prepare_data_splits_and_reuses(tmp_path):
    (tmp_path / "c.txt").write_text("\n\n".join(DOCS) + "\n")
    cfg = _files_cfg([tmp_path / "c.txt"])
    meta = prepare_data(cfg, 0, tmp_path / "data")
    train = open_shard(tmp_path / "data", contracts.TRAIN_SHARD)
    val = open_shard(tmp_path / "data", contracts.VAL_SHARD)
    total_chars = sum(len(d) + 1 for d in DOCS)  # +1: end-of-text after each document
    assert len(train) + len(val) == total_chars == meta["train_tokens"] + meta["val_tokens"]
    assert meta["val_tokens"] >= 200 and meta["val_bytes"] > 0
    assert (train == 0).sum() + (val == 0).sum() == len(DOCS)  # one separator per document
    # Same config: reused, not rebuilt. Different config: refused, nothing overwritten.
    assert prepare_data(cfg, 0, tmp_path / "data") == meta
    with pytest.raises(DataError, match="different data config"):
        prepare_data(_files_cfg([tmp_path / "c.txt"], val_every=3), 0, tmp_path / "data")
    assert open_shard(tmp_path / "data", contracts.TRAIN_SHARD).shape == train.shape


def sum_documents(options: dict, seed: int) -> Iterator[str]:
    """docs/extending.md's example generator: a corpus of sums."""
    rng = random.Random(seed)
    for _ in range(int(options.get("n_documents", 10_000))):
        a, b = rng.randrange(1000), rng.randrange(1000)
        yield f"{a}+{b}={a + b}"


def test_adding_a_corpus_generator_is_one_registry_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(corpus.GENERATORS, "sums", "tests.test_train_data:sum_documents")
    cfg = DataConfig(source="sums", generator={"n_documents": 60}, tokenizer=TokenizerConfig(kind="char"),
                     val_tokens=100, val_every=5)
    docs = list(iter_documents(cfg, 0))
    assert docs == list(sum_documents({"n_documents": 60}, 0)) and docs != list(iter_documents(cfg, 1))
    meta = prepare_data(cfg, 0, tmp_path / "data")
    assert meta["train_tokens"] + meta["val_tokens"] == sum(len(d) + 1 for d in docs)  # +1: end-of-text
    with pytest.raises(DataError, match=r"unknown source 'sumz' \(known: files, demo, sums\)"):
        list(iter_documents(DataConfig(source="sumz"), 0))


def test_truncated_shard_is_detected(tmp_path):
    (tmp_path / "c.txt").write_text("\n\n".join(DOCS) + "\n")
    prepare_data(_files_cfg([tmp_path / "c.txt"]), 0, tmp_path / "data")
    shard = tmp_path / "data" / contracts.TRAIN_SHARD
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        open_shard(tmp_path / "data", contracts.TRAIN_SHARD)


def test_stream_order_is_independent_of_process_split():
    tokens = np.arange(10_000, dtype=np.uint16)
    stream = TokenStream(tokens, seq_len=16, seed=3)
    global_batch = 8
    one_process = [stream.micro_batch(5, global_batch, 8, 0, 0, 1)]
    two_processes = [stream.micro_batch(5, global_batch, 2, m, r, 2) for m in range(2) for r in range(2)]
    a = np.concatenate([b.numpy() for b in one_process])
    b = np.concatenate([b.numpy() for b in two_processes])
    assert sorted(map(tuple, a)) == sorted(map(tuple, b))
    # windows are contiguous slices of the stream, shifted by one for the targets
    assert (np.diff(a, axis=1) == 1).all()


def test_stream_is_seeded_and_wraps_into_new_epochs():
    tokens = np.arange(1_000, dtype=np.uint16)
    s1, s2, s3 = TokenStream(tokens, 10, 0), TokenStream(tokens, 10, 0), TokenStream(tokens, 10, 1)
    assert (s1.windows(0, 50) == s2.windows(0, 50)).all()
    assert not (s1.windows(0, 50) == s3.windows(0, 50)).all()
    n = s1.n_windows
    epoch0 = {tuple(w) for w in s1.windows(0, n)}
    epoch1 = s1.windows(n, n)
    assert {tuple(w) for w in epoch1} == epoch0  # every window once per epoch
    assert not (epoch1 == s1.windows(0, n)).all()  # in a new order
