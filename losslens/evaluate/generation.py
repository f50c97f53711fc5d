"""Batched greedy decoding with a KV cache, left padding and stop strings.

Prompts of a batch are left-padded so that every row's next token comes out of the last
position; position ids count real tokens only, so padding does not shift a row's positions.
The prompt is encoded once into the cache, then one token per step is fed for the whole batch.
A row stops at end-of-text, when its decoded output contains a stop string, or at its
``max_new_tokens``; the batch stops when every row has. Batches are sorted by prompt length.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
from tqdm.auto import tqdm

from losslens.evaluate.requests import GenerationRequest, GenerationResult


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    requests: Sequence[GenerationRequest],
    batch_size: int = 32,
    max_length: int = 2048,
    device=None,
    progress: bool = False,
) -> list[GenerationResult]:
    """Greedy continuations of every request, in order."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))
    results: list[GenerationResult | None] = [None] * len(requests)
    bar = tqdm(total=len(requests), desc="generating", unit=" ex", leave=False, disable=not progress or None)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = [requests[i] for i in idx]
        for i, out in zip(idx, _generate_batch(model, tokenizer, batch, pad, max_length, device)):
            results[i] = out
        bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


def _generate_batch(model, tokenizer, batch: list[GenerationRequest], pad: int, max_length: int, device):
    max_new = max(r.max_new_tokens for r in batch)
    # Keep each prompt's last tokens so that prompt + output fits the model (as lm-eval does).
    keep = max(1, max_length - max_new)
    prompts = [list(r.prompt_ids[-keep:]) for r in batch]
    width = max(len(p) for p in prompts)
    n = len(batch)
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p)
        mask[b, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)

    cache_arg = _cache_argument(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache = _cache_of(out)
    eos = tokenizer.eos_token_id
    generated: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    for _ in range(max_new):
        next_tok = out.logits[:, -1].float().argmax(dim=-1)
        for b, tok in enumerate(next_tok.tolist()):
            if done[b]:
                continue
            if tok == eos:
                done[b] = True
                continue
            generated[b].append(tok)
            text = tokenizer.decode(generated[b], skip_special_tokens=True)
            if len(generated[b]) >= batch[b].max_new_tokens or any(s in text for s in batch[b].stop):
                done[b] = True
        if all(done):
            break
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=next_tok[:, None], attention_mask=mask, position_ids=pos,
                    use_cache=True, **{cache_arg: cache})
        cache = _cache_of(out)
    return [
        GenerationResult(cut_at_stop(tokenizer.decode(g, skip_special_tokens=True), r.stop), tuple(g))
        for g, r in zip(generated, batch)
    ]


def _cache_argument(model) -> str:
    """Name of the KV-cache argument: ``cache`` in recent transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
