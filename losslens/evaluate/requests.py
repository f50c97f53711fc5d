"""The seam between tasks and models: what a task asks of a language model, and what it gets back.

Two request types, as in lm-evaluation-harness: ``loglikelihood`` (score a continuation after a
context) and ``generate_until`` (greedy continuation until a stop string). A :class:`LanguageModel`
answers lists of them; tasks turn examples into requests (strings become token ids with
:func:`encode_pairs`, the harness' tokenization) and metrics turn the answers into numbers. Tasks
and models meet on nothing else, so any task definition that can phrase itself as these requests
(e.g. an lm-evaluation-harness task's ``Instance`` list) runs on any model that answers them
(:class:`losslens.evaluate.scoring.Scorer` for Hugging Face causal LMs). Requests are plain,
hashable values, so equal requests are answered once. :func:`unknown_characters` finds the text a
tokenizer cannot encode (it would be scored as its unknown token).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation_ids`` given ``context_ids`` (the context is never empty)."""

    context_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]


@dataclass(frozen=True)
class LoglikelihoodResult:
    loglik: float  # Σ_t log p(continuation_t | context, continuation_<t), nats
    token_logprobs: np.ndarray = field(repr=False)  # one log-probability per continuation token
    is_greedy: bool  # every continuation token was the argmax of its distribution


@dataclass(frozen=True)
class GenerationRequest:
    """Greedy continuation of ``prompt_ids`` until a stop string, end-of-text, or ``max_new_tokens``."""

    prompt_ids: tuple[int, ...]
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 32


@dataclass(frozen=True)
class GenerationResult:
    text: str  # decoded output, cut before the first stop string
    token_ids: tuple[int, ...]  # the generated tokens (before cutting at a stop string)


class LanguageModel(Protocol):
    """What tasks need of a model: its tokenizer, and answers to the two request types, in order."""

    tokenizer: Any

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], progress: bool = False,
                      desc: str = "scoring") -> list[LoglikelihoodResult]: ...

    def generate_until(self, requests: Sequence[GenerationRequest],
                       progress: bool = False) -> list[GenerationResult]: ...


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[LoglikelihoodRequest]:
    """Tokenize (context, continuation) pairs the way lm-evaluation-harness does for causal models.

    Trailing whitespace of the context moves to the continuation, then ``context`` and
    ``context + continuation`` are encoded whole and the continuation is what follows the
    context's tokens. Encoding the whole string (rather than the two halves apart) gives the
    continuation the tokens the model would have seen in running text, e.g. with a BPE merge
    across the boundary. An empty context is replaced by the tokenizer's BOS token (or EOS when it
    has none), so that the first continuation token is predicted from something.
    Special tokens are added as the tokenizer does by default (e.g. a BOS for Llama tokenizers).
    Texts are encoded in batches, each distinct context once (the choices of an example share it).
    """
    moved = []
    for context, continuation in pairs:
        n_space = len(context) - len(context.rstrip())
        if n_space:
            context, continuation = context[:-n_space], context[-n_space:] + continuation
        moved.append((context, continuation))
    contexts = list(dict.fromkeys(c for c, _ in moved if c))
    ctx_ids = dict(zip(contexts, tokenizer(contexts)["input_ids"])) if contexts else {}
    full = [i for i, (c, _) in enumerate(moved) if c]
    bare = [i for i, (c, _) in enumerate(moved) if not c]
    out: list[LoglikelihoodRequest | None] = [None] * len(moved)
    if full:
        wholes = tokenizer([moved[i][0] + moved[i][1] for i in full])["input_ids"]
        for i, whole in zip(full, wholes):
            ctx = ctx_ids[moved[i][0]]
            out[i] = LoglikelihoodRequest(tuple(ctx), tuple(whole[len(ctx):]))
    if bare:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        conts = tokenizer([moved[i][1] for i in bare], add_special_tokens=False)["input_ids"]
        for i, cont in zip(bare, conts):
            out[i] = LoglikelihoodRequest((prefix,), tuple(cont))
    return out  # type: ignore[return-value]


def unknown_characters(tokenizer, counts: Counter[str]) -> Counter[str]:
    """The characters of ``counts`` that ``tokenizer`` maps to its unknown token, with their counts.

    Each distinct character is encoded alone: one outside the vocabulary of a character-level (or
    word-piece) tokenizer comes back as the unknown token. Byte-level tokenizers have no unknown
    token, so nothing is unknown to them.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not counts:
        return Counter()
    chars = sorted(counts)
    ids = tokenizer(chars, add_special_tokens=False)["input_ids"]
    return Counter({ch: counts[ch] for ch, encoded in zip(chars, ids) if unk in encoded})
