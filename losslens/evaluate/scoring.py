"""Batched log-likelihood scoring: sum of log p(continuation | context) for many requests at once.

Three things make it fast without changing the numbers:

* **Shared context.** Requests with the same context (the choices of one multiple-choice example)
  become one *packed row*: the context once, then each continuation but its last token, with a
  4-D attention mask in which every continuation sees the whole context and its own earlier
  tokens only, and position ids that restart after the context for each continuation. Each
  continuation is scored exactly as in its own sequence ``context + continuation``, but the
  context is encoded once instead of once per choice::

      tokens    c0 c1 c2 | a0 a1 | b0
      positions  0  1  2 |  3  4 |  3
      a0 is predicted at c2, a1 at a0, a2 at a1; b0 at c2, b1 at b0.

* **Shared prefix.** Rows whose contexts begin with the same ``MIN_SHARED_PREFIX`` tokens or more
  (the description and few-shot examples that every document of a few-shot task repeats) are
  scored against one encoding of that prefix: it runs once, its keys and values are reused by every
  such row, and the rows hold only what follows it (positions continue after the prefix).
* **Length-sorted batches.** Rows are sorted by length, longest first, so a batch pads little.
* **Logits only where needed.** The vocabulary projection runs on the positions that predict a
  continuation token, not on every position, and in float32.

Rows are right-padded and every row attends only to its own tokens, so a request's result does
not depend on the batch size or on its neighbours (batch 1 and 32 agree to float32 rounding).
Models whose attention cannot take a custom 4-D mask fall back to one row per request, and models
whose cache cannot be reused this way score every row whole: self-checks at start-up compare the
ways on made-up requests.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from losslens.errors import DataError
from losslens.evaluate.generation import _cache_argument, _cache_of, greedy_generate
from losslens.evaluate.requests import (GenerationRequest, GenerationResult, LoglikelihoodRequest,
                                        LoglikelihoodResult)


def model_max_length(model, tokenizer=None) -> int:
    """The longest sequence the model was built for (its position table), as lm-evaluation-harness reads it."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**9 else 2048


MIN_SHARED_PREFIX = 32  # tokens: shorter common prefixes are not worth a separate encoding


# What a model whose KV cache cannot be deep-copied, grown or reordered raises in the prefix check; any
# other error (out of memory above all) is a real failure and surfaces.
_CACHE_ERRORS = (AttributeError, TypeError, ValueError, IndexError, NotImplementedError, RuntimeError)


@dataclass
class _Row:
    """One forward-pass row: a context and the continuations that share it."""

    context: tuple[int, ...]
    continuations: list[tuple[int, ...]]
    request_context: tuple[int, ...] = ()  # the context as requested, before truncation (the result key)

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(c) - 1 for c in self.continuations)


