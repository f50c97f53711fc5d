"""Tokenizers for a study: character-level, byte-level, a trained byte-level BPE, or a local HF one.

All are ``tokenizers.Tokenizer`` objects (so encoding runs in parallel in Rust) wrapped as a
``PreTrainedTokenizerFast``, saved into every checkpoint so ``AutoTokenizer.from_pretrained`` loads
it offline. Token id 0 is the end-of-text token that separates documents in the token stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from losslens.errors import DataError
from losslens.train.config import MAX_VOCAB, MIN_BPE_VOCAB, TokenizerConfig

EOS = "<|endoftext|>"
UNK = "<unk>"


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=UNK)


def char_tokenizer(documents: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per character seen in ``documents`` (sorted, so the ids do not depend on order)."""
    alphabet: set[str] = set()
    for doc in documents:
        alphabet.update(doc)
    vocab = {EOS: 0, UNK: 1}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    # A BPE model with no merges maps each character to its id; unknown characters become <unk>.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.decoder = decoders.Fuse()
    return _wrap(tok)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """256 byte tokens (via the GPT-2 byte-to-unicode alphabet) plus end-of-text: any text encodes."""
    vocab = {EOS: 0, UNK: 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return _wrap(tok)


def train_bpe(documents: Iterator[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on a stream of documents (the trainer keeps word counts, not the text)."""
    if not MIN_BPE_VOCAB <= vocab_size <= MAX_VOCAB:  # the Rust trainer aborts the process on a huge one
        raise DataError(f"data.tokenizer.vocab_size: must be {MIN_BPE_VOCAB} to {MAX_VOCAB:,}, got {vocab_size:,}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer=trainer)
    return _wrap(tok)


def load_pretrained(path: str) -> PreTrainedTokenizerBase:
    """A local HF tokenizer directory (never downloaded). It must have a fast tokenizer and an EOS token."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"data.tokenizer.path: tokenizer directory {path} not found")
    try:
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises many types here
        raise DataError(f"{path}: cannot load tokenizer ({type(e).__name__}: {e})") from None
    if not tok.is_fast:
        raise DataError(f"{path}: a fast tokenizer (tokenizer.json) is needed for parallel encoding")
    if tok.eos_token_id is None:
        raise DataError(f"{path}: the tokenizer has no EOS token to separate documents")
    return tok


def build_tokenizer(cfg: TokenizerConfig, documents: Iterator[str]) -> PreTrainedTokenizerBase:
    """The study's tokenizer; ``documents`` (a fresh pass over the corpus) is read for char and bpe."""
    if cfg.kind == "char":
        return char_tokenizer(documents)
    if cfg.kind == "byte":
        return byte_tokenizer()
    if cfg.kind == "bpe":
        return train_bpe(documents, cfg.vocab_size)
    return load_pretrained(cfg.path or "")