class Scorer:
    """A Hugging Face causal LM as a :class:`~losslens.evaluate.requests.LanguageModel`: answers
    loglikelihood requests (counting its forward passes) and generate_until requests in batches."""

    def __init__(self, model, tokenizer, batch_size: int = 32, device=None, pack: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.max_length = model_max_length(model, tokenizer)
        self.forward_passes = 0
        self.pack = pack and self._packing_agrees()
        self.share_prefix = self.pack and self._sharing_agrees()

    # ------------------------------------------------------------ public

    @torch.no_grad()
    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: bool = False, desc: str = "scoring"
    ) -> list[LoglikelihoodResult]:
        """One result per request, in order. Equal requests are computed once."""
        answers: dict[tuple, LoglikelihoodResult] = {}
        groups: dict[tuple[int, ...], list[tuple[int, ...]]] = defaultdict(list)
        for r in dict.fromkeys(requests):  # unique, in first-seen order
            if not r.context_ids:
                raise ValueError("a log-likelihood request needs a non-empty context (see encode_pairs)")
            if r.continuation_ids:
                groups[r.context_ids].append(r.continuation_ids)
            else:  # nothing to predict: probability 1
                answers[(r.context_ids, r.continuation_ids)] = LoglikelihoodResult(0.0, np.zeros(0), True)
        rows = []
        for ctx, conts in groups.items():
            for part in ([conts] if self.pack else [[c] for c in conts]):
                rows.append(self._truncate(_Row(ctx, part)))
        shared, rows = _prefix_groups(rows, MIN_SHARED_PREFIX) if self.share_prefix else ([], rows)
        rows.sort(key=lambda r: -r.length)

        bar = tqdm(total=len(rows) + sum(len(g) for _, g in shared), desc=desc, unit=" rows", leave=False,
                   disable=not progress or None)
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            answers.update(self._score_rows(batch))
            bar.update(len(batch))
        for prefix, members in shared:
            answers.update(self._score_group(prefix, members, bar))
        bar.close()
        return [answers[(r.context_ids, r.continuation_ids)] for r in requests]

    def generate_until(self, requests: Sequence[GenerationRequest], progress: bool = False) -> list[GenerationResult]:
        """Greedy continuations, in order (:func:`losslens.evaluate.generation.greedy_generate`)."""
        return greedy_generate(self.model, self.tokenizer, requests, self.batch_size, self.max_length, self.device,
                               progress)

    # ------------------------------------------------------------ internals

    def _truncate(self, row: _Row) -> _Row:
        """Keep the context's last tokens so that context + the longest continuation fits the model.

        As in lm-evaluation-harness, the input is at most ``max_length`` tokens (the last
        continuation token is predicted, never fed). Choices shorter than the longest one keep
        the same context as the longest, where the harness would keep a little more of it.
        """
        longest = max(len(c) for c in row.continuations)
        if longest > self.max_length:
            raise DataError(f"a continuation of {longest} tokens does not fit the model's context of {self.max_length}")
        keep = self.max_length + 1 - longest
        return _Row(row.context[-keep:], row.continuations, request_context=row.context)

    def _score_group(self, prefix: tuple[int, ...], rows: list[_Row], bar=None) -> dict:
        """Rows that all begin with ``prefix``: the prefix encoded once, then the rest of each row after it."""
        self.forward_passes += 1
        ids = torch.tensor([prefix], device=self.device)
        cache = _cache_of(self.model.base_model(input_ids=ids, use_cache=True))
        rest = sorted((_Row(r.context[len(prefix):], r.continuations, r.request_context) for r in rows),
                      key=lambda r: -r.length)
        out = {}
        for start in range(0, len(rest), self.batch_size):
            batch = rest[start : start + self.batch_size]
            past = copy.deepcopy(cache)  # attention appends the batch's keys to it
            past.batch_repeat_interleave(len(batch))
            out.update(self._score_rows(batch, offset=len(prefix), past=past))
            if bar is not None:
                bar.update(len(batch))
        return out

    def _score_rows(self, rows: list[_Row], offset: int = 0, past=None) -> dict:
        """Run one padded batch of rows (after ``offset`` tokens held in ``past``); return {(context, continuation): result}."""
        width = max(r.length for r in rows)
        n = len(rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((n, width), pad, dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        # allowed[b, q, k]: may query q attend to key k. Padding attends to itself (no empty rows).
        allowed = torch.zeros((n, width, width), dtype=torch.bool)
        allowed[:, torch.arange(width), torch.arange(width)] = True
        real = torch.zeros((n, width), dtype=torch.bool)  # not padding
        # What to read back: (row, position whose output predicts, target token, request key, index in target)
        b_idx, p_idx, targets = [], [], []
        spans: list[tuple[tuple, int, int]] = []  # (key, first flat index, count)

        for b, row in enumerate(rows):
            ctx = row.context
            lc = len(ctx)
            ids[b, :lc] = torch.tensor(ctx)
            pos[b, :lc] = torch.arange(lc)
            allowed[b, :lc, :lc] = torch.ones(lc, lc, dtype=torch.bool).tril()
            at = lc
            real[b, : row.length] = True
            for cont in row.continuations:
                seg = len(cont) - 1  # the last token is predicted, never fed
                if seg > 0:
                    ids[b, at : at + seg] = torch.tensor(cont[:-1])
                    pos[b, at : at + seg] = torch.arange(lc, lc + seg)
                    allowed[b, at : at + seg, :lc] = True
                    allowed[b, at : at + seg, at : at + seg] = torch.ones(seg, seg, dtype=torch.bool).tril()
                first = len(b_idx)
                # token 0 is predicted by the last context token, token t by the segment's token t-1
                for t, tok in enumerate(cont):
                    b_idx.append(b)
                    p_idx.append(lc - 1 if t == 0 else at + t - 1)
                    targets.append(tok)
                spans.append(((row.request_context, cont), first, len(cont)))
                at += seg

        if offset:  # the rows continue a prefix that every position may attend to
            pos += offset
            allowed = torch.cat([torch.ones((n, width, offset), dtype=torch.bool), allowed], dim=2)
        ids, pos = ids.to(self.device), pos.to(self.device)
        hidden = self._hidden(ids, pos, allowed, real, past)
        sel = hidden[torch.tensor(b_idx, device=self.device), torch.tensor(p_idx, device=self.device)]
        logprobs = self._log_softmax(sel)
        tgt = torch.tensor(targets, device=self.device)
        token_lp = logprobs.gather(1, tgt[:, None])[:, 0].double().cpu().numpy()
        greedy = (logprobs.argmax(dim=1) == tgt).cpu().numpy()

        out = {}
        for key, first, count in spans:
            lp = token_lp[first : first + count]
            out[key] = LoglikelihoodResult(float(lp.sum()), lp, bool(greedy[first : first + count].all()))
        return out

    def _hidden(self, ids: torch.Tensor, pos: torch.Tensor, allowed: torch.Tensor, real: torch.Tensor,
                past=None) -> torch.Tensor:
        """Final hidden states (before the vocabulary projection) for a padded batch (after ``past``, if given)."""
        self.forward_passes += 1
        base = self.model.base_model
        if self.pack:
            dtype = next(self.model.parameters()).dtype
            # An additive mask (0 or the dtype's minimum) works with both eager and SDPA attention.
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
            cached = {_cache_argument(base): past, "use_cache": True} if past is not None else {"use_cache": False}
            out = base(input_ids=ids, attention_mask=mask[:, None].to(self.device), position_ids=pos, **cached)
        else:
            # One continuation per row: the plain causal mask with right padding is the same thing.
            out = base(input_ids=ids, attention_mask=real.long().to(self.device), position_ids=pos, use_cache=False)
        return out.last_hidden_state

    def _log_softmax(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary log-probabilities in float32 from selected hidden states."""
        head = self.model.get_output_embeddings()
        bias = head.bias.float() if getattr(head, "bias", None) is not None else None
        logits = F.linear(hidden.float(), head.weight.float(), bias)
        return torch.log_softmax(logits, dim=-1)

    def _packing_agrees(self) -> bool:
        """Check on a made-up request that packed rows give what separate rows give."""
        vocab = self.model.get_output_embeddings().weight.shape[0]
        rng = np.random.default_rng(0)
        ctx = tuple(int(t) for t in rng.integers(1, vocab, size=min(6, self.max_length - 3)))
        conts = [tuple(int(t) for t in rng.integers(1, vocab, size=k)) for k in (3, 1, 2)]
        with torch.no_grad():
            self.pack = True
            row = self._truncate(_Row(ctx, conts))
            packed = self._score_rows([row])
            self.pack = False
            single = {}
            for c in conts:
                single.update(self._score_rows([self._truncate(_Row(ctx, [c]))]))
        self.forward_passes = 0
        worst = max(abs(packed[k].loglik - single[k].loglik) for k in single)
        if worst > 1e-3:
            warnings.warn(
                f"{type(self.model).__name__}: shared-context packing disagrees with plain scoring by {worst:.2g} "
                "nats; scoring one sequence per choice instead (slower)", stacklevel=2)
            return False
        return True

    def _sharing_agrees(self) -> bool:
        """Check on made-up rows that scoring after a shared, cached prefix gives what whole rows give."""
        vocab = self.model.get_output_embeddings().weight.shape[0]
        rng = np.random.default_rng(1)

        def ids(k):
            return tuple(int(t) for t in rng.integers(1, vocab, size=k))

        n = max(2, min(6, self.max_length - 6))
        prefix = ids(n - 1)
        rows = [_Row(prefix + ids(1), [ids(2), ids(1)]), _Row(prefix + ids(2), [ids(3)])]
        rows = [_Row(r.context, r.continuations, r.context) for r in rows]
        try:
            with torch.no_grad():
                whole = {k: v for r in rows for k, v in self._score_rows([r]).items()}
                shared = self._score_group(prefix, rows)
            worst = max(abs(shared[k].loglik - whole[k].loglik) for k in whole)
        except torch.OutOfMemoryError:
            raise  # not a disagreement: the sweep's batch does not fit, and saying so is the caller's job
        except _CACHE_ERRORS as e:  # a model whose cache cannot be copied or grown this way
            worst, why = float("inf"), f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
        else:
            why = f"{worst:.2g} nats"
        self.forward_passes = 0
        if worst > 1e-3:
            warnings.warn(f"{type(self.model).__name__}: scoring after a shared prefix disagrees with whole rows "
                          f"({why}); encoding every context whole instead (slower)", stacklevel=2)
            return False
        return True


def _prefix_groups(rows: list[_Row], min_prefix: int) -> tuple[list[tuple[tuple[int, ...], list[_Row]]], list[_Row]]:
    """Split rows into groups sharing a context prefix of ``min_prefix`` tokens or more, and the rest.

    Contexts are sorted, so rows with a common beginning are neighbours; a group grows while its
    common prefix stays that long, and keeps at least one context token of each row out of the
    prefix (the last context token predicts the first continuation token). Truncated rows stay whole.
    """
    whole = [r for r in rows if len(r.context) == len(r.request_context)]
    rest = [r for r in rows if len(r.context) != len(r.request_context)]
    whole.sort(key=lambda r: r.context)
    groups = []
    i = 0
    while i < len(whole):
        j, length = i + 1, len(whole[i].context) - 1
        while j < len(whole):
            common = len(os.path.commonprefix([whole[i].context, whole[j].context]))
            shorter = min(length, common, len(whole[j].context) - 1)
            if shorter < min_prefix:
                break
            length, j = shorter, j + 1
        if j - i >= 2:
            groups.append((whole[i].context[:length], whole[i:j]))
        else:
            rest.append(whole[i])
        i = j
    return groups, rest
